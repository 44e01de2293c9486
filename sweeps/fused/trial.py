"""The function a fused Ray trial runs: K members of one Optuna search, trained as stacked models.

`population_main` builds each member's config (the sweep's base + its sampled values), splits
the members into groups that can share one stacked model (same schedule, then
`mer_core.train.fused.group_by_shape`), trains each group with `train_population`, and stops
members early by ASHA's rule (`sweeps.fused.rungs`) without stopping the others.

What Tune sees: one result per shared epoch with every reporting member's values under `m<i>/`
(`m3/val/weighted_f1`, `m3/iteration`: that member's own epoch count) and the sweep metric as
the population's best so far (Tune needs one value per result); then a final result with each
member's status, failure reason and final metrics, and a checkpoint folder with `m<i>/config.yaml`,
`m<i>/val_logits.npz` and `m<i>/trial.json` (as a one-trial Ray trial writes them at its top).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mer_core.configs import build_config
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import UserInputError
from mer_core.train import TrialResult
from mer_core.train.effective import effective_config
from mer_core.train.fused import MemberReport, group_by_shape, train_population
from mer_core.train.fused.fields import schedule_key
from sweeps.fused.members import RUNGS_KEY, RUNGS_RESULT, member_prefix, members_of
from sweeps.fused.rungs import RungSchedule, RungStopper
from sweeps.tracking.names import final_metric
from sweeps.trainable.faults import injector_from_env
from sweeps.trainable.report import FINAL_KEY, placement
from sweeps.trainable.trial import TrialSettings, trial_overrides, write_trial_artifacts
from sweeps.trainable.worker_setup import quiet_worker

__all__ = ["PopulationRelay", "population_main", "train_groups"]


class PopulationRelay:
    """Members' epoch reports -> one Tune result per shared epoch, and each member's stop decision."""

    def __init__(self, *, settings: TrialSettings, stopper: RungStopper, send: Callable[[dict[str, Any]], None]):
        self.settings = settings
        self.stopper = stopper
        self._send = send
        self._pending: dict[int, dict[str, Any]] = {}  # member -> its values of the epoch being collected
        self.best: float | None = None  # the population's best epoch value of the sweep metric so far
        self.last: dict[int, float] = {}  # member -> its last reported value of the metric

    def reporter(self, group: Sequence[int]) -> MemberReport:
        """The `report` of `train_population` for one group (its member i is population member group[i]).

        Groups train one after another: what the previous group left pending goes out first.
        """
        self.flush()
        return lambda local, metrics: self.on_report(group[local], metrics)

    def on_report(self, member: int, metrics: Mapping[str, Any]) -> bool:
        """Record one epoch of `member`; True stops it (ASHA's rule)."""
        if member in self._pending:  # members report in turn each epoch: a second report is the next epoch
            self.flush()
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        self._pending[member] = values
        value = values.get(self.settings.metric)
        if isinstance(value, (int, float)):
            self.last[member] = float(value)
            if self.best is None or _better(float(value), self.best, self.settings.mode):
                self.best = float(value)
        return self.stopper.should_stop(member, int(values.get("iteration", 0)), self.last.get(member))

    def flush(self) -> None:
        """Send the epoch collected so far as one Tune result (nothing if nothing is pending)."""
        if not self._pending:
            return
        result = {f"{member_prefix(i)}{k}": v for i, vals in sorted(self._pending.items()) for k, v in vals.items()}
        result[self.settings.metric] = self.best if self.best is not None else self.settings.fail_value
        self._pending = {}
        self._send(result)

    def final(self, results: Mapping[int, TrialResult], invalid: Mapping[int, str]) -> dict[str, Any]:
        """The last result: every member's outcome, and the population's best final value."""
        self.flush()
        out: dict[str, Any] = {}
        best: float | None = None
        for i, result in results.items():
            values = self._member_final(i, result)
            out.update({f"{member_prefix(i)}{k}": v for k, v in values.items()})
            if values["status"] == "ok" and (best is None or _better(values[self.settings.metric], best, self.mode)):
                best = values[self.settings.metric]
        for i, reason in invalid.items():
            values = {"status": "invalid", "failure_reason": reason, "iteration": 0}
            out.update({f"{member_prefix(i)}{k}": v for k, v in values.items()})
            out[f"{member_prefix(i)}{self.settings.metric}"] = self.settings.fail_value
        out[self.settings.metric] = best if best is not None else self.settings.fail_value
        out.update({"status": "ok", FINAL_KEY: 1, RUNGS_RESULT: json.dumps(self.stopper.new)})
        out["population/size"] = len(results) + len(invalid)
        return out

    @property
    def mode(self) -> str:
        return self.settings.mode

    def _member_final(self, member: int, result: TrialResult) -> dict[str, Any]:
        """As `sweeps.trainable.trial` reports a trial's end; a pruned member keeps its last epoch's value,
        as a trial that ASHA stopped keeps its last result."""
        metric, status = self.settings.metric, result.status
        values: dict[str, Any] = {"status": status, "failure_reason": result.failure_reason, "iteration": result.epochs}
        if status == "ok":
            values.update({final_metric(k): v for k, v in result.metrics.items()})
            values.update(result.metrics)
        if status == "pruned" and member in self.last:
            values[metric] = self.last[member]
        elif status != "ok" or metric not in values:
            values[metric] = self.settings.fail_value
        return values


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def build_members(
    members: Sequence[Mapping[str, Any]], settings: TrialSettings
) -> tuple[dict[int, ExperimentConfig], dict[int, str]]:
    """Each member's config; a sampled value the config rejects makes that member invalid (with the reason)."""
    cfgs, invalid = {}, {}
    for i, params in enumerate(members):
        try:
            cfgs[i] = build_config(settings.base, trial_overrides(params, settings))
        except UserInputError as err:
            invalid[i] = str(err)
    return cfgs, invalid


def fused_groups(cfgs: Mapping[int, ExperimentConfig]) -> list[list[int]]:
    """Members that can train as one stacked model: same schedule fields, then same shapes.

    `group_by_shape` refuses members whose schedule (data, batch sizes, epochs, optimizer,
    runtime) differs; a search space may sample such fields, so they split groups here first.
    """
    by_schedule: dict[tuple, list[int]] = {}
    for i, cfg in cfgs.items():
        by_schedule.setdefault(schedule_key(cfg), []).append(i)
    groups = []
    for indices in by_schedule.values():
        groups += [[indices[j] for j in group] for group in group_by_shape([cfgs[i] for i in indices])]
    return groups


def train_groups(
    cfgs: Mapping[int, ExperimentConfig], data: FeatureSet, relay: PopulationRelay
) -> dict[int, TrialResult]:
    """Train every group of the population in turn; one result per member."""
    results: dict[int, TrialResult] = {}
    for group in fused_groups(cfgs):
        outcomes = train_population([cfgs[i] for i in group], data, report=relay.reporter(group))
        relay.flush()
        results.update(zip(group, outcomes, strict=True))
    return dict(sorted(results.items()))


def population_main(
    config: dict[str, Any], *, data: FeatureSet, settings: TrialSettings, schedule: RungSchedule
) -> None:
    """Ray Tune function trainable of fused mode (wrapped with tune.with_parameters by the engine)."""
    import ray  # imported here so importing this module does not start Ray
    from ray import tune

    quiet_worker()
    members = members_of(config) or []
    cfgs, invalid = build_members(members, settings)
    faults = injector_from_env(config, state_dir=Path(tune.get_context().get_storage().trial_fs_path))
    node = placement(ray.get_runtime_context().get_node_id(), os.environ)

    def send(result: dict[str, Any]) -> None:
        if faults is not None:
            faults.on_epoch()
        tune.report({**result, **node})

    # As a one-trial Ray trial does: each member's config says the threads, device and folds it ran with.
    cfgs = {i: effective_config(cfg, threads=settings.threads) for i, cfg in cfgs.items()}
    relay = PopulationRelay(settings=settings, stopper=RungStopper(schedule, config.get(RUNGS_KEY, ())), send=send)
    results = train_groups(cfgs, data, relay)
    final = relay.final(results, invalid)
    with tempfile.TemporaryDirectory(prefix="mersweep-population-") as tmp:
        for i, result in results.items():
            folder = Path(tmp) / member_prefix(i).rstrip("/")
            folder.mkdir()
            write_trial_artifacts(folder, cfgs[i], result)
        tune.report({**final, **node}, checkpoint=tune.Checkpoint.from_directory(tmp))
