"""`run`: the one training function used by the CLI, the sweep engine and the tests."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import numpy as np
import torch

from mer_core import voting
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.data.splits import make_splits
from mer_core.train.device_data import DeviceData, resolve_device
from mer_core.train.fold import train_fold
from mer_core.train.reporting import Diverged, Reporter, ReportFn, TrialStopped
from mer_core.train.result import FoldResult, TrialResult

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
    started = time.perf_counter()
    device = resolve_device(cfg.runtime)
    if cfg.runtime.threads is not None:
        torch.set_num_threads(cfg.runtime.threads)
    _note_unmatched_weights(cfg, data)
    dev = DeviceData.from_featureset(data, device)
    splits = make_splits(data, folds=cfg.data.folds, val_fraction=cfg.data.val_fraction, seed=cfg.data.seed)
    autocast = torch.bfloat16 if cfg.runtime.precision == "bf16" else None
    reporter = Reporter(report)
    folds: list[FoldResult] = []
    status, reason, model_state = "ok", "", None
    with _seeded(cfg.seed, device):
        try:
            for k, split in enumerate(splits):
                fold, model = train_fold(
                    cfg,
                    data,
                    dev,
                    split,
                    fold=k,
                    reporter=reporter,
                    autocast_dtype=autocast,
                    compile_model=cfg.runtime.compile,
                )
                folds.append(fold)
                if keep_model:
                    model_state = {n: t.detach().cpu() for n, t in model.state_dict().items()}
        except TrialStopped as stop:
            status, reason = "pruned", str(stop)
        except Diverged as err:
            status, reason = "diverged", str(err)
    head_names = (*data.modalities, "fusion")
    return TrialResult(
        status=status,  # type: ignore[arg-type]
        metrics=aggregate(folds),
        folds=folds,
        head_names=head_names,
        class_names=data.class_names,
        failure_reason=reason,
        epochs=reporter.iteration,
        seconds=time.perf_counter() - started,
        model_state=model_state,
    )


def aggregate(folds: list[FoldResult]) -> dict[str, float]:
    """Fold means (and `<name>_std`) of every numeric metric, plus pseudo-label totals."""
    if not folds:
        return {}
    keys = [k for k, v in folds[0].metrics.items() if isinstance(v, (int, float))]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([f.metrics[key] for f in folds if key in f.metrics], dtype=float)
        out[key] = float(values.mean())
        if len(folds) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
    last_rounds = [f.pseudo[-1] for f in folds if f.pseudo]
    if last_rounds:
        out["pseudo/count"] = float(np.mean([r["n"] for r in last_rounds]))
        accs = [r["accuracy"] for r in last_rounds if np.isfinite(r.get("accuracy", float("nan")))]
        if accs:
            out["pseudo/accuracy"] = float(np.mean(accs))
    return out


@contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch's global RNG (model init, dropout) without leaking the state to the caller."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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
