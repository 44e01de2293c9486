"""The `python -m analysis` command line: one subcommand per analysis module.

Each module exposes `add_arguments(parser)` and `run(args) -> int` (see `mer_core.subcommands`);
the same commands are `mersweep compare|report|export|fit-voting` (`sweeps.cli`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mer_core.cli_util import exit_cli
from mer_core.subcommands import Command, dispatch

COMMANDS = {
    "compare": Command("analysis.compare", "ablation table: mean ± CI per variant, paired tests vs the reference"),
    "report": Command("analysis.report", "self-contained HTML report (and PNGs) of a search or an ablation"),
    "fit-voting": Command("analysis.fit_voting", "re-fit the voting weights of the top trials from their val logits"),
    "export-best": Command(
        "analysis.export",
        "write the best configuration (best validation mean over seeds) as YAML and register its model",
        aliases=("export",),
    ),
}
DESCRIPTION = "Analyse mersweep sweeps logged to MLflow."


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("python -m analysis", DESCRIPTION, COMMANDS, argv)


def entry() -> None:
    exit_cli(main)
