"""`ProgressCallback`: what a running sweep shows on the driver's stderr.

On a terminal, one live line redrawn in place: trials ended/total, done, pruned, failed, running,
best so far, elapsed time and an estimate of the time left. Off a terminal (a pipe, a log file,
CI, `nohup`), one line per ended trial and nothing else, so a log holds each trial exactly once.
A `--verbose` run off a terminal also gets a line when a trial starts.

Counts sweep trials, not Ray trials: in fused mode each member of a population counts as one.
The line formatting and the estimate of time left are pure functions of a `Snapshot`, so they
are tested without Ray.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback

from sweeps.fused.members import member_outcome, member_result, members_of, run_units
from sweeps.trainable.report import ENDED, TIME_ATTR, trial_outcome

REDRAW_EVERY_S = 1.0  # the live line's clock and estimate tick at most this often
BACKLOG_SHOWN = 50  # MLflow operations waiting before the line mentions them (a few trials' worth is normal)
CLEAR_LINE = "\r\x1b[K"  # carriage return + erase to the end of the line (every terminal since the VT100)


@dataclass(frozen=True)
class Unit:
    """One sweep trial as the driver sees it: outcome None while it runs."""

    trial_id: str
    outcome: str | None  # ok | pruned | diverged | invalid | error, None while running
    value: float | None  # the sweep's metric in its last result
    iterations: int  # epochs reported so far (Tune's `training_iteration`)


class Tally:
    """The ended trials, kept as counts (outcomes, epochs, the best so far) as each one ends, so a
    status line costs the same after 10,000 trials as after 10."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.n = 0
        self.done = 0
        self.pruned = 0
        self.epochs = 0  # summed over the ended trials
        self.lengths: Counter[int] = Counter()  # epochs trained -> ended trials that trained that many
        self.best: Unit | None = None

    def add(self, unit: Unit) -> None:
        self.n += 1
        self.done += unit.outcome == "ok"
        self.pruned += unit.outcome == "pruned"
        self.epochs += unit.iterations
        self.lengths[unit.iterations] += 1
        self.best = best_unit([self.best, unit] if self.best is not None else [unit], self.mode)

    @property
    def failed(self) -> int:
        return self.n - self.done - self.pruned


@dataclass(frozen=True)
class Snapshot:
    """What one status line shows."""

    total: int
    tally: Tally  # the trials that ended, counted as they ended
    running: tuple[Unit, ...]
    metric: str
    mode: str
    elapsed_s: float
    eta_s: float | None  # None until an epoch has been reported
    note: str = ""  # what the searcher adds (an ablation's looks and verdicts: AblationSearcher.status)


def remaining_iterations(
    ended: Sequence[int] | Mapping[int, int], running: Sequence[int], pending: int, max_iterations: int
) -> float:
    """Epochs still to train, estimated from the trials that ended.

    A running trial that has trained `d` epochs is expected to go on as far as the ended trials
    that got past `d` did, on average: early stopping and pruning cut trials short, and a trial that
    survived to `d` tends to survive further. With no such trial yet, it may run to
    `max_iterations`. A pending trial is a running one at 0.

    Args:
        ended: Epochs each ended trial trained (or epochs -> how many ended trials trained that many).
        running: Epochs each running trial has trained so far.
        pending: Trials not started yet.
        max_iterations: The most epochs one trial can report (the base config's).
    """

    lengths = ended if isinstance(ended, Mapping) else Counter(ended)

    def left(done: int) -> float:
        longer = [(n - done, k) for n, k in lengths.items() if n > done]
        count = sum(k for _, k in longer)
        return sum(d * k for d, k in longer) / count if count else float(max(max_iterations - done, 0))

    return sum(left(d) for d in running) + pending * left(0)


def estimate_left(
    ended: Sequence[int] | Mapping[int, int],
    running: Sequence[int],
    pending: int,
    *,
    max_iterations: int,
    rate: float | None,
) -> float | None:
    """Seconds left at `rate` epochs per second (over all trials together); None without a rate."""
    if not rate or rate <= 0:
        return None
    return remaining_iterations(ended, running, pending, max_iterations) / rate


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _failed(outcome: str) -> bool:
    return outcome not in ("ok", "pruned")


def status_text(snap: Snapshot) -> str:
    """`[ 1m05s] trials 3/20 ended: 2 done, 1 pruned, 0 failed; 2 running | best val/f1 0.91 (id) | ~4m10s left`."""
    return f"{_clock(snap)} {_counts(snap)}"


def _clock(snap: Snapshot) -> str:
    return f"[{format_duration(snap.elapsed_s):>6}]"


def _counts(snap: Snapshot, *, short: bool = False) -> str:
    """The status without the clock; `short` leaves out the metric's name and the best trial's id."""
    tally = snap.tally
    best = tally.best
    best_text = "-"
    if best is not None and best.value is not None:
        best_text = f"{best.value:.4f}" if short else f"{best.value:.4f} ({best.trial_id})"
    eta = "done" if tally.n >= snap.total else _eta_text(snap.eta_s)
    counts = f"{tally.n}/{snap.total} ended: {tally.done} done, {tally.pruned} pruned, {tally.failed} failed"
    note = f" | {snap.note}" if snap.note else ""
    if short:
        return f"{counts}; {len(snap.running)} running | best {best_text}{note} | {eta}"
    return f"trials {counts}; {len(snap.running)} running | best {snap.metric} {best_text}{note} | {eta}"


def _tiny(snap: Snapshot) -> str:
    """The live line for a narrow terminal: ended/total, running, best, time left."""
    best = snap.tally.best
    best_text = f"{best.value:.4f}" if best is not None and best.value is not None else "-"
    eta = "done" if snap.tally.n >= snap.total else _eta_text(snap.eta_s).replace("time left: ", "")
    return f"{snap.tally.n}/{snap.total} ended, {len(snap.running)} running, best {best_text}, {eta}"


def _eta_text(eta_s: float | None) -> str:
    return "time left: estimating" if eta_s is None else f"~{format_duration(eta_s)} left"


def best_unit(units: Iterable[Unit], mode: str) -> Unit | None:
    """The finished trial with the best metric (`mode` max or min), if any has one."""
    scored = [u for u in units if u.outcome == "ok" and isinstance(u.value, (int, float))]
    if not scored:
        return None
    return max(scored, key=lambda u: u.value if mode == "max" else -u.value)  # type: ignore[operator]


def ended_line(unit: Unit, snap: Snapshot) -> str:
    """The line a log gets when `unit` ends: the trial, how it ended, then the sweep's counts."""
    assert unit.outcome is not None
    word = {"ok": "done", "pruned": "pruned"}.get(unit.outcome, f"failed ({unit.outcome})")
    value = f" ({snap.metric} {unit.value:.4f})" if isinstance(unit.value, (int, float)) else ""
    return f"{_clock(snap)} trial {unit.trial_id} {word} after {unit.iterations} epochs{value} | {_counts(snap)}"


def started_line(unit: Unit, snap: Snapshot) -> str:
    """A `--verbose` log's line when `unit` starts."""
    return f"{_clock(snap)} trial {unit.trial_id} started | {_counts(snap)}"


def live_line(snap: Snapshot, width: int) -> str:
    """The terminal's redrawn line: cleared, and the longest form that fits the terminal's width
    (a wrapped line cannot be redrawn in place); cut as a last resort."""
    room = max(width - 1, 20)
    forms = (_counts(snap), _counts(snap, short=True), _tiny(snap))
    text = next((f"{_clock(snap)} {form}" for form in forms if len(_clock(snap)) + 1 + len(form) <= room), None)
    return CLEAR_LINE + (text or f"{_clock(snap)} {forms[-1]}")[:room]


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
                self._write(f"{_clock(snap)} resumed | {_counts(snap)}\n")
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
        content = _counts(snap).rsplit(" | ", 1)[0]  # without the clock and the estimate
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
