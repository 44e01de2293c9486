"""Shared CLI plumbing: one-line errors and the project's exit statuses.

0 success, 2 bad input (config, data, CLI), 1 runtime failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence

from mer_core.errors import UserInputError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a UserInputError (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}")


def guarded_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run `main`, mapping exceptions to one line on stderr and the documented exit statuses.

    Set MERSWEEP_DEBUG=1 to see the traceback of runtime failures.
    """
    try:
        return main(argv)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a runtime failure: one line unless asked for the traceback
        if os.environ.get("MERSWEEP_DEBUG"):
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"error: {type(err).__name__}: {first} (set MERSWEEP_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def exit_cli(main: Callable[[Sequence[str] | None], int]) -> None:
    """A console script's whole life: `guarded_main(main)`, then exit with its status.

    At exit the interpreter runs one last garbage collection over every object still alive; with
    torch, Ray, MLflow and SQLAlchemy loaded that walk took 3 s of a sweep's wall time (py-spy:
    `gc_collect_main` after `ray.shutdown()`). Everything alive now dies with the process anyway,
    so it is frozen out of the collector first.
    """
    status = guarded_main(main)
    sys.stdout.flush()
    gc.freeze()
    sys.exit(status)


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is when a record is emitted.

    A plain `StreamHandler(sys.stderr)` keeps the stream object it was given; when a caller
    swaps `sys.stderr` and later closes the old one (pytest's capture, a redirect in a driver),
    every later record fails with "I/O operation on closed file". No handler may outlive its stream.
    """

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the property ignores it
        pass

    def format(self, record: logging.LogRecord) -> str:
        # On a terminal a sweep's live progress line (sweeps/execution/progress.py) may be on screen
        # without its newline: clear it first, or the record lands after its text. It is redrawn
        # below within a second.
        text = super().format(record)
        isatty = getattr(self.stream, "isatty", None)
        return "\r\x1b[K" + text if isatty is not None and isatty() else text


def setup_logging(verbose: bool = False) -> None:
    """Plain one-line log records on stderr for the project's own loggers."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("mersweep")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
