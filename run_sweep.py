#!/usr/bin/env python
"""Run a sweep: `python run_sweep.py sweeps/quickstart.yaml [--num-samples N] [--set k=v] ...`.

The same as `mersweep run ...`. Thin by design: all logic lives in the `sweeps` package
(see `sweeps/commands/run.py`).
"""

from sweeps.commands.run import entry

if __name__ == "__main__":
    entry()
