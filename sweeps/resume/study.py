"""`--resume` with a stored study: the study is put back to what Ray's restored searcher knows.

Ray saves its searcher with the experiment state every few seconds; the study in its RDB storage
is written at once. A driver killed between two saves leaves the storage ahead of Ray: trials
asked that Ray forgot (it will ask again, under new trial ids), trials told that Ray will run again
(from scratch), intermediate values of attempts that will be repeated. Continuing on top of that
would leave orphan RUNNING trials, duplicates and histories from two attempts.

So each searcher saves the study's history (`snapshot`) with its state, and on restore
`restore_study` makes the stored study hold exactly that history, with the trials Ray reruns
back to RUNNING and without their intermediate values. When the storage already matches (a
clean Ctrl-C), nothing is written; otherwise the study is recreated under the same name (its
numbers, params, values, attributes and times kept; the dashboard shows it under a new id).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.space.study import MLFLOW_RUN_ATTR

log = logging.getLogger("mersweep.search")


def snapshot(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials now, to travel in the searcher's checkpoint (pickled at once: no copy needed)."""
    return study.get_trials(deepcopy=False)


def restore_study(study: optuna.Study, history: list[FrozenTrial], *, rerun: Collection[int]) -> optuna.Study:
    """The stored study made to hold `history`, trials numbered `rerun` RUNNING afresh; returns it.

    `study` is the unpickled handle (storage, name, sampler with its restored state); the returned
    study is loaded again by name, since an earlier resume may have recreated it.
    """
    want = [_fresh(t) if t.number in rerun else t for t in history]
    storage = study._storage  # no public accessor; pinned by tests/test_third_party_internals.py
    try:
        stored = optuna.load_study(study_name=study.study_name, storage=storage, sampler=study.sampler)
        if _same(stored.get_trials(deepcopy=False), want):
            return stored
        optuna.delete_study(study_name=study.study_name, storage=storage)
    except KeyError:  # deleted by a resume that was killed before it recreated it
        pass
    fresh = optuna.create_study(
        storage=storage,
        study_name=study.study_name,
        sampler=study.sampler,
        pruner=optuna.pruners.NopPruner(),
        directions=study.directions,
    )
    fresh.add_trials(want)
    log.info("optuna: study %s put back to the %d trials Ray's saved state knows", study.study_name, len(want))
    return fresh


def trial_by_number(study: optuna.Study, number: int) -> optuna.Trial:
    """A handle to ask/tell through on trial `number` of `study` (which must be running)."""
    frozen = study.get_trials(deepcopy=False)[number]
    # Optuna has no public way back to a running trial; pinned by tests/test_third_party_internals.py.
    return optuna.Trial(study, frozen._trial_id)


def _fresh(trial: FrozenTrial) -> FrozenTrial:
    """`trial` as Ray reruns it: running, with no values or intermediate values yet."""
    fresh = copy.copy(trial)  # `add_trials` copies it into the storage; `trial` itself is not touched
    fresh.state = TrialState.RUNNING
    fresh.value = None
    fresh.datetime_complete = None
    fresh.intermediate_values = {}
    return fresh


def _same(stored: list[FrozenTrial], want: list[FrozenTrial]) -> bool:
    def key(t: FrozenTrial) -> tuple:
        # The MLflow run id is (re)linked when a trial starts, so a rerun trial may hold it already.
        attrs = {k: v for k, v in t.user_attrs.items() if k != MLFLOW_RUN_ATTR}
        return (t.number, t.state, t.values, t.params, t.intermediate_values, attrs)

    return len(stored) == len(want) and all(key(a) == key(b) for a, b in zip(stored, want, strict=True))
