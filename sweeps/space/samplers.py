"""The Optuna samplers a sweep's `search.algorithm` names, each seeded and configured for its space.

Seeding the sampler itself makes a sweep's proposals repeatable; `check_algorithm`
refuses an algorithm that cannot search a space when the sweep is loaded, not when it runs.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import optuna

from mer_core.errors import ConfigError
from sweeps.space.budget_tpe import BudgetTPESampler
from sweeps.space.search_space import SearchSpace
from sweeps.space.window import WindowedTPESampler

ALGORITHMS = ("tpe", "bohb", "qmc", "random", "cmaes", "grid")


def make_sampler(
    algorithm: str,
    seed: int,
    *,
    space: SearchSpace,
    n_startup_trials: int = 10,
    history: int | None = None,
) -> optuna.samplers.BaseSampler:
    """An Optuna sampler seeded directly, configured for `space`.

    - tpe: multivariate TPE with `group=True` (models the sub-spaces a conditional space creates
      jointly instead of falling back to independent sampling) and `constant_liar=True` (running
      trials count as bad, so parallel workers do not propose the same point). `history`: past
      that many finished trials the model sees a window of them (`sweeps.space.window`); None: all.
    - bohb: the same TPE, fitted on the trials at the largest reported epoch that at least
      max(n_startup_trials, params + 1) finished trials reached, each scored by its value there
      (BOHB's rule, `sweeps.space.budget_tpe`); meant for `scheduler.kind: hyperband`.
    - qmc: scrambled Sobol. Conditional params are sampled by a seeded RandomSampler.
    - random: RandomSampler.
    - cmaes: CMA-ES over the float/int params; categorical and conditional params fall back to a
      seeded RandomSampler (Optuna's CMA-ES cannot model them). Needs the `cmaes` package and at
      least one unconditional float/int param.
    - grid: GridSampler over `space.grid()`; it does not call `Study.stop` (which raises under
      Ray's ask/tell); `search.num_samples` bounds the run instead.

    Raises:
        ConfigError: unknown algorithm, or a space the algorithm cannot search.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigError("search.algorithm", ", ".join(ALGORITHMS), algorithm, "not one of the allowed values")
    check_algorithm(algorithm, space)
    quiet = not space.has_conditionals and all(p.kind != "categorical" for p in space.params)
    with warnings.catch_warnings():
        # group=True and QMCSampler are flagged experimental; both are deliberate choices here.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # One TPE configuration for both: `bohb` differs only in which trials its model is fitted on.
        tpe = {"seed": seed, "n_startup_trials": n_startup_trials, "multivariate": True, "group": True}
        if algorithm == "tpe":
            return WindowedTPESampler(history=history, **tpe, constant_liar=True)
        if algorithm == "bohb":
            min_points = max(n_startup_trials, len(space.params) + 1)
            return BudgetTPESampler(min_points=min_points, history=history, **tpe, constant_liar=True)
        if algorithm == "qmc":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_independent_sampling=not space.has_conditionals,
            )
        if algorithm == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if algorithm == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=n_startup_trials,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_independent_sampling=quiet,  # the fallback is documented, not news per trial
            )
        return AskTellGridSampler(space.grid(), seed=seed)


def check_algorithm(algorithm: str, space: SearchSpace) -> None:
    """Raise ConfigError (field `search.algorithm`) if `algorithm` cannot search `space`."""
    if algorithm == "grid":
        space.grid()
    elif algorithm == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            allowed = "tpe, bohb, qmc, random, grid"
            raise ConfigError("search.algorithm", allowed, algorithm, "needs `pip install cmaes`")
        if not any(p.kind in ("float", "int") and not p.when for p in space.params):
            allowed = "tpe, bohb, qmc, random, grid for this space"
            raise ConfigError("search.algorithm", allowed, algorithm, f"{space.source} has no unconditional float/int")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose after_trial does not call `Study.stop`.

    The sweep's searchers drive Optuna by ask/tell, where `Study.stop` (called by GridSampler once
    the grid is exhausted) raises RuntimeError; the sweep's num_samples bounds the run instead.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None
