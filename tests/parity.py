"""Parity of two runs that must train alike (a fused member and its single run, a captured run and
its eager twin), checked so that no CPU, vector ISA, BLAS or thread count can change the verdict.

Why float64. The two runs execute different kernels (bmm under vmap against one matmul per
member; another ISA; another thread count's reduction order), which round differently, and
training amplifies rounding. It does so most where a parameter's true gradient is zero (a bias in
front of a training-mode BatchNorm, a term weighted 0): that gradient is pure rounding noise and
Adam steps the parameter by about lr * noise / eps. In float32 the noise (~1e-7 of the loss's
scale) exceeds eps (1e-8), so such parameters take full-size random steps and two runs drift
apart by 1e-5 to 1e-2 within a few epochs, by an amount that depends on the machine. In float64
(`runtime.precision: fp64`) the noise is ~1e-14 and the step a millionth of lr. Over every pair
of runs these tests make, the largest differences measured on a 2-core AVX-512 EPYC were 7e-13 in
losses and 3e-11 in logits (relative to the head's scale), natively, under ATEN_CPU_CAPABILITY
default and avx2, and with 2 threads: LOSS_ATOL and LOGIT_RTOL leave more than three orders of
magnitude above that. (One combination still drifts in float64: lr 3e-2 with
loss.w_modality 0, see tests/test_gpu.py; no test uses it.)

Why discrete metrics can still be compared. A discrete outcome (argmax, F1, accuracy, the early
stopping epoch, which pool rows pass a pseudo-label threshold) flips only where a continuous
quantity sits within its noise of a decision boundary. Every prediction the recipe makes (every
epoch's validation logits, the pool's before each self-training round, the missing-rate and test
scores) is recorded, and `assert_same_run` checks on the reference run that every row of every
head and of the soft vote has a top-2 margin above twice the logit tolerance, and every pool
confidence is farther than its tolerance from each pseudo-label threshold. The continuous check
holds the other run within those tolerances, so no decision can differ, on this machine or any
other; discrete metrics and epochs are then compared exactly. The margins are the reference
run's, which another machine reproduces to ~1e-11, so this check too fails (a margin below 2e-7
in logits of scale 1: none is nearer than 1.2e-6 today) the same way on every machine, naming the
row; then the test's seed or data must change.

`MERSWEEP_TEST_THREADS` (default 1) sets the torch threads these runs use (`runtime.threads`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mer_core.configs import ExperimentConfig
from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, SyntheticConfig
from mer_core.train import TrialResult
from mer_core.train.device_data import resolve_device
from mer_core.train.fused import FusedExecutor, group_by_shape
from mer_core.train.recipe import Executor, Member, train_members
from mer_core.train.single import SingleExecutor
from mer_core.voting import soft_vote, vote_probs

__all__ = [
    "FP64",
    "LOGIT_RTOL",
    "LOSS_ATOL",
    "THREADS",
    "Prediction",
    "Recording",
    "Run",
    "assert_same_prediction",
    "assert_same_run",
    "fused_runs",
    "is_continuous",
    "parity_data_cfg",
    "runs_with",
    "single_run",
]


def _threads() -> int:
    raw = os.environ.get("MERSWEEP_TEST_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"MERSWEEP_TEST_THREADS: a whole number >= 1; given: {raw!r}")
    return int(raw)


THREADS = _threads()
FP64 = {"runtime.precision": "fp64", "runtime.device": "cpu", "runtime.threads": THREADS}
LOSS_ATOL = 1e-8  # losses per epoch and at the end (largest measured: 7e-13)
LOGIT_RTOL = 1e-7  # logits, relative to max(1, the head's largest |logit|) (largest measured: 3e-11)


def parity_data_cfg(*, folds: int = 1, missing_rate: float = 0.0, test_fraction: float = 0.0) -> DataConfig:
    """Synthetic data for parity runs: 300 labelled rows besides any test split, 120 of them validation
    rows with `folds` 1 (100 per fold with 3), a pool of 200 for self-training, and four modalities with
    non-MER names whose signal lets a few epochs reach a weighted F1 of 0.4 to 0.65."""
    return DataConfig(
        source="synthetic-mer",
        seed=0,
        folds=folds,
        val_fraction=0.4,
        test_fraction=test_fraction,
        synthetic=SyntheticConfig(
            n_labelled=round(300 / (1 - test_fraction)),
            n_unlabelled=200,
            dims=FrozenDict({"alpha": 8, "beta": 12, "gamma": 6, "delta": 4}),
            signal=FrozenDict({"alpha": 2.0, "beta": 1.6, "gamma": 1.2, "delta": 0.8}),
            missing_rate=missing_rate,
        ),
    )


# -- recording runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One prediction of one member, with what the recipe decides from it."""

    logits: Mapping[str, np.ndarray]  # head -> (n, C)
    weights: Mapping[str, float]  # the member's voting weights
    cfg: ExperimentConfig


@dataclass(frozen=True)
class Run:
    """A trained config: its result, its reported epochs and every prediction the recipe made."""

    result: TrialResult
    seen: list[dict]
    predictions: list[Prediction]


class Recording:
    """An executor that notes every member's predictions in `into` as it hands them to the recipe."""

    def __init__(self, inner: Executor, into: Sequence[list[Prediction]]) -> None:
        self.inner, self.into = inner, into
        self.device = inner.device

    def predict(self, members: Sequence[Member], rows, *, dev=None) -> list[dict[str, np.ndarray]]:
        out = self.inner.predict(members, rows, dev=dev)
        for m, logits in zip(members, out, strict=True):
            self.into[m.index].append(Prediction(logits, dict(m.voting_weights), m.cfg))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def runs_with(cfgs: Sequence[ExperimentConfig], data, executor: Executor, **kwargs) -> list[Run]:
    """`train_members` of `cfgs` on `executor`, recording reports and predictions (kwargs: keep_model)."""
    seen: list[list[dict]] = [[] for _ in cfgs]
    predictions: list[list[Prediction]] = [[] for _ in cfgs]
    report = lambda i, m: seen[i].append(dict(m))  # noqa: E731
    results = train_members(cfgs, data, Recording(executor, predictions), report=report, **kwargs)
    return [Run(*parts) for parts in zip(results, seen, predictions, strict=True)]


def single_run(cfg: ExperimentConfig, data, **kwargs) -> Run:
    """What `mer_core.train.run` trains (its executor), recorded."""
    return runs_with([cfg], data, SingleExecutor.for_config(cfg, resolve_device(cfg.runtime)), **kwargs)[0]


def fused_runs(cfgs: Sequence[ExperimentConfig], data, **kwargs) -> list[Run]:
    """What `train_population` trains (one fused population), recorded."""
    assert len(group_by_shape(cfgs)) == 1
    return runs_with(cfgs, data, FusedExecutor(cfgs, resolve_device(cfgs[0].runtime)), **kwargs)


# -- comparing -----------------------------------------------------------------------------------------
def is_continuous(key: str) -> bool:
    """Losses (and their fold spread) are continuous; every other metric counts predictions."""
    return key.endswith("loss") or key.endswith("loss_std")


def _clear_of_ties(scores: np.ndarray, tol: float, where: str) -> None:
    """Every row's top-2 margin exceeds 2 * tol: moving each score by up to tol cannot change its argmax."""
    if scores.shape[0] == 0 or scores.shape[1] < 2:
        return
    top2 = np.sort(scores, axis=1)[:, -2:]  # (n, 2)
    margins = top2[:, 1] - top2[:, 0]  # (n,)
    row = int(margins.argmin())
    assert margins[row] > 2 * tol, (
        f"{where}: row {row} is a near tie (top-2 margin {margins[row]:.3g} <= 2 x tolerance {tol:.3g}); "
        "its argmax could differ on another machine: change this parity test's seed or data"
    )


def _clear_of_thresholds(probs: np.ndarray, cfg: ExperimentConfig, tol: float, where: str) -> None:
    """Every row's vote confidence is farther than tol from each pseudo-label threshold the config can use."""
    st = cfg.self_training
    conf = probs.max(axis=1)  # (n,)
    for threshold in {st.dominant_threshold, st.minority_threshold, *st.class_thresholds.values()}:
        gap = np.abs(conf - threshold)  # (n,)
        row = int(gap.argmin()) if gap.size else 0
        assert not gap.size or gap[row] > tol, (
            f"{where}: row {row}'s vote confidence {conf[row]:.6g} is within {tol:.3g} of the pseudo-label "
            f"threshold {threshold}; change this parity test's seed or data"
        )


def assert_same_prediction(want: Prediction, got: Prediction, where: str) -> None:
    """`got` within the logit tolerance of `want`, and no decision taken from it can differ (see module)."""
    assert set(got.logits) == set(want.logits), where
    tols = {}
    for head, w in want.logits.items():
        g = got.logits[head]
        assert g.dtype == w.dtype == np.float64, (where, head, g.dtype)  # fp64 end to end
        tols[head] = LOGIT_RTOL * max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=0, atol=tols[head], err_msg=f"{where}: {head} logits")
        _clear_of_ties(w, tols[head], f"{where}: head {head}")
        np.testing.assert_array_equal(g.argmax(1), w.argmax(1), err_msg=f"{where}: {head}")
    space = want.cfg.voting.space
    weights = {h: want.weights[h] for h in want.logits}
    # Softmax moves no probability by more than half the largest change of its inputs (its Jacobian
    # diag(p) - p p^T has rows summing to at most 1/2 in absolute value).
    spread = sum(weights[h] * tols[h] for h in want.logits)
    vote_tol = spread if space == "logit" else spread / 2
    vote = soft_vote(dict(want.logits), weights, space=space)  # (n, C)
    _clear_of_ties(vote, vote_tol, f"{where}: soft vote")
    np.testing.assert_array_equal(soft_vote(dict(got.logits), weights, space=space).argmax(1), vote.argmax(1))
    if want.cfg.self_training.rounds:
        prob_tol = spread / 2 if space == "logit" else spread / 2 / sum(weights.values())
        _clear_of_thresholds(vote_probs(dict(want.logits), weights, space=space), want.cfg, prob_tol, where)


def _equal(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _same_values(got: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    assert set(got) == set(want), (where, set(got) ^ set(want))
    for key, value in want.items():
        if isinstance(value, float) and is_continuous(key):
            assert got[key] == pytest.approx(value, abs=LOSS_ATOL), (where, key, got[key], value)
        else:
            assert _equal(got[key], value), (where, key, got[key], value)  # decided from predictions that cannot differ


def assert_same_run(want: Run, got: Run) -> None:
    """Same predictions (within LOGIT_RTOL, no near tie, so the same decisions); then the same
    status, stages, epochs and pseudo-label rounds, losses within LOSS_ATOL and every discrete
    metric equal, per epoch and at the end."""
    assert len(got.predictions) == len(want.predictions)
    for i, (g, w) in enumerate(zip(got.predictions, want.predictions, strict=True)):
        assert_same_prediction(w, g, f"prediction {i}")
    assert (got.result.status, got.result.failure_reason) == (want.result.status, want.result.failure_reason)
    assert got.result.epochs == want.result.epochs
    assert len(got.seen) == len(want.seen)
    for g, w in zip(got.seen, want.seen, strict=True):
        _same_values(g, w, f"{w['stage']}, fold {w['fold']}, epoch {w['epoch']}")
    _same_values(got.result.metrics, want.result.metrics, "final metrics")
    assert [f.epochs for f in got.result.folds] == [f.epochs for f in want.result.folds]
    for k, (g, w) in enumerate(zip(got.result.folds, want.result.folds, strict=True)):
        assert len(g.pseudo) == len(w.pseudo)
        for r, (gr, wr) in enumerate(zip(g.pseudo, w.pseudo, strict=True)):
            _same_values(gr, wr, f"fold {k}, pseudo-label round {r + 1}")
