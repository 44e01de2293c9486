"""Save/restore of our Ray Tune searchers: their whole state, pickled with the Tuner's checkpoint.

Ray calls `save` with the experiment state and `restore` on `--resume`; our searchers keep
everything they need (Optuna studies, queues, counters) as plain attributes, so the state is
their `__dict__`. The file is Ray's own, in the sweep's folder, written by this process.
"""

from __future__ import annotations

import pickle


class PickledStateMixin:
    """`save` and `restore` for a Searcher whose attributes are its whole state (list it first in the bases)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
