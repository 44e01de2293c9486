"""A consistent copy of Ray's experiment state, so `--resume` survives a driver killed mid-save.

Ray writes its experiment state (trial list, search generator, searcher) into a staging folder
and then copies those files into runs/<sweep>/ from a background thread, one after another and
in place. A driver killed during that copy leaves a truncated file, or files from two different
saves (seen: a 0-byte searcher-state-*.pkl, after which Ray's restore fails and the search starts
over). Ray asks the callbacks for their state last, once the staged files are complete, so
`StateSnapshot.get_state` copies them then, as one unit: a new folder under `SNAPSHOT_DIR`,
made current by replacing a pointer file. `restore_snapshot` puts that copy back over Ray's
files before a resumed Tuner reads them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ray.tune import Callback

SNAPSHOT_DIR = ".ray-state"  # inside runs/<sweep>/
POINTER = "CURRENT"  # names the complete snapshot folder
STATE_GLOBS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def state_files(folder: Path) -> list[Path]:
    """Ray's experiment-level state files directly in `folder` (trial folders are not state)."""
    return sorted(p for pattern in STATE_GLOBS for p in folder.glob(pattern) if p.is_file())


def take_snapshot(staging: Path, folder: Path) -> Path | None:
    """Copy the state files in `staging` to a new snapshot of `folder`; returns it (None: nothing staged)."""
    files = state_files(staging)
    if not files:
        return None
    root = folder / SNAPSHOT_DIR
    snap = root / f"snap-{uuid.uuid4().hex[:12]}"
    snap.mkdir(parents=True)
    for src in files:
        shutil.copyfile(src, snap / src.name)
    _fsync_files(snap)
    pointer_tmp = root / f".{POINTER}.{snap.name}"
    pointer_tmp.write_text(snap.name)
    os.replace(pointer_tmp, root / POINTER)  # the switch: before it the old snapshot is current, after it this one
    for old in root.glob("snap-*"):
        if old != snap:
            shutil.rmtree(old, ignore_errors=True)
    return snap


def current_snapshot(folder: Path) -> Path | None:
    """The complete snapshot of `folder`, if one was taken."""
    pointer = folder / SNAPSHOT_DIR / POINTER
    if not pointer.is_file():
        return None
    snap = folder / SNAPSHOT_DIR / pointer.read_text().strip()
    return snap if snap.is_dir() else None


def restore_snapshot(folder: Path) -> bool:
    """Replace Ray's state files in `folder` by the current snapshot; False if there is none.

    Safe to repeat: a kill half-way leaves the snapshot as it was, and the next resume redoes it.
    """
    snap = current_snapshot(folder)
    if snap is None:
        return False
    for stale in state_files(folder):
        stale.unlink()
    for src in state_files(snap):
        tmp = folder / f".{src.name}.restoring"
        shutil.copyfile(src, tmp)
        os.replace(tmp, folder / src.name)
    return True


def _fsync_files(folder: Path) -> None:
    """Flush the snapshot's files before the pointer names it: a machine crash must not leave it half-written."""
    for path in folder.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())


class StateSnapshot(Callback):
    """Snapshots Ray's staged experiment state each time Ray saves it (see the module docstring).

    The staging folder is learnt from the first trial Ray reports (every trial's storage names
    it); saves before any trial exists hold nothing a resume would miss.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._staging: Path | None = None

    def _learn(self, trials: list) -> None:
        if self._staging is None and trials:
            self._staging = Path(trials[0].storage.experiment_driver_staging_path)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self._learn(trials)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._learn(trials)

    def get_state(self) -> None:
        # Ray calls this at the end of each save, after its own files are staged complete.
        if self._staging is not None:
            take_snapshot(self._staging, self.folder)
        return None  # nothing of ours to save: Ray then writes no callback-state file
