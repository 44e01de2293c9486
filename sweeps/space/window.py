"""`search.history`: TPE's model fitted on a bounded window of the history, so an ask stays cheap.

Multivariate TPE reads every finished trial on every ask: it rebuilds the search space from all of
them, turns each into its internal representation and scores every candidate against a kernel per
trial. Past a few thousand trials that is tens of milliseconds per ask on the driver, for every
trial the sweep starts. TPE's model of the *good* region rests on few trials anyway: Optuna's
default split puts min(ceil(0.1 n), 25) trials in it. So past `history` finished trials the sampler
sees a window: the `BEST_KEPT` best COMPLETE trials of the whole history (the good region stays
exactly what the whole history says it is), the most recent finished trials up to `history` in all
(the *bad* region, estimated from a recent sample of the rest), and every running trial (constant
liar). Below `history` finished trials the window is the whole history: nothing changes.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BEST_KEPT", "WindowedTPESampler", "window"]

BEST_KEPT = 25  # Optuna's default TPE split caps the good trials at 25: all of them stay in any window
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def window(trials: Sequence[FrozenTrial], size: int, *, minimize: bool) -> list[FrozenTrial]:
    """`trials` as the sampler should see them: unchanged up to `size` finished trials, else the
    `BEST_KEPT` best COMPLETE ones, the most recent finished ones up to `size` in all, and every
    trial not finished (running, waiting, failed), in the order given (a study's: by number)."""
    finished = [i for i, t in enumerate(trials) if t.state in _FINISHED]  # positions, in study order
    if len(finished) <= size:
        return list(trials)
    sign = 1.0 if minimize else -1.0
    scored = [
        (sign * v, i) for i in finished if trials[i].state == TrialState.COMPLETE and (v := trials[i].value) is not None
    ]
    keep = {i for _, i in heapq.nsmallest(min(BEST_KEPT, size), scored)}
    for i in reversed(finished):  # the most recent first
        if len(keep) >= size:
            break
        keep.add(i)
    kept = keep.union(set(range(len(trials))).difference(finished))  # and every trial not finished
    return [trials[i] for i in sorted(kept)]


class _StudyWindow:
    """The study as the sampler reads it: `_get_trials` answers with `window`; all else passes through.

    TPE reads the trials several times for one proposal (search space, then each sampling call);
    `memo` keeps the window of the trial being proposed, so the whole history is read once per ask.
    """

    def __init__(self, study: optuna.Study, size: int, *, memo: dict[int, list[FrozenTrial]], number: int) -> None:
        self._study = study
        self._size = size
        self._memo = memo
        self._number = number

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        seen = self._memo.get(self._number)
        if seen is None or deepcopy:
            every = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
            seen = window(every, self._size, minimize=self._study.direction == StudyDirection.MINIMIZE)
            if not deepcopy:
                self._memo.clear()  # one proposal's window at a time
                self._memo[self._number] = seen
        return seen if states is None else [t for t in seen if t.state in states]


class WindowedTPESampler(optuna.samplers.TPESampler):
    """TPESampler whose model and search space come from `window(history)` (module docstring).

    Args:
        history: Finished trials the model sees at most; None: every one (Optuna's TPE as it is).
        **kwargs: TPESampler's options.
    """

    def __init__(self, *, history: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history = history
        self._memo: dict[int, list[FrozenTrial]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memo": {}}  # trials of one proposal are no state worth saving

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        if self._history is None:
            return study
        return _StudyWindow(study, self._history, memo=self._memo, number=trial.number)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._memo.clear()  # a new proposal starts here: the history may have changed since the last one
        return super().infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)
