"""How a batch of paired seeds of one variant becomes Ray trials, in either execution mode.

The ablation searcher decides which seeds of which variant run next (all of them at once, or a
few more per look); this module turns one such batch into Ray Tune trial configs and reads the
ablation trials back out of a Ray trial's result:

- `execution.mode: trial`: one Ray trial per seed, config `{__variant, __seed, __phase, **params}`;
- `execution.mode: fused`: the batch's seeds are members of one population (up to
  `execution.population` per Ray trial; `sweeps.fused.trial` trains them as one stacked model,
  each member on its own folds), config `{__members: [member config, ...]}` with the same
  member configs as trial mode gives its trials, so MLflow runs, params and summary rows match.

Re-tuning trials (`retune_config`) batch the other way round: one seed, up to
`execution.population` asked Optuna trials of one variant's study per population.

Ablation populations stop no member early (no `__rungs`): a pruned seed would break the pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.ablation.plan import PHASE_KEY, SEED_KEY, VARIANT_KEY
from sweeps.fused.members import MEMBERS_KEY, member_outcome, member_result, members_of
from sweeps.trainable.report import trial_outcome

__all__ = ["SeedOutcome", "ray_trials", "retune_config", "seed_batch", "seed_outcomes"]


@dataclass(frozen=True)
class SeedOutcome:
    """One ablation trial inside a Ray trial: its variant, seed and phase, outcome and metric value."""

    variant: str
    seed: int
    phase: str
    outcome: str  # ok | diverged | invalid | error | pruned (a population cut short)
    value: float | None


def seed_batch(
    variant: str, seeds: Sequence[int], phase: str, params: Mapping[str, Any], *, population: int | None
) -> list[dict[str, Any]]:
    """Ray trial configs of one batch of seeds of `variant` (population None: trial mode)."""
    configs = [{VARIANT_KEY: variant, SEED_KEY: int(s), PHASE_KEY: phase, **params} for s in seeds]
    if population is None:
        return configs
    return [{MEMBERS_KEY: configs[i : i + population]} for i in range(0, len(configs), population)]


def retune_config(
    variant: str, seed: int, phase: str, members: Sequence[Mapping[str, Any]], *, population: int | None
) -> dict[str, Any]:
    """One Ray trial of re-tuning on `seed`: one asked trial's params (trial mode), or a population
    of up to `population` asked trials (fused; their nuisance values differ, their seed does not)."""
    configs = [{VARIANT_KEY: variant, SEED_KEY: int(seed), PHASE_KEY: phase, **params} for params in members]
    if population is None:
        (config,) = configs
        return config
    return {MEMBERS_KEY: configs}


def ray_trials(seed_counts: Sequence[int], *, population: int | None) -> int:
    """Ray trials that batches of these sizes take (one batch: one variant's seeds of one look)."""
    if population is None:
        return sum(seed_counts)
    return sum(-(-n // population) for n in seed_counts)


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
