"""`python -m sweeps COMMAND ...`: the `mersweep` command without installing the package."""

from mer_core.cli_util import exit_cli
from sweeps.cli import main

exit_cli(lambda argv: main(argv, prog="python -m sweeps"))
