"""`python -m analysis COMMAND`: compare, report, fit-voting, export-best (see `--help` of each)."""

from analysis.cli import entry

entry()
