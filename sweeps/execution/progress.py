"""`ProgressCallback`: what a running sweep shows on the driver's stderr.

On a terminal, one live line redrawn in place: trials ended/total, done, pruned, failed, running,
best so far, elapsed time and an estimate of the time left. Off a terminal (a pipe, a log file,
CI, `nohup`), one line per ended trial and nothing else, so a log holds each trial exactly once.
A `--verbose` run off a terminal also gets a line when a trial starts.

Counts sweep trials, not Ray trials: in fused mode each member of a population counts as one.
The line formatting and the estimate of time left are pure functions of a `Snapshot`
(`sweeps.execution.status`), so they are tested without Ray.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ray.tune import Callback

from sweeps.execution.status import (
    CLEAR_LINE,
    Snapshot,
    Tally,
    Unit,
    clock_text,
    counts_text,
    ended_line,
    estimate_left,
    format_duration,
    live_line,
    remaining_iterations,
    started_line,
    status_text,
)
from sweeps.fused.members import member_outcome, member_result, members_of, run_units
from sweeps.trainable.report import ENDED, TIME_ATTR, trial_outcome

__all__ = [
    "BACKLOG_SHOWN",
    "CLEAR_LINE",
    "ProgressCallback",
    "Unit",
    "estimate_left",
    "format_duration",
    "remaining_iterations",
    "status_text",
]

REDRAW_EVERY_S = 1.0  # the live line's clock and estimate tick at most this often
BACKLOG_SHOWN = 50  # MLflow operations waiting before the line mentions them (a few trials' worth is normal)


class ProgressCallback(Callback):
    """Shows the sweep's progress: a live line on a terminal, one line per ended trial elsewhere."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        total: int,
        max_iterations: int,
        stream: TextIO | None = None,
        live: bool | None = None,
        verbose: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            metric: The sweep's metric (best so far).
            mode: max or min.
            total: Sweep trials (fused mode: members).
            max_iterations: Most epochs one trial can report (`sweeps.trainable.report.max_iterations`),
                the estimate's guess until trials end.
            stream: Where to write (default: `sys.stderr` at each write).
            live: Redraw one line in place; default: whether the stream is a terminal.
            verbose: Off a terminal, a line when a trial starts as well.
            clock: Seconds from some fixed point (for elapsed time and the rate of epochs).
        """
        self.metric, self.mode, self.total, self.max_iterations = metric, mode, total, max_iterations
        self._stream, self._live, self.verbose, self._now = stream, live, verbose, clock
        self._started = clock()
        self._ended: dict[str, Unit] = {}
        self._tally = Tally(mode)
        self._retired: set[str] = set()  # Ray trials whose every unit ended and is counted: not read again
        self._seen_running: set[str] = set()
        self._first_step = True
        self._clock: tuple[float, int] | None = None  # (time, epochs done) when training began in this run
        self._drawn: tuple[str, float] = ("", 0.0)  # the live line's text (without its clock) and when drawn
        self._open_line = False  # a live line is on screen without its newline
        # A phrase appended to the line (an ablation's looks and verdicts: AblationSearcher.status);
        # set by the engine, not pickled (it belongs to the live searcher).
        self.status: Callable[[], str] | None = None
        # MLflow operations the driver has not sent yet (SweepTracker.backlog); set by the engine, not pickled.
        self.backlog: Callable[[], int] | None = None

    def __getstate__(self) -> dict:
        # A terminal does not travel (the unpickled callback writes to stderr); nor does the live searcher.
        return {**self.__dict__, "_stream": None, "status": None, "backlog": None}

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def live(self) -> bool:
        if self._live is None:
            self._live = bool(getattr(self.stream, "isatty", lambda: False)())
        return self._live

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._update_from(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._update_from(trials)
        self.close()

    def _update_from(self, trials: list) -> None:
        """`update` with the Ray trials not retired yet: Tune steps many times a second, and a scan of
        every trial each time would grow with the sweep's history."""
        live = [t for t in trials if t.trial_id not in self._retired]
        self.update(_units(live, self.metric))
        for trial in live:
            if trial.status in ENDED and all(unit[0] in self._ended for unit in run_units(trial)):
                self._retired.add(trial.trial_id)

    def close(self) -> None:
        """End the live line (a newline), so what is printed next starts on a line of its own."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def update(self, units: Sequence[Unit]) -> None:
        """Take in the trials' state now; write what changed."""
        now = self._now()
        running = tuple(u for u in units if u.outcome is None and u.trial_id not in self._ended)
        newly_ended = [u for u in units if u.outcome is not None and u.trial_id not in self._ended]
        done_epochs = self._tally.epochs + sum(u.iterations for u in units if u.trial_id not in self._ended)
        if self._clock is None and running:
            self._clock = (now, done_epochs)
        if self._first_step and newly_ended:
            # A resumed sweep: trials that ended in an earlier run are counted, not announced again.
            for unit in newly_ended:
                self._end(unit)
            newly_ended = []
            if not self.live:
                snap = self._snapshot(running, units, now, done_epochs)
                self._write(f"{clock_text(snap)} resumed | {counts_text(snap)}\n")
        self._first_step = False
        if self.live:
            for unit in newly_ended:
                self._end(unit)
            self._redraw(self._snapshot(running, units, now, done_epochs), now)
            return
        if self.verbose:
            for unit in running:
                if unit.trial_id not in self._seen_running:
                    self._seen_running.add(unit.trial_id)
                    self._write(started_line(unit, self._snapshot(running, units, now, done_epochs)) + "\n")
        for unit in newly_ended:  # one at a time, so each line's counts go up by one
            self._end(unit)
            self._write(ended_line(unit, self._snapshot(running, units, now, done_epochs)) + "\n")

    def _end(self, unit: Unit) -> None:
        self._ended[unit.trial_id] = unit
        self._tally.add(unit)

    def _snapshot(self, running: tuple[Unit, ...], units: Sequence[Unit], now: float, done_epochs: int) -> Snapshot:
        rate = None
        if self._clock is not None and now > self._clock[0] and done_epochs > self._clock[1]:
            rate = (done_epochs - self._clock[1]) / (now - self._clock[0])
        still_running = tuple(u for u in running if u.trial_id not in self._ended)
        pending = max(self.total - len(self._ended) - len(still_running), 0)
        eta = estimate_left(
            self._tally.lengths,
            [u.iterations for u in still_running],
            pending,
            max_iterations=self.max_iterations,
            rate=rate,
        )
        return Snapshot(
            total=self.total,
            tally=self._tally,
            running=still_running,
            metric=self.metric,
            mode=self.mode,
            elapsed_s=now - self._started,
            eta_s=eta,
            note=self._note(),
        )

    def _note(self) -> str:
        """The searcher's phrase, and the MLflow backlog once it is more than a few trials' worth."""
        parts = [self.status()] if self.status is not None else []
        waiting = self.backlog() if self.backlog is not None else 0
        if waiting >= BACKLOG_SHOWN:
            parts.append(f"mlflow backlog {waiting}")
        return "; ".join(p for p in parts if p)

    def _redraw(self, snap: Snapshot, now: float) -> None:
        content = counts_text(snap).rsplit(" | ", 1)[0]  # without the clock and the estimate
        if content == self._drawn[0] and now - self._drawn[1] < REDRAW_EVERY_S:
            return
        self._drawn = (content, now)
        self._write(live_line(snap, shutil.get_terminal_size().columns))
        self._open_line = True

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _units(trials: list, metric: str) -> list[Unit]:
    """Each sweep trial of the Ray trials (each member in fused mode) that has started."""
    units: list[Unit] = []
    for trial in trials:
        for trial_id, outcome, value in _tallies(trial, metric):
            iterations = int((trial.last_result or {}).get(TIME_ATTR) or 0)
            units.append(Unit(trial_id, outcome, value if isinstance(value, (int, float)) else None, iterations))
    return units


def _tallies(trial: Any, metric: str) -> list[tuple[str, str | None, Any]]:
    """(trial id, outcome, value of `metric`) of each sweep trial in a Ray trial (each member in
    fused mode); outcome None while running, nothing while pending."""
    if trial.status == "RUNNING":
        return [(unit[0], None, None) for unit in run_units(trial)]
    if trial.status not in ENDED:
        return []
    last, errored = trial.last_result or {}, trial.status == "ERROR"
    if members_of(trial.config) is None:
        return [(trial.trial_id, trial_outcome(last, errored=errored), last.get(metric))]
    return [
        (unit[0], member_outcome(last, i, errored=errored), member_result(last, i).get(metric))
        for i, unit in enumerate(run_units(trial))
    ]
