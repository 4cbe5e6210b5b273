"""Multi-prompt decoding: DecT's prototype decoder over several prompts per input, matched by optimal transport.

After Cheng et al. (Findings of ACL 2025, "Multi-Prompting Decoder Helps Better Language Understanding"): each
input is queried with P templates (one query per input and template, cached like any features), which gives P
hidden states and P sets of label-word scores. The decoder is DecT's, with a set of prototypes per class:

    z_p      = normalise(W · standardise_p(h_p))          one projection W for every prompt
    cost_pq  = ||z_p - P_cq||                             P_cq: class c's q-th prototype (q = 1..P)
    D_c      = min over transport plans T (uniform marginals) of Σ T ⊙ cost, entropic (Sinkhorn, ``ot_eps``)
    score_c  = -D_c + r_c + λ · mean_p s̃_pc                s̃_p: prompt p's calibrated label-word log-probabilities

trained by full-batch Adam on cross-entropy, λ and the training length (``epochs``: a count or candidates,
default 10, 20 or 30) chosen by stratified cross-validation on the training sample (as DecT; every fold, λ and
length comes from one batched training run). With one prompt the transport is trivial and this is
DecT's decoder exactly (the same initialisation and λ search), which a test checks.

Departures, each a parameter or said here: the prompts are the task's templates (the registry gives four for
sst2, imdb, yelp, agnews, dbpedia, yahoo, trec, rte and cb; a task file may list ``templates``), not the
paper's; ``word_sets`` label words per class (default 1; the task's further sets, ``more_label_words``, scored
in the same query: the registry gives two further sets for sst2, imdb, yelp, agnews, trec and rte) enter only
the averaged calibrated scores (a prompt's hidden state does not depend on the words); prototypes start at
each class's mean projected state under each prompt; the transport is entropic with a fixed number of
Sinkhorn iterations, differentiated through. The paper names its code (github.com/czlll/MPD); no copy of it could
be reached from where this was written, so this follows the paper's description and has not been compared with
that code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import Features
from ..data.templates import Template
from ..errors import EdgetuneError
from .configs.multi_prompt import MultiPromptConfig
from .core.config import ParamError
from .core.decoders import calibrate, class_counts, fit_searched, log_softmax, torch_threads, train_rows
from .core.output_edge import OutputEdgeMethod
from .core.registry import register


@register
class MultiPromptDecoder(OutputEdgeMethod):
    """DecT over several prompts per input with optimal-transport prototype matching (module docstring).

    Attributes
    ----------
    W_ : ndarray of shape (proto_dim, d)
        Projection, shared by every prompt.
    protos_ : ndarray of shape (C, P, proto_dim)
        P prototypes per class.
    radii_ : ndarray of shape (C,)
        Class radii.
    mean_, std_ : ndarray of shape (P, d)
        Per-prompt standardisation.
    content_free_ : ndarray of shape (m, P·C)
        Content-free prompts' scores (calibration).
    lam_ : float
        The λ used.
    epochs_ : int
        The training length used.
    cv_accuracy_ : dict
        λ → cross-validated accuracy (when ``lam="cv"``).
    losses_ : list of float
        Training loss per epoch.
    stopped_ : str or None
        What diverged, when training stopped early.

    Why the defaults of ``epochs`` and ``threads`` are what they are: benchmarks/results/README.md, 'Where the
    defaults come from'.
    """

    config = MultiPromptConfig

    fixed_state = ("mean", "std", "content_free")

    @property
    def words_per_label(self) -> int:  # type: ignore[override]
        return self.word_sets

    def query_templates(self, template: Template, alternatives: Sequence[str]) -> list[Template]:
        if self.templates is not None:
            if not self.templates:
                raise ParamError(f"{self.name}: templates is empty")
            return [Template(t) for t in self.templates]
        pool = [template, *(Template(t) for t in alternatives)]
        if self.prompts > len(pool):
            raise ParamError(f"{self.name}: prompts={self.prompts}, but the task has {len(pool)} template(s); give "
                             "templates=[...] (or a task file's `templates`) or fewer prompts")
        return pool[: self.prompts]

    def query_words(self, words: Sequence[str], alternatives: Sequence[Sequence[str]]) -> list[str]:
        if self.word_sets > 1 + len(alternatives):
            raise ParamError(f"{self.name}: word_sets={self.word_sets}, but the task has {1 + len(alternatives)} "
                             "label-word set(s); give a task file's `more_label_words` or fewer word sets")
        return [w for words_ in [words, *alternatives[: self.word_sets - 1]] for w in words_]

    # -- pieces -----------------------------------------------------------------------------------------
    def _views(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """(n, P, S·C) scores (S label-word sets, set after set) and (n, P, d) hidden states."""
        p = features.views
        return (features.scores.reshape(len(features), p, -1), features.hidden.reshape(len(features), p, -1))

    def _prior(self, scores: np.ndarray) -> np.ndarray:
        """Mean over prompts and label-word sets of each one's calibrated label-word log-probabilities: (n, C)."""
        c = len(self.labels_)
        cf = self.content_free_.reshape(len(self.content_free_), scores.shape[1], -1)
        views = [(p, s) for p in range(scores.shape[1]) for s in range(0, scores.shape[2], c)]
        per = [calibrate(scores[:, p, s : s + c], cf[:, p, s : s + c]) if len(cf) else
               log_softmax(scores[:, p, s : s + c]) for p, s in views]
        return np.mean(per, axis=0)

    def _standardise(self, hidden: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((hidden - self.mean_[None]) / self.std_[None]).astype(np.float32))

    def _transport(self, cost: torch.Tensor) -> torch.Tensor:
        """Entropic optimal-transport cost between uniform marginals, over the last two axes (log-domain
        Sinkhorn, ``ot_iters`` iterations); one prompt: the cost itself."""
        p, q = cost.shape[-2:]
        if p == 1 and q == 1:
            return cost[..., 0, 0]
        eps = self.ot_eps
        log_a, log_b = -math.log(p), -math.log(q)
        f = torch.zeros(cost.shape[:-1], dtype=cost.dtype)
        g = torch.zeros((*cost.shape[:-2], q), dtype=cost.dtype)
        for _ in range(self.ot_iters):
            f = eps * log_a - eps * torch.logsumexp((g[..., None, :] - cost) / eps, dim=-1)
            g = eps * log_b - eps * torch.logsumexp((f[..., :, None] - cost) / eps, dim=-2)
        plan = torch.exp((f[..., :, None] + g[..., None, :] - cost) / eps)
        return (plan * cost).sum((-1, -2))

    def _scores(self, z: torch.Tensor, protos: torch.Tensor, radii: torch.Tensor, prior: torch.Tensor,
                lams: torch.Tensor) -> torch.Tensor:
        """z (M, n, P, k) unit rows, protos (M, C, Q, k) -> (M, n, C) scores."""
        cross = torch.einsum("mnpk,mcqk->mncpq", z, protos)
        sq = 1.0 + (protos * protos).sum(-1)[:, None, :, None, :] - 2.0 * cross
        dist = self._transport(sq.clamp_min(1e-12).sqrt())
        return -dist + radii[:, None, :] + lams[:, None, None] * prior[None]

    def _train(self, x: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lams: torch.Tensor,
               weights: torch.Tensor, n_classes: int, epochs: int,
               snapshots: dict[int, Any] | None = None) -> torch.Tensor:
        """Train M decoders at once (one per row of ``weights`` and ``lams``) for ``epochs`` steps; x is (n, P, d).
        Returns each decoder's loss per step (M, epochs).
        ``snapshots``: a dict whose keys are epoch counts, filled after that many steps with (a function giving
        one decoder's W, every decoder's prototypes, radii, and scores (M, n, C) on the training examples from
        that step's own forward pass), as DecT's."""
        snapshots = {} if snapshots is None else snapshots
        m, (n, p, d) = weights.shape[0], x.shape
        gen = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / math.sqrt(d)
        W0 = (torch.rand(self.proto_dim, d, generator=gen) * 2 - 1) * bound
        onehot = F.one_hot(y, n_classes).float()
        flat_t = x.reshape(n * p, d).T.contiguous()
        with torch.no_grad():
            z0 = F.normalize(x @ W0.T, dim=-1)  # (n, P, k)
            per_class = weights[:, :, None] * onehot[None]  # (M, n, C)
            counts = per_class.sum(1).clamp_min(1e-9)
            protos = torch.einsum("mnc,npk->mcpk", per_class, z0) / counts[..., None, None]  # (M, C, P, k)
            zero = torch.zeros(m, n_classes)
            dist0 = -self._scores(z0[None].expand(m, -1, -1, -1), protos, zero, torch.zeros(n, n_classes),
                                  torch.zeros(m))
            radii = (per_class * dist0).sum(1) / counts
        learned = W0.expand(m, -1, -1).clone().requires_grad_(True)
        protos = protos.clone().requires_grad_(True)
        radii = radii.clone().requires_grad_(True)
        opt = torch.optim.Adam([learned, radii, protos], lr=self.lr, fused=True)

        def forward() -> torch.Tensor:
            z = F.normalize((learned.reshape(m * self.proto_dim, d) @ flat_t).view(m, self.proto_dim, n, p)
                            .permute(0, 2, 3, 1), dim=-1)
            return self._scores(z, protos, radii, prior, lams)

        def keep(scores: torch.Tensor) -> tuple[Any, ...]:
            kept = learned.detach().clone()

            def weights_of(row: int) -> torch.Tensor:
                return kept[row]

            return weights_of, protos.detach().clone(), radii.detach().clone(), scores.detach()

        return train_rows(forward, opt, y, weights, epochs, snapshots, keep, params=[learned, protos, radii])

    def _predict(self, x: torch.Tensor, W: torch.Tensor, protos: torch.Tensor, radii: torch.Tensor,
                 prior: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
        z = F.normalize(torch.einsum("npd,mkd->mnpk", x, W), dim=-1)
        return self._scores(z, protos, radii, prior, lams)

    # -- OutputEdgeMethod --------------------------------------------------------------------------------
    def fit_features(self, train: Features, y: np.ndarray, content_free: Features) -> MultiPromptDecoder:
        with torch_threads(self.threads):
            return self._fit(train, y, content_free)

    def _fit(self, train: Features, y: np.ndarray, content_free: Features) -> MultiPromptDecoder:
        n_classes = len(self.labels_)
        class_counts(self.name, self.labels_, y)  # every label needs an example
        scores, hidden = self._views(train)
        self.content_free_ = content_free.scores.astype(np.float32)
        h = hidden.astype(np.float64)
        self.mean_ = h.mean(axis=0).astype(np.float32)  # (P, d)
        self.std_ = (h.std(axis=0) + 1e-6).astype(np.float32)
        x = self._standardise(hidden)
        yt = torch.from_numpy(y.astype(np.int64))
        prior = torch.from_numpy(self._prior(scores).astype(np.float32))
        fitted = fit_searched(
            lambda lams, weights, epochs, snaps: self._train(x, yt, prior, lams, weights, n_classes, epochs, snaps),
            y, n_classes, lam=self.lam, lam_grid=self.lam_grid, epochs=self.epochs, folds=self.cv_folds, seed=self.seed,
            name=self.name, class_weight=self.class_weight)
        self.lam_, self.epochs_, self.cv_accuracy_ = fitted.lam, fitted.epochs, fitted.cv_accuracy
        self.W_, self.protos_, self.radii_, self.losses_ = fitted.W, fitted.protos, fitted.radii, fitted.losses
        self.stopped_ = fitted.stopped
        return self

    def decision_features(self, features: Features) -> np.ndarray:
        if features.views != len(self.mean_):
            raise EdgetuneError(f"{self.name}: features hold {features.views} prompt(s) per input; this decoder "
                                f"was trained on {len(self.mean_)}")
        scores, hidden = self._views(features)
        if hidden.shape[-1] != self.W_.shape[1]:
            raise EdgetuneError(f"features have {hidden.shape[-1]} dimensions; this decoder expects {self.W_.shape[1]}")
        with torch.no_grad():
            out = self._predict(self._standardise(hidden), torch.from_numpy(self.W_)[None],
                                torch.from_numpy(self.protos_)[None], torch.from_numpy(self.radii_)[None],
                                torch.from_numpy(self._prior(scores).astype(np.float32)), torch.tensor([self.lam_]))
        return out[0].numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {"W": self.W_, "protos": self.protos_, "radii": self.radii_, "mean": self.mean_, "std": self.std_,
                "content_free": self.content_free_, "lam": np.array([self.lam_], dtype=np.float32)}

    def saved_shapes(self) -> dict[str, tuple[int | None, ...]]:
        c, d, k, p = len(self.labels_), self.hidden_dim_, self.proto_dim, len(self.templates_)
        return {"W": (k, d), "protos": (c, p, k), "radii": (c,), "mean": (p, d), "std": (p, d),
                "content_free": (None, p * len(self.words_)), "lam": (1,)}

    def check_state(self, tensors: dict[str, np.ndarray]) -> str | None:
        return None if np.isfinite(tensors["lam"]).all() else f"its saved λ is {float(tensors['lam'][0])}"

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.W_, self.protos_, self.radii_ = tensors["W"], tensors["protos"], tensors["radii"]
        self.mean_, self.std_, self.content_free_ = tensors["mean"], tensors["std"], tensors["content_free"]
        self.lam_ = float(tensors["lam"][0])
