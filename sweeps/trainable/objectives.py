"""What a trial runs, by the name a sweep gives in `objective.name`.

- `mrccl` (the default): `sweeps.trainable.trial.trial_main`, which trains the experiment config.
- `bookkeeping`: `sweeps.trainable.bookkeeping.bookkeeping_main`, a trial that sleeps and reports
  on a clock, for benchmarks of the driver (`python -m benchmarks scale`); it trains nothing.

Each entry also says how many results one of its trials reports at most: ASHA's top rung and the
progress display's estimate of the time left come from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mer_core.configs import ExperimentConfig
from mer_core.registry import Registry
from sweeps.trainable.bookkeeping import bookkeeping_main
from sweeps.trainable.report import max_iterations
from sweeps.trainable.trial import trial_main


@dataclass(frozen=True)
class Objective:
    """A Ray function trainable `(config, *, data, settings)` and the most results one trial reports."""

    trainable: Callable[..., None]
    iterations: Callable[[ExperimentConfig, Any], int]  # (base config, ObjectiveConfig) -> results


OBJECTIVES: Registry[Objective] = Registry("objective")


OBJECTIVES.register("mrccl")(Objective(trial_main, lambda base, _: max_iterations(base)))
OBJECTIVES.register("bookkeeping")(Objective(bookkeeping_main, lambda _, objective: objective.reports()))


def objective_of(spec: Any) -> Objective:
    """The registered objective a sweep names (ConfigError `objective.name` listing the names if unknown)."""
    return OBJECTIVES.get(spec.objective.name, field="objective.name")


def trial_iterations(spec: Any, base: ExperimentConfig) -> int:
    """Most results one trial of the sweep reports (ASHA's top rung, the progress estimate)."""
    return objective_of(spec).iterations(base, spec.objective)
