"""Verdicts of an ablation: one interval per variant decides *different*, *equivalent* or *undecided*.

Every variant is compared with the reference over the seeds both ran (paired: a seed fixes the
initialisation and the folds, so the difference removes what the seed shares). From the paired
differences d_1..d_n:

- the **interval** is the t-interval `mean(d) +- t_{n-1}(1 - level/2) sd(d) / sqrt(n)`, where
  `level` is the look's nominal level from `sweeps.ablation.sequential` (Bonferroni across
  variants, O'Brien-Fleming-type spending across looks). It is exact for normal differences at
  any n, where a percentile bootstrap over 5 seeds covers far less than it claims;
- **different**: the interval excludes 0. This *is* the paired t-test at the same level (the two
  are one computation), so the interval and the verdict can never disagree;
- **equivalent within +-min_effect**: the interval lies inside (-min_effect, +min_effect), which
  is two one-sided tests at half the level (Schuirmann's TOST, stricter than needed);
- **undecided** otherwise, with the seeds it would take: the paired seeds at which a test at the
  last look's level has 80% power against a true difference of `min_effect`, given the observed
  spread (noncentral t, exact for normal differences).

The minimum detectable difference (MDE) at 80% power is reported for the seeds run, at the level
the current look used: what this study could have seen, not what it saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from sweeps.ablation.sequential import SequentialDesign

DIFFERENT, EQUIVALENT, UNDECIDED = "different", "equivalent", "undecided"
POWER = 0.8
_MAX_SEEDS_ESTIMATE = 100_000  # beyond this the answer is "not within any budget" anyway


@dataclass(frozen=True)
class Verdict:
    """One variant against the reference.

    `ci_low`/`ci_high` bound the mean paired difference (variant - reference) at `level`;
    `p_value` is the paired t-test's raw two-sided p, `p_corrected` the same scaled so that it is
    below the family-wise alpha exactly when the interval excludes 0.
    """

    decision: str  # different | equivalent | undecided
    n: int
    diff_mean: float
    ci_low: float
    ci_high: float
    level: float
    p_value: float
    p_corrected: float
    mde: float  # smallest |difference| detected with 80% power at these seeds and this level
    seeds_needed: int | None  # paired seeds to detect min_effect with 80% power; None without min_effect

    @property
    def more_seeds(self) -> int | None:
        """About how many more paired seeds an undecided variant needs (None if not known)."""
        if self.decision != UNDECIDED or self.seeds_needed is None:
            return None
        return max(1, self.seeds_needed - self.n)

    def words(self, *, higher_is_better: bool = True, min_effect: float | None = None) -> str:
        """The verdict as the table prints it."""
        if self.decision == DIFFERENT:
            better = (self.diff_mean > 0) == higher_is_better
            return f"different: {'better' if better else 'worse'}"
        if self.decision == EQUIVALENT:
            return f"equivalent within ±{min_effect:g}"
        if self.n < 2:
            return "undecided: needs >= 2 paired seeds"
        more = self.more_seeds
        return "undecided" if more is None else f"undecided: about {more} more seeds needed"


def t_interval(mean: np.ndarray | float, sd: np.ndarray | float, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the t-interval of a mean of n paired differences at two-sided `level` (vectorised)."""
    half = float(sps.t.isf(level / 2.0, n - 1)) * np.asarray(sd) / math.sqrt(n)
    return np.asarray(mean) - half, np.asarray(mean) + half


def paired_interval(diffs: Sequence[float] | np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(mean, low, high, raw p) of paired differences: the t-interval at two-sided `level` and the t-test.

    Degenerate cases get defined answers: n < 2 gives an infinite interval and p = 1 (no spread
    to judge by); all differences equal gives a zero-width interval, p = 1 when they are 0 and 0
    otherwise (the limit of a vanishing spread).
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"paired differences must be a non-empty finite 1-D array; got {d.tolist()}")
    mean = float(d.mean())
    if d.size < 2:
        return mean, -math.inf, math.inf, 1.0
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return mean, mean, mean, 1.0 if mean == 0.0 else 0.0
    low, high = t_interval(mean, sd, d.size, level)
    p = float(2.0 * sps.t.sf(abs(mean) / (sd / math.sqrt(d.size)), d.size - 1))
    return mean, float(low), float(high), p


def power(effect: float, sd: float, n: int, level: float) -> float:
    """Power of the two-sided paired t-test at `level` with n seeds against a true mean difference `effect`."""
    if n < 2:
        return 0.0
    if sd == 0.0:
        return 1.0 if effect != 0.0 else level
    df = n - 1
    crit = sps.t.isf(level / 2.0, df)
    nc = abs(effect) * math.sqrt(n) / sd
    # The lower tail as the upper tail of the mirrored statistic: scipy's nct.cdf far in the left
    # tail returns NaN where nct.sf of the mirror returns its (tiny) value.
    upper, lower = sps.nct.sf(crit, df, nc), sps.nct.sf(crit, df, -nc)
    return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0))


def min_detectable(sd: float, n: int, level: float, *, target: float = POWER) -> float:
    """Smallest |difference| the paired t-test at `level` detects with probability `target` at n seeds."""
    if n < 2:
        return math.inf
    if sd == 0.0:
        return 0.0
    hi = sd
    while power(hi, sd, n, level) < target:
        hi *= 2.0
    return float(optimize.brentq(lambda e: power(e, sd, n, level) - target, 0.0, hi, xtol=1e-12 * max(sd, 1e-300)))


def seeds_needed(sd: float, effect: float, level: float, *, target: float = POWER) -> int:
    """Fewest paired seeds at which the t-test at `level` has power `target` against `effect`."""
    if sd == 0.0:
        return 2
    lo, hi = 2, 2
    while power(effect, sd, hi, level) < target:
        lo, hi = hi, hi * 2
        if hi > _MAX_SEEDS_ESTIMATE:
            return _MAX_SEEDS_ESTIMATE
    while lo < hi:  # power grows with n: binary search for the first n that reaches the target
        mid = (lo + hi) // 2
        if power(effect, sd, mid, level) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def decide(
    low: np.ndarray | float, high: np.ndarray | float, *, reached: np.ndarray | bool, min_effect: float | None
) -> np.ndarray:
    """The decision from an interval (vectorised: the calibration simulation runs it over studies).

    Args:
        low, high: The interval of the mean paired difference.
        reached: Whether the seeds reached the first look (no verdict before it).
        min_effect: Half-width of the equivalence band; None: no equivalence verdict.

    Returns:
        An array of "different" | "equivalent" | "undecided".
    """
    low, high, reached = np.asarray(low), np.asarray(high), np.asarray(reached)
    different = reached & ((low > 0.0) | (high < 0.0))
    equivalent = reached & ~different
    if min_effect is None:
        equivalent = np.zeros_like(different)
    else:
        equivalent &= (low > -min_effect) & (high < min_effect)
    return np.where(different, DIFFERENT, np.where(equivalent, EQUIVALENT, UNDECIDED))


def judge(
    diffs: Sequence[float] | np.ndarray,
    design: SequentialDesign,
    *,
    min_effect: float | None = None,
    assess_power: bool = True,
) -> Verdict:
    """The verdict on one variant from its paired differences at the look their count belongs to.

    `assess_power=False` skips the MDE and seeds-needed estimates (NaN / None), which the decision
    does not use.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = int(d.size)
    level = design.level(n)
    mean, low, high, p = paired_interval(d, level)
    decision = str(decide(low, high, reached=n >= design.looks[0], min_effect=min_effect))
    mde, needed = math.nan, None
    if assess_power:
        sd = float(d.std(ddof=1)) if n > 1 else math.nan
        mde = min_detectable(sd, n, level) if n > 1 else math.inf
        if min_effect is not None and n > 1:
            needed = seeds_needed(sd, min_effect, design.final_level)
    p_corrected = min(1.0, p * design.alpha / level)
    return Verdict(decision, n, mean, low, high, level, p, p_corrected, mde, needed)


def judge_all(
    scores: Mapping[str, Mapping[int, float]],
    *,
    reference: str,
    design: SequentialDesign,
    min_effect: float | None = None,
) -> dict[str, Verdict]:
    """Every variant but the reference judged over the seeds it shares with the reference.

    A variant without any shared seed is left out (there is nothing to judge).
    """
    ref = scores[reference]
    out: dict[str, Verdict] = {}
    for name, by_seed in scores.items():
        if name == reference:
            continue
        common = sorted(by_seed.keys() & ref.keys())
        if common:
            diffs = np.array([by_seed[s] - ref[s] for s in common])  # (n,) variant - reference per seed
            out[name] = judge(diffs, design, min_effect=min_effect)
    return out
