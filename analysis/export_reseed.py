"""Re-run a trial's configuration under other seeds, in process, and log it next to the sweep's trials.

Each re-run is a child run of the sweep's parent run tagged `mersweep.phase=export-reseed` (and the
run it re-ran), with the same params, final metrics and artifacts as a trial, so `compare`, `report`
and a later `export-best` see it. It carries no Ray trial id on purpose: a resumed sweep retires
child runs whose trial id Ray does not know, and these runs are not Ray's.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from analysis.export_select import seed_overrides
from analysis.runs import SweepRuns, TrialRun, download_artifact
from mer_core.configs import ExperimentConfig, flatten, load_config, to_dict, with_overrides
from mer_core.data.featureset import FeatureSet
from mer_core.train.result import TrialResult
from sweeps.tracking.names import (
    ABLATION_SEED_PARAM,
    CONFIG_ARTIFACT,
    EXPORT_SOURCE_TAG,
    FAILURE_TAG,
    PARENT_TAG,
    PHASE_TAG,
    RESEED_PHASE,
    RUN_NAME_TAG,
    STATUS_TAG,
    VARIANT_PARAM,
    final_metric,
    mlflow_items,
)

log = logging.getLogger("mersweep.analysis")

RUN_STATUS = {"ok": "FINISHED", "pruned": "KILLED", "diverged": "FAILED"}
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def trial_config(sweep: SweepRuns, trial: TrialRun) -> ExperimentConfig:
    """The complete config a trial ran with (its `config.yaml` artifact).

    Raises:
        RuntimeError: the run has no config.yaml (it cannot be reproduced).
    """
    with tempfile.TemporaryDirectory(prefix="mersweep-config-") as tmp:
        path = download_artifact(sweep, trial.run_id, CONFIG_ARTIFACT, Path(tmp))
        if path is None:
            raise RuntimeError(f"run {trial.run_id} ({trial.name}) has no config.yaml artifact")
        return load_config(path)


class DataCache:
    """Loads each distinct data config once (every trial of a sweep usually shares one; the folds'
    seed is the trial's own and loads nothing)."""

    def __init__(self) -> None:
        self._loaded: dict[str, FeatureSet] = {}

    def get(self, cfg: ExperimentConfig) -> FeatureSet:
        from mer_core.data import load_data

        key = repr(to_dict(dataclasses.replace(cfg.data, fold_seed=None)))
        if key not in self._loaded:
            self._loaded[key] = load_data(cfg.data)
        return self._loaded[key]


def reseed(
    sweep: SweepRuns,
    source: TrialRun,
    cfg: ExperimentConfig,
    seeds: list[int],
    data: DataCache,
    *,
    progress: Callable[[str], None] = log.info,
) -> list[str]:
    """Train `cfg` once per seed and log each run (its effective config); returns the new run ids."""
    from mer_core.train import run
    from mer_core.train.effective import effective_config

    run_ids = []
    for seed in seeds:
        seeded = effective_config(with_overrides(cfg, seed_overrides(sweep.kind, seed)))
        started = time.perf_counter()
        result = run(seeded, data.get(seeded))
        run_ids.append(log_reseed_run(sweep, source, seeded, result))
        value = result.metrics.get(sweep.metric, float("nan"))
        progress(
            f"re-ran {source.name} with seed {seed}: {result.status}, {sweep.metric} {value:.4f} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return run_ids


def log_reseed_run(sweep: SweepRuns, source: TrialRun, cfg: ExperimentConfig, result: TrialResult) -> str:
    """One child run of the sweep's parent: params, final metrics, status, trial artifacts."""
    from mlflow.entities import Metric, Param

    from sweeps.trainable.trial import write_trial_artifacts

    client = sweep.client()
    name = f"{source.name}-seed{cfg.seed}"
    tags = {PARENT_TAG: sweep.parent_run_id, PHASE_TAG: RESEED_PHASE, EXPORT_SOURCE_TAG: source.run_id}
    tags.update({RUN_NAME_TAG: name, STATUS_TAG: result.status, FAILURE_TAG: result.failure_reason})
    run_id = client.create_run(sweep.experiment_id, run_name=name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    values = {**{final_metric(k): v for k, v in result.metrics.items()}, **result.metrics}
    metrics = [Metric(k, float(v), now, 0) for k, v in mlflow_items(values).items()]
    values_of_params = flatten(cfg)
    if source.variant is not None:  # an ablation's re-run stays findable by variant and seed
        values_of_params.update({VARIANT_PARAM: source.variant, ABLATION_SEED_PARAM: cfg.seed})
    params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in mlflow_items(values_of_params).items()]
    for start in range(0, max(len(params), len(metrics), 1), 100):  # MLflow: at most 100 params per batch
        client.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100])
    with tempfile.TemporaryDirectory(prefix="mersweep-reseed-") as tmp:
        write_trial_artifacts(Path(tmp), cfg, result)
        for path in sorted(Path(tmp).iterdir()):
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=RUN_STATUS.get(result.status, "FAILED"))
    return run_id
