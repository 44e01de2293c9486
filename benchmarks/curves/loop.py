"""Replaying a sweep on recorded curves: the engine's searcher and scheduler, driven as Ray Tune drives them.

`replay` runs one sweep: the searcher (`TellingOptunaSearch` over `make_sampler`'s seeded sampler:
the tell rule decides what Optuna learns) proposes, the scheduler (`build_scheduler`, the code
behind `scheduler.kind`) decides after every result, and each trial's results come from a
`Problem` (a recorded table, or MF-Hartmann6) instead of training. The calls and their order are
Tune's (`ray.tune.execution.tune_controller`): `suggest`, `on_trial_add`; per result the
scheduler's `on_trial_result` first, then, unless it said STOP, the searcher's; a stopped or
finished trial gets `on_trial_complete` from both with its last result, a finished one after Tune's
duplicate of its last result. Trials are real `ray.tune.experiment.Trial` objects (stubs: no actor
behind them), so the schedulers read what they read in a sweep.

What differs from Tune is only the clock: `concurrent` trials run at once and every epoch of every
trial takes one tick, so the order results arrive in is fixed (ties: the trial that started first)
and a sweep is a pure function of its seed. No Ray cluster is started; a sweep takes milliseconds
of driver time plus its sampler's, which is what buys hundreds of seeds per arm.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sweeps.trainable.report import FINAL_KEY, TIME_ATTR


class Problem(Protocol):
    """What a replayed trial reports: its curve and final value, and whether its end reaches the target."""

    metric: str
    mode: str
    epochs: int

    def trial(self, config: Mapping[str, Any], seed: int) -> tuple[Sequence[float], float, str, Any, bool]:
        """(per-epoch values, final value, status, what the config is (a table row, a point), final reaches target)."""


@dataclass
class Trace:
    """What one replayed sweep did, in the order results arrived."""

    arm: str
    seed: int
    budget: int
    epochs: int = 0  # trial-epochs received so far
    hit_at: float = math.inf  # epochs spent when a finished trial first reached the target
    trials: list[list[Any]] = field(default_factory=list)  # [what, epochs run, finished, reaches target, cut]

    @property
    def done(self) -> bool:
        return math.isfinite(self.hit_at) or self.epochs >= self.budget

    def count(self, entry: list[Any], result: Mapping[str, Any]) -> bool:
        """Book one result of the trial `entry` (one of `trials`); returns whether it was the trial's final one.

        An epoch's result costs one trial-epoch; the final result (the trial's end, no epoch of its
        own) marks it finished and, where it reaches the target, the hit at the epochs spent so far.
        """
        if result.get(FINAL_KEY):
            entry[2] = True
            if entry[3]:
                self.hit_at = float(self.epochs)
            return True
        entry[1] += 1
        self.epochs += 1
        return False


class _Controller:
    """The part of Tune's controller that schedulers read (`get_live_trials`, `get_trials`)."""

    def __init__(self) -> None:
        self.trials: list[Any] = []
        self.live: set[Any] = set()

    def get_live_trials(self) -> set[Any]:
        return self.live

    def get_trials(self) -> list[Any]:
        return self.trials


def replay(
    problem: Problem,
    *,
    searcher: Any,
    scheduler: Any,
    arm: str,
    seed: int,
    budget: int,
    concurrent: int = 2,
) -> Trace:
    """One sweep of `searcher` + `scheduler` on `problem` until a hit or `budget` trial-epochs."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    trace = Trace(arm, seed, budget)
    ctrl = _Controller()
    scheduler.set_search_properties(problem.metric, problem.mode)
    queue: list[tuple[int, int, int]] = []  # (tick of the next result, trial number, result index)
    running: dict[int, tuple[Any, list[dict[str, Any]], list[Any]]] = {}
    exhausted = False
    number = 0
    now = 0

    def start() -> bool:
        nonlocal number
        trial_id = f"{seed:04d}_{number:05d}"
        config = searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return False
        values, final, status, what, good = problem.trial(config, seed)
        results = [
            {problem.metric: float(v), TIME_ATTR: i + 1, "epoch": i + 1, "config": config} for i, v in enumerate(values)
        ]
        results.append({problem.metric: float(final), TIME_ATTR: len(values) + 1, FINAL_KEY: 1, "status": status})
        trial = Trial("replay", config=config, trial_id=trial_id, stub=True, _setup_default_resource=False)
        trial.set_status(Trial.RUNNING)
        ctrl.trials.append(trial)
        ctrl.live.add(trial)
        scheduler.on_trial_add(ctrl, trial)
        info = [what, 0, False, good, False]
        trace.trials.append(info)
        running[number] = (trial, results, info)
        heapq.heappush(queue, (now + 1, number, 0))
        number += 1
        return True

    def complete(trial: Any, result: dict[str, Any]) -> None:
        scheduler.on_trial_complete(ctrl, trial, result)
        searcher.on_trial_complete(trial.trial_id, result=result)
        trial.set_status(Trial.TERMINATED)
        ctrl.live.discard(trial)

    while not trace.done:
        while not exhausted and len(running) < concurrent:
            exhausted = not start()
        if not queue:
            break
        now, k, i = heapq.heappop(queue)
        trial, results, info = running[k]
        result = results[i]
        final = trace.count(info, result)
        decision = scheduler.on_trial_result(ctrl, trial, result)
        trial.update_last_result(result)
        if decision == TrialScheduler.STOP:
            info[4] = not final  # a scheduler's STOP on the final report (ASHA at max_t) cuts nothing
            complete(trial, result)
            del running[k]
            continue
        searcher.on_trial_result(trial.trial_id, result)
        if final:
            scheduler.on_trial_result(ctrl, trial, {**result, "done": True})  # Tune's duplicate of the last result
            complete(trial, result)
            del running[k]
        else:
            heapq.heappush(queue, (now + 1, k, i + 1))
    return trace
