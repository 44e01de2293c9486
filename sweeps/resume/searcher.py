"""Save/restore of our Ray Tune searchers: their whole state, pickled with the Tuner's checkpoint.

Ray calls `save` with the experiment state and `restore` on `--resume`; our searchers keep
everything they need (queues, counters, Optuna trial handles) as plain attributes, so the state is
their `__dict__`, plus the history of their stored Optuna studies (`sweeps.resume.study.snapshot`),
which `restore` uses to put the storage back to what Ray knows. The file is Ray's own, in the
sweep's folder, written by this process.
"""

from __future__ import annotations

import pickle
from typing import Any

HISTORY_KEY = "_study_history"  # where a searcher's checkpoint keeps its studies' history


def save_searcher(searcher: Any, checkpoint_path: str, history: Any) -> None:
    """Pickle a searcher's state with its studies' `history` (`snapshot`s) beside it."""
    with open(checkpoint_path, "wb") as fh:
        pickle.dump({**searcher.__dict__, HISTORY_KEY: history}, fh)


def load_searcher(searcher: Any, checkpoint_path: str) -> Any:
    """Put a `save_searcher` checkpoint back into `searcher`; returns the saved history (None from
    a checkpoint written without one)."""
    with open(checkpoint_path, "rb") as fh:
        state = pickle.load(fh)  # Ray's own checkpoint of this sweep, written by this driver
    history = state.pop(HISTORY_KEY, None)
    searcher.__dict__.update(state)
    return history
