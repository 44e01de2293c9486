"""`mersweep run SWEEP.yaml [...]` / `python run_sweep.py SWEEP.yaml [...]`: run (or resume) a sweep."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from mer_core.cli_util import EXIT_INTERRUPTED, EXIT_OK, exit_cli
from mer_core.subcommands import command_parser, run_command
from sweeps.execution.ray_start import check_address, check_local_cuda, check_local_resources, ray_address
from sweeps.spec import load_sweep
from sweeps.tracking.uri import redact

DESCRIPTION = "Run a mersweep sweep (Ray Tune + Optuna + MLflow)."

# Ray's raylet starts one idle Python worker per CPU for the first driver, for tasks; a sweep runs
# actors only, and Tune's trial actors start workers of their own (measured: both prestarted
# workers of a 2-CPU node stayed idle through a whole sweep, 0.45 CPU-s each to start; a 64-CPU
# node would start 64). A Ray system setting with no public API: tests/test_third_party_internals.py
# fails on a Ray release that drops it.
NO_PRESTART = "RAY_prestart_worker_first_driver"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/quickstart.yaml")
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment override (model.hidden_dim=256) or sweep override (sweep.search.seed=1)",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster to join: auto, HOST:PORT, ray://HOST:10001 (default $RAY_ADDRESS)"
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    p.add_argument("--resume", action="store_true", help="continue the sweep in runs/<name>/ under the same parent run")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved sweep; start nothing")
    p.add_argument("--runs-dir", default="runs", help="where runs/<sweep>/ goes (default: ./runs)")


def run(args: argparse.Namespace) -> int:
    """Run the sweep `args` describe; `args.invocation` (how the command was called) and `args.argv`
    (its arguments) go into the parent run's command tag and the hint printed after a stop."""
    # MLflow's client prints each ended run's URL to stdout, credentials in the tracking URI
    # included; the sweep's own progress lines already say which trial ended.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if args.num_samples is not None and args.num_samples < 1:
        from mer_core.errors import ConfigError

        raise ConfigError("--num-samples", "an integer >= 1", args.num_samples, "out of range")
    spec = load_sweep(args.sweep, sets=args.sets, num_samples=args.num_samples)
    address, address_field = ray_address(args.address, os.environ)
    if address is None:
        local_ray_environment(os.environ)
    else:
        check_address(address, field=address_field)  # seconds, not the minutes Ray waits where nothing listens
    # Heavy imports (torch, Ray, MLflow) only once the sweep itself is known good: bad input fails fast.
    from sweeps.execution.engine import execute
    from sweeps.execution.prepare import describe, prepare
    from sweeps.execution.results import format_table

    if address is None:  # before the data loads: a local sweep's trials would run on this machine's torch
        check_local_cuda(spec.resources.gpu, device=spec.base_config().runtime.device)
    prepared = prepare(spec, resume=args.resume, tracking_uri=args.tracking_uri, runs_root=Path(args.runs_dir))
    if address is None:  # a cluster's nodes may have what this machine lacks
        resources = prepared.spec.resources  # execution.population: auto may have set the GPU share
        check_local_resources(resources.cpu, resources.gpu, device=prepared.base.runtime.device)
    print(describe(prepared), file=sys.stderr)
    if args.dry_run:
        return EXIT_OK
    # Stored as the parent run's `mersweep.command` tag: never with a --tracking-uri password.
    invocation = [w for w in args.invocation if w != "python"]
    argv_list = [*invocation, *(redact(a) for a in args.argv)]
    ray_was_up = _ray_is_up()
    outcome = execute(prepared, address=address, address_field=address_field, argv=argv_list, verbose=args.verbose)
    print(format_table(outcome, metric=spec.metric, mode=spec.mode, report_metric=spec.report_metric))
    if prepared.plan is not None:
        from sweeps.ablation.summary import variant_summary

        print(variant_summary(outcome.rows, plan=prepared.plan))
        # `mersweep run` -> `mersweep compare`; `python run_sweep.py` -> `python -m analysis compare`.
        tool = shlex.join(args.invocation[:-1]) if args.invocation[-1] == "run" else "python -m analysis"
        print(f"paired comparison: {tool} compare --sweep-dir {prepared.folder}")
    if outcome.interrupted:
        again = [*args.invocation, *(redact(a) for a in args.argv if a != "--resume"), "--resume"]
        print(f"sweep stopped early; continue it with: {shlex.join(again)}", file=sys.stderr)
    if not ray_was_up:  # a program that runs sweeps in its own Ray session keeps it
        _stop_ray()
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK


def _ray_is_up() -> bool:
    import ray

    return ray.is_initialized()


def _stop_ray() -> None:
    """Stop (or leave, with --address) the Ray cluster once the results are out.

    Ray's exit hook would do it anyway, about a second slower (measured 2.3 s vs 1.7 s for a
    one-actor cluster); a sweep's own processes are gone before the CLI returns either way.
    """
    sys.stdout.flush()
    import ray

    ray.shutdown()


def local_ray_environment(env: MutableMapping[str, str]) -> None:
    """Set up the Ray cluster this process starts (no --address): reachable from this machine only,
    and no idle workers started ahead of need.

    Ray's servers (GCS, raylets, workers) listen on every interface, even for a one-machine
    `ray.init()`, unless its no-cluster mode is on; then the node's address is 127.0.0.1 and
    every server binds loopback. Ray reads the switch at `import ray`, so this runs before the
    sweep engine is imported. Token authentication (Ray's default for a local cluster) is set
    explicitly so Ray does not warn about it on every run. No idle workers are prestarted
    (`NO_PRESTART`). A user who sets any of these variables keeps their value: that is how one
    opts out.
    """
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault(NO_PRESTART, "0")


def main(argv: Sequence[str] | None = None) -> int:
    """`python run_sweep.py ARGS`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    module = sys.modules[__name__]
    parser = command_parser("run_sweep.py", DESCRIPTION, module)
    parser.set_defaults(invocation=["python", "run_sweep.py"], argv=argv)
    return run_command(module, parser.parse_args(argv))


def entry() -> None:
    exit_cli(main)
