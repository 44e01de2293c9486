"""Group-sequential boundaries of an adaptive ablation: how strict each look at the seeds must be.

An adaptive ablation (`ablation.seeds: {initial, max, step}`) looks at the paired differences after
`initial` seeds, then after every `step` more, up to `max`. Testing at every look with the plain
level would inflate the false-positive rate (each look is another chance to cross by luck), so
each look gets a *nominal* level that spends the error budget a little at a time:

- across variants: Bonferroni, `alpha / m` for each of the m variants compared with the reference
  (valid whatever the correlation between variants; they share the reference's seeds);
- across looks: the Lan-DeMets spending function of O'Brien-Fleming type,
  `spent(t) = 2 - 2 Phi(z_{1 - a/2} / sqrt(t))` with `t = n / max` the fraction of seeds seen
  (Lan and DeMets 1983). It spends almost nothing at the first looks and keeps the last look's
  level close to the single-look one, so running to the maximum costs little power.

The boundaries `c_k` are exact for a z-statistic (Brownian motion at information `n_k`), found by
recursive numerical integration of the density of the running sum over the continuation region
(Armitage, McPherson and Rowe 1969). The paired t-test at look k then uses the nominal level
`2 (1 - Phi(c_k))` with its own `n_k - 1` degrees of freedom, the usual way to carry z boundaries
to an unknown variance; `sweeps.ablation.calibration` checks by simulation that the whole
procedure keeps its family-wise error at `alpha`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

_GRID = 1201  # points of the running-sum grid per look; the crossing probabilities converge well before


@dataclass(frozen=True)
class SequentialDesign:
    """Looks (paired seeds seen at each) and the family-wise level of an ablation's verdicts.

    Attributes:
        looks: Strictly increasing seed counts at which verdicts are taken; one look = a fixed design.
        alpha: Family-wise two-sided error over all variants and looks.
        comparisons: Variants compared with the reference (the Bonferroni divisor), >= 1.
    """

    looks: tuple[int, ...]
    alpha: float = 0.05
    comparisons: int = 1

    def __post_init__(self) -> None:
        if not self.looks or any(b <= a for a, b in zip(self.looks, self.looks[1:], strict=False)) or self.looks[0] < 1:
            raise ValueError(f"looks must be strictly increasing seed counts >= 1; got {self.looks}")
        if not 0.0 < self.alpha < 1.0 or self.comparisons < 1:
            raise ValueError(f"need 0 < alpha < 1 and comparisons >= 1; got {self.alpha}, {self.comparisons}")

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def look_index(self, n: int) -> int:
        """The look a verdict over `n` paired seeds belongs to: the last planned look with at most
        n seeds (a failed seed leaves n between looks); 0 before the first look."""
        return max(0, sum(1 for k in self.looks if k <= n) - 1)

    def level(self, n: int) -> float:
        """Nominal two-sided level of one variant's test over `n` paired seeds (both corrections in)."""
        return nominal_levels(self.looks, self.alpha / self.comparisons)[self.look_index(n)]

    @property
    def final_level(self) -> float:
        """The nominal level of the last look: what the seeds-needed estimate plans with."""
        return nominal_levels(self.looks, self.alpha / self.comparisons)[-1]


def obf_spending(t: float, alpha: float) -> float:
    """Error spent by information fraction t in (0, 1] (Lan-DeMets, O'Brien-Fleming type)."""
    return float(2.0 * sps.norm.sf(sps.norm.isf(alpha / 2.0) / math.sqrt(t)))


@functools.lru_cache(maxsize=256)
def nominal_levels(looks: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """Nominal two-sided level of each look, spending `alpha` with `obf_spending`.

    Pure function of its arguments (cached: the searcher asks at every look).
    """
    n_max = looks[-1]
    spent = [obf_spending(n / n_max, alpha) for n in looks]
    increments = np.diff([0.0, *spent])  # (K,) error to spend at each look
    levels = [float(increments[0])]
    bound = sps.norm.isf(increments[0] / 2.0) * math.sqrt(looks[0])  # on the running-sum scale
    grid = np.linspace(-bound, bound, _GRID)  # (G,)
    density = sps.norm.pdf(grid, scale=math.sqrt(looks[0]))  # (G,) running sum, not yet stopped
    for k in range(1, len(looks)):
        step_sd = math.sqrt(looks[k] - looks[k - 1])

        target = float(increments[k])

        def excess(b: float, grid: np.ndarray = grid, density: np.ndarray = density, sd: float = step_sd) -> float:
            """P(not stopped before, outside +-b now) minus the error to spend at this look."""
            outside = sps.norm.cdf((-b - grid) / sd) + sps.norm.sf((b - grid) / sd)  # (G,)
            return float(np.trapezoid(density * outside, grid)) - target  # noqa: B023 (called in this iteration)

        top = 40.0 * math.sqrt(looks[k])
        bound = top if excess(top) >= 0.0 else optimize.brentq(excess, 1e-9, top, xtol=1e-10)
        z = bound / math.sqrt(looks[k])
        levels.append(float(2.0 * sps.norm.sf(z)))
        new_grid = np.linspace(-bound, bound, _GRID)  # (G',)
        kernel = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / step_sd) / step_sd  # (G', G)
        density = np.trapezoid(kernel * density[None, :], grid, axis=1)  # (G',)
        grid = new_grid
    return tuple(levels)
