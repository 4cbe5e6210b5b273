"""The framework the methods are built on (no method lives here).

``config`` (torch-free declarations), ``registry``, ``estimator`` (the scikit-learn surface), ``persistence``
(save/load), ``decoders`` (output-edge decoder maths), ``output_edge`` / ``input_edge`` (the family base classes),
``prompted`` (the frozen model plus a soft prompt and offsets), ``trainers`` (AdamW, CMA-ES) and ``budget``.
"""
