"""The quick look at an ablation's results the CLI prints: mean ± sd of the metric per variant.

`python -m analysis compare` gives the confidence intervals and the paired tests.
"""

from __future__ import annotations

from typing import Any

from sweeps.ablation.plan import PHASE_KEY, VARIANT_KEY
from sweeps.tracking.names import EVAL_PHASE


def variant_summary(rows: list[Any], *, metric: str, reference: str) -> str:
    """Mean ± sd of the metric per variant over its eval trials (the quick look; `analysis compare`
    gives the confidence intervals and paired tests). `metric` is the sweep's report_metric, which
    each row carries as `reported` (the held-out test score with a test split)."""
    import numpy as np

    values: dict[str, list[float]] = {}
    for row in rows:
        config = row.params
        value = row.reported if row.reported is not None else row.value
        if config.get(PHASE_KEY) != EVAL_PHASE or row.outcome != "ok" or value is None:
            continue
        values.setdefault(str(config[VARIANT_KEY]), []).append(float(value))
    lines = [f"{'variant':<24} {'n':>3} {metric + ' mean':>24} {'sd':>8}"]
    for name in sorted(values, key=lambda v: (v != reference, v)):
        vals = np.asarray(values[name])
        sd = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        mark = " (reference)" if name == reference else ""
        lines.append(f"{name + mark:<24} {len(vals):>3} {vals.mean():>24.4f} {sd:>8.4f}")
    return "\n".join(lines)
