"""`search.warm_start`: a new sweep's study starts with the earlier trials that fit its space.

The source is an earlier sweep's folder (its `optuna.db`, study named after that sweep) or a
storage URL and study name. Taken: COMPLETE trials, and PRUNED trials with intermediate values
(TPE ranks them by how far they got), whose params are exactly what the new space would sample
for them: the same names, each value inside the new range or choices, conditionals alike. They are
added as finished trials before the first proposal, so TPE models them from the start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from mer_core.errors import ConfigError
from sweeps.space.search_space import SearchSpace
from sweeps.space.study import STUDY_FILE, StudyRef, check_storage

FIELD = "search.warm_start"
ALLOWED = "an earlier sweep's folder (runs/<sweep>) or {storage: URL, study: NAME}"
WARM_ATTR = "warm_start_from"  # Optuna user attribute of a seeded trial: `<study>#<number>` it came from


@dataclass(frozen=True)
class WarmStart:
    """The earlier trials a new study starts with."""

    source: StudyRef
    trials: tuple[FrozenTrial, ...]
    skipped: int  # earlier trials left out: unfinished, failed, or not fitting the new space

    def describe(self) -> str:
        return f"warm start: {len(self.trials)} trials from {self.source.describe()} ({self.skipped} skipped)"

    def seed(self, study: optuna.Study) -> None:
        """Add the trials to `study` (new: numbered from 0, before any proposal)."""
        study.add_trials(list(self.trials))


def resolve_source(value: str | Mapping[str, Any], *, runs_root: Path) -> StudyRef:
    """The study `search.warm_start` names; ConfigError if it cannot be read (reads only)."""
    if isinstance(value, str):
        folder = Path(value).expanduser()
        if not folder.is_dir() and not folder.is_absolute() and (runs_root / value).is_dir():
            folder = runs_root / value  # `warm_start: quickstart` = runs/quickstart
        if not folder.is_dir():
            raise ConfigError(FIELD, ALLOWED, value, "no such folder")
        db = folder.resolve() / STUDY_FILE
        if not db.is_file():
            raise ConfigError(FIELD, ALLOWED, value, f"no {STUDY_FILE} in it (not a sweep folder)")
        ref = StudyRef(f"sqlite:///{db}", _sweep_name(folder.resolve()))
    else:
        ref = StudyRef(str(value["storage"]), str(value["study"]))
    check_storage(ref.storage, field=FIELD, name=ref.name, exists=True)
    return ref


def _sweep_name(folder: Path) -> str:
    """The sweep that wrote `folder`: its state file says; else the folder's name (runs/<sweep>)."""
    try:
        return str(json.loads((folder / "mersweep_state.json").read_text())["sweep"])
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def load_warm_start(ref: StudyRef, space: SearchSpace) -> WarmStart:
    """The trials of `ref` that fit `space`, as trials of a new study."""
    earlier = optuna.load_study(study_name=ref.name, storage=ref.open_storage())
    taken: list[FrozenTrial] = []
    trials = earlier.get_trials(deepcopy=False)
    for t in trials:
        seeded = _fitted(t, space, ref.name)
        if seeded is not None:
            taken.append(seeded)
    return WarmStart(ref, tuple(taken), len(trials) - len(taken))


def _fitted(trial: FrozenTrial, space: SearchSpace, study: str) -> FrozenTrial | None:
    """`trial` as a trial of a study over `space`, or None if it does not belong there."""
    if trial.state == TrialState.COMPLETE:
        if trial.value is None or not math.isfinite(trial.value):
            return None
    elif trial.state != TrialState.PRUNED or not trial.intermediate_values:
        return None
    replay = _Replay(trial.params)
    try:
        space.define_by_run(replay)
    except _Misfit:
        return None
    if set(replay.distributions) != set(trial.params):
        return None  # a param the new space does not sample (or not under these conditions)
    return optuna.trial.create_trial(
        state=trial.state,
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        params={k: trial.params[k] for k in replay.distributions},
        distributions=replay.distributions,
        intermediate_values=dict(trial.intermediate_values),
        user_attrs={**trial.user_attrs, WARM_ATTR: f"{study}#{trial.number}"},
    )


class _Misfit(Exception):
    pass


class _Replay:
    """What `define_by_run` sees: the earlier trial's values, refused where the new space differs."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.distributions: dict[str, BaseDistribution] = {}

    def _take(self, name: str, dist: BaseDistribution) -> Any:
        if name not in self.params:
            raise _Misfit(name)
        value = self.params[name]
        if isinstance(dist, CategoricalDistribution):
            if not any(type(value) is type(c) and value == c for c in dist.choices):
                raise _Misfit(name)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not dist._contains(value):
            # _contains is Optuna's own range/step test on the internal (float) value; pinned by
            # tests/test_third_party_internals.py.
            raise _Misfit(name)
        self.distributions[name] = dist
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False):
        return self._take(name, optuna.distributions.FloatDistribution(low, high, step=step, log=log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False):
        return self._take(name, optuna.distributions.IntDistribution(low, high, step=step, log=log))

    def suggest_categorical(self, name: str, choices: Any):
        return self._take(name, optuna.distributions.CategoricalDistribution(choices))
