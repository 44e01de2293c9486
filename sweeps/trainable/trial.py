"""The function every Ray Tune trial runs: build the trial's config, call `mer_core.train.run`.

The dataset arrives through the object store (`tune.with_parameters`), so a trial neither
reloads nor copies it; numpy arrays come back from the local object store zero-copy.
The last report carries a checkpoint folder with the trial's `config.yaml`, validation
logits and pseudo-label reports, which the driver logs to MLflow as artifacts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mer_core.configs import build_config, save_config
from mer_core.data.featureset import FeatureSet
from mer_core.errors import UserInputError
from mer_core.train import TrialResult, run
from mer_core.train.effective import effective_config
from sweeps.ablation.plan import ablation_overrides
from sweeps.tracking.names import CONFIG_ARTIFACT, LOGITS_ARTIFACT, TRIAL_ARTIFACT, final_metric
from sweeps.trainable.faults import injector_from_env
from sweeps.trainable.report import FINAL_KEY, placement
from sweeps.trainable.settings import TrialSettings
from sweeps.trainable.worker_setup import quiet_worker


def trial_overrides(config: Mapping[str, Any], settings: TrialSettings) -> dict[str, Any]:
    """Dotted config overrides of one trial: the sweep's fixed values, the ablation variant and seed
    (if any), then the sampled ones."""
    sampled = {k: v for k, v in config.items() if not k.startswith("__")}
    return {**settings.fixed, **ablation_overrides(config, settings.variants), **sampled}


def _numeric(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def trial_main(config: dict[str, Any], *, data: FeatureSet, settings: TrialSettings) -> None:
    """Ray Tune function trainable (wrapped with tune.with_parameters by the engine)."""
    import ray  # imported here so importing this module does not start Ray
    from ray import tune

    quiet_worker()
    try:
        cfg = build_config(settings.base, trial_overrides(config, settings))
    except UserInputError as err:
        # A sampled value the config rejects: record it as a failed trial, not a crash.
        tune.report(
            {settings.metric: settings.fail_value, "status": "invalid", "failure_reason": str(err), FINAL_KEY: 1}
        )
        return

    # Faults are injected only when $MERSWEEP_FAULTS is set (tests, benchmarks); attempts are counted
    # in the trial's storage folder (get_trial_dir() moves when Ray reuses an actor). The node id
    # lets multi-node tests see where each trial ran (all nodes of a test cluster share one IP).
    faults = injector_from_env(config, state_dir=Path(tune.get_context().get_storage().trial_fs_path))
    node = placement(ray.get_runtime_context().get_node_id(), os.environ)

    def report(metrics: Mapping[str, Any]) -> None:
        if faults is not None:
            faults.on_epoch()
        tune.report({**_numeric(metrics), **node})

    # The config the trial runs and logs says what shaped it: the thread count (the trial's CPU share
    # unless the config names one), the device `auto` found in this worker, the folds' seed.
    cfg = effective_config(cfg, threads=settings.threads)
    result = run(cfg, data, report=report)
    final = _final_metrics(result, settings)
    with tempfile.TemporaryDirectory(prefix="mersweep-trial-") as tmp:
        write_trial_artifacts(Path(tmp), cfg, result)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def _final_metrics(result: TrialResult, settings: TrialSettings) -> dict[str, Any]:
    final: dict[str, Any] = {final_metric(k): v for k, v in result.metrics.items()}
    final.update(result.metrics)
    if result.status == "diverged" or settings.metric not in final:
        final[settings.metric] = settings.fail_value
    final.update({"status": result.status, "failure_reason": result.failure_reason, FINAL_KEY: 1})
    return final


def write_trial_artifacts(folder: Path, cfg, result: TrialResult) -> None:
    """config.yaml (`cfg`, the effective config: reproduces the trial), val_logits.npz, trial.json
    (status, pseudo-labels)."""
    save_config(
        cfg, folder / CONFIG_ARTIFACT, header="Config of one mersweep trial: python -m mer_core.train config.yaml"
    )
    if result.folds:
        np.savez(folder / LOGITS_ARTIFACT, **result.logits_npz())
    summary = {
        "status": result.status,
        "failure_reason": result.failure_reason,
        "metrics": result.metrics,
        "pseudo": [{"fold": f.fold, "rounds": f.pseudo} for f in result.folds],
        "head_names": list(result.head_names),
        "class_names": list(result.class_names),
    }
    (folder / TRIAL_ARTIFACT).write_text(json.dumps(summary, indent=2, default=float))
