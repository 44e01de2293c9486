"""Post-hoc voting weights: fit them on saved validation logits, and cross-validate the fit.

The vote's argmax is invariant to scaling every weight by the same positive factor, so the search
runs on the simplex and the result is scaled back to the reference weights' sum (in logit space the
sum acts as a temperature of the vote probabilities that pseudo-labelling thresholds see).

Weighted F1 of the vote is piecewise constant in the weights (no gradient), so the search is a
seeded random search over the simplex (Dirichlet samples, the uniform vote, each head alone and the
reference) followed by coordinate refinement (one head's weight scaled at a time, 0 included). Ties
in F1 are broken by the mean log-likelihood of the true class under the vote's probabilities, a
smooth surrogate that prefers the weights which separate the classes more clearly (and drives the
weight of a useless head to 0 instead of leaving it anywhere on an F1 plateau). Ties in both keep the
earlier candidate, and the reference is the first: weights change only for a gain in F1, or in
likelihood at equal F1, so they are never worse than the reference on the rows they were fitted on.

That in-sample gain is optimistic: `cross_validate` fits on k-1 stratified parts of the rows and
predicts the held-out part, so the out-of-fold F1 (which can be below the reference) is the honest
estimate of what re-fitted weights gain on new data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mer_core import metrics
from mer_core.data.splits import stratified_kfold_ids
from mer_core.errors import ConfigError

__all__ = ["CVResult", "PosthocResult", "cross_validate", "fit_weights", "posthoc_fit", "stratified_folds", "vote_f1"]

FitFn = Callable[[Mapping[str, np.ndarray], np.ndarray], dict[str, float]]
REFINE_FACTORS = (0.0, 0.25, 0.5, 0.8, 1.25, 2.0, 4.0)  # coordinate moves: scale one head's weight
REVIVE_SHARES = (0.05, 0.15, 0.3)  # a head at 0 can come back with this share of the total
_EPS = 1e-12


@dataclass(frozen=True)
class _Scores:
    """Per-head vote terms (H, N, C), linear in the weights in both voting spaces."""

    heads: tuple[str, ...]
    terms: np.ndarray  # (H, N, C) logits (logit space) or softmax probabilities (prob space)
    labels: np.ndarray  # (N,)
    space: str
    n_classes: int

    @classmethod
    def build(cls, logits: Mapping[str, np.ndarray], labels: np.ndarray, space: str) -> _Scores:
        if space not in ("logit", "prob"):
            raise ConfigError("voting.space", "logit, prob", space)
        heads = tuple(logits)
        stacked = np.stack([np.asarray(logits[h], dtype=np.float64) for h in heads])  # (H, N, C)
        if space == "prob":
            stacked = np.exp(stacked - stacked.max(axis=-1, keepdims=True))
            stacked /= stacked.sum(axis=-1, keepdims=True)
        y = np.asarray(labels, dtype=np.int64)
        if stacked.ndim != 3 or stacked.shape[1] != y.shape[0]:
            raise ValueError(f"logits (H, N, C) and labels (N,) disagree: {stacked.shape} vs {y.shape}")
        return cls(heads, stacked, y, space, stacked.shape[-1])

    def evaluate(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F1 (K,), mean log-likelihood of the true class (K,)) of K weight vectors (K, H) with sum > 0."""
        score = np.einsum("kh,hnc->knc", weights, self.terms)  # (K, N, C)
        f1 = np.array([metrics.weighted_f1(self.labels, s.argmax(-1), self.n_classes) for s in score])
        rows = np.arange(self.labels.shape[0])
        if self.space == "logit":
            shifted = score - score.max(axis=-1, keepdims=True)  # (K, N, C) log-softmax, stable
            log_p = shifted[:, rows, self.labels] - np.log(np.exp(shifted).sum(axis=-1))  # (K, N)
        else:
            mix = score[:, rows, self.labels] / weights.sum(axis=1, keepdims=True)  # (K, N) mixture prob
            log_p = np.log(np.maximum(mix, _EPS))
        return f1, log_p.mean(axis=1)


def _weight_vector(weights: Mapping[str, float], heads: tuple[str, ...]) -> np.ndarray:
    w = np.array([float(weights[h]) for h in heads])  # (H,)
    if np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(
            "voting.weights", "weights >= 0 with at least one > 0", dict(zip(heads, w.tolist(), strict=True))
        )
    return w


def _named(heads: tuple[str, ...], w: np.ndarray) -> dict[str, float]:
    return dict(zip(heads, w.tolist(), strict=True))


def _better(f1: float, ll: float, best: tuple[float, float]) -> bool:
    return f1 > best[0] + _EPS or (abs(f1 - best[0]) <= _EPS and ll > best[1] + _EPS)


def _best_of(scores: _Scores, cands: np.ndarray, best: tuple[float, float, np.ndarray]):
    """The incumbent or the first candidate that beats it (F1, then log-likelihood)."""
    f1, ll = scores.evaluate(cands)
    for k in range(len(cands)):
        if _better(f1[k], ll[k], best[:2]):
            best = (float(f1[k]), float(ll[k]), cands[k])
    return best


def _initial_candidates(n_heads: int, n_random: int, rng: np.random.Generator) -> np.ndarray:
    uniform = np.full((1, n_heads), 1.0 / n_heads)
    single = np.eye(n_heads)
    random = rng.dirichlet(np.ones(n_heads), size=n_random) if n_random else np.zeros((0, n_heads))
    return np.concatenate([uniform, single, random])  # (1 + H + n_random, H), rows on the simplex


def _coordinate_moves(w: np.ndarray) -> np.ndarray:
    """Every move of one head's weight (scaled, zeroed, or revived from 0), renormalised."""
    moves = []
    for h in range(w.shape[0]):
        values = [w[h] * f for f in REFINE_FACTORS] if w[h] > 0 else [s / (1 - s) * w.sum() for s in REVIVE_SHARES]
        for v in values:
            cand = w.copy()
            cand[h] = v
            if cand.sum() > 0 and not np.allclose(cand, w):
                moves.append(cand / cand.sum())
    return np.array(moves) if moves else np.zeros((0, w.shape[0]))


def fit_weights(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    reference: Mapping[str, float],
    space: str = "logit",
    seed: int = 0,
    n_random: int = 256,
    refine_rounds: int = 5,
) -> dict[str, float]:
    """Voting weights (>= 0, one per head) maximising the vote's weighted F1 on these rows.

    Args:
        logits: head -> (N, C) validation logits.
        labels: (N,) true classes.
        reference: head -> weight the trial used; the first candidate, kept unless beaten.
        space: `logit` or `prob` (the trial's `voting.space`).
        seed: seed of the random candidates.
        n_random: Dirichlet candidates before the coordinate refinement.
        refine_rounds: at most this many passes of coordinate moves (stops early without a gain).

    Returns:
        head -> weight, scaled to the reference's sum. Equal to `reference` unless something beats it.
    """
    scores = _Scores.build(logits, labels, space)
    ref = _weight_vector(reference, scores.heads)
    start = ref / ref.sum()
    f1, ll = scores.evaluate(start[None])
    best = (float(f1[0]), float(ll[0]), start)
    best = _best_of(scores, _initial_candidates(len(scores.heads), n_random, np.random.default_rng(seed)), best)
    for _ in range(refine_rounds):
        moved = _best_of(scores, _coordinate_moves(best[2]), best)
        if moved[2] is best[2]:
            break
        best = moved
    if best[2] is start:
        return _named(scores.heads, ref)
    fitted = best[2] * ref.sum()
    # Rescaling can flip an exact argmax tie in floating point: keep the guarantee exact.
    if scores.evaluate(fitted[None])[0][0] < scores.evaluate(ref[None])[0][0]:
        return _named(scores.heads, ref)
    return _named(scores.heads, fitted)


def vote_f1(logits: Mapping[str, np.ndarray], labels: np.ndarray, weights: Mapping[str, float], *, space: str) -> float:
    """Weighted F1 of the weighted vote on these rows."""
    scores = _Scores.build(logits, labels, space)
    return float(scores.evaluate(_weight_vector(weights, scores.heads)[None])[0][0])


def _vote_pred(logits: Mapping[str, np.ndarray], weights: Mapping[str, float], space: str) -> np.ndarray:
    n = len(next(iter(logits.values())))
    scores = _Scores.build(logits, np.zeros(n, dtype=np.int64), space)
    w = _weight_vector(weights, scores.heads)
    return np.einsum("h,hnc->nc", w, scores.terms).argmax(-1)  # (N,)


def stratified_folds(labels: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """(N,) fold id in [0, k) per row, stratified by label (`mer_core.data.splits.stratified_kfold_ids`).

    Raises:
        ConfigError: k < 2 or more folds than rows (field `--cv`).
    """
    y = np.asarray(labels)
    if k < 2 or k > y.shape[0]:
        raise ConfigError("--cv", f"an integer in [2, {y.shape[0]}] (the validation rows)", k)
    return stratified_kfold_ids(y, k, seed=seed)


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold F1 of re-fitted weights vs the reference weights on the same rows."""

    fitted_f1: float  # pooled over rows: each row predicted with weights fitted without its fold
    reference_f1: float
    fold_weights: tuple[dict[str, float], ...]

    @property
    def gain(self) -> float:
        return self.fitted_f1 - self.reference_f1


def cross_validate(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    reference: Mapping[str, float],
    space: str,
    folds: int,
    seed: int = 0,
    fit: FitFn | None = None,
) -> CVResult:
    """Stratified k-fold estimate of the post-hoc fit: fit on k-1 parts, predict the held-out one.

    Args:
        fit: (logits of the training rows, their labels) -> weights; default `fit_weights` with
            `reference`, `space` and `seed`. It only ever sees the training rows of a fold.
    """
    y = np.asarray(labels, dtype=np.int64)
    fold = stratified_folds(y, folds, seed=seed)
    fit = fit or (lambda lg, lb: fit_weights(lg, lb, reference=reference, space=space, seed=seed))
    pred = np.empty_like(y)
    fold_weights = []
    for k in range(folds):
        train, held = fold != k, fold == k
        weights = fit({h: v[train] for h, v in logits.items()}, y[train])
        pred[held] = _vote_pred({h: v[held] for h, v in logits.items()}, weights, space)
        fold_weights.append(dict(weights))
    n_classes = next(iter(logits.values())).shape[-1]
    fitted = metrics.weighted_f1(y, pred, n_classes)
    return CVResult(fitted, vote_f1(logits, y, reference, space=space), tuple(fold_weights))


@dataclass(frozen=True)
class PosthocResult:
    """Everything `fit-voting` reports and logs for one trial."""

    space: str
    reference: dict[str, float]
    fitted: dict[str, float]  # fitted on all rows: the weights a user would ship
    val_f1_reference: float
    val_f1_fitted: float  # in-sample, >= val_f1_reference by construction
    cv: CVResult
    n_rows: int
    folds: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "reference_weights": self.reference,
            "fitted_weights": self.fitted,
            "val_weighted_f1_reference": self.val_f1_reference,
            "val_weighted_f1_fitted": self.val_f1_fitted,
            "cv_weighted_f1_fitted": self.cv.fitted_f1,
            "cv_weighted_f1_reference": self.cv.reference_f1,
            "cv_gain": self.cv.gain,
            "cv_fold_weights": list(self.cv.fold_weights),
            "rows": self.n_rows,
            "folds": self.folds,
            "seed": self.seed,
        }


def posthoc_fit(
    logits: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    reference: Mapping[str, float],
    space: str,
    folds: int,
    seed: int = 0,
    n_random: int = 256,
) -> PosthocResult:
    """Fit on all rows (what ships) and cross-validate the same procedure (what it is worth)."""
    ref = {h: float(reference[h]) for h in logits}
    fitted = fit_weights(logits, labels, reference=ref, space=space, seed=seed, n_random=n_random)
    cv = cross_validate(
        logits,
        labels,
        reference=ref,
        space=space,
        folds=folds,
        seed=seed,
        fit=lambda lg, lb: fit_weights(lg, lb, reference=ref, space=space, seed=seed, n_random=n_random),
    )
    return PosthocResult(
        space=space,
        reference=ref,
        fitted=fitted,
        val_f1_reference=vote_f1(logits, labels, ref, space=space),
        val_f1_fitted=vote_f1(logits, labels, fitted, space=space),
        cv=cv,
        n_rows=int(np.asarray(labels).shape[0]),
        folds=folds,
        seed=seed,
    )
