"""Fault injection for tests and benchmarks: trials that fail, raise at an epoch, or hang.

A fault plan comes only from the environment variable MERSWEEP_FAULTS (a JSON object), never
from an experiment or sweep config, so no recorded run can carry one by accident:

    MERSWEEP_FAULTS='{"p": 0.3, "seed": 1}'         # 30% of trial attempts raise at their 1st epoch
    MERSWEEP_FAULTS='{"at_epoch": 2}'               # every attempt raises at its 2nd epoch report
    MERSWEEP_FAULTS='{"hang_s": 30, "at_epoch": 1}' # every attempt sleeps 30 s at epoch 1, then goes on
    MERSWEEP_FAULTS='{"hang_s": "forever"}'         # every attempt hangs at epoch 1 until it is killed

The driver validates the variable once (`plan_from_env` in `sweeps.execution.prepare.prepare`: a bad value
exits 2 before anything is written) and hands it to every Ray worker through the job's
`runtime_env`, so workers on other nodes see it too. The hook sits in the trial's report path
(`sweeps.trainable.trial`): an epoch report calls `FaultInjector.on_epoch` before reporting.

Whether an attempt is hit depends only on (seed, trial key, attempt), so a test can recompute
every decision: the key is the trial's sampled config (Ray's trial ids are random per run, a
seeded sampler's configs are not); the attempt is counted in `runs/<sweep>/<trial>/faults.jsonl`
(Ray's storage folder of the trial, which a cluster shares between nodes), one line per attempt
saying what was injected.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mer_core.configs.fields import fld, from_dict
from mer_core.errors import UserInputError

FAULTS_ENV = "MERSWEEP_FAULTS"
LOG_NAME = "faults.jsonl"  # one line per attempt of a trial, in the trial's folder


class InjectedFault(RuntimeError):
    """The exception a fault plan raises inside a trial (Ray counts it as a trial failure)."""


@dataclass(frozen=True)
class FaultPlan:
    """What to inject into every trial attempt; validated by `parse_plan`."""

    p: float = fld(1.0, ge=0.0, le=1.0, doc="probability that an attempt is hit")
    seed: int = fld(0, ge=0, doc="seed of the per-(trial, attempt) decisions")
    at_epoch: int = fld(1, ge=1, doc="the epoch report (1-based) at which a hit attempt fails or hangs")
    hang_s: float | Literal["forever"] | None = fld(None, gt=0.0, doc="null: raise; else sleep this long")

    def strikes(self, key: str, attempt: int) -> bool:
        """Whether attempt `attempt` (0-based) of the trial with key `key` is hit."""
        if self.p >= 1.0 or self.p <= 0.0:
            return self.p >= 1.0
        # A str seed goes through SHA-512 in random.Random: stable across processes and runs,
        # unlike hash(), which is salted per process.
        return random.Random(f"{self.seed}/{key}/{attempt}").random() < self.p

    def failures_before_success(self, key: str, *, max_retries: int) -> int:
        """Failed attempts Ray should count for a trial (max_retries + 1 means it ends failed)."""
        attempt = 0
        while attempt <= max_retries and self.strikes(key, attempt):
            attempt += 1
        return attempt

    @property
    def hang_seconds(self) -> float | None:
        """None: a hit raises; inf: it hangs until the trial is killed; else it sleeps that long."""
        return math.inf if self.hang_s == "forever" else self.hang_s

    def to_json(self) -> str:
        return json.dumps({"p": self.p, "seed": self.seed, "at_epoch": self.at_epoch, "hang_s": self.hang_s})


def parse_plan(text: str | None) -> FaultPlan | None:
    """The plan in `text` (MERSWEEP_FAULTS's value); None when unset or blank.

    Raises:
        UserInputError: naming MERSWEEP_FAULTS (and the key), the allowed values and the given value.
    """
    if text is None or not text.strip():
        return None
    example = 'a JSON object such as {"p": 0.3, "seed": 1}, {"at_epoch": 2} or {"hang_s": 30}'
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{FAULTS_ENV}: not valid JSON ({err.msg}); allowed: {example}; given: {text!r}") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{FAULTS_ENV}: expected a JSON object; allowed: {example}; given: {text!r}")
    return from_dict(FaultPlan, raw, FAULTS_ENV)


def plan_from_env(environ: Mapping[str, str] | None = None) -> FaultPlan | None:
    """The plan in $MERSWEEP_FAULTS (validated), or None when no faults are asked for."""
    env = os.environ if environ is None else environ
    return parse_plan(env.get(FAULTS_ENV))


def fault_runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """A Ray `runtime_env` that hands the plan to every worker, also on other nodes; None if no plan."""
    plan = plan_from_env(environ)
    return None if plan is None else {"env_vars": {FAULTS_ENV: plan.to_json()}}


def trial_key(config: Mapping[str, Any]) -> str:
    """A trial's identity for the decisions: its sampled config, canonically serialised."""
    return json.dumps({str(k): config[k] for k in sorted(config, key=str)}, sort_keys=True, default=str)


class FaultInjector:
    """One trial attempt's share of a plan: counts epoch reports and strikes at `at_epoch`."""

    def __init__(self, plan: FaultPlan, *, key: str, attempt: int) -> None:
        self.plan = plan
        self.key = key
        self.attempt = attempt
        self.hit = plan.strikes(key, attempt)
        self.epoch = 0

    @classmethod
    def begin(cls, plan: FaultPlan, *, key: str, state_dir: Path) -> FaultInjector:
        """The injector of the next attempt of a trial whose folder is `state_dir`.

        Ray retries a trial in a fresh worker process, so the attempt number lives on disk: one
        line per attempt in `state_dir/faults.jsonl` (also a record of what was injected).
        """
        log = state_dir / LOG_NAME
        attempt = len(log.read_text().splitlines()) if log.exists() else 0
        injector = cls(plan, key=key, attempt=attempt)
        state_dir.mkdir(parents=True, exist_ok=True)
        action = "none" if not injector.hit else ("raise" if plan.hang_s is None else "hang")
        with log.open("a") as out:
            out.write(json.dumps({"attempt": attempt, "action": action, "at_epoch": plan.at_epoch}) + "\n")
        return injector

    def on_epoch(self) -> None:
        """Called before each epoch report; raises or sleeps at the planned epoch of a hit attempt."""
        self.epoch += 1
        if not self.hit or self.epoch != self.plan.at_epoch:
            return
        hang = self.plan.hang_seconds
        if hang is None:
            raise InjectedFault(f"injected fault at epoch {self.epoch} (attempt {self.attempt}, {FAULTS_ENV})")
        if math.isinf(hang):
            threading.Event().wait()  # forever: only Ray stopping the trial (or the sweep) ends it
        time.sleep(hang)


def injector_from_env(config: Mapping[str, Any], *, state_dir: Path) -> FaultInjector | None:
    """The injector of a trial attempt when $MERSWEEP_FAULTS is set (tests, benchmarks), else None."""
    plan = plan_from_env()
    if plan is None:
        return None
    return FaultInjector.begin(plan, key=trial_key(config), state_dir=state_dir)


def read_log(state_dir: Path) -> list[dict[str, Any]]:
    """The attempts recorded in a trial's folder (empty if none): what was injected, when."""
    log = Path(state_dir) / LOG_NAME
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
