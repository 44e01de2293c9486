"""Process-wide settings of a Ray trial worker, applied at the start of every trial function.

A worker process belongs to Ray and lives across trials (actor reuse); these settings only
keep Ray's teardown and bookkeeping chatter out of the user's terminal, where Ray forwards
everything a worker prints. A `--verbose` driver (`mer_core.verbosity.VERBOSE_ENV` in the
worker's environment) gets the bookkeeping lines back; the teardown traceback is never news.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from mer_core.verbosity import is_verbose

# Ray Train's "Checkpoint successfully created at: ..." (INFO), once per trial: the sweep's own
# progress line already says the trial ended, and its artifacts go to MLflow. Ray's internal module
# names; pinned by tests/test_third_party_internals.py.
_CHATTY_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def drop_exit_during_finalizers(unraisable: Any) -> None:
    """`sys.unraisablehook` that drops SystemExit and forwards everything else to Python's default.

    When Ray stops a worker at the end of a sweep it sends SIGTERM, and its handler raises
    SystemExit. If that lands while a weakref callback or finalizer runs, Python prints
    "Exception ignored in: ... Traceback ... SystemExit: 1", which Ray forwards to the driver's
    terminal: a traceback after a sweep that went fine. Only that case is dropped.
    """
    if isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def quiet_worker() -> None:
    """Apply the settings above (idempotent; called by each trial function)."""
    sys.unraisablehook = drop_exit_during_finalizers
    level = logging.NOTSET if is_verbose() else logging.WARNING
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
