"""The one training function (`run`) and what it returns."""

from mer_core.train.missing_eval import evaluate_missing_grid
from mer_core.train.reporting import ReportFn
from mer_core.train.result import FoldResult, TrialResult
from mer_core.train.run import run

__all__ = ["FoldResult", "ReportFn", "TrialResult", "evaluate_missing_grid", "run"]
