"""The plan of an ablation sweep (`kind: ablation`): named variants x paired seeds, as one Ray Tune run.

Every variant runs on the same seeds, and a seed fixes both the model's initialisation and the
data folds (`seed` and `data.seed`), so variant A on seed 3 and variant B on seed 3 see the same
splits: their difference is a paired measurement (`python -m analysis compare`).

Optional re-tuning (`ablation.retune`) follows the tuning playbook's rule that arms are compared
each at its best nuisance setting: for every variant, `retune.num_samples` trials on the first
seed search the nuisance space with its own Optuna study; once they have all ended, that
variant's measured ("eval") trials run on every seed with the best nuisance values found.
Selecting on the first seed biases its own eval run upwards, equally for every variant.

Trials are never stopped early here: a pruned seed would leave a hole in the pairing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweeps.spec.schema import SweepSpec
from sweeps.tracking.names import ABLATION_SEED_PARAM, PHASE_PARAM, VARIANT_PARAM

VARIANT_KEY, SEED_KEY, PHASE_KEY = "__variant", "__seed", "__phase"


@dataclass(frozen=True)
class AblationPlan:
    """What an ablation runs: variants in order, seeds, and re-tuning trials per variant."""

    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    retune_trials: int = 0
    metric: str = "val/weighted_f1"
    mode: str = "max"

    @property
    def total_trials(self) -> int:
        return len(self.variants) * (self.retune_trials + len(self.seeds))


def ablation_overrides(config: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Dotted experiment overrides of an ablation trial: the variant's set, then its seed.

    Empty for a trial of a search sweep (no `__variant` key in its config).
    """
    if VARIANT_KEY not in config:
        return {}
    seed = int(config[SEED_KEY])
    return {**variants[config[VARIANT_KEY]], "seed": seed, "data.seed": seed}


def ablation_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The MLflow params that identify an ablation trial (variant, seed, phase)."""
    if VARIANT_KEY not in config:
        return {}
    return {
        VARIANT_PARAM: config[VARIANT_KEY],
        ABLATION_SEED_PARAM: int(config[SEED_KEY]),
        PHASE_PARAM: config[PHASE_KEY],
    }


def ablation_plan(spec: SweepSpec) -> AblationPlan | None:
    """The plan of an ablation sweep; None for a search."""
    if spec.kind != "ablation" or spec.ablation is None:
        return None
    ablation = spec.ablation
    retune = ablation.retune.num_samples if ablation.retune.search_space else 0
    return AblationPlan(
        variants=tuple(ablation.variants),
        seeds=tuple(ablation.seeds),
        retune_trials=retune,
        metric=spec.metric,
        mode=spec.mode,
    )
