#!/usr/bin/env python
"""Run a sweep: `python run_sweep.py sweeps/quickstart.yaml [--num-samples N] [--set k=v] ...`.

Thin by design: all logic lives in the `sweeps` package (see `sweeps/cli.py`).
"""

from sweeps.cli import entry

if __name__ == "__main__":
    entry()
