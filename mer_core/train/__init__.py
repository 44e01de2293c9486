"""Training: the MR-CCL recipe (`recipe`, `plan`, `objective`, `scores`) and its two executors.

- `run(cfg, data)`: one config, the single executor (`single`); what the CLI, a sweep's trial
  and the tests call.
- `mer_core.train.fused.train_population(cfgs, data)`: K configs of one shape group as one
  stacked model, the same recipe with the fused executor.
"""

from mer_core.train.missing_eval import evaluate_missing_grid
from mer_core.train.reporting import ReportFn
from mer_core.train.result import FoldResult, TrialResult
from mer_core.train.run import run
from mer_core.train.single import predict

__all__ = ["FoldResult", "ReportFn", "TrialResult", "evaluate_missing_grid", "predict", "run"]
