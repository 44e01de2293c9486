"""`search.algorithm: bohb`: TPE that models the trials at one budget, as BOHB does.

Plain TPE (Optuna's `_split_trials`) ranks every COMPLETE trial above every PRUNED one, and
PRUNED trials first by how far they got: under a Hyperband scheduler a trial pruned at epoch 9
outranks one pruned at epoch 3 whatever their scores. BOHB (Falkner, Klein & Hutter 2018,
"BOHB: Robust and Efficient Hyperparameter Optimization at Scale", section 3.2) instead fits its
density model on the observations of the *largest budget that has enough of them*, and compares
trials there by their value at that budget. Here a budget is a reported epoch: the model is fitted
on every finished trial (COMPLETE or PRUNED) that reported that epoch, each scored by its
intermediate value at that epoch; trials stopped before it are left out. Paired with
`scheduler.kind: hyperband` this is the BOHB recipe (model-based proposals, Hyperband budgets),
built from Optuna's TPE and Ray's asynchronous Hyperband instead of hpbandster.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeps.space.window import WindowedTPESampler

__all__ = ["BudgetTPESampler", "at_budget", "model_budget"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def model_budget(trials: Sequence[FrozenTrial], min_points: int) -> int | None:
    """The largest step that at least `min_points` finished trials reported a finite value at; None if none."""
    counts: Counter[int] = Counter()
    for t in trials:
        if t.state in _FINISHED:
            counts.update(step for step, v in t.intermediate_values.items() if math.isfinite(v))
    steps = [step for step, n in counts.items() if n >= min_points]
    return max(steps) if steps else None


def at_budget(trials: Sequence[FrozenTrial], min_points: int) -> list[FrozenTrial]:
    """`trials` as TPE should see them: finished trials scored at `model_budget`, running ones unchanged.

    Each finished trial that reported the budget step becomes a COMPLETE copy valued at that step;
    finished trials stopped before it are dropped. With no budget yet (too few trials), `trials`.
    """
    budget = model_budget(trials, min_points)
    if budget is None:
        return list(trials)
    out = []
    for t in trials:
        if t.state not in _FINISHED:
            out.append(t)
            continue
        value = t.intermediate_values.get(budget)
        if value is None or not math.isfinite(value):
            continue
        seen = copy.copy(t)  # a view for the sampler; the study's own record is not touched
        seen.state = TrialState.COMPLETE
        seen.value = float(value)
        out.append(seen)
    return out


class _StudyAtBudget:
    """The study as the sampler reads it: `_get_trials` answers with `at_budget`; all else passes through.

    TPESampler reads the trials through the private `Study._get_trials`; pinned by
    tests/test_third_party_internals.py.
    """

    def __init__(self, study: optuna.Study, min_points: int) -> None:
        self._study = study
        self._min_points = min_points

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        every = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        seen = at_budget(every, self._min_points)
        return seen if states is None else [t for t in seen if t.state in states]


class BudgetTPESampler(WindowedTPESampler):
    """TPESampler whose model sees the trials at one budget (see the module docstring).

    Args:
        min_points: Finished trials a budget needs before the model is fitted there (BOHB's
            `min_points_in_model`, by default the number of parameters + 1).
        **kwargs: WindowedTPESampler's options (`history`: the window, after the budget's view).
    """

    def __init__(self, *, min_points: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._min_points = min_points

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(_StudyAtBudget(study, self._min_points), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        view = _StudyAtBudget(study, self._min_points)
        return super().sample_independent(view, trial, param_name, param_distribution)  # type: ignore[arg-type]
