"""`TrialSettings`: what every trial of a sweep shares besides the data, pickled once per trial.

A module of its own, with nothing heavy behind it: a worker unpickles the settings before it runs
any objective, and a stand-in objective (`sweeps.trainable.bookkeeping`) must not pull the trainer
(and torch) into every worker for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares besides the data (small, pickled per trial)."""

    base: Mapping[str, Any]  # raw mapping of the sweep's base ExperimentConfig
    metric: str
    mode: str
    fixed: Mapping[str, Any]  # dotted overrides every trial gets (fixed params)
    threads: int = 1  # torch threads per trial = its CPU share, so concurrent trials do not oversubscribe
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ablation: name -> overrides
    objective: Mapping[str, Any] = field(default_factory=dict)  # the sweep's `objective` section, as plain data

    @property
    def fail_value(self) -> float:
        """The metric a diverged trial reports, so searchers rank it last rather than crash."""
        return 0.0 if self.mode == "max" else 1e9
