"""Ablation sweeps (`kind: ablation`): named variants x paired seeds, as one Ray Tune run.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec

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
        "ablation.variant": config[VARIANT_KEY],
        "ablation.seed": int(config[SEED_KEY]),
        "ablation.phase": config[PHASE_KEY],
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


SPLIT_KEYS = ("data.folds", "data.val_fraction")  # data fields a trial applies itself (the rest load once)


def check_variant_keys(name: str, overrides: Mapping[str, Any]) -> None:
    """Variants may not set the seed (the ablation pairs seeds) or change how data loads (once per sweep)."""
    from mer_core.errors import ConfigError

    for key in overrides:
        if key in ("seed", "data.seed"):
            raise ConfigError(
                f"ablation.variants.{name}.{key}", "use ablation.seeds", overrides[key], "seeds are paired"
            )
        if key.startswith("data.") and key not in SPLIT_KEYS:
            allowed = f"{', '.join(SPLIT_KEYS)} (the data loads once per sweep; set others in the sweep's data)"
            raise ConfigError(f"ablation.variants.{name}.{key}", allowed, overrides[key], "not a per-variant field")


def variant_summary(rows: list[Any], *, metric: str, reference: str) -> str:
    """Mean ± sd of the metric per variant over its eval trials (the quick look; `analysis compare`
    gives the confidence intervals and paired tests)."""
    import numpy as np

    values: dict[str, list[float]] = {}
    for row in rows:
        config = row.params
        if config.get(PHASE_KEY) != "eval" or row.outcome != "ok" or row.value is None:
            continue
        values.setdefault(str(config[VARIANT_KEY]), []).append(float(row.value))
    lines = [f"{'variant':<24} {'n':>3} {metric + ' mean':>24} {'sd':>8}"]
    for name in sorted(values, key=lambda v: (v != reference, v)):
        vals = np.asarray(values[name])
        sd = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        mark = " (reference)" if name == reference else ""
        lines.append(f"{name + mark:<24} {len(vals):>3} {vals.mean():>24.4f} {sd:>8.4f}")
    return "\n".join(lines)
