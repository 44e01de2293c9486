"""Before anything runs: `prepare` validates the whole sweep against its data and tracking store.

Spec, base config, search space, data, tracking URI and resume state are all checked before
anything is written, so bad input exits 2 with nothing half-written; `describe` is what
`--dry-run` prints of the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mer_core.configs import ExperimentConfig, build_config, flatten, to_dict
from mer_core.data import load_data
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError, UserInputError
from mer_core.train.effective import pin_threads_and_folds
from mer_core.train.fused.fields import check_fusable
from mer_core.train.preflight import check_modality_keys, check_registry_choices, check_trainable
from sweeps.ablation.batches import plan_ray_trials
from sweeps.ablation.plan import AblationPlan, ablation_params, ablation_plan
from sweeps.errors import prefixed
from sweeps.execution.packing import is_auto, resolve_packing, resumed_packing
from sweeps.resume.state import SweepState, check_same_sweep, read_state, run_dir
from sweeps.space import SearchSpace, load_space
from sweeps.space.study import StudyRef, check_storage, default_storage, retune_study_name
from sweeps.space.warm_start import WarmStart, load_warm_start, resolve_source
from sweeps.spec import SweepSpec
from sweeps.tracking.uri import check_reachable, redact, resolve_tracking_uri
from sweeps.trainable.faults import plan_from_env
from sweeps.trainable.objectives import objective_of, trial_iterations
from sweeps.trainable.trial import TrialSettings, trial_overrides


@dataclass(frozen=True, eq=False)
class PreparedSweep:
    """A fully validated sweep, ready to run."""

    spec: SweepSpec
    base: ExperimentConfig
    space: SearchSpace | None  # search: the search space; ablation: the re-tuning space, if any
    data: FeatureSet
    tracking_uri: str
    folder: Path
    resume: bool
    state: SweepState | None
    study: StudyRef | None = None  # the sweep's Optuna study (None: an ablation without re-tuning)
    warm: WarmStart | None = None  # `search.warm_start`: earlier trials the new study starts with
    packing: str = ""  # population auto: what the probe chose and why (the header's execution line)

    @property
    def settings(self) -> TrialSettings:
        threads = max(1, int(self.spec.resources.cpu))
        variants = self.spec.ablation.variants if self.spec.ablation else {}
        return TrialSettings(
            base=to_dict(self.base),
            metric=self.spec.metric,
            mode=self.spec.mode,
            fixed={},
            threads=threads,
            variants=variants,
            objective=to_dict(self.spec.objective),
        )

    @property
    def fused(self) -> bool:
        """Fused mode: each Ray trial trains a population of members (`execution.population`)."""
        return self.spec.execution.mode == "fused"

    @property
    def plan(self) -> AblationPlan | None:
        """The ablation's trials (None for a search)."""
        return ablation_plan(self.spec)

    @property
    def total_trials(self) -> int:
        """Trials the sweep runs when nothing stops it early."""
        plan = self.plan
        return plan.total_trials if plan else self.spec.search.num_samples

    def trial_params(self, config: dict[str, Any]) -> dict[str, Any]:
        """Flattened full config of a trial (its MLflow params), plus its ablation variant and seed.

        In fused mode the callbacks call it with one member's sampled params (`members_of`).
        The thread count and the fold seed are what the trial runs with (its `config.yaml` says
        the same); `runtime.device` is as configured, since `auto` resolves on the trial's worker.
        """
        cfg = build_config(self.settings.base, trial_overrides(config, self.settings))
        resolved = pin_threads_and_folds(cfg, threads=self.settings.threads)
        return {**flatten(resolved), **ablation_params(config)}


def prepare(spec: SweepSpec, *, resume: bool, tracking_uri: str | None, runs_root: Path) -> PreparedSweep:
    """Validate the whole sweep; raises UserInputError (exit 2) before writing anything."""
    base = spec.base_config()
    objective_of(spec)  # an unknown objective.name exits 2 here, listing the registered ones
    plan_from_env()  # a bad $MERSWEEP_FAULTS (tests, benchmarks) exits 2 before anything is written
    space = _space_of(spec)
    _check_rungs(spec, base)
    forced: ConfigError | None = None  # population auto: a field that forces trial mode
    if spec.execution.mode == "fused":
        try:
            _check_fusable(spec, base, space)
        except ConfigError as err:
            if not is_auto(spec):
                raise
            forced = err
    folder = run_dir(runs_root, spec.name)
    state = read_state(folder) if resume else None
    if state is not None:
        spec = resumed_packing(spec, state)
        check_same_sweep(state, spec.to_yaml())
    if not resume and folder.exists() and any(folder.iterdir()):
        raise UserInputError(
            f"name: sweep '{spec.name}' already has results in {folder}; pass --resume to continue it, "
            "or give the sweep another name (--set sweep.name=...)"
        )
    uri = tracking_uri or resolve_tracking_uri(None, spec.tracking.uri)
    if state is not None and tracking_uri is None and "***" not in state.tracking_uri:
        uri = state.tracking_uri
    check_reachable(uri)
    study = _study_of(spec, folder, space, resume=resume)
    warm = _warm_start(spec, space, runs_root)
    data = load_data(base.data)
    _check_against_data(spec, base, space, data)
    plan = ablation_plan(spec)
    spec, packing = resolve_packing(
        spec, base, data, forced=forced, num_samples=plan.total_trials if plan else spec.search.num_samples
    )
    return PreparedSweep(spec, base, space, data, uri, folder, resume, state, study, warm, packing)


def _check_fusable(spec: SweepSpec, base: ExperimentConfig, space: SearchSpace | None) -> None:
    check_fusable(base, sampled=space.names if space is not None else ())
    for name in spec.ablation.variants if spec.ablation else {}:
        try:
            check_fusable(spec.variant_config(name))
        except ConfigError as err:  # the field is the variant's override: name the variant
            raise prefixed(err, f"ablation.variants.{name}") from None


def _study_of(spec: SweepSpec, folder: Path, space: SearchSpace | None, *, resume: bool) -> StudyRef | None:
    """The sweep's study (named after the sweep); a storage of the user's is checked here, reading only.

    A new sweep's study must not exist yet (the default storage lives in the sweep's own new folder).
    """
    if space is None:
        return None
    if spec.search.storage is None:
        return StudyRef(default_storage(folder), spec.name)
    for name in study_names_of(spec):
        check_storage(spec.search.storage, field="search.storage", name=name, exists=None if resume else False)
    return StudyRef(spec.search.storage, spec.name)


def study_line(prepared: PreparedSweep) -> str:
    """Where the sweep's Optuna studies are, as `--dry-run` prints it and the parent run's tag holds it."""
    assert prepared.study is not None
    names = study_names_of(prepared.spec)
    where = redact(prepared.study.storage)
    return f"study {names[0]} in {where}" if len(names) == 1 else f"studies {', '.join(names)} in {where}"


def study_names_of(spec: SweepSpec) -> tuple[str, ...]:
    """The Optuna studies a sweep keeps: its own, or an ablation's one re-tuning study per variant."""
    if spec.ablation is None:
        return (spec.name,)
    return tuple(retune_study_name(spec.name, v) for v in spec.ablation.variants)


def _warm_start(spec: SweepSpec, space: SearchSpace | None, runs_root: Path) -> WarmStart | None:
    """`search.warm_start`'s trials that fit the space (read on resume too: a sweep Ray had saved
    nothing of starts its study over; one Ray restores has them already)."""
    source = spec.search.warm_start
    if source is None:
        return None
    if spec.kind != "search" or space is None:
        raise ConfigError("search.warm_start", "null for kind=ablation", to_dict(source), "not used by ablations")
    given = source if isinstance(source, str) else {"storage": source.storage, "study": source.study}
    return load_warm_start(resolve_source(given, runs_root=runs_root), space)


def _check_rungs(spec: SweepSpec, base: ExperimentConfig) -> None:
    """An early-stopping scheduler whose first cut lies beyond the longest trial (Ray refuses it at start)."""
    s = spec.scheduler
    if s.kind not in ("asha", "hyperband") or s.max_t is not None:
        return  # an explicit max_t is checked against grace_period by the schema
    top = trial_iterations(spec, base)
    if s.grace_period > top:
        allowed = (
            f"<= {top}, the results the longest trial reports (folds x optim.max_epochs x "
            "(1 + self_training.rounds) + 1 final), or a scheduler.max_t"
        )
        raise ConfigError("scheduler.grace_period", allowed, s.grace_period, "no trial reports that many results")


def _check_against_data(spec: SweepSpec, base: ExperimentConfig, space: SearchSpace | None, data: FeatureSet) -> None:
    """What every trial would fail on (registry or modality names, folds, classes) exits 2 instead."""
    check_trainable(base, data)
    check_modality_keys(spec.set, data, prefix="set.")
    if space is not None:
        check_modality_keys(dict.fromkeys(space.names), data, prefix="params.")
        check_registry_choices(space)
    for name, overrides in (spec.ablation.variants if spec.ablation else {}).items():
        check_modality_keys(overrides, data, prefix=f"ablation.variants.{name}.")
        try:
            check_trainable(spec.variant_config(name), data)
        except ConfigError as err:  # the field is the variant's override: name the variant
            raise prefixed(err, f"ablation.variants.{name}") from None


def describe(prepared: PreparedSweep) -> str:
    """What --dry-run prints: the resolved sweep, data and space, without starting Ray."""
    spec, data = prepared.spec, prepared.data
    lines = [
        *_describe_plan(prepared),
        f"data: {data.name}: {data.n_samples} samples ({len(data.labelled_idx)} labelled) + {data.n_test} held-out "
        f"test samples, modalities {data.dims}",
        *_describe_report(prepared),
        *_describe_execution(prepared),
        f"resources per trial: cpu {spec.resources.cpu}, gpu {spec.resources.gpu}; "
        f"max concurrent {spec.resources.max_concurrent}",
        f"tracking: {redact(prepared.tracking_uri)} experiment {spec.experiment_name()}",
        f"results: {prepared.folder}",
    ]
    if prepared.study is not None:
        lines.append(f"optuna: {study_line(prepared)}")
    if prepared.warm is not None and not prepared.resume:  # a resumed study holds them already
        lines.append(prepared.warm.describe())
    if prepared.space is not None:
        lines += ["search space:" if spec.kind == "search" else "re-tuning space:"]
        lines += [f"  {line}" for line in prepared.space.describe()]
    return "\n".join(lines)


def _space_of(spec: SweepSpec) -> SearchSpace | None:
    if spec.kind == "search":
        return load_space(spec.search_space_path())
    assert spec.ablation is not None
    retune = spec.ablation.retune
    return load_space(retune.search_space) if retune.search_space and retune.num_samples else None


def _describe_execution(prepared: PreparedSweep) -> list[str]:
    chosen = [prepared.packing] if prepared.packing else []
    if not prepared.fused:
        return chosen
    k, plan = prepared.spec.execution.population, prepared.plan
    n = prepared.total_trials
    if plan is None:
        what = f"({n} trials in {-(-n // k)} Ray trials)"
    else:
        batches = plan_ray_trials(plan, population=k)
        what = f"(a look's seeds of a variant, or its re-tuning trials: {n} trials in {batches} Ray trials)"
    return [
        *chosen,
        f"execution: fused populations of up to {k} members {what}; members of one shape train as one "
        "stacked model, resources per trial apply to the whole population",
    ]


def _describe_report(prepared: PreparedSweep) -> list[str]:
    """A note when verdicts and export-best can only report the scores the sweep selects on."""
    spec = prepared.spec
    if prepared.data.test is not None or spec.report_metric != spec.metric:
        return []
    return [
        f"note: no held-out test split (data.test_fraction is 0): verdicts and export-best report {spec.metric}, "
        "the validation rows that also pick epochs and configs; set data.test_fraction (e.g. 0.2) for held-out scores"
    ]


def _describe_plan(prepared: PreparedSweep) -> list[str]:
    spec, plan = prepared.spec, prepared.plan
    if plan is None:
        return [
            f"sweep {spec.name} (search): {spec.search.algorithm} x {spec.search.num_samples} trials, "
            f"scheduler {spec.scheduler.kind}, metric {spec.metric} ({spec.mode})"
        ]
    assert spec.ablation is not None
    retune = f" (+{plan.retune_trials} re-tuning trials each, {spec.search.algorithm})" if plan.retune_trials else ""
    seeds = f"{plan.looks[0]}..{plan.looks[-1]} adaptive" if plan.adaptive else f"{len(plan.seeds)}"
    lines = [
        f"sweep {spec.name} (ablation): {len(plan.variants)} variants x {seeds} paired seeds{retune} = "
        f"{'at most ' if plan.adaptive else ''}{plan.total_trials} trials, no early stopping, "
        f"metric {spec.metric} ({spec.mode})",
        f"reference variant: {spec.ablation.reference}; seeds {list(plan.seeds)}",
        f"verdicts on {plan.judged_metric}: looks at {list(plan.looks)} paired seeds, family-wise alpha "
        f"{plan.alpha} (Bonferroni across variants, O'Brien-Fleming-type spending across looks), "
        f"min_effect {plan.min_effect}",
    ]
    if plan.variance_seeds:
        k = plan.variance_seeds
        lines.append(f"variance sources: the reference also runs {k} init x {k} split seeds, crossed ({k * k} trials)")
    for name, overrides in spec.ablation.variants.items():
        text = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(the base config)"
        lines.append(f"  variant {name}: {text}")
    return lines
