"""The ablation's verdicts the CLI prints when the sweep ends, and why it stopped adding seeds.

The same verdicts the searcher took its looks with (`sweeps.ablation.verdicts`), from the eval
trials' final scores; `python -m analysis compare` adds the per-variant CIs, P(improvement) and
the MDE, read back from MLflow.
"""

from __future__ import annotations

import math
from typing import Any

from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY, AblationPlan
from sweeps.ablation.verdicts import DIFFERENT, EQUIVALENT, UNDECIDED, judge_all
from sweeps.tracking.names import EVAL_PHASE


def eval_scores(rows: list[Any], plan: AblationPlan) -> dict[str, dict[int, float]]:
    """variant -> seed -> metric of the finished eval trials (rows: `sweeps.execution.results.TrialRow`)."""
    scores: dict[str, dict[int, float]] = {v: {} for v in plan.variants}
    for row in rows:
        config = row.params
        value = row.reported if row.reported is not None else row.value
        if config.get(PHASE_KEY) != EVAL_PHASE or row.outcome != "ok" or value is None:
            continue
        scores.setdefault(str(config[VARIANT_KEY]), {})[int(config[SEED_KEY])] = float(value)
    return scores


def variant_summary(rows: list[Any], *, plan: AblationPlan) -> str:
    """Per variant: seeds, mean, paired difference with its interval, and the verdict; then the stop reason."""
    scores = eval_scores(rows, plan)
    ref = scores.get(plan.reference, {})
    verdicts = {}
    if ref:
        verdicts = judge_all(scores, reference=plan.reference, design=plan.design, min_effect=plan.min_effect)
    higher = plan.mode == "max"
    head = f"{'variant':<28} {'seeds':>5} {'mean':>8} {'diff':>8} {'interval of diff':>20}  verdict"
    lines = [f"ablation verdicts on {plan.judged_metric} (paired by seed against {plan.reference}):", head]
    for name in plan.variants:
        vals = list(scores.get(name, {}).values())
        mean = sum(vals) / len(vals) if vals else math.nan
        if name == plan.reference:
            lines.append(f"{name + ' (ref)':<28} {len(vals):>5} {mean:>8.4f}")
            continue
        v = verdicts.get(name)
        if v is None:
            lines.append(f"{name:<28} {len(vals):>5} {mean:>8.4f} {'':>8} {'':>20}  no seed paired with the reference")
            continue
        interval = f"[{v.ci_low:+.4f}, {v.ci_high:+.4f}]"
        words = v.words(higher_is_better=higher, min_effect=plan.min_effect)
        lines.append(f"{name:<28} {len(vals):>5} {mean:>8.4f} {v.diff_mean:>+8.4f} {interval:>20}  {words}")
    lines.append(stop_reason(verdicts, plan))
    return "\n".join(lines)


def stop_reason(verdicts: dict, plan: AblationPlan) -> str:
    """Why the ablation ran the seeds it ran."""
    counts = {d: sum(v.decision == d for v in verdicts.values()) for d in (DIFFERENT, EQUIVALENT, UNDECIDED)}
    tally = f"{counts[DIFFERENT]} different, {counts[EQUIVALENT]} equivalent, {counts[UNDECIDED]} undecided"
    if not counts[UNDECIDED]:
        return f"every variant decided ({tally})"
    more = [v.more_seeds for v in verdicts.values() if v.more_seeds is not None]
    hint = f"; about {max(more)} more paired seeds would settle them at 80% power" if more else ""
    if plan.min_effect is None:
        hint += " (set ablation.min_effect to allow 'equivalent' verdicts and seed estimates)"
    return f"stopped at the seed maximum ({plan.looks[-1]}): {tally}{hint}"
