"""The progress display: the estimate of time left, and what a terminal and a log each get.

The display is fed trial states directly (`ProgressCallback.update`), with a clock the test moves;
the real sweeps on a terminal (tmux) and into a pipe are in tests/test_cli_display.py.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import sys

import pytest

from mer_core.cli_util import setup_logging
from sweeps.execution.progress import (
    CLEAR_LINE,
    ProgressCallback,
    Unit,
    estimate_left,
    format_duration,
    remaining_iterations,
)
from tests.driver_helpers import PROGRESS

METRIC = "val/weighted_f1"


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def running(trial_id: str, epochs: int = 0) -> Unit:
    return Unit(trial_id, None, None, epochs)


def ended(trial_id: str, outcome: str = "ok", value: float | None = 0.5, epochs: int = 10) -> Unit:
    return Unit(trial_id, outcome, value, epochs)


def display(*, live: bool, total: int = 4, max_iterations: int = 10, verbose: bool = False, mode: str = "max"):
    stream, clock = io.StringIO(), Clock()
    cb = ProgressCallback(
        metric=METRIC,
        mode=mode,
        total=total,
        max_iterations=max_iterations,
        stream=stream,
        live=live,
        verbose=verbose,
        clock=clock,
    )
    return cb, stream, clock


# --- the estimate -----------------------------------------------------------------------------


def test_before_any_trial_ends_every_trial_may_run_to_max_iterations():
    # 2 running at 3 and 5 epochs of 10, 2 pending: 7 + 5 + 2 x 10 epochs left.
    assert remaining_iterations([], [3, 5], 2, 10) == 32


def test_pruning_seen_so_far_shortens_the_expected_trial():
    # Trials ended after 2, 2 and 10 epochs (ASHA cut two): a pending trial is expected to train
    # (2 + 2 + 10) / 3 epochs, not 10.
    assert remaining_iterations([2, 2, 10], [], 1, 10) == pytest.approx(14 / 3)


def test_a_running_trial_goes_as_far_as_the_ended_trials_that_got_past_it():
    # At 4 epochs it already survived the cut at 2: only the trial that reached 10 speaks for it.
    assert remaining_iterations([2, 2, 10], [4], 0, 10) == 6
    # Past every ended trial: it may still run to the end.
    assert remaining_iterations([2, 2, 6], [8], 0, 10) == 2


def test_time_left_is_epochs_left_over_the_rate():
    assert estimate_left([10], [5], 1, max_iterations=10, rate=2.0) == pytest.approx((5 + 10) / 2.0)
    assert estimate_left([10], [5], 1, max_iterations=10, rate=None) is None
    assert estimate_left([10], [5], 1, max_iterations=10, rate=0.0) is None


def test_durations_read_as_a_person_writes_them():
    assert [format_duration(s) for s in (0, 42.4, 65, 3599, 7620)] == ["0s", "42s", "1m05s", "59m59s", "2h07m"]


def test_the_estimate_comes_from_epochs_done_in_this_run():
    cb, stream, clock = display(live=False, total=3, max_iterations=10)
    cb.update([running("a"), running("b")])
    clock.t += 10
    cb.update([running("a", 5), ended("b", epochs=5)])  # 10 epochs in 10 s: 1 epoch/s
    line = stream.getvalue().splitlines()[-1]
    # Left: "a" (at 5; no ended trial got past 5) may run to 10: 5 epochs; one pending like "b": 5.
    assert line.endswith("| ~10s left"), line


# --- off a terminal: one line per ended trial ---------------------------------------------------


def test_a_log_gets_one_line_per_ended_trial_and_nothing_else():
    cb, stream, clock = display(live=False, total=3)
    cb.update([])
    cb.update([running("a")])
    cb.update([running("a"), running("b")])  # a start is no news in a log
    assert stream.getvalue() == ""
    clock.t += 5
    cb.update([ended("a", value=0.61, epochs=4), running("b"), running("c")])
    cb.update([ended("a", value=0.61, epochs=4), running("b"), running("c")])  # the same state again
    clock.t += 65
    cb.update([ended("a", value=0.61, epochs=4), ended("b", "pruned", 0.4, 2), ended("c", "error", None, 1)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[    5s] trial a done after 4 epochs (val/weighted_f1 0.6100) | trials 1/3 ended: ")
    assert "1 done, 0 pruned, 0 failed; 2 running | best val/weighted_f1 0.6100 (a) |" in lines[0]
    assert "trial b pruned after 2 epochs" in lines[1] and "trials 2/3 ended: 1 done, 1 pruned, 0 failed" in lines[1]
    assert "trial c failed (error) after 1 epochs |" in lines[2]
    assert lines[2].startswith("[ 1m10s]") and lines[2].endswith(
        "trials 3/3 ended: 1 done, 1 pruned, 1 failed; 0 running | best val/weighted_f1 0.6100 (a) | done"
    )
    assert [PROGRESS.search(line).groups() for line in lines] == [("1", "3", "2"), ("2", "3", "0"), ("3", "3", "0")]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


@pytest.mark.parametrize(("mode", "best"), [("max", "0.3000 (a)"), ("min", "0.2000 (b)")])
def test_best_so_far_follows_the_mode(mode, best):
    cb, stream, _ = display(live=False, total=3, mode=mode)
    cb.update([running("a"), running("b"), running("c")])
    cb.update([ended("a", value=0.3), ended("b", value=0.2), ended("c", "pruned", value=0.1)])  # pruned: no best
    assert stream.getvalue().splitlines()[-1].endswith(f"best val/weighted_f1 {best} | done")


def test_verbose_logs_also_say_when_a_trial_starts():
    cb, stream, _ = display(live=False, total=2, verbose=True)
    cb.update([running("a")])
    cb.update([running("a"), running("b")])
    cb.update([running("a"), running("b")])
    cb.update([ended("a"), running("b")])
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(" | ")[0] for line in lines] == [
        "trial a started",
        "trial b started",
        "trial a done after 10 epochs (val/weighted_f1 0.5000)",
    ]
    assert PROGRESS.search(lines[1]).groups() == ("0", "2", "2")  # tests/test_sweep_resume.py waits on this


def test_a_resumed_sweep_counts_earlier_trials_without_announcing_them_again():
    cb, stream, _ = display(live=False, total=3)
    cb.update([ended("a"), ended("b", "pruned"), running("c")])
    cb.update([ended("a"), ended("b", "pruned"), ended("c", value=0.7)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert " resumed | trials 2/3 ended: 1 done, 1 pruned, 0 failed; 1 running" in lines[0]
    assert "trial c done" in lines[1] and "trials 3/3 ended" in lines[1]


# --- on a terminal: one line, redrawn in place ----------------------------------------------------


def test_a_terminal_gets_one_line_redrawn_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    cb, stream, clock = display(live=True, total=2)
    cb.update([running("a")])
    cb.update([running("a")])  # nothing new within the second: no redraw
    clock.t += 0.5
    cb.update([running("a", 1)])
    clock.t += 1.0
    cb.update([running("a", 2)])  # the clock and the estimate tick once a second
    cb.update([ended("a", value=0.8, epochs=3), running("b")])
    cb.update([ended("a", value=0.8, epochs=3), running("b")])
    cb.close()  # at the experiment's end: the line gets its newline
    cb.close()  # and again from the engine: no second newline
    out = stream.getvalue()
    draws = out.split(CLEAR_LINE)[1:]
    assert out.startswith(CLEAR_LINE) and out.endswith("\n") and out.count("\n") == 1
    assert len(draws) == 3, draws
    assert all(PROGRESS.search(d) for d in draws)
    assert "trials 1/2 ended: 1 done" in draws[-1] and "best val/weighted_f1 0.8000 (a)" in draws[-1]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (200, "trials 1/3 ended: 1 done, 0 pruned, 0 failed; 2 running | best val/weighted_f1 0.8000 (a) | ~20s left"),
        (100, "1/3 ended: 1 done, 0 pruned, 0 failed; 2 running | best 0.8000 | ~20s left"),
        (60, "1/3 ended, 2 running, best 0.8000, ~20s left"),
    ],
)
def test_the_live_line_fits_the_terminal(monkeypatch, columns, expected):
    monkeypatch.setenv("COLUMNS", str(columns))
    cb, stream, clock = display(live=True, total=3, max_iterations=10)
    cb.update([running("a"), running("b")])
    clock.t += 10
    cb.update([ended("a", value=0.8, epochs=10), running("b"), running("c")])  # 1 epoch/s; 20 epochs left
    last = stream.getvalue().split(CLEAR_LINE)[-1]
    assert last == f"[   10s] {expected}" and len(last) < columns


def test_a_very_narrow_terminal_gets_the_line_cut(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    cb, stream, _ = display(live=True, total=2)
    cb.update([running("a")])
    assert [len(d) for d in stream.getvalue().split(CLEAR_LINE)[1:]] == [29]


def test_a_log_record_clears_the_live_line_first_on_a_terminal(monkeypatch):
    """A warning (MLflow unreachable) printed while the live line is up starts at column 0."""
    leader, follower = os.openpty()
    tty = open(follower, "w")  # noqa: SIM115
    try:
        monkeypatch.setattr(sys, "stderr", tty)
        setup_logging()
        logging.getLogger("mersweep.test").warning("tracking server unreachable")
        tty.flush()
        assert os.read(leader, 1024).startswith(b"\r\x1b[Ktracking server unreachable")
    finally:
        tty.close()
        os.close(leader)
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    logging.getLogger("mersweep.test").warning("tracking server unreachable")
    assert piped.getvalue() == "tracking server unreachable\n"  # a log file gets no control codes


def test_the_display_pickles_without_its_stream():
    """Ray saves callbacks with the experiment; a terminal cannot travel, stderr is used after loading."""
    cb, _, _ = display(live=False)
    loaded = pickle.loads(pickle.dumps(cb))
    assert loaded.stream is sys.stderr


def test_status_lines_match_what_the_driver_tests_parse():
    cb, stream, _ = display(live=False, total=2)
    cb.update([ended("a"), running("b")])
    assert re.search(PROGRESS, stream.getvalue())


def test_the_line_shows_the_mlflow_backlog_once_it_grows():
    cb, stream, clock = display(live=False, total=3)
    waiting = [3]
    cb.backlog = lambda: waiting[0]
    cb.update([running("a"), running("b")])
    clock.t += 5
    cb.update([ended("a"), running("b")])
    waiting[0] = 120  # the tracking server fell behind
    cb.update([ended("a"), ended("b"), running("c")])
    first, second = stream.getvalue().splitlines()
    assert "mlflow backlog" not in first  # a few operations in flight are normal
    assert "| mlflow backlog 120 |" in second
    assert pickle.loads(pickle.dumps(cb)).backlog is None  # the live tracker does not travel
