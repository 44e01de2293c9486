"""The `python -m analysis` command line: one subcommand per analysis module.

Each module exposes `add_arguments(parser)` and `run(args) -> int` and keeps its heavy imports
(MLflow, torch, matplotlib) inside `run`, so `--help` and bad arguments answer at once.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from mer_core.cli_util import ArgumentParser, exit_cli, setup_logging

COMMANDS = {
    "compare": ("analysis.compare", "ablation table: mean ± CI per variant, paired tests vs the reference"),
    "report": ("analysis.report", "self-contained HTML report (and PNGs) of a search or an ablation"),
    "fit-voting": ("analysis.fit_voting", "re-fit the voting weights of the top trials from their val logits"),
    "export-best": ("analysis.export", "write the best configuration as YAML and register its model"),
}


def _top_parser() -> ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items())
    parser = ArgumentParser(
        prog="python -m analysis",
        description="Analyse mersweep sweeps logged to MLflow. `python -m analysis COMMAND --help` for a command.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help=", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    top = _top_parser().parse_args(argv)
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)  # only the chosen command's module is imported
    parser = ArgumentParser(prog=f"python -m analysis {top.command}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(top.args)
    setup_logging()
    return int(module.run(args))


def entry() -> None:
    exit_cli(main)
