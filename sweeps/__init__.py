"""mersweep's sweep engine: a sweep YAML in, a Ray Tune run with Optuna proposals and MLflow records out.

- `spec/`: the sweep YAML -> a validated, frozen `SweepSpec` (`load_sweep`).
- `space/`: search-space YAML -> Optuna define-by-run function; the seeded samplers.
- `ablation/`: variants x paired seeds, optionally re-tuned per variant.
- `fused/`: fused mode: K trials trained as one stacked model per Ray trial.
- `execution/`: prepare -> Ray Tune Tuner -> results, on the driver.
- `trainable/`: what runs in a Ray trial worker (the trial function, its reports, fault injection).
- `resume/`: what `--resume` needs (sweep state, searcher state, Ray state snapshots).
- `tracking/`: MLflow: the name vocabulary, the tracker, outage retries, the callback.
- `cli`: the `mersweep` command (`python -m sweeps`); `commands/`: its `run` (`python run_sweep.py`) and `ui`;
  `errors`: errors re-rooted under the sweep field to edit.

The sweep YAMLs that ship with mersweep sit beside this file (`sweeps/<name>.yaml`).
"""

import importlib
from typing import Any

# Where each public name lives. They load on first use (PEP 562), not with the package: every
# `sweeps.*` import runs this file first, and a Ray trial worker, which needs only
# `sweeps.trainable`, would otherwise import Optuna and the spec loader at each worker start.
_HOMES = {
    **dict.fromkeys(
        ("ALGORITHMS", "AskTellGridSampler", "Param", "SearchSpace", "check_algorithm", "load_space", "make_sampler"),
        "sweeps.space",
    ),
    **dict.fromkeys(
        (
            "METRICS",
            "AblationConfig",
            "ExecutionConfig",
            "ResourcesConfig",
            "RetuneConfig",
            "SchedulerConfig",
            "SearchConfig",
            "SweepSpec",
            "TrackingConfig",
            "load_sweep",
        ),
        "sweeps.spec",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "METRICS",
    "AblationConfig",
    "AskTellGridSampler",
    "ExecutionConfig",
    "Param",
    "ResourcesConfig",
    "RetuneConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SearchSpace",
    "SweepSpec",
    "TrackingConfig",
    "check_algorithm",
    "load_space",
    "load_sweep",
    "make_sampler",
]
