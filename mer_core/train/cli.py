"""`python -m mer_core.train CONFIG.yaml [--set k=v ...] [--save DIR]`: train one configuration."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mer_core.cli_util import EXIT_FAILURE, EXIT_OK, ArgumentParser, exit_cli, setup_logging
from mer_core.configs import load_config, save_config, with_overrides
from mer_core.configs.loader import parse_override
from mer_core.configs.schema import ExperimentConfig
from mer_core.data import load_data
from mer_core.errors import UserInputError
from mer_core.train.effective import effective_config
from mer_core.train.missing_eval import grid_table, parse_rates
from mer_core.train.preflight import check_modality_keys, check_trainable
from mer_core.train.result import TrialResult
from mer_core.train.run import run

SUMMARY_KEYS = ("val/weighted_f1", "val/accuracy", "val/macro_f1", "val/loss")
# The held-out scores (with data.test_fraction or data.features.test_labels): selected on by nothing.
TEST_KEYS = ("test/weighted_f1", "test/accuracy", "test/macro_f1", "test/loss")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m mer_core.train", description="Train one MR-CCL configuration.")
    p.add_argument("config", nargs="?", default=None, help="experiment YAML (default: built-in MR-CCL defaults)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    p.add_argument("--save", metavar="DIR", help="write model.pt, config.yaml, metrics.json, val_logits.npz")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument(
        "--missing-grid",
        metavar="RATES",
        help="also score the trained model at these test-time missing rates (e.g. 0,0.2,0.5,0.7) and print the table",
    )
    return p


def progress_printer(stream=sys.stderr):
    """A report callback printing one line per epoch (the CLI's progress)."""

    def report(m: Mapping[str, Any]) -> None:
        print(
            f"[{m['stage']} fold {m['fold']} epoch {m['epoch']:>3}] train/loss {m['train/loss']:.4f}  "
            f"val/weighted_f1 {m['val/weighted_f1']:.4f}  val/accuracy {m['val/accuracy']:.4f}",
            file=stream,
            flush=True,
        )

    return report


def format_summary(result: TrialResult) -> str:
    """The final metrics table: ensemble metrics (mean ± std over folds) and each head's F1."""
    lines = [f"status: {result.status}" + (f" ({result.failure_reason})" if result.failure_reason else "")]
    keys = [*SUMMARY_KEYS, *(f"val/f1_{h}" for h in result.head_names), *TEST_KEYS, "pseudo/count", "pseudo/accuracy"]
    for key in keys:
        if key in result.metrics:
            std = result.metrics.get(f"{key}_std")
            lines.append(f"  {key:<24} {result.metrics[key]:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    lines.append(f"  {'epochs':<24} {result.epochs}   ({result.seconds:.1f} s)")
    return "\n".join(lines)


def save_run(result: TrialResult, cfg: ExperimentConfig, out: Path) -> None:
    """Model state (tensors only: loadable with torch.load(weights_only=True)), config and metrics."""
    out.mkdir(parents=True, exist_ok=True)
    if result.model_state is not None:
        # torch.compile prefixes every key with `_orig_mod.`: save the plain module's keys, so
        # model.pt loads into build_model(...) whether or not the run was compiled.
        torch.save({k.removeprefix("_orig_mod."): v for k, v in result.model_state.items()}, out / "model.pt")
    save_config(cfg, out / "config.yaml", header="Config of the saved model (python -m mer_core.train --save)")
    (out / "metrics.json").write_text(json.dumps({"status": result.status, **result.metrics}, indent=2))
    np.savez(out / "val_logits.npz", **result.logits_npz())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    cfg = load_config(args.config, args.sets)
    rates = parse_rates(args.missing_grid) if args.missing_grid is not None else None
    if rates is not None:
        cfg = with_overrides(cfg, {"missing.eval_rates": list(rates)})
    if args.save and Path(args.save).exists() and not Path(args.save).is_dir():
        raise UserInputError(f"--save: expected a folder (created if missing); given: {args.save!r} is a file")
    # runtime.device=cuda without a GPU: exit 2 before loading (a sweep checks this on the driver only
    # for a local cluster: a cluster's workers may have GPUs the driver lacks). What runs and what
    # --save writes is the effective config: device, thread count and fold seed written out.
    cfg = effective_config(cfg)
    data = load_data(cfg.data)
    # Before any output: what training would only find out later (folds, classes, names) exits 2 here.
    check_trainable(cfg, data)
    check_modality_keys(dict(parse_override(s) for s in args.sets), data)
    print(
        f"data: {data.name}: {data.n_samples} samples ({len(data.labelled_idx)} labelled), "
        f"{data.n_test} held-out test samples, modalities {data.dims}, classes {list(data.class_names)}",
        file=sys.stderr,
    )
    rt = cfg.runtime
    print(f"runtime: device {rt.device}, {rt.threads} threads, {rt.precision}", file=sys.stderr)
    result = run(cfg, data, report=None if args.quiet else progress_printer(), keep_model=bool(args.save))
    print(format_summary(result))
    if rates is not None:
        print("by test-time missing rate: voted weighted F1 and accuracy, fusion-head F1 (fold means, stds):")
        print(grid_table(result, rates).to_string(float_format=lambda v: f"{v:.4f}"))
    if args.save:
        save_run(result, cfg, Path(args.save))
    return EXIT_OK if result.status == "ok" else EXIT_FAILURE


def entry() -> None:
    exit_cli(main)
