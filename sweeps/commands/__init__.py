"""The commands of the `mersweep` CLI that belong to the sweep engine: `run` (a sweep, also
`python run_sweep.py`) and `ui` (MLflow's UI and optuna-dashboard on a sweep's stores).

Each module exposes `add_arguments(parser)` and `run(args) -> int` (`mer_core.subcommands`);
`sweeps.cli` puts them beside the `analysis` commands.
"""
