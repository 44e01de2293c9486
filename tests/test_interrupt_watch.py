"""`watch_interrupt` tells a Ctrl-C that Ray Tune absorbed from a run that ended by itself."""

from __future__ import annotations

import signal

from sweeps.execution.interrupt import watch_interrupt


def _ray_like_fit(interrupted: bool) -> None:
    """What Ray Tune's fit() does with SIGINT: install its handler; on a SIGINT, hand the old one back."""
    original = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: None)
    if interrupted:
        signal.signal(signal.SIGINT, original)


def test_a_run_that_ends_by_itself_is_not_stopped_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with watch_interrupt() as watch:
        _ray_like_fit(interrupted=False)
    assert watch.stopped is False
    assert signal.getsignal(signal.SIGINT) is before


def test_a_handed_back_handler_means_ctrl_c_stopped_the_run():
    before = signal.getsignal(signal.SIGINT)
    with watch_interrupt() as watch:
        _ray_like_fit(interrupted=True)
    assert watch.stopped is True
    assert signal.getsignal(signal.SIGINT) is before


def test_with_ray_s_handler_disabled_nothing_is_installed(monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "1")
    before = signal.getsignal(signal.SIGINT)
    with watch_interrupt() as watch:
        assert signal.getsignal(signal.SIGINT) is before
    assert watch.stopped is False


def test_sigterm_during_the_run_stops_it_as_ctrl_c_does_and_is_put_back_after():
    before = signal.getsignal(signal.SIGTERM)
    seen: list[str] = []
    with watch_interrupt() as watch:
        original = signal.getsignal(signal.SIGINT)

        def ray_s_handler(signum, frame):  # Ray Tune's: note the stop, hand the old handler back
            seen.append(signal.Signals(signum).name)
            signal.signal(signal.SIGINT, original)

        signal.signal(signal.SIGINT, ray_s_handler)
        signal.raise_signal(signal.SIGTERM)  # a service manager's stop, not Ray's crash handler
    assert seen == ["SIGINT"] and watch.stopped is True
    assert signal.getsignal(signal.SIGTERM) is before
