"""Missing modalities: the seeded drop protocol (train/test rates) and imputation of hidden states.

`python -m mer_core.train CONFIG --missing-grid 0,0.2,0.5,0.7` and
`mer_core.train.missing_eval.evaluate_missing_grid` report F1 against the test-time missing rate.
"""

from mer_core.missing.impute import IMPUTERS, Imputer, build_imputer
from mer_core.missing.protocol import drop_pairs, fold_mask, rate_vector, uniform_draws, val_mask_at_rate
from mer_core.missing.retrieval import StateBank, aggregate, knn

__all__ = [
    "IMPUTERS",
    "Imputer",
    "StateBank",
    "aggregate",
    "build_imputer",
    "drop_pairs",
    "fold_mask",
    "knn",
    "rate_vector",
    "uniform_draws",
    "val_mask_at_rate",
]
