"""The `mersweep` command: the whole loop of a sweep as subcommands.

`mersweep run SWEEP.yaml` (= `python run_sweep.py`), `mersweep ui runs/<sweep>` (MLflow's UI and
optuna-dashboard on the sweep's stores), and the analyses of `python -m analysis`: `compare`,
`report`, `export` (= `export-best`), `fit-voting`. `python -m sweeps` is the same command where
the package is not installed (no `mersweep` on PATH).
"""

from __future__ import annotations

from collections.abc import Sequence

from analysis.cli import COMMANDS as ANALYSIS_COMMANDS
from mer_core.cli_util import exit_cli
from mer_core.subcommands import Command, dispatch

COMMANDS: dict[str, Command] = {
    "run": Command("sweeps.commands.run", "run a sweep YAML (or continue a stopped one with --resume)"),
    "ui": Command("sweeps.commands.ui", "open a sweep in MLflow's UI (and optuna-dashboard); prints the URLs"),
    **ANALYSIS_COMMANDS,
}
DESCRIPTION = "Distributed hyperparameter and ablation sweeps (Ray Tune + Optuna + MLflow)."


def main(argv: Sequence[str] | None = None, *, prog: str = "mersweep") -> int:
    return dispatch(prog, DESCRIPTION, COMMANDS, argv)


def entry() -> None:
    exit_cli(main)
