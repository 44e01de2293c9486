"""`bookkeeping`: a trial that only sleeps and reports, shaped like Ray Tune's bookkeeping release test.

Ray's `test_bookkeeping_overhead.py` runs 10,000 one-second trials that report once a second, so
what it measures is everything around the trials: scheduling, results, logging. This trial does
the same (`objective: {name: bookkeeping, trial_s, report_every_s}`), so a sweep of it times the
driver, not training. Its score is a fixed function of the sampled values (the same config always
scores the same), rising over its reports like a learning curve; it has no structure worth
searching: the figure it serves is bookkeeping, not search quality.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from typing import Any

from sweeps.trainable.report import FINAL_KEY


def config_score(config: Mapping[str, Any]) -> float:
    """A score in [0, 1) fixed by the sampled values (a stable hash: no process or seed enters it)."""
    sampled = {k: v for k, v in config.items() if not k.startswith("__")}
    digest = zlib.crc32(json.dumps(sampled, sort_keys=True, default=str).encode())
    return digest / 2**32


def bookkeeping_main(config: dict[str, Any], *, data: Any = None, settings: Any) -> None:
    """Ray Tune function trainable: `reports` results, one every `report_every_s` seconds, the last final.

    `data` is accepted (and ignored) so the engine hands every objective the same arguments;
    `settings.objective` holds `trial_s` and `report_every_s` (a `sweeps.spec.ObjectiveConfig`'s values).
    """
    from ray import tune

    every = float(settings.objective["report_every_s"])
    reports = max(1, round(float(settings.objective["trial_s"]) / every))
    score = config_score(config)
    begun = time.monotonic()
    for i in range(1, reports + 1):
        # Sleep to the i-th tick from the start, so time spent reporting does not stretch the trial.
        time.sleep(max(0.0, begun + i * every - time.monotonic()))
        value = score * i / reports  # (the metric rises to the config's score)
        result: dict[str, Any] = {settings.metric: value if settings.mode == "max" else 1.0 - value}
        if i == reports:
            result.update({"status": "ok", "failure_reason": "", FINAL_KEY: 1})
        tune.report(result)
