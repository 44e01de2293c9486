"""Command lines made of subcommands (`mersweep COMMAND`, `python -m analysis COMMAND`).

A table names each command's module; the module exposes `add_arguments(parser)` and
`run(args) -> int` and keeps its heavy imports (Ray, MLflow, torch) inside `run`, so `--help` and
bad arguments answer at once and only the chosen command's module is imported. Every command gets
`--verbose` and the same start: the project's log lines on stderr, third-party chatter held back
unless `--verbose` (`mer_core.verbosity`).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

from mer_core.cli_util import ArgumentParser, setup_logging
from mer_core.verbosity import apply_verbosity

VERBOSE_HELP = "also show third-party start-up and performance messages (Ray, MLflow, Optuna)"


@dataclass(frozen=True)
class Command:
    """One subcommand: the module that implements it, one line of help, other names it answers to."""

    module: str
    help: str
    aliases: tuple[str, ...] = ()


def command_parser(prog: str, description: str, module: ModuleType) -> ArgumentParser:
    """The parser of one command: its module's arguments, plus `--verbose`."""
    parser = ArgumentParser(prog=prog, description=description)
    module.add_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


def run_command(module: ModuleType, args: argparse.Namespace) -> int:
    """Start-up shared by every command (logging, verbosity), then the command itself."""
    setup_logging()
    apply_verbosity(args.verbose)
    return int(module.run(args))


def _names(commands: Mapping[str, Command]) -> dict[str, str]:
    """Every name a command answers to -> its table name."""
    return {alias: name for name, cmd in commands.items() for alias in (name, *cmd.aliases)}


def top_parser(prog: str, description: str, commands: Mapping[str, Command]) -> ArgumentParser:
    lines = []
    for name, cmd in commands.items():
        also = f" (also: {', '.join(cmd.aliases)})" if cmd.aliases else ""
        lines.append(f"  {name:<12} {cmd.help}{also}")
    parser = ArgumentParser(
        prog=prog,
        description=f"{description} `{prog} COMMAND --help` for a command's options.",
        epilog="commands:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = _names(commands)
    parser.add_argument("command", choices=list(names), metavar="COMMAND", help=", ".join(commands))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return parser


def dispatch(prog: str, description: str, commands: Mapping[str, Command], argv: Sequence[str] | None) -> int:
    """Parse `argv` as `COMMAND ARGS...` and run that command; its `args.invocation` is how it was called."""
    top = top_parser(prog, description, commands).parse_args(argv)
    name = _names(commands)[top.command]
    module = importlib.import_module(commands[name].module)
    parser = command_parser(f"{prog} {top.command}", commands[name].help, module)
    parser.set_defaults(invocation=[*prog.split(), top.command], argv=list(top.args))
    return run_command(module, parser.parse_args(top.args))
