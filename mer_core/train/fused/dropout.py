"""Per-member dropout rates inside one vmapped forward.

`nn.Dropout` and `F.dropout` take the rate as a Python float, so under `vmap` every member
would share the template module's rate. When members' rates differ, the template is built
with a marker rate per config field (`model.dropout`, `model.head_dropout`) and, during the
member forward, this torch-function mode turns each `F.dropout` call at a marker rate into
inverted dropout at the member's own rate, a 0-d tensor that vmap batches over members.

The draws come from the global generator with `vmap(randomness="different")`, so they are not
the single-trial run's draws: with a rate above zero a member trains like its single run in
distribution only. A rate of exactly 0 keeps every unit (`rand >= 0`) and scales by 1, so such
a member is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["MemberDropout", "marker_rates"]

# Rates only used to mark which config field a dropout call belongs to (never trained with).
_MARKERS = (0.4375, 0.3125, 0.1875, 0.0625, 0.5625, 0.6875)


def marker_rates(values: Mapping[str, Iterable[float]]) -> dict[str, float | None]:
    """The template rate of each dropout field: the common value, or a marker when members differ.

    Args:
        values: field (`model.dropout`, `model.head_dropout`) -> the members' rates.

    Returns:
        field -> marker rate when the members differ, else None (the common value is used
        as is and the mode is not needed for that field).
    """
    used = {float(v) for vs in values.values() for v in vs}
    free = iter(m for m in _MARKERS if m not in used)
    return {field: (next(free) if len({float(v) for v in vs}) > 1 else None) for field, vs in values.items()}


class MemberDropout(TorchFunctionMode):
    """Replace `F.dropout(x, marker)` by inverted dropout at the member's rate (a 0-d tensor)."""

    def __init__(self, rates: Mapping[float, Tensor]) -> None:
        """Builds the mode.

        Args:
            rates: marker rate -> this member's rate (0-d; batched over members under vmap).
        """
        super().__init__()
        self.rates = dict(rates)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            x = args[0] if args else kwargs["input"]
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            training = args[2] if len(args) > 2 else kwargs.get("training", True)
            rate = self.rates.get(float(p))
            if rate is not None:
                return _dropout(x, rate) if training else x
        return func(*args, **kwargs)


def _dropout(x: Tensor, rate: Tensor) -> Tensor:
    # Keep with probability 1 - rate, scale by 1 / (1 - rate): nn.Dropout's distribution.
    keep = torch.rand_like(x) >= rate  # same shape as x
    return x * keep / (1 - rate)
