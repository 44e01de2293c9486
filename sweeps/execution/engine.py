"""Running a prepared sweep: Ray Tune schedules, Optuna proposes, MLflow records.

`execute` opens the sweep's MLflow parent run (reopened on `--resume`), starts Ray, runs the
Tuner (`sweeps.execution.tuner`) and summarises the trials (`sweeps.execution.results`), which
writes `runs/<sweep>/best_config.yaml`. Validation happened before, in `sweeps.execution.prepare`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from concurrent.futures import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.execution.interrupt import watch_interrupt
from sweeps.execution.prepare import PreparedSweep, study_line, study_names_of
from sweeps.execution.ray_start import in_background, start_ray
from sweeps.execution.results import SweepOutcome, summarize
from sweeps.resume.state import SweepState, write_state
from sweeps.space import SearchSpace
from sweeps.tracking.names import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    COMMAND_TAG,
    GIT_SHA_TAG,
    OPTUNA_STUDY_TAG,
    REPORT_DIR,
    SPACE_ARTIFACT,
    SWEEP_ARTIFACT,
    best_metric,
    spec_param,
)
from sweeps.tracking.uri import redact, ui_base, ui_link
from sweeps.trainable.objectives import objective_of, trial_iterations

if TYPE_CHECKING:
    from sweeps.tracking.tracker import SweepTracker

log = logging.getLogger("mersweep.sweep")


def execute(
    prepared: PreparedSweep,
    *,
    address: str | None,
    argv: list[str],
    address_field: str = "--address",
    verbose: bool = False,
) -> SweepOutcome:
    """Run (or resume) the sweep; returns the outcome with the best trial.

    `verbose` (the CLI's `--verbose`): off a terminal, the progress display also announces each
    trial's start; the third-party chatter it brings back is the CLI's (`mer_core.verbosity`).
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each trial checkpoints once (its artifacts); Ray's "snapshotting too often" advice does not apply.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A failed attempt's traceback goes to its error.txt and its reason to MLflow; the terminal
    # gets the one-line progress instead of a traceback per attempt.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    from ray import tune

    from sweeps.execution.progress import ProgressCallback
    from sweeps.execution.tuner import ablation_searcher, build_tuner
    from sweeps.resume.snapshot import StateSnapshot, restore_snapshot
    from sweeps.space.study import StudyLinks
    from sweeps.tracking.callback import MlflowCallback

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
    links = StudyLinks(prepared.study, names=study_names_of(spec)) if prepared.study is not None else None
    logger = MlflowCallback(tracker, prepared.trial_params, links=links)
    progress = ProgressCallback(
        metric=spec.metric,
        mode=spec.mode,
        total=prepared.total_trials,
        max_iterations=trial_iterations(spec, prepared.base),
        verbose=verbose,
    )
    callbacks = [logger, progress, StateSnapshot(prepared.folder)]
    if prepared.resume:
        restore_snapshot(prepared.folder)  # Ray's own copy may be torn: the driver could have died mid-copy
    trainable = _trainable(prepared)
    # Stopped before Ray saved its state (Ctrl-C during start-up): nothing to restore, start
    # the trials afresh under the same parent run.
    restore = prepared.resume and tune.Tuner.can_restore(str(prepared.folder))
    tuner = build_tuner(
        spec,
        prepared.space,
        trainable,
        folder=prepared.folder,
        callbacks=callbacks,
        resume=restore,
        restart=prepared.resume and not restore,
        base=prepared.base,
        plan=prepared.plan,
        study=prepared.study,
        warm=prepared.warm,
    )
    searcher = ablation_searcher(tuner)
    progress.status = searcher.status if searcher is not None else None
    progress.backlog = tracker.backlog
    with watch_interrupt() as interrupt:
        try:
            grid = tuner.fit()
        finally:
            progress.close()  # the live line ends before the summary (or an error) is printed
    complete = searcher.finished if searcher is not None else True
    outcome = summarize(grid, prepared, stopped=interrupt.stopped, cut=logger.interrupted, complete=complete)
    if not interrupt.stopped and spec.tracking.report:  # Ctrl-C asks to stop now; `analysis report` writes it later
        _publish_report(tracker, prepared)
    elif not interrupt.stopped:
        log.info("report: not written (tracking.report: false); later: %s", _redo(prepared))
    tracker.finish_parent(
        status="FINISHED" if outcome.interrupted is False else "KILLED",
        metrics={best_metric(spec.metric): outcome.best_value} if outcome.best_value is not None else {},
        tags={
            BEST_TRIAL_TAG: outcome.best_trial or "",
            BEST_RUN_TAG: tracker.run_id_of(outcome.best_trial or "") or "",
        },
    )
    return outcome


def _publish_report(tracker: SweepTracker, prepared: PreparedSweep) -> None:
    """The report, the trials table and (ablations) the comparison, on the parent run and in
    runs/<sweep>/report/. A report is derived from what MLflow holds: if it cannot be written (the
    server is away, a plot fails), the sweep still ends as it ran and one line says how to redo it."""
    redo = _redo(prepared)
    tracker.flush()  # the report reads the trials back from MLflow: their ends must be there
    if tracker.backlog():
        log.warning("report: not written, the tracking server has not taken every trial yet; later: %s", redo)
        return
    began = time.perf_counter()
    try:
        from analysis.report.publish import publish_sweep_end

        path = publish_sweep_end(tracker, prepared.folder / REPORT_DIR)
    except Exception as err:  # derived output: never worth failing a finished sweep for
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        log.warning("report: not written (%s); later: %s", redact(reason), redo)
        return
    base = ui_base(prepared.tracking_uri)
    where = ui_link(base, tracker.experiment_id, tracker.parent_id) if base else f"parent run {tracker.parent_id}"
    took = time.perf_counter() - began
    log.info("report: %s written in %.1f s (also on the sweep's MLflow run: %s)", path, took, where)


def _redo(prepared: PreparedSweep) -> str:
    """The command that writes (or rewrites) a sweep's report afterwards."""
    return f"python -m analysis report --sweep-dir {prepared.folder}"


def _open_tracking(prepared: PreparedSweep, argv: list[str]) -> SweepTracker:
    """The sweep's experiment and parent run (reopened on resume); a new sweep's state and spec are saved."""
    from sweeps.tracking.tracker import SweepTracker

    spec = prepared.spec
    tracker = SweepTracker(prepared.tracking_uri, spec.experiment_name())
    parent = tracker.open_parent(
        sweep=spec.name,
        parent_id=prepared.state.parent_run_id if prepared.state else None,
        tags={
            GIT_SHA_TAG: _git_sha(),
            COMMAND_TAG: shlex.join(argv),
            **({OPTUNA_STUDY_TAG: study_line(prepared)} if prepared.study is not None else {}),
        },
    )
    if prepared.state is None:
        write_state(
            prepared.folder,
            SweepState(spec.name, spec.experiment_name(), parent, redact(prepared.tracking_uri), spec.to_yaml()),
        )
        tracker.log_parent_artifact_text(spec.to_yaml(), SWEEP_ARTIFACT)
        tracker.log_parent_values(params=_spec_params(spec.to_yaml()))
        if prepared.space is not None:
            tracker.log_parent_artifact_text(_space_yaml(prepared.space), SPACE_ARTIFACT)
    return tracker


def _spec_params(text: str) -> dict[str, str]:
    """The resolved spec as flat params of the parent run (`spec.search.algorithm`), so MLflow's run
    table shows what each sweep was; the whole spec is its `sweep.yaml` artifact."""
    import yaml

    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
            out[spec_param(prefix)] = text.strip().removesuffix("\n...")

    walk("", yaml.safe_load(text))
    return out


def _trainable(prepared: PreparedSweep) -> Any:
    """The Ray trainable with the data and settings every trial shares (object store, not per trial)."""
    from ray import tune

    if not prepared.fused:
        trainable = objective_of(prepared.spec).trainable
        return tune.with_parameters(trainable, data=prepared.data, settings=prepared.settings)
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
