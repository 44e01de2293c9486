"""What a trial reports to Ray Tune, and the outcome the driver reads back from its last result.

A light module on purpose: the driver's callbacks, the summary and the fused searcher read
results without importing the trainer that `sweeps.trainable.trial` pulls in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mer_core.configs import ExperimentConfig

FINAL_KEY = "final"  # set to 1 in the last result of a trial that finished training
NODE_KEY = "node_id"  # the Ray node a result came from
DEVICES_KEY = "cuda_visible_devices"  # the GPUs Ray gave the trial's process (its CUDA_VISIBLE_DEVICES)
TIME_ATTR = "training_iteration"  # Tune's clock for the schedulers: one unit = one reported epoch
ENDED = ("TERMINATED", "ERROR")  # Ray's statuses of a trial that will not run again


def placement(node_id: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Where a trial runs, sent with each of its results: its Ray node and the GPUs Ray assigned it
    (`resources.gpu` > 0: Ray sets CUDA_VISIBLE_DEVICES per trial process; "" without GPUs)."""
    return {NODE_KEY: node_id, DEVICES_KEY: environ.get("CUDA_VISIBLE_DEVICES", "")}


def max_iterations(cfg: ExperimentConfig) -> int:
    """Most results a trial can report: folds x epochs x (fine-tuning + self-training rounds) + final."""
    return cfg.data.folds * cfg.optim.max_epochs * (1 + cfg.self_training.rounds) + 1


def trial_outcome(last: Mapping[str, Any] | None, *, errored: bool = False) -> str:
    """ok | pruned | diverged | invalid | error, from a trial's last result."""
    if errored:
        return "error"
    if last and last.get(FINAL_KEY):
        return str(last.get("status", "ok"))
    return "pruned"  # stopped by the scheduler before its final report
