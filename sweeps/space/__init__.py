"""Search spaces: `search_spaces/*.yaml` compiled to Optuna define-by-run functions, and their samplers.

- `params`: one parameter (range, categorical or fixed, optionally conditional), validated against
  the ExperimentConfig field it names.
- `search_space`: a space file (with `include`s) -> `SearchSpace`, parents before the params they
  condition; `define_by_run` only calls `trial.suggest_*`.
- `samplers`: `search.algorithm` -> a seeded Optuna sampler (tpe, bohb, qmc, random, cmaes, grid).
- `budget_tpe`: bohb's sampler: TPE fitted at the largest epoch enough finished trials reached.
- `tell`: what Optuna is told when a trial ends (COMPLETE only for trials that trained to their end,
  PRUNED for those a scheduler stopped, FAIL otherwise), the same in trial, fused and ablation modes.
"""

from sweeps.space.params import Param
from sweeps.space.samplers import ALGORITHMS, AskTellGridSampler, check_algorithm, make_sampler
from sweeps.space.search_space import SearchSpace, load_space

__all__ = ["ALGORITHMS", "AskTellGridSampler", "Param", "SearchSpace", "check_algorithm", "load_space", "make_sampler"]
