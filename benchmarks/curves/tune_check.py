"""The replay loop checked against Ray Tune itself: one sweep run both ways must do the same.

`tune_trace` runs a sweep on a problem through a real `tune.Tuner` (a Ray cluster on this machine,
a function trainable that reads the problem, the same searcher and scheduler objects `make_sweep`
builds), one trial at a time, so the order of results does not depend on timing. `replay` with
`concurrent=1` must then propose the same configurations, cut the same trials at the same epochs
and reach the target after the same trial-epochs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.curves.loop import Trace
from sweeps.trainable.report import FINAL_KEY

SEED_KEY = "replay.seed"


def _trainable(config: dict[str, Any], *, problem: Any, seed: int) -> None:
    """The function trainable: the configuration's recorded (or computed) curve, then the final report."""
    from ray import tune

    values, final, status, _, _ = problem.trial(config, seed)
    for v in values:
        tune.report({problem.metric: float(v)})
    tune.report({problem.metric: float(final), FINAL_KEY: 1, "status": status})


def tune_trace(problem: Any, *, searcher: Any, scheduler: Any, arm: str, seed: int, budget: int) -> Trace:
    """One sweep through Ray Tune, one trial at a time, until a hit or `budget` trial-epochs (ray.init first)."""
    from ray import tune
    from ray.tune import Callback, Stopper
    from ray.tune.schedulers import TrialScheduler

    trace = Trace(arm, seed, budget)
    infos: dict[str, list[Any]] = {}

    class Record(Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if trace.done:
                return
            if trial.trial_id not in infos:
                _, _, _, what, good = problem.trial(trial.config, seed)
                infos[trial.trial_id] = [what, 0, False, good, False]
                trace.trials.append(infos[trial.trial_id])
            trace.count(infos[trial.trial_id], result)

    # Which trials the scheduler cut: its own decisions, seen on their way to Tune (the object is the sweep's).
    cut: set[str] = set()
    decide = scheduler.on_trial_result

    def on_trial_result(controller: Any, trial: Any, result: dict) -> str:
        decision = decide(controller, trial, result)
        if decision == TrialScheduler.STOP and not result.get(FINAL_KEY):
            cut.add(trial.trial_id)
        return decision

    scheduler.on_trial_result = on_trial_result

    class Done(Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return trace.done

    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # the check's hundreds of short trials, not Tune's progress chatter
    with tempfile.TemporaryDirectory(prefix="mersweep-replay-tune-") as tmp:
        tuner = tune.Tuner(
            tune.with_parameters(_trainable, problem=problem, seed=seed),
            tune_config=tune.TuneConfig(
                metric=problem.metric,
                mode=problem.mode,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=budget,  # every trial reports an epoch: never the limit
                max_concurrent_trials=1,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="replay-check", storage_path=str(Path(tmp)), callbacks=[Record()], stop=Done(), verbose=0
            ),
        )
        try:
            tuner.fit()
        finally:
            tune_logger.setLevel(level)  # a logger's level belongs to the whole process: give it back
    for trial_id, entry in infos.items():
        entry[4] = trial_id in cut
    return trace
