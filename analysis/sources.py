"""Command-line selection of the sweep an analysis reads (shared by every `analysis` command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.runs import SweepRuns, load_sweep_runs
from mer_core.errors import UserInputError
from sweeps.resume.state import STATE_FILE, read_state
from sweeps.tracking.uri import check_reachable, resolve_tracking_uri


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """--sweep-dir | --experiment | --parent-run, and --tracking-uri."""
    group = parser.add_argument_group("which sweep (one of)")
    group.add_argument("--sweep-dir", default=None, help="a sweep's runs/<name>/ folder (names its parent run)")
    group.add_argument("--experiment", default=None, help="MLflow experiment: its newest sweep")
    group.add_argument("--parent-run", default=None, help="MLflow run id of the sweep's parent run")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )


def sweep_from_args(args: argparse.Namespace) -> SweepRuns:
    """Resolve the selectors to one sweep; UserInputError (exit 2) when it cannot be found."""
    chosen = [n for n in ("sweep_dir", "experiment", "parent_run") if getattr(args, n)]
    if len(chosen) > 1:
        flags = ", ".join("--" + n.replace("_", "-") for n in chosen)
        raise UserInputError(f"--sweep-dir/--experiment/--parent-run: give one of them; given: {flags}")
    parent, experiment, uri = args.parent_run, args.experiment, args.tracking_uri
    if args.sweep_dir:
        folder = Path(args.sweep_dir)
        if not folder.is_dir():
            raise UserInputError(f"--sweep-dir: no such folder; given: {folder}")
        if not (folder / STATE_FILE).is_file():
            raise UserInputError(f"--sweep-dir: not a sweep folder (no {STATE_FILE}); given: {folder}")
        state = read_state(folder.resolve())
        parent = state.parent_run_id
        if uri is None and "***" not in state.tracking_uri:
            uri = state.tracking_uri
    uri = resolve_tracking_uri(uri, None)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserInputError(f"--tracking-uri: no MLflow store at this path; given: {uri}")
    check_reachable(uri)
    return load_sweep_runs(uri, experiment=experiment, parent_run_id=parent)


def out_folder(given: str | None, default: Path) -> Path:
    """The folder an `--out` names (or `default`); UserInputError (exit 2) when a file stands there.

    Checked before any work: the command would otherwise fail with FileExistsError (exit 1) only
    when it writes, after reading every run (and, for export-best, after logging re-seeded runs).
    """
    out = Path(given) if given else default
    _refuse_file_on_the_way(out, given)
    return out


def check_out_file(given: str | None) -> None:
    """An `--out` that names a file to write must not be a folder, nor lie below a file."""
    if not given:
        return
    out = Path(given)
    if out.is_dir():
        raise UserInputError(f"--out: expected the path of a YAML file to write; given: {given!r} is a folder")
    _refuse_file_on_the_way(out.parent, given)


def _refuse_file_on_the_way(folder: Path, given: str | None) -> None:
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UserInputError(f"--out: {path} is a file, expected a folder; given: {given!r}")
            return
