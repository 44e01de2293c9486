"""Where the spread over seeds comes from: model initialisation, data split, or neither alone.

`ablation.variance_seeds: k` makes the reference variant run k init seeds x k split seeds,
crossed (phase `variance`). With one score per cell the two-way random-effects model
`y[i, j] = mu + a_i + b_j + e_ij` (a: init, b: split) is estimated by the ANOVA method of moments:

    var_init  = (MS_init  - MS_res) / k_split
    var_split = (MS_split - MS_res) / k_init
    var_res   = MS_res     (the init x split interaction and any other noise, inseparable here)

with negative estimates set to 0 (and said so). Bouthillier et al. (2021) find that both sources
matter for deep-learning benchmarks and that randomising more of them gives a truer picture of the
spread: this report tells whether the paired seeds of this ablation vary what varies. With k = 3
each component rests on 2 degrees of freedom: a rough split, not a precise one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of one metric over a crossed init x split design."""

    init_seeds: tuple[int, ...]
    split_seeds: tuple[int, ...]
    init: float
    split: float
    residual: float
    total_sd: float  # sd of all cells (what a seed that varies both sources sees)
    clipped: tuple[str, ...]  # components whose moment estimate was negative (set to 0)

    def shares(self) -> dict[str, float]:
        """Each component's share of their sum."""
        total = self.init + self.split + self.residual
        parts = {"init": self.init, "split": self.split, "residual": self.residual}
        return {k: (v / total if total > 0 else math.nan) for k, v in parts.items()}

    def to_text(self, metric: str) -> str:
        share = self.shares()
        df = (len(self.init_seeds) - 1, len(self.split_seeds) - 1)
        lines = [
            f"variance sources of {metric} (reference, {len(self.init_seeds)} init x {len(self.split_seeds)} split "
            f"seeds crossed; sd over all cells {self.total_sd:.4f}):",
            *(
                f"  {name:<9} sd {math.sqrt(value):.4f}  share {share[name]:.0%}"
                for name, value in (("init", self.init), ("split", self.split), ("residual", self.residual))
            ),
            f"  method of moments, two-way random effects without replication ({df[0]} and {df[1]} df for init "
            "and split); residual = init x split interaction + noise",
        ]
        if self.clipped:
            lines.append(f"  negative estimates set to 0: {', '.join(self.clipped)} (no spread beyond the residual)")
        return "\n".join(lines)


def variance_components(cells: Mapping[tuple[int, int], float]) -> VarianceComponents | None:
    """Init, split and residual variance from scores `cells[(init_seed, split_seed)]`.

    Only complete rows and columns enter (a failed cell drops its init seed); None when fewer
    than 2 x 2 complete cells remain.
    """
    inits = sorted({i for i, _ in cells})
    splits = sorted({j for _, j in cells})
    inits = [i for i in inits if all((i, j) in cells for j in splits)]
    if len(inits) < 2 or len(splits) < 2:
        return None
    y = np.array([[cells[(i, j)] for j in splits] for i in inits], dtype=np.float64)  # (a, b)
    a, b = y.shape
    grand = y.mean()
    row = y.mean(axis=1)  # (a,) per init seed
    col = y.mean(axis=0)  # (b,) per split seed
    ms_init = b * float(((row - grand) ** 2).sum()) / (a - 1)
    ms_split = a * float(((col - grand) ** 2).sum()) / (b - 1)
    resid = y - row[:, None] - col[None, :] + grand  # (a, b)
    ms_res = float((resid**2).sum()) / ((a - 1) * (b - 1))
    raw = {"init": (ms_init - ms_res) / b, "split": (ms_split - ms_res) / a}
    clipped = tuple(k for k, v in raw.items() if v < 0)
    return VarianceComponents(
        init_seeds=tuple(inits),
        split_seeds=tuple(splits),
        init=max(0.0, raw["init"]),
        split=max(0.0, raw["split"]),
        residual=ms_res,
        total_sd=float(y.std(ddof=1)),
        clipped=clipped,
    )
