"""Arm (a) of `python -m benchmarks scale`: plain Ray Tune on a running cluster, in a process of its own.

The same trainable as the sweep arm (`sweeps.trainable.bookkeeping.bookkeeping_main`, the same
trial length and reports), the same trials at once and actor reuse, at most as many trials pending as
slots, Tune's own random search over seven uniform values, no scheduler and no callbacks: the floor
the sweep arm's driver is measured against. Its own process, so its peak RSS and its start-up count as the sweep's do.

    python -m benchmarks.scale_plain --address HOST:PORT --trials N --slots K --trial-s S --folder DIR
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

METRIC = "val/weighted_f1"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_plain")
    p.add_argument("--address", required=True)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--trial-s", type=float, required=True)
    p.add_argument("--report-every-s", type=float, required=True)
    p.add_argument("--folder", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # as the sweep's engine: Tune's reporter stays quiet
    # Tune's own bound on pending trials for a searcher under a concurrency limit is that limit; for its
    # random search it is max(200, 1.1 x CPUs), and 200 pending placement groups each want a fresh worker
    # process: on a small machine plain Tune then starts a process per trial (1,000 one-second trials on 8
    # slots of 2 cores: 1,026 s by default, 137 s with this bound). Plain Tune at its best is the floor.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(args.slots))
    import ray
    from ray import tune

    from sweeps.trainable.bookkeeping import bookkeeping_main
    from sweeps.trainable.settings import TrialSettings

    started = time.perf_counter()
    ray.init(address=args.address, logging_level="WARNING", log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus != args.slots:  # the cluster's CPUs are what bounds the trials at once here (see below)
        p.error(f"--slots: the cluster's CPU count ({cpus}) is the number of trials at once here; given {args.slots}")
    objective = {"name": "bookkeeping", "trial_s": args.trial_s, "report_every_s": args.report_every_s}
    settings = TrialSettings(base={}, metric=METRIC, mode="max", fixed={}, objective=objective)
    trainable = tune.with_resources(tune.with_parameters(bookkeeping_main, settings=settings), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={f"x{i}": tune.uniform(0.0, 1.0) for i in range(7)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=args.trials,
            # No max_concurrent_trials, as in Ray's release test: the cluster's CPUs (--slots of them)
            # already bound the trials at once, and with a limit Tune has no staged trial when one
            # ends, so it stops the finished trial's actor and starts a new worker process for the next.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="plain", storage_path=args.folder, verbose=0),
    )
    fit = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - fit
    ended = sum(1 for r in grid if r.metrics and r.metrics.get("final"))
    ray.shutdown()
    print(json.dumps({"fit_s": fit_s, "wall_s": time.perf_counter() - started, "trials": len(grid), "ended": ended}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
