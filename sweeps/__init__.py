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

# The public names of `sweeps.space` and `sweeps.spec` are read through the package too, but load on
# first use (PEP 562), not with the package: every `sweeps.*` import runs this file first, and a Ray
# trial worker, which needs only `sweeps.trainable`, would otherwise import Optuna and the spec
# loader at each worker start.
_REEXPORTED = ("sweeps.space", "sweeps.spec")


def __getattr__(name: str) -> Any:
    for home in _REEXPORTED:
        module = importlib.import_module(home)
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
