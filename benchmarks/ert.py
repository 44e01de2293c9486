"""Expected running time (ERT) of a search arm over seeds, and a bootstrap interval of a ratio of two ERTs.

Shared by both search benchmarks (`search_efficiency` on real data, `search_mf` on MF-Hartmann6):
each seed of an arm gives the trial-epochs it spent until it first reached the target (inf if it
never did) and the trial-epochs it spent in all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

Seed = tuple[float, float]  # (trial-epochs to the target, inf if never reached; trial-epochs spent in all)


def expected_epochs(to_target: Iterable[float], spent: Iterable[float]) -> float:
    """Expected trial-epochs to reach the target (ERT, as in the COCO benchmarking platform).

    All epochs the arm spent over its seeds, counting a failed seed's whole budget and a successful seed's epochs
    up to its hit, divided by the number of successful seeds. Unlike a median it stays finite whenever any seed
    reached the target, so a finite budget does not turn the comparison into nan; inf when no seed did.
    """
    pairs = list(zip(to_target, spent, strict=True))
    hits = sum(math.isfinite(t) for t, _ in pairs)
    if hits == 0:
        return math.inf
    return sum(t if math.isfinite(t) else s for t, s in pairs) / hits


def ert_of(seeds: Sequence[Seed]) -> float:
    """`expected_epochs` of (to_target, spent) pairs."""
    return expected_epochs((t for t, _ in seeds), (s for _, s in seeds))


def ratio(a: float, b: float) -> float:
    """ERT a ÷ ERT b where inf means "never reached": 0 if only b is inf, inf if only a is, nan if both are."""
    if math.isinf(a) and math.isinf(b):
        return math.nan
    if math.isinf(b):
        return 0.0
    if math.isinf(a):
        return math.inf
    return a / b if b > 0 else math.nan  # b == 0 only if the target was met before any epoch


def ratio_interval(
    arm: Sequence[Seed], base: Sequence[Seed], *, level: float = 0.90, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A percentile-bootstrap interval of ERT(arm) ÷ ERT(base), resampling each arm's seeds independently.

    Quantiles without interpolation (`inverted_cdf`): resampled ratios may be inf or 0, and an interpolated
    quantile between a finite value and inf means nothing. Resamples where neither arm reached the target
    (nan) are dropped; if all are, the interval is (nan, nan).
    """
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(draws):
        a = [arm[i] for i in rng.integers(len(arm), size=len(arm))]
        b = [base[i] for i in rng.integers(len(base), size=len(base))]
        r = ratio(ert_of(a), ert_of(b))
        if not math.isnan(r):
            ratios.append(r)
    if not ratios:
        return math.nan, math.nan
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail], method="inverted_cdf")
    return float(lo), float(hi)
