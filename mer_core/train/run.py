"""`run`: one config trained by the recipe's single executor (the CLI, the sweep engine, the tests)."""

from __future__ import annotations

import logging

from mer_core import voting
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.train.device_data import resolve_device
from mer_core.train.recipe import train_members
from mer_core.train.reporting import ReportFn
from mer_core.train.result import TrialResult
from mer_core.train.single import SingleExecutor

__all__ = ["run"]

log = logging.getLogger("mersweep.train")


def run(
    cfg: ExperimentConfig,
    data: FeatureSet,
    *,
    report: ReportFn | None = None,
    keep_model: bool = False,
) -> TrialResult:
    """Train `cfg` on `data` over its folds and return metrics and validation logits.

    Args:
        cfg: the validated experiment config.
        data: the dataset (shared, never modified).
        report: called once per fine-tuning epoch with a metrics mapping; returning True
            stops the trial (status "pruned"). Ray Tune's report, a CLI printer or a test list.
        keep_model: keep the last fold's best state dict (CPU) in the result, e.g. for `--save`.

    Divergence (a NaN/inf loss) and stop requests end the trial with a status and a reason;
    they are not raised.
    """
    device = resolve_device(cfg.runtime)
    _note_unmatched_weights(cfg, data)
    relay = None if report is None else (lambda _index, metrics: report(metrics))
    executor = SingleExecutor.for_config(cfg, device)
    return train_members([cfg], data, executor, report=relay, keep_model=keep_model)[0]


def _note_unmatched_weights(cfg: ExperimentConfig, data: FeatureSet) -> None:
    heads = (*data.modalities, "fusion")
    _, unmatched = voting.resolve_weights(cfg.voting, heads)
    if unmatched:
        log.info(
            "voting.weights names %s, which this data (%s) does not have; those heads use default_weight=%s",
            ", ".join(unmatched),
            ", ".join(heads),
            cfg.voting.default_weight,
        )
