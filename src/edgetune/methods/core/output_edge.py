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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...backends import Backend, Features
from ...data.tasks import parse_label_words
from ...data.templates import Template
from ...errors import DataError, IncompatibleError
from .config import OutputEdgeConfig
from .estimator import Costs, Method, content_free_examples
from .multilabel import label_folds, sigmoid
from .persistence import check_shapes, jsonable, restore, write_atomically


@dataclass(frozen=True)
class Prepared:
    """What an output-edge fit reads (:meth:`OutputEdgeMethod.prepare`), as :meth:`~OutputEdgeMethod.fit_prepared`
    takes it."""

    train: Features
    y: np.ndarray
    content_free: Features
    labels: tuple[str, ...]
    template: list[Template]
    words: list[str]
    #: multi-label data (``y`` an (n, C) 0/1 matrix) whose texts may have no label at all
    allow_empty: bool = False

    @property
    def queries(self) -> int:
        """Model queries the extraction paid (0 when the cache held every prompt)."""
        return self.train.queries + self.content_free.queries

    @property
    def seconds(self) -> float:
        return self.train.seconds + self.content_free.seconds

    def stats(self) -> dict[str, Any]:
        return Features.added_stats([self.train, self.content_free])


class OutputEdgeMethod(Method):
    """A method that needs only :class:`Features`: one backend query per prompt, never the weights.

    Learned attributes (besides ``labels_``): ``template_`` and ``words_`` (the prompt and label words it
    queries with), ``templates_`` (every prompt it queries each input with: ``[template_]`` unless the method
    asks for more, see :meth:`query_templates`), ``hidden_dim_`` (size of one prompt's hidden features),
    ``n_train_``/``n_content_free_`` (the inputs its fit read, for :meth:`costs`).
    """

    config = OutputEdgeConfig

    #: whether training reads the training prompts' features / the content-free prompts' (query counting)
    uses_training_prompts: ClassVar[bool] = True
    uses_content_free: ClassVar[bool] = True
    #: False for the label-free floors (zero-shot and its calibrations): nothing is learned from labels
    learns_from_labels: ClassVar[bool] = True
    #: False for methods whose model is the stored training data itself (kNN): no trainable parameters
    parametric: ClassVar[bool] = True
    #: arrays of :meth:`state` that are statistics or inputs, not learned parameters
    fixed_state: ClassVar[tuple[str, ...]] = ("mean", "std", "content_free", "batch_prior")

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

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """The shape each array of :meth:`state` must have, from the labels, label words, prompts and hidden size
        (``hidden_dim_``) of a loaded config and the parameters (``None``: any size on that axis); :meth:`load`
        refuses a folder whose arrays disagree, before :meth:`set_state` uses them."""
        return {}

    def check_state(self, tensors: dict[str, np.ndarray]) -> str | None:
        """What is wrong with loaded arrays beyond their shapes (:meth:`saved_shapes`), or None."""
        return None

    #: label words per label (one set per label unless a method reads several: :meth:`query_words`)
    words_per_label: ClassVar[int] = 1

    def query_templates(self, template: Template, alternatives: Sequence[str]) -> list[Template]:
        """The prompts each input is queried with, given the task's main ``template`` and its ``alternatives``
        (:attr:`Task.templates`): the main one only, unless a method decodes from several views (one query per
        input and prompt; :meth:`Features.stack` puts them side by side)."""
        return [template]

    def query_words(self, words: Sequence[str], alternatives: Sequence[Sequence[str]]) -> list[str]:
        """The label words each prompt is scored on, given the task's (one per label, in label order) and its
        further word sets (:attr:`Task.more_words`): the task's only, unless a method reads several words per
        class (then set after set, each in label order; still one query per prompt)."""
        return list(words)

    # -- features -------------------------------------------------------------------------------------------
    def features(self, X: Any, description: str = "prompts") -> Features:
        """Features of inputs under the fitted prompt(s) (cached by the backend)."""
        self._check_fitted()
        return extract(self.backend, self.examples(X), self.templates_, self.words_, description)

    # -- scikit-learn surface ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str] | None = None) -> OutputEdgeMethod:
        return self.fit_prepared(**vars(self.prepare(X, y)))

    def prepare(self, X: Any, y: Sequence[str] | None = None) -> Prepared:
        """Everything :meth:`fit` reads, extracted: the prompt(s) and label words (the method's, else the task's),
        the training features and the content-free prompts' (where the method uses them). ``fit`` is
        ``fit_prepared(**vars(prepare(X, y)))``; the bench runner calls the two apart, to time extraction and
        decoder training separately — one implementation of the output-edge cell."""
        self._validate_params()
        y, self.indicator_columns_ = self._indicator_targets(
            y, None if self.label_words is None else list(parse_label_words(self.label_words)))
        template, words, labels = self._prompting(X, y)
        examples, y_idx = self._labelled(X, y, labels)
        task = getattr(X, "task", None)
        more = task.more_words if task is not None and self.label_words is None else []
        word_list = self.query_words([words[lab] for lab in labels], more)
        templates = self.query_templates(template, task.all_templates[1:] if task is not None else ())
        train = extract(self.backend, examples, templates, word_list, "training prompts")
        cf = (extract(self.backend, content_free_examples(template), templates, word_list, "content-free prompts")
              if self.uses_content_free else Features(np.zeros((0, len(word_list) * len(templates)), np.float32),
                                                      np.zeros((0, 0), np.float32), views=len(templates)))
        return Prepared(train, y_idx, cf, labels, templates, word_list,
                        allow_empty=bool(getattr(self, "multi_label_", False) and getattr(self, "allow_empty_", False)))

    def fit_prepared(self, train: Features, y: np.ndarray, content_free: Features, labels: Sequence[str],
                     template: Template | str | Sequence[Template | str], words: Sequence[str],
                     allow_empty: bool = False) -> OutputEdgeMethod:
        """Fit on features already extracted (the runner shares one extraction among methods). ``template``:
        the prompt, or the prompts of multi-prompt features (as :meth:`query_templates` gave them). ``y``: label
        indices, or for multi-label data an (n, C) 0/1 matrix (``allow_empty``: a text may have no label)."""
        self._validate_params()
        y = np.asarray(y)
        self.multi_label_, self.allow_empty_ = y.ndim == 2, bool(allow_empty)
        if self.multi_label_:
            self._refuse_multi_label()
        self.labels_ = tuple(labels)
        many = template if isinstance(template, list | tuple) else [template]
        self.templates_ = [Template(t) if isinstance(t, str) else t for t in many]
        self.template_ = self.templates_[0]
        self.words_ = list(words)
        if len(self.labels_) < 2:
            raise DataError(f"{self.name} needs at least two labels to choose between; the training data has only "
                            f"{', '.join(map(repr, self.labels_)) or 'none'}")
        if not self.words_ or len(self.words_) % len(self.labels_):
            raise DataError(f"{self.name}: {len(self.words_)} label words for {len(self.labels_)} labels")
        if len(train) == 0:
            raise DataError("no training examples")
        if train.views != len(self.templates_):
            raise DataError(f"{self.name}: the features hold {train.views} prompt(s) per input, not the "
                            f"{len(self.templates_)} its templates say")
        self.identity_ = self.backend.identity
        self.model_name_ = self.backend.name
        self.hidden_dim_ = int(train.hidden.shape[1]) // train.views
        self.n_train_, self.n_content_free_ = len(train), len(content_free)
        self.oof_ = None
        self.fit_features(train, y, content_free)
        if self.multi_label_:
            self._fit_thresholds(train, y, content_free)
        return self

    # -- multi-label ----------------------------------------------------------------------------------------
    #: folds of the cross-validation that chooses a multi-label threshold (``threshold="cv"``)
    threshold_folds: ClassVar[int] = 5

    def _fit_thresholds(self, train: Features, Y: np.ndarray, content_free: Features) -> None:
        """``thresholds_`` from ``threshold``; ``"cv"`` reads :meth:`out_of_fold` (:meth:`Method._set_thresholds`)."""
        self._set_thresholds(Y, lambda: self.out_of_fold(train, Y, content_free))

    def out_of_fold(self, train: Features, Y: np.ndarray, content_free: Features) -> np.ndarray:
        """(n, C) probabilities of the training examples, each from a model that did not train on it: the
        method's own (``oof_``, when its fit cross-validated anyway), else those of ``threshold_folds`` fits on
        folds that spread every label (:func:`label_folds`). A method that learns nothing from labels scores the
        sample directly."""
        if not self.learns_from_labels:
            return sigmoid(self.decision_features(train))
        if self.oof_ is not None:
            return self.oof_
        from sklearn.base import clone

        folds = label_folds(Y, self.threshold_folds, int(getattr(self, "seed", 0) or 0))
        out = np.zeros(Y.shape, dtype=np.float64)
        for f in range(int(folds.max()) + 1):
            fit_on, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            sub = clone(self).set_params(threshold=0.5)  # a fixed threshold: no cross-validation inside
            sub.fit_prepared(train.take(fit_on), Y[fit_on], content_free, self.labels_, self.templates_, self.words_,
                             allow_empty=self.allow_empty_)
            out[held] = sigmoid(sub.decision_features(train.take(held)))
        return out

    def class_scores(self, X: Any) -> np.ndarray:
        """(n, C) class scores; no inputs: a (0, C) array, without asking the model anything."""
        self._check_fitted()
        examples = self.examples(X)
        if not examples:
            return np.zeros((0, len(self.labels_)), np.float32)
        return self.decision_features(self.features(examples))

    def costs(self) -> Costs:
        self._check_fitted()
        learned = sum(np.asarray(v).size for k, v in self.state().items() if k not in self.fixed_state)
        per_prompt = self.uses_training_prompts * self.n_train_ + self.uses_content_free * self.n_content_free_
        return Costs(trainable_params=int(learned), queries=int(per_prompt * len(self.templates_)), steps=0)

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        config = {**self._base_config(), "template": self.template_.text, "label_words": list(self.words_),
                  **({"templates": [t.text for t in self.templates_]} if len(self.templates_) > 1 else {}),
                  "backend_kind": self.backend.kind, "backend_settings": jsonable(self.backend.settings()),
                  "hidden_dim": self.hidden_dim_, **self._multi_label_config()}
        return write_atomically(path, config, self.state())

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> OutputEdgeMethod:
        obj, config, tensors = restore(cls, path, model)
        hidden, templates = config.get("hidden_dim"), config.get("templates", [config.get("template")])
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1 or "template" not in config:
            raise IncompatibleError(f"{str(path)!r}: config.json lacks a valid 'hidden_dim' or 'template' (a "
                                    f"{cls.name} saves both); save or train the model again")
        if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
            raise IncompatibleError(f"{str(path)!r}: config.json's 'templates' must be a non-empty list of prompts")
        obj.hidden_dim_ = hidden
        obj._restore_multi_label(path, config)
        obj.templates_ = [Template(t) for t in templates]
        check_shapes(path, tensors, obj.saved_shapes(),
                     f"{len(obj.labels_)} labels, hidden size {hidden}, {len(templates)} prompt(s)")
        problem = obj.check_state(tensors)
        if problem:
            raise IncompatibleError(f"{str(path)!r}: {problem}; save or train the model again")
        obj.set_state(tensors)
        if model is not None:
            obj.backend  # noqa: B018 - checks the identity now, not at the first prediction
        return obj


def extract(backend: Backend, examples: Sequence[Any], templates: Sequence[Template], words: Sequence[str],
            description: str = "prompts") -> Features:
    """Features of ``examples`` under each template, side by side (:meth:`Features.stack`); one template: plain
    features. Each template's prompts are cached on their own, so a method that adds prompts re-pays nothing
    for the ones another method already asked."""
    return Features.stack([backend.features(examples, t, words, description if len(templates) == 1
                                            else f"{description} (prompt {i + 1}/{len(templates)})")
                           for i, t in enumerate(templates)])
