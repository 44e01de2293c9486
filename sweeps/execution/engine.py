"""The sweep engine: Ray Tune schedules, Optuna proposes, MLflow records.

`prepare` validates everything (spec, base config, space, data, tracking URI, resume state)
before anything is written, so bad input exits 2 with nothing half-written. `execute`
starts Ray, runs the Tuner and writes `runs/<sweep>/best_config.yaml`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mer_core.configs import ExperimentConfig, build_config, flatten, to_dict
from mer_core.data import load_data
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError, UserInputError
from mer_core.train.preflight import check_modality_keys, check_registry_choices, check_trainable
from sweeps.ablation.plan import AblationPlan, ablation_params, ablation_plan
from sweeps.execution.interrupt import watch_interrupt
from sweeps.execution.ray_start import in_background, start_ray
from sweeps.execution.results import SweepOutcome, summarize
from sweeps.resume.state import SweepState, check_same_sweep, read_state, run_dir, write_state
from sweeps.space.params import prefixed
from sweeps.space.search_space import SearchSpace, load_space
from sweeps.spec.schema import SweepSpec
from sweeps.tracking.tracker import redact, resolve_tracking_uri
from sweeps.tracking.uri import check_reachable
from sweeps.trainable.faults import plan_from_env
from sweeps.trainable.trial import TrialSettings, trial_main, trial_overrides

if TYPE_CHECKING:
    from sweeps.tracking.tracker import SweepTracker

log = logging.getLogger("mersweep.sweep")


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
        """
        cfg = build_config(self.settings.base, trial_overrides(config, self.settings))
        return {**flatten(cfg), **ablation_params(config)}


def prepare(spec: SweepSpec, *, resume: bool, tracking_uri: str | None, runs_root: Path) -> PreparedSweep:
    """Validate the whole sweep; raises UserInputError (exit 2) before writing anything."""
    base = spec.base_config()
    if spec.execution.mode == "fused" and base.runtime.compile:
        allowed = "false (fused populations run uncompiled)"
        raise ConfigError("runtime.compile", allowed, True, "not available with execution.mode: fused")
    plan_from_env()  # a bad $MERSWEEP_FAULTS (tests, benchmarks) exits 2 before anything is written
    space = _space_of(spec)
    folder = run_dir(runs_root, spec.name)
    state = read_state(folder) if resume else None
    if state is not None:
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
    data = load_data(base.data)
    _check_against_data(spec, base, space, data)
    return PreparedSweep(spec, base, space, data, uri, folder, resume, state)


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
        f"data: {data.name}: {data.n_samples} samples ({len(data.labelled_idx)} labelled), modalities {data.dims}",
        *_describe_execution(prepared),
        f"resources per trial: cpu {spec.resources.cpu}, gpu {spec.resources.gpu}; "
        f"max concurrent {spec.resources.max_concurrent}",
        f"tracking: {redact(prepared.tracking_uri)} experiment {spec.experiment_name()}",
        f"results: {prepared.folder}",
    ]
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
    if not prepared.fused:
        return []
    k, n = prepared.spec.execution.population, prepared.spec.search.num_samples
    return [
        f"execution: fused populations of up to {k} members ({n} trials in {-(-n // k)} Ray trials); "
        "members of one shape train as one stacked model, resources per trial apply to the whole population"
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
    lines = [
        f"sweep {spec.name} (ablation): {len(plan.variants)} variants x {len(plan.seeds)} paired seeds{retune} = "
        f"{plan.total_trials} trials, no early stopping, metric {spec.metric} ({spec.mode})",
        f"reference variant: {spec.ablation.reference}; seeds {list(plan.seeds)}",
    ]
    for name, overrides in spec.ablation.variants.items():
        text = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(the base config)"
        lines.append(f"  variant {name}: {text}")
    return lines


def execute(
    prepared: PreparedSweep, *, address: str | None, argv: list[str], address_field: str = "--address"
) -> SweepOutcome:
    """Run (or resume) the sweep; returns the outcome with the best trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each trial checkpoints once (its artifacts); Ray's "snapshotting too often" advice does not apply.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A failed attempt's traceback goes to its error.txt and its reason to MLflow; the terminal
    # gets the one-line progress instead of a traceback per attempt.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    from ray import tune

    from sweeps.execution.tuner import build_tuner
    from sweeps.resume.snapshot import StateSnapshot, restore_snapshot
    from sweeps.tracking.callback import MlflowCallback, ProgressCallback

    spec = prepared.spec
    if address is None:
        # MLflow's store set-up (for sqlite: creating the schema, ~3 s) and Ray's start (~4 s) are
        # independent and mostly wait on other processes or the disk: run them side by side.
        opening = in_background(_open_tracking, prepared, argv)
        try:
            start_ray(None)
        except Exception:
            wait([opening])  # Ray failed to start: let the parent run and state land whole before reporting it
            raise
        tracker = opening.result()
    else:
        start_ray(address, field=address_field)  # a cluster that cannot be joined is bad input: nothing written
        tracker = _open_tracking(prepared, argv)
    logger = MlflowCallback(tracker, prepared.trial_params)
    progress = ProgressCallback(metric=spec.metric, mode=spec.mode, total=prepared.total_trials)
    callbacks = [logger, progress, StateSnapshot(prepared.folder)]
    if prepared.resume:
        restore_snapshot(prepared.folder)  # Ray's own copy may be torn: the driver could have died mid-copy
    trainable = _trainable(prepared)
    tuner = build_tuner(
        spec,
        prepared.space,
        trainable,
        folder=prepared.folder,
        callbacks=callbacks,
        # Stopped before Ray saved its state (Ctrl-C during start-up): nothing to restore, start
        # the trials afresh under the same parent run.
        resume=prepared.resume and tune.Tuner.can_restore(str(prepared.folder)),
        base=prepared.base,
        plan=prepared.plan,
    )
    with watch_interrupt() as interrupt:
        grid = tuner.fit()
    outcome = summarize(grid, prepared, stopped=interrupt.stopped, cut=logger.interrupted)
    tracker.finish_parent(
        status="FINISHED" if outcome.interrupted is False else "KILLED",
        metrics={f"best/{spec.metric}": outcome.best_value} if outcome.best_value is not None else {},
        tags={
            "mersweep.best_trial": outcome.best_trial or "",
            "mersweep.best_run_id": tracker.run_id_of(outcome.best_trial or "") or "",
        },
    )
    return outcome


def _open_tracking(prepared: PreparedSweep, argv: list[str]) -> SweepTracker:
    """The sweep's experiment and parent run (reopened on resume); a new sweep's state and spec are saved."""
    from sweeps.tracking.tracker import SweepTracker

    spec = prepared.spec
    tracker = SweepTracker(prepared.tracking_uri, spec.experiment_name())
    parent = tracker.open_parent(
        sweep=spec.name,
        parent_id=prepared.state.parent_run_id if prepared.state else None,
        tags={"mersweep.git_sha": _git_sha(), "mersweep.command": shlex.join(argv)},
    )
    if prepared.state is None:
        write_state(
            prepared.folder,
            SweepState(spec.name, spec.experiment_name(), parent, redact(prepared.tracking_uri), spec.to_yaml()),
        )
        tracker.log_parent_artifact_text(spec.to_yaml(), "sweep.yaml")
        if prepared.space is not None:
            tracker.log_parent_artifact_text(_space_yaml(prepared.space), "search_space.yaml")
    return tracker


def _trainable(prepared: PreparedSweep) -> Any:
    """The Ray trainable with the data and settings every trial shares (object store, not per trial)."""
    from ray import tune

    if not prepared.fused:
        return tune.with_parameters(trial_main, data=prepared.data, settings=prepared.settings)
    from sweeps.execution.tuner import population_schedule
    from sweeps.fused.trial import population_main

    schedule = population_schedule(prepared.spec, prepared.base)
    return tune.with_parameters(population_main, data=prepared.data, settings=prepared.settings, schedule=schedule)


def _space_yaml(space: SearchSpace) -> str:
    import yaml

    return yaml.safe_dump(space.to_dict(), sort_keys=False)


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
