"""How a batch of paired seeds of one variant becomes Ray trials, in either execution mode.

The ablation searcher decides which seeds of which variant run next (a look's new seeds); this
module turns one such batch into Ray Tune trial configs (`populations`) and reads the ablation
trials back out of a Ray trial's result (`seed_outcomes`):

- `execution.mode: trial`: one Ray trial per seed, config `{__variant, __seed, __phase, **params}`;
- `execution.mode: fused`: the batch's seeds are members of one population (up to
  `execution.population` per Ray trial; `sweeps.fused.trial` trains them as one stacked model,
  each member on its own folds), config `{__members: [member config, ...]}` with the same
  member configs as trial mode gives its trials, so MLflow runs, params and summary rows match.

Re-tuning trials batch the other way round: one seed, up to
`execution.population` asked Optuna trials of one variant's study per population.

Ablation populations stop no member early (no `__rungs`): a pruned seed would break the pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY, AblationPlan
from sweeps.fused.members import MEMBERS_KEY, member_outcome, member_result, members_of
from sweeps.trainable.report import trial_outcome

__all__ = ["SeedOutcome", "plan_ray_trials", "populations", "ray_trials", "seed_outcomes"]


@dataclass(frozen=True)
class SeedOutcome:
    """One ablation trial inside a Ray trial: its variant, seed and phase, outcome and metric value."""

    variant: str
    seed: int
    phase: str
    outcome: str  # ok | diverged | invalid | error | pruned (a population cut short)
    value: float | None


def populations(configs: Sequence[Mapping[str, Any]], *, population: int | None) -> list[dict[str, Any]]:
    """Ray trial configs of one batch of ablation trials (population None: trial mode, one Ray
    trial each; else populations of up to `population` members, in order)."""
    if population is None:
        return [dict(c) for c in configs]
    members = [dict(c) for c in configs]
    return [{MEMBERS_KEY: members[i : i + population]} for i in range(0, len(members), population)]


def ray_trials(seed_counts: Sequence[int], *, population: int | None) -> int:
    """Ray trials that batches of these sizes take (one batch: one variant's seeds of one look)."""
    if population is None:
        return sum(seed_counts)
    return sum(-(-n // population) for n in seed_counts)


def plan_ray_trials(plan: AblationPlan, *, population: int | None) -> int:
    """The most Ray trials an ablation can take (an adaptive one usually stops before): each
    variant's re-tuning trials, each look's new seeds per variant, and the variance design."""
    looks = [plan.looks[0], *(b - a for a, b in zip(plan.looks, plan.looks[1:], strict=False))]
    per_variant = sum(ray_trials([n] * len(plan.variants), population=population) for n in [plan.retune_trials, *looks])
    return per_variant + ray_trials([plan.variance_seeds**2], population=population)


def seed_outcomes(
    config: Mapping[str, Any], result: Mapping[str, Any] | None, *, metric: str, errored: bool = False
) -> list[SeedOutcome]:
    """Each ablation trial of a finished Ray trial (one seed, or every member of a population)."""
    members = members_of(config)
    if members is None:
        value = None if errored or not result else result.get(metric)
        units = [(config, trial_outcome(result, errored=errored), value)]
    else:
        units = []
        for i, params in enumerate(members):
            outcome = member_outcome(result, i, errored=errored)
            units.append((params, outcome, None if errored else member_result(result, i).get(metric)))
    return [
        SeedOutcome(str(c[VARIANT_KEY]), int(c[SEED_KEY]), str(c[PHASE_KEY]), outcome, _float(value))
        for c, outcome, value in units
    ]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
