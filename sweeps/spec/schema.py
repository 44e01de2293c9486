"""The sweep spec: one frozen, validated description of a sweep YAML (`sweeps/<name>.yaml`).

    name: quickstart                      # names runs/<name>/ and the MLflow experiment
    kind: search                          # search | ablation
    base: mer_core/configs/mrccl.yaml     # experiment YAML; null = built-in defaults
    set: {optim.max_epochs: 30}           # dotted experiment overrides
    data: {source: uci-mfeat, folds: 1}   # merged over base's data section
    search_space: search_spaces/quick.yaml
    search: {algorithm: tpe, num_samples: 20, seed: 0, n_startup_trials: 5}
    scheduler: {kind: asha, grace_period: 3, max_t: 30, reduction_factor: 3, brackets: null}
    metric: val/weighted_f1               # selects: searcher, scheduler, best_config.yaml (never test/)
    report_metric: null                   # reports: verdicts, compare, export-best's score; null = test/<metric>
    mode: max
    resources: {cpu: 1, gpu: 0, max_concurrent: 2}
    tracking: {uri: null, experiment: null, report: true}
    time_budget_s: null
    execution: {mode: trial, population: 8}
    objective: {name: mrccl}              # bookkeeping: a benchmark's sleeping trial (trial_s, report_every_s)
    ablation: {reference: full, variants: {full: {}, no_nee: {nee.enabled: false}}, seeds: [0, 1, 2]}
    #   adaptive: seeds: {initial: 3, max: 10}, min_effect: 0.01, alpha: 0.05, vary: {init: true, split: true}

The dataclasses here hold and check each field on its own; `sweeps.spec.load.load_sweep` is the one
boundary that builds them: it validates every field, resolves the files, builds the experiment
config of the base and of every ablation variant, and compiles the search spaces, so a spec it
returns is known to run (as far as configuration goes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from mer_core.configs.fields import FrozenDict, fld, to_dict
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from sweeps.space import SearchSpace, load_space
from sweeps.space.window import BEST_KEPT
from sweeps.spec.experiment import build_experiment, experiment_overrides
from sweeps.tracking.uri import redact

METRICS = ("val/weighted_f1", "val/accuracy", "val/macro_f1", "val/loss")  # what `metric` may select on
# What `report_metric` may name: a selection metric, or its score on the held-out test split.
REPORT_METRICS = (*METRICS, *(f"test/{m.partition('/')[2]}" for m in METRICS))
# Random start-up trials of the default search, chosen by `python -m benchmarks search_mf` (RESULTS.md:
# at 2 trials at a time, 5 start-up trials cost 0.15x random search's trial-epochs, 10 cost 0.27x, 20 0.37x).
STARTUP_TRIALS = 5
# Finished trials TPE's model sees at most (`sweeps.space.window`): an ask over 1,000 trials stays
# within a few ms on the driver, where the whole history of 10,000 costs ~10x that
# (`python -m benchmarks scale`, RESULTS.md); sweeps of up to 1,000 trials are not changed by it.
HISTORY = 1000
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # not only dots: '..' is a path
NAME_RULE = "[A-Za-z0-9_.-]+, not only dots"  # names runs/<name>/: '.' or '..' would be runs/ or the cwd


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class StudySource:
    """An Optuna study by storage URL and name (`search.warm_start: {storage: URL, study: NAME}`)."""

    storage: str = fld("", doc="SQLAlchemy URL of the earlier study's storage")
    study: str = fld("", doc="the earlier study's name (a sweep's study is named after the sweep)")

    def check(self, prefix: str) -> None:
        for name in ("storage", "study"):
            if not getattr(self, name):
                raise ConfigError(_join(prefix, name), "a non-empty string", getattr(self, name), "required")


@dataclass(frozen=True)
class SearchConfig:
    algorithm: Literal["tpe", "bohb", "qmc", "random", "cmaes", "grid"] = "tpe"
    num_samples: int = fld(20, ge=1, doc="trials to run (for grid: at most the grid size)")
    seed: int = fld(0, ge=0, doc="seed of the sampler itself")
    n_startup_trials: int | None = fld(
        None, ge=0, doc="random trials before TPE / CMA-ES model; null = max(STARTUP_TRIALS, trials proposed at once)"
    )
    history: int | None = fld(
        HISTORY,
        ge=BEST_KEPT,
        doc="tpe/bohb: past this many finished trials the model sees the best 25 and the most recent ones; null: all",
    )
    storage: str | None = fld(None, doc="Optuna RDB storage URL of the sweep's study; null: runs/<sweep>/optuna.db")
    warm_start: str | StudySource | None = fld(
        None, doc="earlier sweep folder, or {storage, study}: its trials that fit this space seed the study"
    )


# The default early stopping: the median stopping rule from the 3rd result on, chosen leave-one-task-out by
# `python -m benchmarks search_replay` on recorded real learning curves (RESULTS.md, section `search_replay`:
# with TPE it was the best arm over all three uci-mfeat tasks; TPE + ASHA from the 1st result cost up to 3.6x
# random search's epochs there). A fused search that names no kind gets FUSED_SCHEDULER_KIND instead
# (`sweeps.spec.load`): fused populations stop members by ASHA's rule only (`sweeps.fused.rungs`).
DEFAULT_SCHEDULER_KIND = "median"
FUSED_SCHEDULER_KIND = "asha"
# Results before any rule may stop a trial: on those curves ASHA and the median rule each reached the target
# with fewer epochs judging from the 3rd result than from the 1st, on every task.
GRACE_PERIOD = 3


@dataclass(frozen=True)
class SchedulerConfig:
    kind: Literal["asha", "hyperband", "median", "forecast", "none"] = fld(
        DEFAULT_SCHEDULER_KIND, doc="median; a fused search that names no kind: asha (the rule fused mode runs)"
    )
    grace_period: int = fld(GRACE_PERIOD, ge=1, doc="results every trial reports before it can be stopped")
    max_t: int | None = fld(None, ge=1, doc="ASHA's top rung in reported results; null = the longest trial")
    reduction_factor: float = fld(3.0, gt=1.0)
    brackets: int | None = fld(
        None, ge=1, doc="hyperband: brackets, bracket s first cuts at grace_period * rf**s; null = every bracket"
    )
    margin_sd: float = fld(
        2.0,
        ge=0.0,
        doc="forecast: stop a trial when its optimistic forecast plus this many measured noise standard "
        "deviations is below the best finished value",
    )

    def check(self, prefix: str) -> None:
        if self.max_t is not None and self.max_t < self.grace_period:
            allowed = f">= grace_period ({self.grace_period})"
            raise ConfigError(_join(prefix, "max_t"), allowed, self.max_t, "out of range")
        if self.brackets is not None and self.kind != "hyperband" and not (self.kind == "asha" and self.brackets == 1):
            allowed = "null (or 1 with kind: asha; several brackets need kind: hyperband)"
            raise ConfigError(_join(prefix, "brackets"), allowed, self.brackets, f"not used by kind={self.kind}")


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = fld(1.0, ge=0.0, doc="CPUs per trial (fractions allowed)")
    gpu: float = fld(0.0, ge=0.0, doc="GPUs per trial (fractions allowed: several trials share a GPU)")
    max_concurrent: int = fld(1, ge=1, doc="trials running at once")
    max_retries: int = fld(2, ge=0, doc="reruns (from scratch) of a trial that raised or lost its node")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = fld(None, doc="null: $MLFLOW_TRACKING_URI, else the local store")
    experiment: str | None = fld(None, doc="MLflow experiment; null: the sweep name")
    report: bool = fld(
        True, doc="write the HTML report at the sweep's end (runs/<sweep>/report/ and the parent run); false: later"
    )


@dataclass(frozen=True)
class ExecutionConfig:
    mode: Literal["trial", "fused"] = "trial"
    population: int | Literal["auto"] = fld(
        8, ge=1, doc="fused mode: trials trained together as one population; auto: sized by a short probe here"
    )


@dataclass(frozen=True)
class ObjectiveConfig:
    """What one trial runs (`sweeps.trainable.objectives`): MR-CCL training, or a benchmark's stand-in."""

    name: str = fld("mrccl", doc="mrccl: train the experiment config; bookkeeping: sleep and report (benchmarks)")
    trial_s: float = fld(1.0, gt=0.0, doc="bookkeeping: seconds one trial lasts")
    report_every_s: float = fld(1.0, gt=0.0, doc="bookkeeping: seconds between a trial's reports")

    def reports(self) -> int:
        """Results a bookkeeping trial reports: one per `report_every_s` of its `trial_s` (at least one)."""
        return max(1, round(self.trial_s / self.report_every_s))


@dataclass(frozen=True)
class RetuneConfig:
    search_space: str | None = fld(None, doc="nuisance space re-tuned per variant")
    num_samples: int = fld(0, ge=0, doc="re-tuning trials per variant; 0 = none")

    def check(self, prefix: str) -> None:
        if self.num_samples > 0 and self.search_space is None:
            where = _join(prefix, "search_space")
            raise ConfigError(where, "a search-space file", None, "required when num_samples > 0")


@dataclass(frozen=True)
class SeedSchedule:
    """Adaptive paired seeds: `initial` first, then `step` more per look while a variant is undecided."""

    initial: int = fld(3, ge=2, doc="paired seeds every variant runs before the first look")
    max: int = fld(10, ge=2, doc="most paired seeds a variant runs")
    step: int = fld(1, ge=1, doc="paired seeds added per look")
    start: int = fld(0, ge=0, doc="the first seed value; seeds are start, start+1, ...")

    def check(self, prefix: str) -> None:
        if self.max < self.initial:
            raise ConfigError(_join(prefix, "max"), f">= initial ({self.initial})", self.max, "out of range")

    def looks(self) -> tuple[int, ...]:
        """Seed counts at which verdicts are taken: initial, initial+step, ..., max."""
        return (*range(self.initial, self.max, self.step), self.max)


@dataclass(frozen=True)
class VaryConfig:
    """Which sources of randomness a paired seed varies (the others stay at the base config's seeds)."""

    init: bool = fld(True, doc="model initialisation, batch order and noise (`seed`)")
    split: bool = fld(True, doc="the cross-validation folds / validation split (`data.fold_seed`)")

    def check(self, prefix: str) -> None:
        if not (self.init or self.split):
            raise ConfigError(prefix or "vary", "init and/or split true", to_dict(self), "a seed must vary something")


@dataclass(frozen=True)
class AblationConfig:
    reference: str = fld("full", doc="the variant the others are compared with")
    variants: FrozenDict[str, FrozenDict[str, Any]] = field(default_factory=FrozenDict)  # name -> dotted overrides
    # A list: a fixed design (every variant runs every seed, one look); a mapping (SeedSchedule):
    # adaptive paired seeds, added while a variant is undecided (`sweeps.ablation.sequential`).
    seeds: tuple[int, ...] | SeedSchedule = (0, 1, 2, 3, 4)
    # The smallest difference that matters, in metric units: enables "equivalent within ±min_effect"
    # and the seeds-needed estimate; null: verdicts are only "different" or "undecided".
    min_effect: float | None = fld(None, gt=0.0, doc="smallest difference that matters (metric units)")
    alpha: float = fld(0.05, gt=0.0, lt=1.0, doc="family-wise error over all variants and looks")
    vary: VaryConfig = field(default_factory=VaryConfig)
    variance_seeds: int = fld(0, ge=0, doc="k >= 2: the reference also runs k init x k split seeds, crossed")
    retune: RetuneConfig = field(default_factory=RetuneConfig)

    def check(self, prefix: str) -> None:
        where = _join(prefix, "variants")
        if not self.variants:
            raise ConfigError(where, "at least one named override set", {}, "empty")
        for name in self.variants:
            if not NAME_PATTERN.fullmatch(name):
                raise ConfigError(f"{where}.{name}", f"names of {NAME_RULE}", name, "bad variant name")
        if self.reference not in self.variants:
            raise ConfigError(_join(prefix, "reference"), ", ".join(self.variants), self.reference, "not a variant")
        if isinstance(self.seeds, tuple):
            if not self.seeds:
                raise ConfigError(_join(prefix, "seeds"), "at least one seed", [], "empty")
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(_join(prefix, "seeds"), "distinct seeds", list(self.seeds), "duplicate seed")
            for i, seed in enumerate(self.seeds):
                if seed < 0:
                    raise ConfigError(f"{_join(prefix, 'seeds')}[{i}]", ">= 0", seed, "out of range")
        if self.variance_seeds == 1:
            raise ConfigError(_join(prefix, "variance_seeds"), "0 (off) or >= 2", 1, "one seed has no spread")
        if self.variance_seeds > len(self.seed_values()):
            allowed = f"<= the paired seeds ({len(self.seed_values())})"
            raise ConfigError(_join(prefix, "variance_seeds"), allowed, self.variance_seeds, "out of range")

    def seed_values(self) -> tuple[int, ...]:
        """Every seed a variant may run, in the order they are handed out."""
        if isinstance(self.seeds, SeedSchedule):
            return tuple(range(self.seeds.start, self.seeds.start + self.seeds.max))
        return self.seeds

    def looks(self) -> tuple[int, ...]:
        """Seed counts at which verdicts are taken (one look, all seeds, for a list)."""
        return self.seeds.looks() if isinstance(self.seeds, SeedSchedule) else (len(self.seeds),)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; paths (`base`, `search_space`, `ablation.retune.search_space`) are absolute."""

    name: str = fld("", doc="required; names runs/<name>/ and the MLflow experiment")
    kind: Literal["search", "ablation"] = "search"
    base: str | None = fld(None, doc="experiment YAML; null = built-in defaults")
    set: FrozenDict[str, Any] = field(default_factory=FrozenDict)  # dotted experiment overrides
    data: FrozenDict[str, Any] = field(default_factory=FrozenDict)  # over base's data section, dotted keys
    search_space: str | None = fld(None, doc="search-space YAML; required for kind=search")
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    metric: str = fld("val/weighted_f1", doc="<split>/<name>, one of METRICS; what trials are selected on")
    report_metric: str | None = fld(
        None,
        doc="what verdicts and compare judge and export-best reports (it chooses by metric); "
        "null = test/<metric> with a test split, else metric",
    )
    mode: Literal["max", "min"] = "max"
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    time_budget_s: float | None = fld(None, gt=0.0, doc="stop starting trials after this many seconds")
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    ablation: AblationConfig | None = None

    def check(self, prefix: str) -> None:
        if not self.name or not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError("name", NAME_RULE, self.name or None, "required" if not self.name else "bad name")
        if self.metric.startswith("test/"):
            # Selecting on the test split would make its scores selected ones; report them instead.
            problem = "the held-out test split is never selected on (set report_metric to report it)"
            raise ConfigError("metric", ", ".join(METRICS), self.metric, problem)
        if "/" not in self.metric or self.metric not in METRICS:
            problem = "expected <split>/<name>" if "/" not in self.metric else "unknown metric"
            raise ConfigError("metric", ", ".join(METRICS), self.metric, problem)
        if self.report_metric is not None and self.report_metric not in REPORT_METRICS:
            raise ConfigError("report_metric", ", ".join(REPORT_METRICS), self.report_metric, "unknown metric")
        if self.kind == "search":
            if self.search_space is None:
                raise ConfigError("search_space", "a search-space file", None, "required for kind=search")
            if self.ablation is not None:
                allowed = "null (only for kind=ablation)"
                raise ConfigError("ablation", allowed, to_dict(self.ablation), "not allowed for kind=search")
        else:
            if self.ablation is None:
                raise ConfigError("ablation", "a mapping with variants and seeds", None, "required for kind=ablation")
            if self.search_space is not None:
                allowed = "null (use ablation.retune.search_space)"
                raise ConfigError("search_space", allowed, self.search_space, "not used by kind=ablation")
        if self.execution.population == "auto" and self.execution.mode != "fused":
            allowed = "an integer >= 1 (auto sizes fused populations: execution.mode: fused)"
            raise ConfigError("execution.population", allowed, "auto", "only with execution.mode: fused")
        if self.objective.name != ObjectiveConfig.name and (self.kind != "search" or self.execution.mode != "trial"):
            # A stand-in objective trains nothing: ablation verdicts or fused populations of it mean nothing.
            allowed = f"{ObjectiveConfig.name} (other objectives need kind: search and execution.mode: trial)"
            raise ConfigError("objective.name", allowed, self.objective.name, "not available for this sweep")
        # Fused populations stop members by ASHA's rule themselves (sweeps.fused.rungs); ablations stop none.
        fused_search = self.execution.mode == "fused" and self.kind == "search"
        if fused_search and self.scheduler.kind not in ("asha", "none"):
            allowed = "asha, none (with execution.mode: fused)"
            raise ConfigError("scheduler.kind", allowed, self.scheduler.kind, "not available in fused mode")

    def startup_trials(self) -> int:
        """`search.n_startup_trials`, or by default max(STARTUP_TRIALS, the trials proposed at once).

        Trials proposed before any result comes back (`max_concurrent`, times `population` in fused
        mode) are random for a model-based sampler anyway; tying the default to them keeps the
        model's first fit from resting on fewer results than there are workers.
        """
        if self.search.n_startup_trials is not None:
            return self.search.n_startup_trials
        population = self.execution.population
        # auto is resolved before any study exists (sweeps.execution.packing); 8 is its largest probe
        k = (8 if population == "auto" else population) if self.execution.mode == "fused" else 1
        at_once = self.resources.max_concurrent * k
        return max(STARTUP_TRIALS, at_once)

    def experiment_overrides(self, variant: str | None = None) -> dict[str, Any]:
        """Dotted overrides applied to the base YAML: `data`, then `set`, then the variant's."""
        overrides = None if variant is None else self.variant_overrides(variant)
        return experiment_overrides(data=self.data, sets=self.set, variant=overrides)

    def base_config(self) -> ExperimentConfig:
        """The experiment config every trial starts from (base YAML + data + set), validated."""
        return build_experiment(self.base, data=self.data, sets=self.set)

    def variant_config(self, name: str) -> ExperimentConfig:
        """The base config with ablation variant `name`'s overrides (ConfigError names the variant)."""
        return build_experiment(self.base, data=self.data, sets=self.set, variant=(name, self.variant_overrides(name)))

    def variant_overrides(self, name: str) -> Mapping[str, Any]:
        """The dotted overrides of ablation variant `name` (ConfigError if there is no such variant)."""
        if self.ablation is None or name not in self.ablation.variants:
            known = ", ".join(self.ablation.variants) if self.ablation else "none (not an ablation sweep)"
            raise ConfigError("ablation.variants", known, name, "unknown variant")
        return self.ablation.variants[name]

    def experiment_name(self) -> str:
        """The MLflow experiment: `tracking.experiment`, else the sweep name."""
        return self.tracking.experiment or self.name

    def search_space_path(self) -> str:
        """The resolved `search_space` file (ConfigError if the sweep has none)."""
        if self.search_space is None:
            raise ConfigError("search_space", "a search-space file", None, f"sweep {self.name} has none")
        return self.search_space

    def load_search_space(self) -> SearchSpace | None:
        """The compiled `search_space` (None for an ablation without one)."""
        return None if self.search_space is None else load_space(self.search_space)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logging; dumped as YAML, `load_sweep` reads back an equal spec.

        Credentials in `tracking.uri` and `search`'s storage URLs are redacted: this is what
        runs/<sweep>/ and MLflow store.
        """
        out = to_dict(self)
        if self.tracking.uri is not None:
            out["tracking"]["uri"] = redact(self.tracking.uri)
        if self.search.storage is not None:
            out["search"]["storage"] = redact(self.search.storage)
        if isinstance(self.search.warm_start, StudySource):
            out["search"]["warm_start"]["storage"] = redact(self.search.warm_start.storage)
        return out

    def to_yaml(self) -> str:
        """The resolved spec as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
