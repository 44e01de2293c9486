"""`python -m benchmarks [NAME ...] [--smoke] [--repeats N] [--device D] [--bf16]`.

Runs the named benchmarks (default: all registered), prints a table per benchmark and
updates their sections of benchmarks/RESULTS.md. `--smoke` runs tiny versions and writes
its Markdown to a temporary file instead, so a smoke run never replaces real numbers.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks import DEFAULT, MODULES, SHARES_RAY, load
from benchmarks.common import (
    INCLUDES,
    RESULTS_PATH,
    SCALE_ARMS,
    SMOKE_RAY,
    BenchFn,
    BenchOptions,
    BenchResult,
    format_console,
    format_markdown,
    machine_line,
    ray_session,
    update_results,
)
from mer_core.cli_util import EXIT_OK, ArgumentParser, exit_cli, setup_logging
from mer_core.errors import ConfigError

MIN_REPEATS = 3  # a median of fewer repeats is one noisy sample on a shared machine
MIN_SEEDS = 5  # search efficiency is judged over >= 5 sampler seeds


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m benchmarks", description="Run mersweep benchmarks and record RESULTS.md.")
    extra = ", ".join(n for n in MODULES if n not in DEFAULT)
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: {', '.join(DEFAULT)}; also: {extra})"
    )
    p.add_argument("--smoke", action="store_true", help="tiny, fast versions; RESULTS.md is left alone")
    p.add_argument("--repeats", type=int, default=None, help=f"timed repeats per arm (default {MIN_REPEATS}; smoke 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device of the epoch benchmark")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the training step (both arms)")
    p.add_argument("--steps", type=int, default=None, help="epoch: timed steps per repeat (default 30; smoke 3)")
    p.add_argument(
        "--trials", type=int, default=None, help="trials per arm/sweep (overhead 20, search_efficiency 24, memory 4)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"search_efficiency: sampler seeds per arm of the real-data sweeps (default {MIN_SEEDS}; "
        "MF-Hartmann6 keeps at least 20); search_mf: seeds per arm (default 20)",
    )
    p.add_argument(
        "--arms",
        default=None,
        help=f"scale only: its parts to run, comma-separated ({', '.join(SCALE_ARMS)}; default all, postgres "
        "outside the smoke)",
    )
    p.add_argument("--tag", default="", help="label of this run's RESULTS.md sections (e.g. another machine)")
    p.add_argument("--output", type=Path, default=None, help=f"Markdown file to update (default {RESULTS_PATH})")
    return p


def _options(args) -> BenchOptions:
    repeats = args.repeats if args.repeats is not None else (1 if args.smoke else MIN_REPEATS)
    if repeats < 1 or (not args.smoke and repeats < MIN_REPEATS):
        allowed = f"an integer >= {MIN_REPEATS} (>= 1 with --smoke)"
        raise ConfigError("--repeats", allowed, repeats, "too few repeats for a median")
    for flag, value in (("--steps", args.steps), ("--trials", args.trials), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            raise ConfigError(flag, "an integer >= 1", value, "out of range")
    if args.seeds is not None and not args.smoke and args.seeds < MIN_SEEDS:
        raise ConfigError("--seeds", f"an integer >= {MIN_SEEDS} (>= 1 with --smoke)", args.seeds, "too few seeds")
    arms = None
    if args.arms is not None:
        arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
        unknown = [a for a in arms if a not in SCALE_ARMS]
        if unknown or not arms:
            raise ConfigError("--arms", f"a comma-separated list of {', '.join(SCALE_ARMS)}", args.arms, "unknown arm")
        if "scale" not in (args.names or DEFAULT):
            raise ConfigError("--arms", "only with the scale benchmark (python -m benchmarks scale --arms ...)", arms)
    return BenchOptions(
        arms=arms,
        smoke=args.smoke,
        repeats=repeats,
        device=args.device,
        bf16=args.bf16,
        steps=args.steps,
        trials=args.trials,
        seeds=args.seeds,
        tag=args.tag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    names = args.names or list(DEFAULT)
    for name in names:  # unknown names fail before any import or work
        if name not in MODULES:
            load(name)
    fns = {name: load(name) for name in names}  # imports only the selected benchmarks' modules
    for whole, parts in INCLUDES.items():
        if whole in fns:
            for part in parts:
                fns.pop(part, None)  # already run as part of `whole`
    opts = _options(args)
    command = shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])])
    if args.smoke:
        out = Path(tempfile.mkdtemp(prefix="mersweep-bench-smoke-")) / "RESULTS.md"
        # The smoke's sweeps start from one migrated empty MLflow store; real runs pay MLflow's set-up as users do.
        opts = replace(opts, store_template=out.parent / "mlflow-empty.db")
    else:
        out = args.output or RESULTS_PATH
    if args.smoke:  # the benchmarks that share the smoke's Ray session run last, so that it starts once
        fns = dict(sorted(fns.items(), key=lambda item: item[0] in SHARES_RAY))
    with contextlib.ExitStack() as shared_ray:
        ray_up = False
        for name, fn in fns.items():
            if args.smoke and name in SHARES_RAY and not ray_up:
                shared_ray.enter_context(ray_session(**SMOKE_RAY))
                ray_up = True
            _run(name, fn, opts, out, command)
    print(f"results written to {out}")
    return EXIT_OK


def _run(name: str, fn: BenchFn, opts: BenchOptions, out: Path, command: str) -> None:
    """One benchmark: its table(s) printed and its section(s) of `out` written as each arrives."""
    machine = machine_line(opts.device if name == "epoch" else "cpu", gpu=name == "gpu")
    started = time.perf_counter()
    produced = fn(opts)
    for result in [produced] if isinstance(produced, BenchResult) else produced:
        took = f"({result.name} took {time.perf_counter() - started:.0f} s)"
        print(format_console(result), took, sep="\n", flush=True)
        key = result.key(opts.tag)
        # Written as each section arrives: an interrupted multi-part run keeps the parts it finished.
        update_results(out, {key: format_markdown(result, machine, command, key=key)})
        started = time.perf_counter()


if __name__ == "__main__":
    exit_cli(main)
