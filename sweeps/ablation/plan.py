"""The plan of an ablation sweep (`kind: ablation`): named variants x paired seeds, as one Ray Tune run.

Every variant runs on the same seeds, and a seed fixes both the model's initialisation and the
data folds (`seed` and `data.fold_seed`), so variant A on seed 3 and variant B on seed 3 see the same
splits of the one dataset the sweep loads (with its `data.seed`): their difference is a paired
measurement (`python -m analysis compare`). With `ablation.vary` a seed varies only one of the two
(the other stays at the base config's value), and `ablation.variance_seeds: k` adds k init seeds x
k split seeds, crossed, for the reference, whose spread `analysis.variance` splits into init, split
and residual parts.

Seeds are a fixed list (one look at the end) or adaptive (`seeds: {initial, max, step}`): after
`initial` seeds the verdicts are taken (`sweeps.ablation.verdicts`), and the reference and every
undecided variant get `step` more, until every variant is decided or `max` is reached; the looks'
levels come from `sweeps.ablation.sequential`.

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

from sweeps.spec.schema import AblationConfig, SweepSpec
from sweeps.tracking.names import ABLATION_SEED_PARAM, PHASE_PARAM, VARIANT_PARAM

if TYPE_CHECKING:  # the design needs SciPy: loaded where one is computed, not in every trial worker
    from sweeps.ablation.sequential import SequentialDesign

VARIANT_KEY, SEED_KEY, PHASE_KEY = "__variant", "__seed", "__phase"
INIT_KEY, SPLIT_KEY = "__init_seed", "__split_seed"  # the model and fold seeds, when not the paired seed


@dataclass(frozen=True)
class AblationPlan:
    """What an ablation runs: variants in order, seeds, looks, and re-tuning trials per variant.

    `seeds` lists every seed a variant may run; `looks` the seed counts at which verdicts are
    taken (one look at `len(seeds)` for a fixed list). `init_seed` / `split_seed`, when set, hold
    that source fixed instead of following the paired seed (`ablation.vary`).
    """

    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    retune_trials: int = 0
    metric: str = "val/weighted_f1"  # what re-tuning selects on (a validation metric)
    mode: str = "max"
    reference: str = ""
    verdict_metric: str = ""  # what looks and verdicts judge (the spec's report_metric); "" = metric
    looks: tuple[int, ...] = ()
    alpha: float = 0.05
    min_effect: float | None = None
    init_seed: int | None = None
    split_seed: int | None = None
    variance_seeds: int = 0

    def __post_init__(self) -> None:
        if not self.reference:
            object.__setattr__(self, "reference", self.variants[0])
        if not self.looks:
            object.__setattr__(self, "looks", (len(self.seeds),))

    @property
    def judged_metric(self) -> str:
        """The metric looks and verdicts judge: the held-out one when the sweep has a test split."""
        return self.verdict_metric or self.metric

    @property
    def total_trials(self) -> int:
        """The most trials the plan can run (an adaptive ablation usually stops before)."""
        return len(self.variants) * (self.retune_trials + self.looks[-1]) + self.variance_seeds**2

    @property
    def design(self) -> SequentialDesign:
        """Looks, alpha and the number of comparisons with the reference."""
        from sweeps.ablation.sequential import SequentialDesign

        return SequentialDesign(looks=self.looks, alpha=self.alpha, comparisons=max(1, len(self.variants) - 1))

    @property
    def adaptive(self) -> bool:
        return len(self.looks) > 1

    def seed_config(self, seed: int) -> dict[str, int]:
        """The trial-config keys of paired seed `seed` (the fixed init/split seeds, when fixed)."""
        out = {SEED_KEY: seed}
        if self.init_seed is not None:
            out[INIT_KEY] = self.init_seed
        if self.split_seed is not None:
            out[SPLIT_KEY] = self.split_seed
        return out


def ablation_overrides(config: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Dotted experiment overrides of an ablation trial: the variant's set, then its seed.

    Empty for a trial of a search sweep (no `__variant` key in its config).
    """
    if VARIANT_KEY not in config:
        return {}
    seed = int(config[SEED_KEY])
    init, split = int(config.get(INIT_KEY, seed)), int(config.get(SPLIT_KEY, seed))
    # The split seed picks the folds only (`data.fold_seed`): `data.seed` drew the dataset, its hidden
    # labels and its test split once for the whole sweep, and the trial's config keeps saying so.
    return {**variants[config[VARIANT_KEY]], "seed": init, "data.fold_seed": split}


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
    base = spec.base_config()
    return AblationPlan(
        variants=tuple(ablation.variants),
        seeds=ablation.seed_values(),
        retune_trials=retune,
        metric=spec.metric,
        mode=spec.mode,
        reference=ablation.reference,
        verdict_metric=spec.report_metric or spec.metric,
        looks=ablation.looks(),
        alpha=ablation.alpha,
        min_effect=ablation.min_effect,
        init_seed=None if ablation.vary.init else base.seed,
        split_seed=None if ablation.vary.split else base.data.split_seed,
        variance_seeds=ablation.variance_seeds,
    )


def design_of(ablation: AblationConfig) -> SequentialDesign:
    """The sequential design of an ablation section (what `analysis compare` judges with)."""
    from sweeps.ablation.sequential import SequentialDesign

    return SequentialDesign(
        looks=ablation.looks(), alpha=ablation.alpha, comparisons=max(1, len(ablation.variants) - 1)
    )
