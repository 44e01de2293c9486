"""`ProgressCallback`: the live status line a sweep prints on the driver's terminal.

Counts sweep trials, not Ray trials: in fused mode each member of a population counts as one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from sweeps.fused.members import member_outcome, member_result, members_of, run_units
from sweeps.trainable.report import ENDED, trial_outcome


class ProgressCallback(Callback):
    """One status line whenever the counts change: running / done / pruned / failed, best so far."""

    def __init__(self, *, metric: str, mode: str, total: int, stream=sys.stderr) -> None:
        self.metric, self.mode, self.total, self.stream = metric, mode, total, stream
        self._last_line = ""
        self._started = time.monotonic()
        # A phrase appended to the line (an ablation's looks and verdicts: AblationSearcher.status);
        # set by the engine, not pickled (it belongs to the live searcher).
        self.status: Callable[[], str] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stream": None, "status": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream = sys.stderr

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        line = self.status_line(trials)
        key = line.split("] ", 1)[-1]  # the elapsed time alone is no news
        if key != self._last_line:
            self._last_line = key
            print(line, file=self.stream, flush=True)

    def status_line(self, trials: list) -> str:
        counts = {"running": 0, "done": 0, "pruned": 0, "failed": 0}
        best: tuple[float, str] | None = None
        for t in trials:
            for outcome, value, label in _tallies(t, self.metric):
                if outcome is None:
                    counts["running"] += 1
                    continue
                counts[{"ok": "done", "pruned": "pruned"}.get(outcome, "failed")] += 1
                if outcome == "ok" and isinstance(value, (int, float)):
                    score = value if self.mode == "max" else -value
                    if best is None or score > best[0]:
                        best = (score, f"{value:.4f} ({label})")
        elapsed = time.monotonic() - self._started
        best_text = best[1] if best else "-"
        extra = f" | {self.status()}" if self.status is not None else ""
        return (
            f"[{elapsed:6.0f}s] trials {counts['done'] + counts['pruned'] + counts['failed']}/{self.total} ended: "
            f"{counts['done']} done, {counts['pruned']} pruned, {counts['failed']} failed; "
            f"{counts['running']} running | best {self.metric} {best_text}{extra}"
        )


def _tallies(trial, metric: str) -> list[tuple[str | None, Any, str]]:
    """(outcome, value of `metric`, trial id) of each sweep trial in a Ray trial (each member in
    fused mode); outcome None while running, nothing while pending."""
    if trial.status == "RUNNING":
        return [(None, None, unit[0]) for unit in run_units(trial)]
    if trial.status not in ENDED:
        return []
    last, errored = trial.last_result or {}, trial.status == "ERROR"
    if members_of(trial.config) is None:
        return [(trial_outcome(last, errored=errored), last.get(metric), trial.trial_id)]
    return [
        (member_outcome(last, i, errored=errored), member_result(last, i).get(metric), unit[0])
        for i, unit in enumerate(run_units(trial))
    ]
