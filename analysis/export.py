"""`python -m analysis export-best`: ship the best configuration (YAML) and its model (MLflow registry).

Steps: group the finished trials into configurations over seeds (`analysis.export_select`); when the
sweep measured every configuration on one seed, re-run the top `--top` by the sweep's (validation)
`metric` over `--seeds` and log those runs (`analysis.export_reseed`); choose the best mean of the
sweep's `report_metric` (the held-out test score when the data has a test split); write a complete
config YAML whose header says where it came from; train it once more and register the model with a
signature (`analysis.export_model`); log the YAML on the sweep's parent run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

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
        "--top", type=int, default=3, help="a one-seed search: re-run this many best configs over --seeds (default 3)"
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
    """The best group, after re-seeding the top configurations when the sweep has one seed each."""
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
    reported = group_runs(eligible(sweep), metric=sweep.report_metric, by_variant=by_variant)
    if not reported:  # runs logged before the test split existed: they carry only the selection metric
        _note(f"no finished run reports {sweep.report_metric}; choosing by {sweep.metric}")
        reported = group_runs(eligible(sweep), metric=sweep.metric, by_variant=by_variant)
    return sweep, choose_best(reported, mode=sweep.mode)


def header(sweep: SweepRuns, group: SeedGroup, out: Path) -> str:
    """Where the config came from: sweep, runs, metric mean and bootstrap CI over seeds, how to reproduce."""
    from analysis.stats import bootstrap_ci

    low, high = bootstrap_ci(group.values, confidence=CONFIDENCE, seed=BOOTSTRAP_SEED)
    runs = ", ".join(f"{r.run_id} (seed {r.seed})" for r in group.runs)
    return "\n".join(
        [
            f"Best configuration of sweep '{sweep.sweep}' ({sweep.kind}), exported by python -m analysis export-best",
            f"MLflow experiment: {sweep.experiment}; parent run: {sweep.parent_run_id}",
            f"Chosen: {group.label}, config of run {group.representative.run_id}",
            f"{group.metric} ({sweep.mode}): mean {group.mean:.4f} over {len(group.runs)} runs "
            f"(seeds {', '.join(map(str, group.seeds))}), {CONFIDENCE:.0%} bootstrap CI [{low:.4f}, {high:.4f}]",
            f"Runs: {runs}",
            f"Reproduce: python -m mer_core.train {out}",
        ]
    )


def write_config(cfg: ExperimentConfig, out: Path, text: str) -> None:
    """Write the YAML and check that it loads back to the same config (what the header promises)."""
    from mer_core.configs import load_config, save_config

    save_config(cfg, out, header=text)
    if load_config(out) != cfg:
        raise RuntimeError(f"{out} does not load back to the exported config")


def train_and_register(sweep: SweepRuns, cfg: ExperimentConfig, data: DataCache, name: str) -> RegisteredModel:
    """Train the chosen config once (keeping its model) and register it; returns the RegisteredModel."""
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
    model = train_and_register(sweep, cfg, data, args.model_name or f"mersweep-{sweep.sweep}")
    sweep.client().set_tag(sweep.parent_run_id, EXPORT_MODEL_TAG, model.model_uri)
    print(text)
    print(f"wrote {out}")
    print(f"registered {model.model_uri}")
    return 0
