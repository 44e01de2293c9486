"""What one status line of a running sweep says: the trials that ended (counted as they end), the
estimate of the time left, and the lines themselves, as pure functions of a `Snapshot` (tested
without Ray). `sweeps.execution.progress` feeds them from Ray Tune's trials.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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
    return f"{clock_text(snap)} {counts_text(snap)}"


def clock_text(snap: Snapshot) -> str:
    return f"[{format_duration(snap.elapsed_s):>6}]"


def counts_text(snap: Snapshot, *, short: bool = False) -> str:
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
    head = f"{clock_text(snap)} trial {unit.trial_id} {word} after {unit.iterations} epochs{value}"
    return f"{head} | {counts_text(snap)}"


def started_line(unit: Unit, snap: Snapshot) -> str:
    """A `--verbose` log's line when `unit` starts."""
    return f"{clock_text(snap)} trial {unit.trial_id} started | {counts_text(snap)}"


def live_line(snap: Snapshot, width: int) -> str:
    """The terminal's redrawn line: cleared, and the longest form that fits the terminal's width
    (a wrapped line cannot be redrawn in place); cut as a last resort."""
    room = max(width - 1, 20)
    forms = (counts_text(snap), counts_text(snap, short=True), _tiny(snap))
    text = next((f"{clock_text(snap)} {form}" for form in forms if len(clock_text(snap)) + 1 + len(form) <= room), None)
    return CLEAR_LINE + (text or f"{clock_text(snap)} {forms[-1]}")[:room]
