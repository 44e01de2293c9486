"""Boundary hits: the best trial sits at an edge of a searched range, so the optimum may lie outside it.

A range param whose best value is within `tolerance` (a fraction of the range, measured in the
param's own scale: log10 for log params) of `low` or `high` is flagged. When that edge is also the
config field's own limit (`model.dropout >= 0`), widening is impossible and the message says so
instead of advising it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mer_core.errors import ConfigError
from sweeps.space import SearchSpace
from sweeps.space.params import Param, field_info

DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class BoundaryHit:
    """One range param whose best value is at an edge of the searched range.

    Attributes:
        param: Dotted param name.
        value: The best trial's value.
        edge: "lower" or "upper".
        bound: The range's edge (`low` or `high`).
        at_field_limit: The edge is also the config field's own limit, so the range cannot widen.
    """

    param: str
    value: float
    edge: Literal["lower", "upper"]
    bound: float
    at_field_limit: bool = False

    def message(self) -> str:
        """One line for the report, e.g. `optim.lr: best 0.0098 is at the upper edge 0.01 of the range: widen it`."""
        where = f"{self.param}: best {_num(self.value)} is at the {self.edge} edge {_num(self.bound)} of the range"
        if self.at_field_limit:
            return f"{where}, which is also the field's limit: the optimum is the limit itself"
        return f"{where}: widen it"


def position(param: Param, value: float) -> float:
    """Where `value` lies in the param's range: 0 at `low`, 1 at `high`, in log10 for log params."""
    low, high, x = float(param.low), float(param.high), float(value)  # type: ignore[arg-type]
    if param.log:
        low, high, x = math.log10(low), math.log10(high), math.log10(max(x, 1e-300))
    return (x - low) / (high - low)


def boundary_hit(param: Param, value: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> BoundaryHit | None:
    """The hit of one param's best value, or None (categorical/fixed params, values inside the range).

    Raises:
        ValueError: `tolerance` is not in [0, 0.5).
    """
    if not 0.0 <= tolerance < 0.5:
        raise ValueError(f"tolerance must be in [0, 0.5); got {tolerance}")
    if param.kind not in ("float", "int") or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    pos = position(param, value)
    if pos <= tolerance:
        edge, bound = "lower", float(param.low)  # type: ignore[arg-type]
    elif pos >= 1.0 - tolerance:
        edge, bound = "upper", float(param.high)  # type: ignore[arg-type]
    else:
        return None
    return BoundaryHit(param.name, float(value), edge, bound, _at_field_limit(param.name, edge, bound))


def boundary_hits(
    space: SearchSpace, best_params: Mapping[str, Any], *, tolerance: float = DEFAULT_TOLERANCE
) -> list[BoundaryHit]:
    """Hits of the best trial over every range param of `space` that the trial used (active)."""
    hits = []
    for p in space.params:
        if p.name in best_params:
            hit = boundary_hit(p, best_params[p.name], tolerance=tolerance)
            if hit is not None:
                hits.append(hit)
    return hits


def _at_field_limit(name: str, edge: str, bound: float) -> bool:
    """Whether the config field itself stops at `bound` (ge/gt for the lower edge, le/lt for the upper)."""
    try:
        _, meta = field_info(name, f"params.{name}")
    except ConfigError:  # a field renamed since the sweep ran: no limit known, so advise widening
        return False
    keys = ("ge", "gt") if edge == "lower" else ("le", "lt")
    return any(meta.get(k) is not None and math.isclose(float(meta[k]), bound, abs_tol=1e-12) for k in keys)


def _num(x: float) -> str:
    return f"{x:.3g}"
