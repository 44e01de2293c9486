"""The injected reporting channel between the recipe and whoever runs it.

The recipe calls the caller's report once per fine-tuning epoch: Ray Tune's `tune.report` in a
sweep, a progress printer on the CLI, a list append in tests. Returning True asks the recipe to
stop that trial (pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ReportFn"]

ReportFn = Callable[[Mapping[str, Any]], "bool | None"]
