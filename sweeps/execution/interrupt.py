"""Did Ctrl-C stop the Tuner? Ray's results alone cannot tell when every trial had started.

On the first SIGINT, Ray Tune stops the run gracefully and puts back the SIGINT handler that was
installed before `fit()` (ray/tune/tune.py, `_setup_signal_catching`); the trials it stopped come
back as terminated, like trials that ended. So we install our own handler before `fit()`: if it
is the one in place afterwards, Ray handed it back, which it does only on a SIGINT. Without
Ray's handler (TUNE_DISABLE_SIGINT_HANDLER=1, or not the main thread) Ctrl-C raises
KeyboardInterrupt as usual and nothing here is needed.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class InterruptWatch:
    """`stopped` is True once the watched block is over if Ctrl-C stopped it."""

    stopped: bool = False


def _handed_back(signum: int, frame: object) -> None:
    """Python's own Ctrl-C behaviour, under a name of our own to recognise it."""
    signal.default_int_handler(signum, frame)


@contextmanager
def watch_interrupt() -> Iterator[InterruptWatch]:
    """Run a `Tuner.fit()` inside; afterwards `.stopped` says whether a SIGINT stopped it."""
    watch = InterruptWatch()
    ray_catches = threading.current_thread() is threading.main_thread() and not int(
        os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")
    )
    if not ray_catches:
        yield watch
        return
    previous = signal.signal(signal.SIGINT, _handed_back)
    try:
        yield watch
        watch.stopped = signal.getsignal(signal.SIGINT) is _handed_back
    finally:
        signal.signal(signal.SIGINT, previous)
