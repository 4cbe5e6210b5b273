"""SetFit (Tunstall et al., 2022) as the practitioners' peer: the real ``setfit`` library.

Contrastive fine-tuning of a sentence-transformers body on pairs drawn from the few-shot sample, then a
logistic-regression head on the tuned embeddings (SetFit's defaults: one epoch, batch 16, body lr 2e-5,
"oversampling" pair sampling). The body is a *copy* of the backend's encoder (default: the packaged
all-MiniLM-L6-v2), so the shared backend stays frozen. Inputs are ``text`` (and ``text_b``, joined by a
space); SetFit uses no template or label words.

Saving writes the tuned body with sentence-transformers (safetensors) and the head's coefficients as
arrays; SetFit's own ``save_pretrained`` pickles the head, which edgetune never writes or loads.

Multi-label data (a list of labels per text) trains as SetFit's ``multi_target_strategy="one-vs-rest"``: its
multi-label pair sampling, and a ``OneVsRestClassifier`` of logistic regressions as the head. ``threshold`` (default
0.5, what SetFit's ``predict`` does) turns each label's probability into a decision; ``"cv"`` places it by the
micro-F1 of out-of-fold head probabilities on the tuned embeddings of the training texts (the body itself is not
refitted per fold: it has seen every training text, so this choice is optimistic).
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
from ..data.example import Dataset
from ..errors import DataError, IncompatibleError
from .configs.setfit import SetFitConfig
from .core.decoders import CONSTANT_LOGIT, logistic_head
from .core.estimator import Costs, Method, label_order
from .core.persistence import check_shapes, read_saved, restored_config, write_atomically
from .core.registry import register


def _text(ex: Any) -> str:
    return ex.text if not ex.text_b else f"{ex.text} {ex.text_b}"


@register
class SetFit(Method):
    """SetFit on a sentence-transformers encoder (see the module docstring).

    Attributes
    ----------
    body_ : SentenceTransformer
        The tuned encoder.
    coef_, intercept_ : ndarray
        The logistic head.
    history_ : dict
        Seconds, body steps, contrastive pairs and training examples.
    """

    config = SetFitConfig

    fitted_attribute = "body_"

    def _load_backend(self) -> Backend:
        return load_backend(self.model_name, kind="embedding", cache=None, progress=self.progress,
                            **self._backend_options)

    def fit(self, X: Any, y: Sequence[str] | None = None) -> SetFit:
        import datasets
        from setfit import SetFitModel, Trainer, TrainingArguments
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        self._validate_params()
        y, self.indicator_columns_ = self._indicator_targets(y, self.labels)
        if isinstance(X, Dataset):
            labels = tuple(X.labels)
        else:
            labels = tuple(self.labels or (label_order(y) if y is not None else sorted(
                {lab for e in self.examples(X) for lab in (e.labels or (e.label,)) if lab is not None})))
        examples, y_idx = self._labelled(X, y, labels)
        multi = y_idx.ndim == 2
        if not multi and len(set(y_idx.tolist())) < 2:
            raise DataError("SetFit needs examples of at least two labels")
        body = copy.deepcopy(self.backend.torch_model()[0]).float()  # trained in float32 whatever the backend's format
        head = LogisticRegression(max_iter=1000, random_state=self.seed, class_weight=self.class_weight)
        model = SetFitModel(model_body=body, model_head=OneVsRestClassifier(head) if multi else head,
                            multi_target_strategy="one-vs-rest" if multi else None)
        data = datasets.Dataset.from_dict({"text": [_text(e) for e in examples], "label": y_idx.tolist()})
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
        self.body_ = model.model_body
        self.body_.eval()
        self.labels_ = labels
        if multi:
            self.coef_, self.intercept_ = _one_vs_rest_head(model.model_head, y_idx)
            self._set_thresholds(y_idx, lambda: self._head_out_of_fold(examples, y_idx))
        else:
            self.coef_, self.intercept_ = logistic_head(model.model_head, len(labels))
        self.identity_, self.model_name_ = self.backend.identity, self.backend.name
        return self

    def _head_out_of_fold(self, examples: Sequence[Any], Y: np.ndarray) -> np.ndarray:
        """(n, C) out-of-fold probabilities of the head, refitted per fold (:func:`label_folds`) on the tuned body's
        embeddings of the training texts (what ``threshold="cv"`` reads)."""
        from sklearn.linear_model import LogisticRegression

        from .core.decoders import one_vs_rest
        from .core.multilabel import label_folds, sigmoid

        emb = np.asarray(self.body_.encode([_text(e) for e in examples], batch_size=64, convert_to_numpy=True,
                                           show_progress_bar=False), np.float64)
        folds = label_folds(Y, 5, self.seed)
        out = np.zeros(Y.shape)
        for f in range(int(folds.max()) + 1):
            fit_on, held = folds != f, folds == f
            coef, bias = one_vs_rest(emb[fit_on], Y[fit_on], lambda: LogisticRegression(
                max_iter=1000, random_state=self.seed, class_weight=self.class_weight))
            out[held] = sigmoid(emb[held] @ coef.T + bias)
        return out

    @property
    def trainable_params_(self) -> int:
        self._check_fitted()
        return int(sum(p.numel() for p in self.body_.parameters()) + self.coef_.size + self.intercept_.size)

    def costs(self) -> Costs:
        """Encoder forward passes over single texts: two per training pair, plus one per example for the
        head; steps are the body's optimizer steps."""
        self._check_fitted()
        h = self.history_
        return Costs(trainable_params=self.trainable_params_, queries=int(2 * h["pairs"] + h.get("n_train", 0)),
                     steps=int(h["steps"]))

    def class_scores(self, X: Any) -> np.ndarray:
        self._check_fitted()
        texts = [_text(e) for e in self.examples(X)]
        if not texts:  # no inputs: no scores (the encoder is not asked)
            return np.zeros((0, len(self.labels_)), np.float32)
        emb = self.body_.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return (np.asarray(emb, np.float32) @ self.coef_.T + self.intercept_).astype(np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        config = {**self._base_config(), "backend_kind": "embedding", "history": self.history_,
                  **self._multi_label_config()}

        def body(folder: Path) -> None:
            self.body_.save(str(folder / "body"), safe_serialization=True)

        return write_atomically(path, config, {"coef": self.coef_, "intercept": self.intercept_}, extra=body)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | Backend | None = None) -> SetFit:
        """Load a saved SetFit; the tuned body is inside the folder, so ``model`` is not needed."""
        from sentence_transformers import SentenceTransformer

        config, tensors = read_saved(path)
        restored_config(cls, path, config)
        body_dir = Path(path) / "body"
        if not any(body_dir.glob("*.safetensors")):
            raise IncompatibleError(f"{str(path)!r} has no safetensors body weights")
        n_labels = len(config["labels"])
        check_shapes(path, tensors, {"coef": (n_labels, None), "intercept": (n_labels,)}, f"{n_labels} labels")
        obj = cls(model=config["model"] if model is None else model, **config.get("params", {}))
        if model is not None:  # the body is inside the folder, but a model given must be the one it was tuned from
            obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
            obj.backend  # noqa: B018 - refuses another model now
        from ..backends.local import resolve_device

        obj.body_ = SentenceTransformer(str(body_dir), device=str(resolve_device(None)), trust_remote_code=False).eval()
        width = getattr(obj.body_, "get_embedding_dimension", obj.body_.get_sentence_embedding_dimension)()
        if width is not None and tensors["coef"].shape[1] != width:
            raise IncompatibleError(f"{str(path)!r}: the saved head reads {tensors['coef'].shape[1]}-d embeddings, but "
                                    f"the saved body gives {width}-d ones; save or train the model again")
        obj.coef_, obj.intercept_ = np.asarray(tensors["coef"]), np.asarray(tensors["intercept"])
        obj.labels_ = tuple(config["labels"])
        obj.identity_, obj.model_name_ = config["model_identity"], config["model"]
        obj.history_ = config.get("history", {})
        obj._restore_multi_label(path, config)
        return obj


def _one_vs_rest_head(head: Any, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, d) coefficients and (C,) intercepts of a fitted ``OneVsRestClassifier`` of logistic regressions; a label
    constant in the training data (scikit-learn's constant predictor) answers that constant, far from any
    threshold."""
    width = next(e.coef_.shape[1] for e in head.estimators_ if hasattr(e, "coef_"))
    coef, bias = np.zeros((len(head.estimators_), width)), np.zeros(len(head.estimators_))
    for c, est in enumerate(head.estimators_):
        if hasattr(est, "coef_"):
            coef[c], bias[c] = est.coef_[0], est.intercept_[0]
        else:
            bias[c] = CONSTANT_LOGIT if Y[:, c].max() else -CONSTANT_LOGIT
    return coef.astype(np.float32), bias.astype(np.float32)
