"""Ensemble: the average of several output-edge methods' class probabilities (soft voting).

Each member is fitted on the same sample through the same backend, so members on the same prompts share one
extraction (the feature cache) and members on other prompts (``template=1``, …) add only their own queries.
The prediction is the argmax of the weighted mean of the members' ``predict_proba`` — what scikit-learn's
``VotingClassifier(voting="soft")`` computes. It is written here rather than taken from scikit-learn because
``VotingClassifier`` re-encodes the labels as integers before fitting its members, and an edgetune method reads
the label *names* (its label words come from them); and because a saved ensemble must be safetensors folders,
never a pickle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend
from ..errors import DataError, IncompatibleError
from .configs.ensemble import EnsembleConfig, member_specs
from .core.estimator import Costs, Method, sub_method
from .core.persistence import jsonable, restore, write_atomically
from .core.registry import get_method, register


@register
class Ensemble(Method):
    """Soft voting over output-edge methods fitted on the same sample.

    Attributes
    ----------
    members_ : list of Method
        The fitted members, in the order of ``members``.
    """

    config = EnsembleConfig

    def _build(self) -> list[Method]:
        """The members, unfitted, on this ensemble's backend; the ensemble's prompt, label words, input columns and
        seed are given to each member that takes them and sets none itself."""
        return [sub_method(self, name, params, self.backend) for name, params in member_specs(self.members, self.name)]

    def fit(self, X: Any, y: Sequence[Any] | None = None) -> Ensemble:
        self._validate_params()
        members = [m.fit(X, y) for m in self._build()]
        labels = members[0].labels_
        if any(m.labels_ != labels for m in members[1:]):
            raise DataError(f"{self.name}: the members disagree on the labels ({[list(m.labels_) for m in members]})")
        self.members_ = members
        self.labels_ = labels
        self.label_values_ = getattr(members[0], "label_values_", None)
        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        return self

    def _weights(self) -> np.ndarray:
        w = np.ones(len(self.members_)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def class_scores(self, X: Any) -> np.ndarray:
        """(n, C) log of the weighted mean of the members' class probabilities."""
        self._check_fitted()
        examples = self.examples(X)
        if not examples:
            return np.zeros((0, len(self.labels_)), np.float32)
        probs = sum(w * np.asarray(m.predict_proba(examples), np.float64)
                    for w, m in zip(self._weights(), self.members_, strict=True))
        return np.log(np.maximum(probs, 1e-30)).astype(np.float32)

    def costs(self) -> Costs:
        """The members' costs added up (members on the same prompts share their queries through the cache, so
        ``queries`` is an upper bound on what the model was asked)."""
        self._check_fitted()
        each = [m.costs() for m in self.members_]
        return Costs(trainable_params=sum(c.trainable_params for c in each), queries=sum(c.queries for c in each),
                     steps=max(c.steps for c in each))

    def save(self, path: str | os.PathLike) -> Path:
        """A folder with the ensemble's config and one saved folder per member (``member0``, ``member1``, …)."""
        self._check_fitted()
        config = {**self._base_config(), "members": [m.name for m in self.members_],
                  "backend_kind": self.backend.kind, "backend_settings": jsonable(self.backend.settings())}

        def members(folder: Path) -> None:
            for i, m in enumerate(self.members_):
                m.save(folder / f"member{i}")

        return write_atomically(path, config, {}, extra=members)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> Ensemble:
        obj, config, _ = restore(cls, path, model)
        names = [name for name, _ in member_specs(obj.members, cls.name)]
        if config.get("members") != names:
            raise IncompatibleError(f"{str(path)!r}: config.json's 'members' do not match its parameters; the config "
                                    "was edited: save or train the model again")
        backend = obj.backend
        members = []
        for i, name in enumerate(names):
            member = get_method(name).load(Path(path) / f"member{i}", model=backend)
            if member.labels_ != obj.labels_:
                raise IncompatibleError(f"{str(path)!r}: member {i} ({name}) has other labels than the ensemble")
            members.append(member)
        obj.members_ = members
        return obj
