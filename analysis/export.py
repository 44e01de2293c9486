"""`python -m analysis export-best`: ship the best configuration (YAML) and its model (MLflow registry).

Steps: group the finished trials into configurations over seeds (`analysis.export_select`); when the
sweep measured every configuration on one seed, re-run the top `--top` by the sweep's (validation)
`metric` over `--seeds` and log those runs (`analysis.export_reseed`); choose the best mean of that
validation `metric` over seeds; report the chosen configuration's `report_metric` (the held-out test
score when the data has a test split), which chooses nothing: the best test score of several
candidates would be a selected score, no longer a held-out one. Write the effective config of the
chosen configuration's representative run, with a header that says where it came from and the
numbers that run logged; train it once more, check it gives those numbers back, and register the
model with a signature (`analysis.export_model`); log the YAML on the sweep's parent run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analysis.export_select import SeedGroup
from analysis.runs import SweepRuns
from analysis.sources import add_source_args, check_out_file, sweep_from_args
from mer_core.configs import ExperimentConfig
from mer_core.errors import ConfigError, UserInputError
from sweeps.tracking.names import EXPORT_ARTIFACT_DIR, EXPORT_MODEL_TAG

if TYPE_CHECKING:
    from analysis.export_model import RegisteredModel
    from analysis.export_reseed import DataCache

DEFAULT_EXTRA_SEEDS = 3
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0  # fixed, so the CI in the header is the same every time the same runs are exported
REGISTRY_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql", "http:", "https:", "databricks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_args(parser)
    parser.add_argument(
        "--top",
        type=int,
        default=3,
        help="a one-seed search: re-run this many best configs (by the validation metric) over --seeds (default 3)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help=f"seeds of the re-runs (default: the {DEFAULT_EXTRA_SEEDS} smallest seeds a config has not run with)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="YAML to write (default: runs/<sweep>/exported_config.yaml, else ./<sweep>_best.yaml)",
    )
    parser.add_argument("--model-name", default=None, help="registered model name (default: mersweep-<sweep>)")


def _check_args(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ConfigError("--top", "an integer >= 1", args.top)
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        raise ConfigError("--seeds", "integers >= 0", args.seeds)
    if args.model_name is not None and not args.model_name.strip():
        raise ConfigError("--model-name", "a non-empty name", args.model_name)
    check_out_file(args.out)


def _check_registry(tracking_uri: str) -> None:
    if not tracking_uri.startswith(REGISTRY_SCHEMES):
        raise UserInputError(
            "--tracking-uri: the MLflow model registry needs a database-backed store or a tracking server; "
            f"allowed: sqlite:///..., postgresql://..., http(s)://...; given: {tracking_uri}"
        )


def default_out(args: argparse.Namespace, sweep: SweepRuns) -> Path:
    if args.out:
        return Path(args.out)
    folder = Path(args.sweep_dir) if args.sweep_dir else Path("runs") / sweep.sweep
    return folder / "exported_config.yaml" if folder.is_dir() else Path(f"{sweep.sweep}_best.yaml")


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select(sweep: SweepRuns, args: argparse.Namespace, data: DataCache) -> tuple[SweepRuns, SeedGroup]:
    """The best group by the validation `metric` (mean over seeds), after re-seeding the top
    configurations when the sweep has one seed each."""
    from analysis.export_reseed import reseed, trial_config
    from analysis.export_select import choose_best, eligible, extra_seeds, group_runs, needs_reseed, rank
    from analysis.runs import load_sweep_runs

    by_variant = sweep.kind == "ablation"
    groups = group_runs(eligible(sweep), metric=sweep.metric, by_variant=by_variant)
    if not groups:
        raise UserInputError(
            f"--experiment/--parent-run/--sweep-dir: the sweep has no finished trial; {sweep.describe()}"
        )
    if needs_reseed(groups):  # candidates by the selection metric: the test scores pick nothing here
        top = rank(groups, mode=sweep.mode)[: args.top]
        _note(f"one seed per configuration: re-running the top {len(top)} over more seeds")
        for group in top:
            seeds = extra_seeds(group, args.seeds, count=DEFAULT_EXTRA_SEEDS)
            source = group.representative
            reseed(sweep, source, trial_config(sweep, source), seeds, data, progress=_note)
        sweep = load_sweep_runs(sweep.tracking_uri, parent_run_id=sweep.parent_run_id)
        groups = group_runs(eligible(sweep), metric=sweep.metric, by_variant=by_variant)
    return sweep, choose_best(groups, mode=sweep.mode)


def _mean_line(group: SeedGroup, metric: str, mode: str) -> str:
    from analysis.stats import bootstrap_ci

    runs = [r for r in group.runs if metric in r.metrics]
    if not runs:
        return f"{metric}: not logged by these runs"
    values = np.array([r.metrics[metric] for r in runs], dtype=np.float64)  # (n_runs,)
    low, high = bootstrap_ci(values, confidence=CONFIDENCE, seed=BOOTSTRAP_SEED)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    return (
        f"{metric} ({mode}): mean {values.mean():.4f} over {len(runs)} runs (seeds {', '.join(map(str, seeds))}), "
        f"{CONFIDENCE:.0%} bootstrap CI [{low:.4f}, {high:.4f}]"
    )


def stated_metrics(sweep: SweepRuns, group: SeedGroup) -> dict[str, float]:
    """The numbers the exported YAML states for itself: its representative run's `metric` and
    `report_metric`, which `python -m mer_core.train` on the YAML gives back."""
    run = group.representative
    return {m: run.metrics[m] for m in dict.fromkeys([sweep.metric, sweep.report_metric]) if m in run.metrics}


def header(sweep: SweepRuns, group: SeedGroup, out: Path) -> str:
    """Where the config came from: sweep, runs, the validation mean it was chosen by, the held-out
    mean it reports, the numbers this very config logged, and how to reproduce them."""
    run = group.representative
    held_out = sweep.report_metric != sweep.metric
    own = ", ".join(f"{m} {v:.4f}" for m, v in stated_metrics(sweep, group).items())
    lines = [
        f"Best configuration of sweep '{sweep.sweep}' ({sweep.kind}), exported by python -m analysis export-best",
        f"MLflow experiment: {sweep.experiment}; parent run: {sweep.parent_run_id}",
        f"Chosen by the best mean {sweep.metric} over seeds (validation rows): {group.label}",
        _mean_line(group, sweep.metric, sweep.mode),
    ]
    if held_out:
        reported = _mean_line(group, sweep.report_metric, sweep.mode)
        lines.append(f"Held out, selected on by nothing (this configuration's only): {reported}")
    lines += [
        f"Runs: {', '.join(f'{r.run_id} (seed {r.seed})' for r in group.runs)}",
        f"This file is the config of run {run.run_id} (seed {run.seed}), which logged {own}",
        f"Reproduce: python -m mer_core.train {out} (on this machine: the device and thread count below)",
    ]
    return "\n".join(lines)


def write_config(cfg: ExperimentConfig, out: Path, text: str) -> None:
    """Write the YAML and check that it loads back to the same config (what the header promises)."""
    from mer_core.configs import load_config, save_config

    save_config(cfg, out, header=text)
    if load_config(out) != cfg:
        raise RuntimeError(f"{out} does not load back to the exported config")


def train_and_register(
    sweep: SweepRuns, cfg: ExperimentConfig, data: DataCache, name: str, *, stated: dict[str, float]
) -> RegisteredModel:
    """Train the chosen config once (keeping its model) and register it; returns the RegisteredModel.

    `stated`: the numbers the YAML's header gives for this config; a retrained model that does not
    give them back is said so (another machine, device or library version than the run's)."""
    from analysis.export_model import VotedMRCCL, register_model
    from mer_core import voting
    from mer_core.models import build_model
    from mer_core.train import run

    features = data.get(cfg)
    result = run(cfg, features, keep_model=True)
    if not result.ok or result.model_state is None:
        raise RuntimeError(f"training the exported config ended {result.status}: {result.failure_reason}")
    model = build_model(cfg.model, features.dims, features.n_classes)
    # torch.compile prefixes every key with `_orig_mod.`; the plain module has none.
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in result.model_state.items()})
    weights, _ = voting.resolve_weights(cfg.voting, model.head_names)
    served = VotedMRCCL(model, weights, cfg.voting.space).eval()
    scores = ", ".join(
        f"{m} {result.metrics.get(m, float('nan')):.4f}" for m in dict.fromkeys([sweep.metric, sweep.report_metric])
    )
    _note(f"trained the exported config: {scores} ({result.seconds:.1f} s)")
    differ = {m: v for m, v in stated.items() if result.metrics.get(m) != v}
    if differ:
        _note(
            "note: the retrained model does not give back the logged "
            + ", ".join(f"{m} {v:.4f}" for m, v in differ.items())
            + " (a machine, device or library version other than the run's changes the last bits of the sums)"
        )
    return register_model(served, features, tracking_uri=sweep.tracking_uri, run_id=sweep.parent_run_id, name=name)


def run(args: argparse.Namespace) -> int:
    from analysis.export_reseed import DataCache, trial_config

    _check_args(args)
    sweep = sweep_from_args(args)
    _check_registry(sweep.tracking_uri)
    _note(sweep.describe())
    data = DataCache()
    sweep, best = select(sweep, args, data)
    cfg = trial_config(sweep, best.representative)
    out = default_out(args, sweep)
    text = header(sweep, best, out)
    write_config(cfg, out, text)
    sweep.client().log_artifact(sweep.parent_run_id, str(out), artifact_path=EXPORT_ARTIFACT_DIR)
    stated = stated_metrics(sweep, best)
    model = train_and_register(sweep, cfg, data, args.model_name or f"mersweep-{sweep.sweep}", stated=stated)
    sweep.client().set_tag(sweep.parent_run_id, EXPORT_MODEL_TAG, model.model_uri)
    print(text)
    print(f"wrote {out}")
    print(f"registered {model.model_uri}")
    return 0
