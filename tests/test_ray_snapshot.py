"""sweeps/resume/snapshot.py: Ray's staged state copied as one unit and put back on --resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sweeps.resume.snapshot import SNAPSHOT_DIR, StateSnapshot, current_snapshot, restore_snapshot, take_snapshot

STATE = {
    "experiment_state-2026-01-01_00-00-00.json": b'{"trial_data": []}',
    "search_gen_state-2026-01-01_00-00-00.json": b"gen",
    "searcher-state-2026-01-01_00-00-00.pkl": b"searcher",
}


def _stage(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "a1b2c3").mkdir(exist_ok=True)  # a trial's folder: not experiment state
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_a_torn_copy_is_replaced_by_the_last_complete_snapshot(tmp_path):
    staging, runs = _stage(tmp_path / "staging", STATE), tmp_path / "runs" / "s"
    runs.mkdir(parents=True)
    (runs / "mersweep_state.json").write_text("{}")  # mersweep's own file: left alone
    assert take_snapshot(staging, runs) is not None
    # Ray's copy into runs/ was cut short: one file empty, one from an older session, one missing.
    (runs / "experiment_state-2026-01-01_00-00-00.json").write_bytes(b"")
    (runs / "searcher-state-2025-12-31_00-00-00.pkl").write_bytes(b"older")
    assert restore_snapshot(runs)
    assert _contents(runs) == {**STATE, "mersweep_state.json": b"{}"}
    assert restore_snapshot(runs)  # repeatable: a kill during a restore is undone by the next one
    assert _contents(runs) == {**STATE, "mersweep_state.json": b"{}"}


def test_each_snapshot_replaces_the_last_and_keeps_one(tmp_path):
    staging, runs = _stage(tmp_path / "staging", STATE), tmp_path / "runs"
    first = take_snapshot(staging, runs)
    (staging / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"searcher v2")
    second = take_snapshot(staging, runs)
    assert current_snapshot(runs) == second != first
    assert [p.name for p in (runs / SNAPSHOT_DIR).glob("snap-*")] == [second.name]
    assert (second / "searcher-state-2026-01-01_00-00-00.pkl").read_bytes() == b"searcher v2"
    assert not (second / "a1b2c3").exists()


def test_nothing_to_restore_without_a_snapshot(tmp_path):
    runs = _stage(tmp_path / "runs", STATE)
    assert take_snapshot(tmp_path / "empty-staging", runs) is None
    assert not restore_snapshot(runs)
    assert _contents(runs) == STATE  # Ray's own files stay as they are


def test_the_callback_snapshots_when_ray_asks_for_its_state(tmp_path):
    staging, runs = _stage(tmp_path / "staging", STATE), tmp_path / "runs"
    callback = StateSnapshot(runs)
    assert callback.get_state() is None and current_snapshot(runs) is None  # no trial yet: nothing staged
    trial = SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))
    callback.on_step_begin(0, [trial])
    assert callback.get_state() is None  # no state of its own, so Ray writes no callback file
    assert _contents(current_snapshot(runs)) == STATE
