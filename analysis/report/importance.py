"""Parameter importance by Optuna's fANOVA, on an in-memory study rebuilt from the logged trials.

The sweep's own Optuna study lived inside Ray's searcher and is gone; MLflow has every trial's
params and metric, and the search space file has the distributions, which is all fANOVA needs.
Only params a trial actually used (active under their `when` conditions) enter its rebuilt trial,
so conditional params are judged on the trials where they existed (Optuna assesses the params
present in every trial, so a conditional param only counts when all trials had it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.space import SearchSpace
from sweeps.space.params import Param, same_value

MIN_TRIALS = 5  # fANOVA's forest on fewer finished trials ranks noise
# fANOVA's forest grows with the trials and its marginals with the leaves, faster than linearly: on the
# noisy metric of a real sweep's trials (6 params) it took 0.7 s for 100, 1.5 s for 200 and 4.4 s for
# 400, and the end report of a 10,000-trial sweep, which fitted it on 2,000, took 115 s. Past this many
# finished trials it is fitted on a seeded sample of them (about 6 s), and the report says so.
MAX_TRIALS = 500


@dataclass(frozen=True)
class Importance:
    """fANOVA importances (summing to 1), or why there are none.

    Attributes:
        values: Param -> importance, most important first; empty when `reason` is set.
        n_trials: Finished trials the study was rebuilt from.
        reason: A sentence for the report when no importance could be computed.
    """

    values: Mapping[str, float]
    n_trials: int
    reason: str = ""


def distribution(param: Param) -> Any:
    """The Optuna distribution of a sampled param (the one `Param.suggest` asks for)."""
    import optuna.distributions as od

    if param.kind == "float":
        return od.FloatDistribution(float(param.low), float(param.high), log=param.log, step=param.step)  # type: ignore[arg-type]
    if param.kind == "int":
        return od.IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))  # type: ignore[arg-type]
    if param.kind == "categorical":
        return od.CategoricalDistribution(list(param.choices))
    raise ValueError(f"fixed param {param.name} has no distribution")  # a caller bug, not user input


def active_params(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sampled params a trial used, in the space's own types; None if a value lies outside the space.

    Args:
        values: Param values by dotted name (a trial's flattened config holds inactive ones too).
    """
    used: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    for p in space.params:
        if not p.active(seen):
            continue
        if p.kind == "fixed":
            seen[p.name] = p.value
            continue
        value = _in_space(p, values.get(p.name))
        if value is None:
            return None
        used[p.name] = seen[p.name] = value
    return used


def rebuild_study(
    space: SearchSpace, trials: Sequence[tuple[Mapping[str, Any], float]], *, mode: str
) -> tuple[Any, int]:
    """An in-memory Optuna study holding one COMPLETE trial per (params, value) that fits `space`.

    Returns:
        (study, number of trials skipped because a value was not finite or outside the space).
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is not news here
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    dists = {p.name: distribution(p) for p in space.params if p.kind != "fixed"}
    skipped = 0
    for values, value in trials:
        params = active_params(space, values)
        if params is None or not math.isfinite(value):
            skipped += 1
            continue
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, value=float(value))
        )
    return study, skipped


def fanova_importance(
    space: SearchSpace,
    trials: Sequence[tuple[Mapping[str, Any], float]],
    *,
    mode: str,
    seed: int,
    min_trials: int = MIN_TRIALS,
) -> Importance:
    """fANOVA importances of the sampled params over `trials` ((params, metric value) pairs).

    Fewer than `min_trials` usable trials, or no param that varies, give a reason instead of numbers.
    More than `MAX_TRIALS` are sampled down to that many (seeded); `Importance.n_trials` counts the sample.
    """
    import random

    import optuna

    if len(trials) > MAX_TRIALS:
        trials = random.Random(seed).sample(list(trials), MAX_TRIALS)

    study, skipped = rebuild_study(space, trials, mode=mode)
    n = len(study.trials)
    if n < min_trials:
        note = f" ({skipped} more outside the search space)" if skipped else ""
        return Importance({}, n, f"Parameter importance needs at least {min_trials} finished trials; got {n}{note}.")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if not values or not any(v > 0 for v in values.values()):
        return Importance({}, n, f"Parameter importance is undefined: no sampled parameter varies over the {n} trials.")
    return Importance(dict(values), n)


def _in_space(param: Param, value: Any) -> Any:
    """`value` as the param's type if the distribution holds it, else None."""
    if value is None:
        return None
    if param.kind == "categorical":
        return next((c for c in param.choices if same_value(c, value)), None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = int(value) if param.kind == "int" else float(value)
    if param.kind == "int" and x != value:
        return None
    tol = 1e-9 * max(1.0, abs(float(param.high)))  # type: ignore[arg-type]  # MLflow's string round trip
    if not float(param.low) - tol <= x <= float(param.high) + tol:  # type: ignore[arg-type]
        return None
    return min(max(x, param.low), param.high)  # type: ignore[type-var]
