"""`python -m analysis fit-voting`: re-fit the voting weights of the top trials from their val logits.

No retraining: each trial's child run holds `val_logits.npz` (every head's validation logits) and
`config.yaml` (its voting weights and space). The fit and its cross-validation are in
`analysis.posthoc`; here they are run per trial, printed as a table and logged back to the trial's
child run (metrics `posthoc/...`, tags `mersweep.posthoc.weight.<head>`, `posthoc_voting.json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from analysis.posthoc import PosthocResult
from analysis.runs import SweepRuns, TrialRun, download_artifact
from analysis.sources import add_source_args, sweep_from_args
from mer_core.errors import ConfigError, UserInputError
from sweeps.tracking.names import (
    CONFIG_ARTIFACT,
    LOGITS_ARTIFACT,
    POSTHOC_ARTIFACT,
    POSTHOC_CV_F1,
    POSTHOC_CV_F1_REFERENCE,
    POSTHOC_GAIN,
    POSTHOC_SPACE_TAG,
    POSTHOC_VAL_F1,
    POSTHOC_VAL_F1_REFERENCE,
    posthoc_weight_tag,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_args(parser)
    parser.add_argument("--top", type=int, default=5, help="re-fit the K best finished trials (default 5)")
    parser.add_argument("--cv", type=int, default=5, help="stratified folds over the validation rows (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the weight search (default 0)")
    parser.add_argument(
        "--candidates", type=int, default=256, help="random simplex candidates before refinement (default 256)"
    )
    parser.add_argument("--no-log", action="store_true", help="print the table only; write nothing to MLflow")


def _check_args(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ConfigError("--top", "an integer >= 1", args.top)
    if args.cv < 2:
        raise ConfigError("--cv", "an integer >= 2", args.cv)
    if args.seed < 0:
        raise ConfigError("--seed", "an integer >= 0", args.seed)
    if args.candidates < 0:
        raise ConfigError("--candidates", "an integer >= 0", args.candidates)


def fit_trial(sweep: SweepRuns, trial: TrialRun, args: argparse.Namespace) -> PosthocResult | None:
    """The post-hoc fit of one trial, or None (with a note) when its run lacks the artifacts."""
    import numpy as np

    from analysis.posthoc import posthoc_fit
    from mer_core import voting
    from mer_core.configs import load_config

    with tempfile.TemporaryDirectory(prefix="mersweep-voting-") as tmp:
        npz_path = download_artifact(sweep, trial.run_id, LOGITS_ARTIFACT, Path(tmp))
        cfg_path = download_artifact(sweep, trial.run_id, CONFIG_ARTIFACT, Path(tmp))
        if npz_path is None or cfg_path is None:
            print(f"note: trial {trial.trial_id} has no val_logits.npz/config.yaml; skipped", file=sys.stderr)
            return None
        with np.load(npz_path) as npz:
            logits = {k.removeprefix("logits/"): npz[k] for k in npz.files if k.startswith("logits/")}
            labels = npz["labels"]
        cfg = load_config(cfg_path)
    reference, _ = voting.resolve_weights(cfg.voting, tuple(logits))
    return posthoc_fit(
        logits,
        labels,
        reference=reference,
        space=cfg.voting.space,
        folds=args.cv,
        seed=args.seed,
        n_random=args.candidates,
    )


def log_result(sweep: SweepRuns, trial: TrialRun, result: PosthocResult) -> None:
    """Metrics, weight tags and the JSON summary on the trial's own child run."""
    import time

    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    values = {
        POSTHOC_VAL_F1: result.val_f1_fitted,
        POSTHOC_VAL_F1_REFERENCE: result.val_f1_reference,
        POSTHOC_CV_F1: result.cv.fitted_f1,
        POSTHOC_CV_F1_REFERENCE: result.cv.reference_f1,
        POSTHOC_GAIN: result.cv.gain,
    }
    tags = [RunTag(posthoc_weight_tag(head), f"{w:.6g}") for head, w in result.fitted.items()]
    tags.append(RunTag(POSTHOC_SPACE_TAG, result.space))
    client = sweep.client()
    client.log_batch(trial.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()], tags=tags)
    client.log_text(trial.run_id, json.dumps(result.to_json(), indent=2), POSTHOC_ARTIFACT)


def format_table(rows: list[tuple[TrialRun, PosthocResult]], metric: str) -> str:
    """One line per trial: the sweep metric, in-sample and out-of-fold F1, the CV gain and the weights."""
    head = (
        f"{'trial':<14} {'run':<8} {metric:>16} {'space':>5} {'val ref':>8} {'val fit':>8} "
        f"{'cv ref':>8} {'cv fit':>8} {'cv gain':>8}  fitted weights"
    )
    lines = [head]
    for trial, r in rows:
        weights = " ".join(f"{h}={w:.3g}" for h, w in r.fitted.items())
        lines.append(
            f"{trial.trial_id[:14]:<14} {trial.run_id[:8]:<8} {trial.metrics.get(metric, float('nan')):>16.4f} "
            f"{r.space:>5} {r.val_f1_reference:>8.4f} {r.val_f1_fitted:>8.4f} {r.cv.reference_f1:>8.4f} "
            f"{r.cv.fitted_f1:>8.4f} {r.cv.gain:>+8.4f}  {weights}"
        )
    lines.append(
        "val: in-sample on all validation rows (fitted >= reference by construction); "
        f"cv: out-of-fold over {rows[0][1].folds} stratified folds (the honest gain, may be negative)"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    sweep = sweep_from_args(args)
    top = sweep.ranked()[: args.top]
    if not top:
        raise UserInputError(
            f"--experiment/--parent-run/--sweep-dir: the sweep has no finished trial; {sweep.describe()}"
        )
    print(sweep.describe(), file=sys.stderr)
    rows = []
    for trial in top:
        result = fit_trial(sweep, trial, args)
        if result is None:
            continue
        if not args.no_log:
            log_result(sweep, trial, result)
        rows.append((trial, result))
    if not rows:
        print("error: none of the top trials has saved validation logits", file=sys.stderr)
        return 1
    print(format_table(rows, sweep.metric))
    return 0
