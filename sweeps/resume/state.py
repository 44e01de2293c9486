"""`runs/<sweep>/`: where a sweep keeps what `--resume` needs besides Ray's own state."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from mer_core.configs import flatten
from mer_core.errors import UserInputError

STATE_FILE = "mersweep_state.json"


@dataclass(frozen=True)
class SweepState:
    """Identity of a sweep's MLflow parent run, written once when the sweep starts."""

    sweep: str
    experiment: str
    parent_run_id: str
    tracking_uri: str  # redacted if it held credentials; the user passes the real one again
    spec_yaml: str


def run_dir(runs_root: Path, sweep: str) -> Path:
    """`runs_root/<sweep>`, resolved; UserInputError if a file stands where a folder must go."""
    folder = (runs_root / sweep).resolve()
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UserInputError(f"--runs-dir: {path} is a file, not a folder; given: {str(runs_root)!r}")
            break
    return folder


def read_state(folder: Path, *, field: str = "--resume") -> SweepState:
    """The state of the sweep in `folder`; UserInputError naming `field` (the input that named the folder)."""
    path = folder / STATE_FILE
    if not path.is_file():
        hint = "run it without --resume first"
        if field != "--resume":
            hint = "expected a sweep's folder, e.g. runs/quickstart"
        raise UserInputError(f"{field}: no sweep at {folder} (missing {STATE_FILE}); {hint}")
    try:
        return SweepState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserInputError(f"{field}: {path} is not a mersweep state file ({err})") from None


def write_state(folder: Path, state: SweepState) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(folder / STATE_FILE)


def check_same_sweep(state: SweepState, spec_yaml: str) -> None:
    """`--resume` continues the sweep as it started: Ray restores its own copy of the search, so a
    changed sweep file, `--set` or `--num-samples` would silently apply to only some trials."""
    if spec_yaml == state.spec_yaml:
        return
    # Compared field by field, not as text: the same sweep may be written differently (a nested
    # `data.synthetic.dims` map or dotted keys, key order) by another version of mersweep.
    old, new = (flatten(yaml.safe_load(text) or {}) for text in (state.spec_yaml, spec_yaml))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))
    if not changed:
        return
    key = changed[0]
    raise UserInputError(
        f"--resume: {key} differs from the sweep being resumed (was {_shown(old, key)}, now {_shown(new, key)}); "
        "resume with the sweep file, --set and --num-samples of its first run"
    )


def _shown(fields: dict, key: str) -> str:
    return repr(fields[key]) if key in fields else "not set"
