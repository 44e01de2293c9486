"""Did Ctrl-C stop the Tuner? Ray's results alone cannot tell when every trial had started.

On the first SIGINT, Ray Tune stops the run gracefully and puts back the SIGINT handler that was
installed before `fit()` (ray/tune/tune.py, `_setup_signal_catching`); the trials it stopped come
back as terminated, like trials that ended. So we install our own handler before `fit()`: if it
is the one in place afterwards, Ray handed it back, which it does only on a SIGINT. Without
Ray's handler (TUNE_DISABLE_SIGINT_HANDLER=1, or not the main thread) Ctrl-C raises
KeyboardInterrupt as usual and nothing here is needed.

SIGTERM (a service manager, `kill`, a batch system's time limit) stops the run the same way: it is
turned into a SIGINT. Without that, Ray's own crash handler (installed by `ray.init`) takes SIGTERM
for a fatal signal: a stack dump, exit by SIGABRT, and a stop that is not resumable as Ctrl-C's is.
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


def _term_as_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM, handled as the Ctrl-C it stands for (whichever SIGINT handler is in place runs next)."""
    signal.raise_signal(signal.SIGINT)


@contextmanager
def watch_interrupt() -> Iterator[InterruptWatch]:
    """Run a `Tuner.fit()` inside; afterwards `.stopped` says whether a SIGINT (or SIGTERM) stopped it."""
    watch = InterruptWatch()
    main = threading.current_thread() is threading.main_thread()
    if not main:
        yield watch
        return
    previous_term = signal.signal(signal.SIGTERM, _term_as_ctrl_c)  # after ray.init: replaces Ray's crash handler
    try:
        if int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")):
            yield watch
            return
        previous = signal.signal(signal.SIGINT, _handed_back)
        try:
            yield watch
            watch.stopped = signal.getsignal(signal.SIGINT) is _handed_back
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
