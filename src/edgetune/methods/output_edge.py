"""What output-edge methods share: features in, a small model on top, nothing of the weights touched.

An output-edge method asks its backend once per prompt (:meth:`Backend.features`, cached) and learns
from the label-word scores and hidden states alone, so it works on every backend, remote ones included.
Subclasses implement :meth:`OutputEdgeMethod.fit_features` and :meth:`OutputEdgeMethod.decision_features`,
list learned arrays in :meth:`~OutputEdgeMethod.state`/:meth:`~OutputEdgeMethod.set_state`, and declare
which prompts their training reads (``uses_training_prompts``, ``uses_content_free``), which is how their
query cost is counted.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..backends import Backend, Features
from ..data.example import as_examples
from ..data.templates import Template
from .base import Costs, Method, _jsonable, content_free_examples, restore, write_atomically


class OutputEdgeMethod(Method):
    """A method that needs only :class:`Features`: one backend query per prompt, never the weights.

    Learned attributes (besides ``labels_``): ``template_`` and ``words_`` (the prompt and label words it
    queries with), ``hidden_dim_`` (size of the hidden features), ``n_train_``/``n_content_free_`` (the
    prompts its fit read, for :meth:`costs`).
    """

    edge = "output"
    needs = "features"
    #: whether training reads the training prompts' features / the content-free prompts' (query counting)
    uses_training_prompts: ClassVar[bool] = True
    uses_content_free: ClassVar[bool] = True
    #: False for the label-free floors (zero-shot and its calibrations): nothing is learned from labels
    learns_from_labels: ClassVar[bool] = True
    #: False for methods whose model is the stored training data itself (kNN): no trainable parameters
    parametric: ClassVar[bool] = True
    #: arrays of :meth:`state` that are statistics or inputs, not learned parameters
    fixed_state: ClassVar[tuple[str, ...]] = ("mean", "std", "content_free", "batch_prior")

    def __init__(self, model: str | Backend | None = None, *, template: str | None = None,
                 label_words: Mapping[str, str] | str | None = None) -> None:
        super().__init__(model)
        self.template = template
        self.label_words = label_words

    # -- to implement -------------------------------------------------------------------------------------
    @abstractmethod
    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> OutputEdgeMethod:
        """Learn from training features and label indices."""

    @abstractmethod
    def decision_features(self, features: Features) -> np.ndarray:
        """(n, C) class scores; the prediction is their argmax."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        pass

    # -- features -------------------------------------------------------------------------------------------
    def features(self, X: Any, description: str = "prompts") -> Features:
        """Features of inputs under the fitted prompt (cached by the backend)."""
        self._check_fitted()
        return self.backend.features(as_examples(X), self.template_, self.words_, description)

    # -- scikit-learn surface ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None) -> OutputEdgeMethod:
        self._validate_params()
        template, words, labels = self._prompting(X, y)
        examples, y_idx = self._labelled(X, y, labels)
        word_list = [words[lab] for lab in labels]
        train = self.backend.features(examples, template, word_list, "training prompts")
        cf = (self.backend.features(content_free_examples(template), template, word_list, "content-free prompts")
              if self.uses_content_free else Features(np.zeros((0, len(word_list)), np.float32),
                                                      np.zeros((0, 0), np.float32)))
        return self.fit_prepared(train, y_idx, cf, labels=labels, template=template, words=word_list)

    def fit_prepared(self, train: Features, y: np.ndarray, content_free: Features, labels: Sequence[str],
                     template: Template | str, words: Sequence[str]) -> OutputEdgeMethod:
        """Fit on features already extracted (the runner shares one extraction among methods)."""
        self._validate_params()
        self.labels_ = tuple(labels)
        self.template_ = Template(template) if isinstance(template, str) else template
        self.words_ = list(words)
        if len(train) == 0:
            from ..errors import DataError

            raise DataError("no training examples")
        self.identity_ = self.backend.identity
        self.model_name_ = self.backend.name
        self.hidden_dim_ = int(train.hidden.shape[1])
        self.n_train_, self.n_content_free_ = len(train), len(content_free)
        self.fit_features(train, np.asarray(y), content_free)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return self.decision_features(self.features([X] if isinstance(X, str) else X))

    def costs(self) -> Costs:
        self._check_fitted()
        learned = sum(np.asarray(v).size for k, v in self.state().items() if k not in self.fixed_state)
        queries = self.uses_training_prompts * self.n_train_ + self.uses_content_free * self.n_content_free_
        return Costs(trainable_params=int(learned), queries=int(queries), steps=0)

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        config = {**self._base_config(), "template": self.template_.text, "label_words": list(self.words_),
                  "backend_kind": self.backend.kind, "backend_settings": _jsonable(self.backend.settings()),
                  "hidden_dim": self.hidden_dim_}
        return write_atomically(path, config, self.state())

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> OutputEdgeMethod:
        obj, config, tensors = restore(cls, path, model)
        obj.hidden_dim_ = int(config["hidden_dim"])
        obj.set_state(tensors)
        if model is not None:
            obj.backend  # noqa: B018 - checks the identity now, not at the first prediction
        return obj
