"""The project's log handler follows sys.stderr instead of keeping a stream a caller may close."""

from __future__ import annotations

import io
import logging
import sys

from mer_core.cli_util import setup_logging


def test_a_record_after_the_stream_was_swapped_and_closed_goes_to_the_new_stream(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    log = logging.getLogger("mersweep.test")
    log.info("one")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # what pytest's capture does to the stream a handler was bound to
    log.info("two")  # a bound StreamHandler printed "--- Logging error --- I/O operation on closed file"
    assert second.getvalue() == "two\n"
