"""Statistics of an ablation: bootstrap CIs over seeds, paired tests, Holm correction, verdicts.

Pure numpy/scipy, testable without MLflow. Variants are compared with the reference *paired by seed*:
the seed fixes the data split and the initialisation, and pairing removes that shared variance.
Bad options (they come from the command line) raise `ConfigError`; bad numbers (NaN, empty,
misaligned) raise `ValueError`, because they mean the caller passed bad data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mer_core.errors import ConfigError

__all__ = ["Comparison", "bootstrap_ci", "compare_variants", "holm", "paired_differences", "paired_test", "verdict"]

TESTS = ("wilcoxon", "t")
REFERENCE = "reference"
NO_DIFFERENCE = "no detectable difference"
NO_PAIRS = "no paired seeds"


def _finite_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN/inf); got {arr.tolist()}")
    return arr


def _check_unit(field: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(field, "a number in (0, 1)", value)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    statistic: Callable[..., np.ndarray] = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` (the mean by default).

    Percentile, not BCa: with the 3-10 seeds of an ablation BCa's jackknife acceleration is itself
    noise. The percentile interval is somewhat narrow for small n (about 92% coverage at n=10 for a
    nominal 95%); `verdict` therefore also requires the paired test.

    Args:
        values: 1-D finite sample (e.g. one metric per seed).
        confidence: Two-sided confidence level in (0, 1).
        n_boot: Number of resamples, all drawn at once as one (n_boot, n) index array.
        seed: Seed of the resampling generator; same seed, same interval.
        statistic: Vectorised statistic called as `statistic(array, axis=-1)`.

    Returns:
        (low, high); both equal the statistic when there is one value or all values are equal.

    Raises:
        ValueError: `values` is empty, not 1-D or holds NaN/inf.
        ConfigError: `confidence` or `n_boot` is out of range.
    """
    x = _finite_1d(values, "values")
    _check_unit("confidence", confidence)
    if n_boot < 1:
        raise ConfigError("n_boot", "an integer >= 1", n_boot)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (B, n) one row per resample
    boot = np.asarray(statistic(x[idx], axis=-1), dtype=np.float64)  # (B,)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_differences(candidate: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> np.ndarray:
    """Element-wise `candidate - reference` of two arrays aligned by seed.

    Raises:
        ValueError: the arrays are empty, not 1-D, differ in length or hold NaN/inf.
    """
    cand = _finite_1d(candidate, "candidate")
    ref = _finite_1d(reference, "reference")
    if cand.shape != ref.shape:
        raise ValueError(f"candidate and reference differ in length: {cand.size} vs {ref.size}")
    return cand - ref


def paired_test(diffs: Sequence[float] | np.ndarray, *, method: str = "wilcoxon") -> float:
    """Two-sided p-value of "the paired differences are centred on 0".

    Degenerate inputs get a defined answer instead of scipy's NaN and warnings:
    - all differences exactly 0: p = 1.0 (no evidence of any difference), for both tests;
    - `t` with n < 2: p = 1.0, since there is no variance estimate and hence no evidence;
    - `t` with a constant non-zero difference: p = 0.0, the limit of a vanishing spread (t = inf, as
      scipy computes for exactly zero variance). Wilcoxon (the default) is less trusting there: n
      constant differences give its exact p = 2 / 2**n.

    Wilcoxon keeps scipy's defaults: zero differences are dropped, the null distribution is exact
    (n <= 50, no ties/zeros) or an exhaustive permutation (n <= 13), else normal. Its smallest p is
    2 / 2**n, so five or fewer seeds can never reach alpha = 0.05.

    Raises:
        ValueError: `diffs` is empty, not 1-D or holds NaN/inf.
        ConfigError: `method` is not "wilcoxon" or "t".
    """
    if method not in TESTS:
        raise ConfigError("test", " | ".join(TESTS), method)
    d = _finite_1d(diffs, "diffs")
    if not np.any(d):
        return 1.0
    if method == "wilcoxon":
        return float(sps.wilcoxon(d).pvalue)
    if d.size < 2:
        return 1.0
    if np.all(d == d[0]):
        return 0.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the order given.

    Step-down: the i-th smallest of m p-values is multiplied by (m - i) (i from 0), a running maximum
    keeps the adjusted values monotone in the raw ones, and they are capped at 1. It controls the
    family-wise error rate under any dependence, which suits variants that share a reference.

    Raises:
        ValueError: not 1-D, or a value is NaN or outside [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D array; got shape {p.shape}")
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError(f"pvalues must lie in [0, 1]; got {p.tolist()}")
    order = np.argsort(p, kind="stable")  # (m,) smallest first
    m = p.size
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))  # (m,) monotone in rank
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def verdict(ci_low: float, ci_high: float, p_adj: float, *, alpha: float = 0.05, higher_is_better: bool = True) -> str:
    """Plain-words outcome of one variant against the reference.

    A difference counts only when the CI of the mean difference excludes 0 and the adjusted p-value
    is below `alpha`: the CI alone is unadjusted for multiplicity and narrow for few seeds, and the
    test alone says nothing about direction. Returns "better than reference", "worse than reference"
    or "no detectable difference".

    Raises:
        ValueError: an argument is NaN.
        ConfigError: `alpha` is not in (0, 1).
    """
    _check_unit("alpha", alpha)
    if any(math.isnan(v) for v in (ci_low, ci_high, p_adj)):
        raise ValueError(f"verdict needs numbers; got ci=({ci_low}, {ci_high}), p_adj={p_adj}")
    if ci_low <= 0.0 <= ci_high or p_adj >= alpha:
        return NO_DIFFERENCE
    improved = (ci_low > 0.0) == higher_is_better
    return "better than reference" if improved else "worse than reference"


@dataclass(frozen=True)
class Comparison:
    """One row of an ablation table.

    `mean`/`ci_low`/`ci_high` summarise all `n_seeds` seeds of the variant; the `diff_*` fields and
    the p-values use only the `n` seeds it shares with the reference (variant minus reference). The
    reference row has diff 0, p-values NaN and verdict "reference".
    """

    variant: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    diff_mean: float
    diff_ci_low: float
    diff_ci_high: float
    p_value: float
    p_adj: float
    verdict: str
    n_seeds: int


CI = Callable[[np.ndarray], tuple[float, float]]


def _summary(values: Mapping[int, float], ci: CI) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high); NaN for a variant without any score (e.g. every trial failed)."""
    if not values:
        return math.nan, math.nan, math.nan
    x = np.array(list(values.values()))  # (n_seeds,)
    return (float(x.mean()), *ci(x))


def _checked_scores(scores: Mapping[str, Mapping[int, float]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for name, by_seed in scores.items():
        out[name] = {int(s): float(v) for s, v in by_seed.items()}
        bad = sorted(s for s, v in out[name].items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"variant {name!r} has non-finite scores at seeds {bad}")
    return out


def _paired_stats(
    variant: Mapping[int, float], ref: Mapping[int, float], test: str, ci: CI
) -> tuple[int, float, float, float, float]:
    """(n paired, diff mean, diff CI low, diff CI high, raw p) over the seeds both sides have."""
    common = sorted(variant.keys() & ref.keys())
    if not common:
        return 0, math.nan, math.nan, math.nan, math.nan
    diffs = paired_differences([variant[s] for s in common], [ref[s] for s in common])
    low, high = ci(diffs)
    return len(common), float(diffs.mean()), low, high, paired_test(diffs, method=test)


def compare_variants(
    scores: Mapping[str, Mapping[int, float]],
    *,
    reference: str,
    test: str = "wilcoxon",
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> list[Comparison]:
    """Compare every variant with `reference`, paired by seed.

    Only the seeds present in both the reference and a variant enter that variant's paired
    difference (a seed missing on one side has nothing to pair with); `Comparison.n` is that count.
    A variant sharing no seed gets NaN difference statistics and the verdict "no paired seeds".
    Holm's correction runs over the variants that have paired seeds. Every bootstrap uses the same
    `seed`, so a row does not depend on which other variants are in the table or in what order.

    Args:
        scores: `scores[variant][seed]` = the metric of that variant at that seed.
        reference: The variant the others are compared with.
        test: "wilcoxon" or "t", see `paired_test`; `confidence`, `n_boot`, `seed` go to
            `bootstrap_ci`; `alpha` (family-wise) and `higher_is_better` go to `verdict`.

    Returns:
        The reference row first, then the other variants in the order of `scores`.

    Raises:
        ConfigError: `reference` is not in `scores`, or an option is out of range.
        ValueError: a score is NaN/inf, or the reference has no scores.
    """
    if test not in TESTS:
        raise ConfigError("test", " | ".join(TESTS), test)
    _check_unit("confidence", confidence)
    _check_unit("alpha", alpha)
    if reference not in scores:
        raise ConfigError("reference", " | ".join(scores) or "(no variants)", reference)
    table = _checked_scores(scores)
    ref = table[reference]
    if not ref:
        raise ValueError(f"reference {reference!r} has no scores")
    ci: CI = functools.partial(bootstrap_ci, confidence=confidence, n_boot=n_boot, seed=seed)
    no_diff = (0.0, 0.0, 0.0, math.nan, math.nan, REFERENCE)
    rows = [Comparison(reference, len(ref), *_summary(ref, ci), *no_diff, len(ref))]
    others = [name for name in table if name != reference]
    paired = {name: _paired_stats(table[name], ref, test, ci) for name in others}
    tested = [name for name in others if paired[name][0] > 0]
    adjusted = dict(zip(tested, holm([paired[name][4] for name in tested]), strict=True))
    for name in others:
        n, diff_mean, diff_low, diff_high, p = paired[name]
        p_adj = float(adjusted.get(name, math.nan))
        word = verdict(diff_low, diff_high, p_adj, alpha=alpha, higher_is_better=higher_is_better) if n else NO_PAIRS
        own = _summary(table[name], ci)
        rows.append(Comparison(name, n, *own, diff_mean, diff_low, diff_high, p, p_adj, word, len(table[name])))
    return rows
