"""SetFit (Tunstall et al., 2022) as the practitioners' peer: the real ``setfit`` library.

Contrastive fine-tuning of a sentence-transformers body on pairs drawn from the few-shot sample, then a
logistic-regression head on the tuned embeddings (SetFit's defaults: one epoch, batch 16, body lr 2e-5,
"oversampling" pair sampling). The body is a *copy* of the backend's encoder (default: the packaged
all-MiniLM-L6-v2), so the shared backend stays frozen. Inputs are ``text`` (and ``text_b``, joined by a
space); SetFit uses no template or label words.

Saving writes the tuned body with sentence-transformers (safetensors) and the head's coefficients as
arrays; SetFit's own ``save_pretrained`` pickles the head, which edgetune never writes or loads.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, load_backend
from ..data.example import Dataset, as_examples
from ..errors import DataError, EdgetuneError, IncompatibleError
from .base import FORMAT_VERSION, Method, _jsonable, log_softmax, read_saved, register, write_atomically


def _text(ex: Any) -> str:
    return ex.text if not ex.text_b else f"{ex.text} {ex.text_b}"


@register
class SetFit(Method):
    """SetFit on a sentence-transformers encoder (see the module docstring).

    Args:
        model: an embedding backend or model name (default ``minilm-l6``).
        batch_size, num_epochs, body_learning_rate, num_iterations, max_steps: SetFit ``TrainingArguments``
            (``num_iterations=None`` keeps SetFit's default pair sampling).
        labels: label order when fitting on plain texts (default: sorted labels of ``y``).
    """

    name = "setfit"
    edge = "body"

    def __init__(self, model: str | Backend = "minilm-l6", *, batch_size: int = 16, num_epochs: int = 1,
                 body_learning_rate: float = 2e-5, num_iterations: int | None = None, max_steps: int = -1,
                 labels: Sequence[str] | None = None, seed: int = 0, progress: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.body_learning_rate = body_learning_rate
        self.num_iterations = num_iterations
        self.max_steps = max_steps
        self.labels = labels
        self.seed = seed
        self.progress = progress
        self._backend: Backend | None = None if isinstance(model, str) else model

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(str(self.model), kind="embedding", cache=None, progress=self.progress)
        if self._backend.kind != "embedding":
            raise IncompatibleError(f"SetFit fine-tunes a sentence-transformers encoder; {self._backend.name!r} is "
                                    f"a {self._backend.kind} model (try model='minilm-l6')")
        return self._backend

    def fit(self, X: Any, y: Sequence[str] | None = None) -> SetFit:
        import datasets
        from setfit import SetFitModel, Trainer, TrainingArguments
        from sklearn.linear_model import LogisticRegression

        examples = as_examples(X, y)
        if any(e.label is None for e in examples):
            raise DataError("every training example needs a label (pass y=)")
        if isinstance(X, Dataset):
            labels = tuple(X.labels)
        else:
            labels = tuple(self.labels or sorted({e.label for e in examples}))
        unknown = sorted({e.label for e in examples if e.label not in labels})
        if unknown:
            raise DataError(f"unknown label(s) {unknown}; the labels are {list(labels)}")
        if len({e.label for e in examples}) < 2:
            raise DataError("SetFit needs examples of at least two labels")
        index = {lab: i for i, lab in enumerate(labels)}
        body = copy.deepcopy(self.backend.torch_model()[0])
        model = SetFitModel(model_body=body, model_head=LogisticRegression(max_iter=1000, random_state=self.seed))
        data = datasets.Dataset.from_dict({"text": [_text(e) for e in examples],
                                           "label": [index[e.label] for e in examples]})
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, batch_size=self.batch_size, num_epochs=self.num_epochs,
                                     body_learning_rate=self.body_learning_rate, num_iterations=self.num_iterations,
                                     max_steps=self.max_steps, seed=self.seed, save_strategy="no",
                                     report_to="none", show_progress_bar=self.progress, logging_dir=tmp)
            trainer = Trainer(model=model, args=args, train_dataset=data)
            if not self.progress:  # the inner transformers Trainer's bar and log lines
                from transformers.trainer_callback import ProgressCallback

                trainer.st_trainer.remove_callback(ProgressCallback)
            trainer.train()
        inner = trainer.st_trainer  # the sentence-transformers trainer that tuned the body
        self.history_ = {"seconds": time.perf_counter() - start, "steps": int(inner.state.global_step),
                         "pairs": len(inner.train_dataset) * self.num_epochs, "n_train": len(examples)}
        self.steps = self.history_["steps"]
        self.body_ = model.model_body
        self.body_.eval()
        self._set_head(model.model_head, len(labels))
        self.labels_ = labels
        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        return self

    def _set_head(self, clf: Any, n_classes: int) -> None:
        coef = np.zeros((n_classes, clf.coef_.shape[1]), np.float32)
        bias = np.full(n_classes, -1e9, np.float32)
        if len(clf.classes_) == 2:
            coef[clf.classes_[1]], bias[clf.classes_[1]], bias[clf.classes_[0]] = clf.coef_[0], clf.intercept_[0], 0
        else:
            coef[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
        self.coef_, self.intercept_ = coef, bias

    @property
    def trainable_params_(self) -> int:
        self._check_fitted()
        return int(sum(p.numel() for p in self.body_.parameters()) + self.coef_.size + self.intercept_.size)

    @property
    def training_queries_(self) -> int:
        """Encoder forward passes over single texts: two per training pair, plus one per example for the head."""
        return 2 * self.history_["pairs"] + self.history_.get("n_train", 0)

    def _check_fitted(self) -> None:
        if not hasattr(self, "body_"):
            raise EdgetuneError("this setfit is not fitted yet: call fit() first")

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted()
        texts = [_text(e) for e in as_examples([X] if isinstance(X, str) else X)]
        emb = self.body_.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return (np.asarray(emb, np.float32) @ self.coef_.T + self.intercept_).astype(np.float32)

    def predict(self, X: Any) -> list[str]:
        return [self.labels_[i] for i in self.decision_function(X).argmax(1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(log_softmax(self.decision_function(X)))

    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k != "progress"}
        config = {"format": FORMAT_VERSION, "method": self.name, "edge": self.edge, "params": _jsonable(params),
                  "labels": list(self.labels_), "model": self.model_name_, "model_identity": self.identity_,
                  "backend_kind": "embedding", "history": self.history_}

        def body(folder: Path) -> None:
            self.body_.save(str(folder / "body"), safe_serialization=True)

        return write_atomically(path, config, {"coef": self.coef_, "intercept": self.intercept_}, extra=body)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> SetFit:
        """Load a saved SetFit; the tuned body is inside the folder, so ``model`` is not needed."""
        from sentence_transformers import SentenceTransformer

        config, tensors = read_saved(path)
        if config.get("method") != cls.name:
            raise IncompatibleError(f"{str(path)!r} holds a {config.get('method')!r} model, not {cls.name!r}")
        body_dir = Path(path) / "body"
        if not any(body_dir.glob("*.safetensors")):
            raise IncompatibleError(f"{str(path)!r} has no safetensors body weights")
        obj = cls(model=config["model"], **config.get("params", {}))
        from ..backends.local import resolve_device

        obj.body_ = SentenceTransformer(str(body_dir), device=str(resolve_device(None)), trust_remote_code=False).eval()
        obj.coef_, obj.intercept_ = np.asarray(tensors["coef"]), np.asarray(tensors["intercept"])
        obj.labels_ = tuple(config["labels"])
        obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
        obj.history_ = config.get("history", {})
        return obj
