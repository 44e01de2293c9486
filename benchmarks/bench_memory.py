"""`memory`: peak memory of each trial worker when the dataset is shared vs when every worker has a copy.

Both arms run the same small sweep through the engine's own Tuner (`sweeps.execution.tuner.build_tuner`:
actor reuse, 1 CPU per trial, `max_concurrent` trials at once) and the engine's own trainable
(`sweeps.trainable.trial.trial_main`), on a synthetic-mer dataset made large on purpose:

- shared: the dataset goes through `tune.with_parameters`, as `sweeps.execution.engine.execute` passes it:
  one copy in Ray's object store, mapped read-only (zero copy) into every worker;
- by value: the driver pickles the dataset in-band into one byte string, as cloudpickle does
  with a dataset captured by a plain function closure or put into a trial config, and every
  trial unpickles its own copy. The byte string itself travels through the object store as a
  uint8 array, so its transport costs the worker no private memory; the copy does.

A trial trains for real (1 contrastive pre-training epoch over every sample, so every page
of the dataset is read, then 1 fine-tuning epoch) inside a sampler thread that polls
/proc/self/status; the worker's VmHWM (the kernel's exact peak RSS) is read at the end.
RSS counts shared pages a process has read as if they were its own, so the private part
(RssAnon: the worker's own heap) is reported beside it: that is what a copy per worker costs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import resource
import statistics
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Ratio, Row, ray_session
from mer_core.data.featureset import FeatureSet
from sweeps.trainable.trial import TrialSettings, trial_main

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")  # /proc/<pid>/status, kB
POLL_S = 0.01
# 13,000 samples at MER2024's dims (6,912 float32 features) = 343 MiB: large next to a worker's ~0.5 GB of
# imports, and few rows, so the pass over all of them takes seconds.
DATA = {"n_labelled": 2000, "n_unlabelled": 11000, "dims": {"audio": 1024, "text": 5120, "video": 768}}
SMOKE_DATA = {"n_labelled": 240, "n_unlabelled": 2000, "dims": {"audio": 64, "text": 96, "video": 48}}
# Seconds of compute per trial; pre-training reads every row once. No Transformer layer in the
# specific encoders: at these dims it works at D_m (5120 for text) and a trial took minutes; the
# figure is about the data, not the model. Pre-training batches stay at the recipe's 256: at 1024
# the contrastive terms alone took ~330 MiB more per worker.
SET = {
    "model.layers": 0,
    "model.hidden_dim": 32,
    "model.ff_dim": 64,
    "optim.max_epochs": 1,
    "optim.pretrain_epochs": 1,
    "optim.batch_size": 256,
    "self_training.rounds": 0,
}
ARMS = ("shared", "by value")
LABELS = {
    "shared": "shared (object store, tune.with_parameters)",
    "by value": "by value (pickled in-band, unpickled per trial)",
}


def read_status(path: str = "/proc/self/status") -> dict[str, float]:
    """The memory fields of a process status file in MiB; without /proc, only the peak (getrusage)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {"VmHWM": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # kB on Linux
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[key] = int(rest.split()[0]) / 1024
    return out


class PeakSampler:
    """Polls /proc/self/status on a thread while the `with` block runs; keeps each field's maximum.

    The sampler can miss a spike shorter than its period; VmHWM, read at the end, cannot.
    """

    def __init__(self, period_s: float = POLL_S) -> None:
        self.period_s = period_s
        self.start: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="peak-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self.start = read_status()
        self.peak = dict(self.start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _poll(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def _sample(self) -> None:
        for key, value in read_status().items():
            self.peak[key] = max(self.peak.get(key, 0.0), value)

    def summary(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "start": self.start, "peak": self.peak}


def _write_summary(out: str, mem: PeakSampler) -> None:
    from ray import tune

    path = Path(out) / f"{tune.get_context().get_trial_id()}.json"
    path.write_text(json.dumps(mem.summary()))


def shared_trial(config: dict[str, Any], *, data: FeatureSet, settings: TrialSettings, out: str) -> None:
    """The engine's trial with the dataset from the object store; writes the worker's memory to `out`."""
    with PeakSampler() as mem:
        trial_main(config, data=data, settings=settings)
    _write_summary(out, mem)


def by_value_trial(config: dict[str, Any], *, payload: np.ndarray, settings: TrialSettings, out: str) -> None:
    """The engine's trial on the worker's own copy of the dataset, unpickled from `payload`."""
    with PeakSampler() as mem:
        data = pickle.loads(payload)  # our own bytes from the driver: the copy a closure or a config delivers
        trial_main(config, data=data, settings=settings)
        del data
    _write_summary(out, mem)


@dataclass(frozen=True)
class Worker:
    """One worker process over the trials it ran in one sweep (MiB)."""

    pid: int
    idle: float  # VmRSS when its first trial started: imports done, the dataset not read yet
    idle_private: float  # RssAnon then
    peak: float  # VmHWM: the kernel's peak RSS of the process
    peak_private: float  # highest sampled RssAnon
    peak_shmem: float  # highest sampled RssShmem (object-store pages it has read)


def _workers(out: Path) -> list[Worker]:
    """Trial summaries -> one row per worker process (actors are reused: several trials per pid)."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*.json")):
        summary = json.loads(path.read_text())
        by_pid.setdefault(summary["pid"], []).append(summary)
    workers = []
    for pid, trials in by_pid.items():
        first = min(trials, key=lambda s: s["start"].get("VmRSS", 0.0))
        peaks = [s["peak"] for s in trials]
        workers.append(
            Worker(
                pid=pid,
                idle=first["start"].get("VmRSS", float("nan")),
                idle_private=first["start"].get("RssAnon", float("nan")),
                peak=max(p.get("VmHWM", float("nan")) for p in peaks),
                peak_private=max(p.get("RssAnon", float("nan")) for p in peaks),
                peak_shmem=max(p.get("RssShmem", float("nan")) for p in peaks),
            )
        )
    return workers


def _sweep_yaml(folder: Path, trials: int, *, smoke: bool) -> Path:
    spec = {
        "name": "bench-memory",
        "kind": "search",
        "base": str(ROOT / "mer_core/configs/mrccl.yaml"),
        "data": {"source": "synthetic-mer", "seed": 0, "folds": 1, "synthetic": SMOKE_DATA if smoke else DATA},
        "set": SET,
        "search_space": str(_space_yaml(folder)),
        # Seeded random search, every trial to its end: both arms train the same configurations.
        "search": {"algorithm": "random", "num_samples": trials, "seed": 0},
        "scheduler": {"kind": "none"},
        "metric": "val/weighted_f1",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": 2},
    }
    path = folder / "bench-memory.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _space_yaml(folder: Path) -> Path:
    """A one-parameter space: the model stays the small one of SET, whatever is sampled (seconds per trial)."""
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    return path


def _run_sweep(prepared, trainable: Any, folder: Path, out: Path) -> None:
    """One sweep through the engine's Tuner (no MLflow callbacks: tracking runs on the driver, not in workers)."""
    from sweeps.execution.tuner import build_tuner

    tuner = build_tuner(
        prepared.spec, prepared.space, trainable, folder=folder, callbacks=[], resume=False, base=prepared.base
    )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"memory benchmark: {len(errors)} trial(s) failed, first: {errors[0]}")
    if len(list(out.glob("*.json"))) < prepared.spec.search.num_samples:
        raise KeyboardInterrupt  # Tune ends fit() early on Ctrl-C instead of raising: stop here, not at the next sweep


def _trainables(prepared, outs: Mapping[str, Path]) -> dict[str, Any]:
    """Both arms' trainables; each arm's data enters the object store once and serves every repeat."""
    from ray import tune

    payload = np.frombuffer(pickle.dumps(prepared.data, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
    settings = prepared.settings
    return {
        "shared": tune.with_parameters(shared_trial, data=prepared.data, settings=settings, out=str(outs["shared"])),
        "by value": tune.with_parameters(by_value_trial, payload=payload, settings=settings, out=str(outs["by value"])),
    }


@BENCHMARKS.register("memory")
def bench_memory(opts: BenchOptions) -> BenchResult:
    """Per-worker peak RSS and private memory with the dataset shared vs copied, against its size."""
    from sweeps.execution.prepare import prepare
    from sweeps.spec import load_sweep

    trials = opts.trials or (1 if opts.smoke else 4)  # smoke: one worker per arm
    logging.getLogger("ray").setLevel(logging.WARNING)
    # The console as `sweeps.execution.engine.execute` sets it up (no Ray AIR tables, no snapshot warnings).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    workers: dict[str, list[Worker]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="mersweep-bench-memory-") as tmp:
        spec = load_sweep(_sweep_yaml(Path(tmp), trials, smoke=opts.smoke))
        prepared = prepare(spec, resume=False, tracking_uri=f"sqlite:///{tmp}/unused.db", runs_root=Path(tmp) / "runs")
        data_mib = prepared.data.nbytes() / 2**20
        outs = {arm: Path(tmp) / arm.replace(" ", "_") for arm in ARMS}
        with ray_session(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True):
            trainables = _trainables(prepared, outs)
            for k in range(opts.repeats):
                for arm in ARMS[k % 2 :] + ARMS[: k % 2]:  # alternate which arm runs first
                    outs[arm].mkdir(exist_ok=True)
                    for stale in outs[arm].glob("*.json"):
                        stale.unlink()
                    _run_sweep(prepared, trainables[arm], Path(tmp) / "runs" / f"{outs[arm].name}-{k}", outs[arm])
                    workers[arm] += _workers(outs[arm])
    _check_fresh_processes(workers)
    return _result(workers, data_mib=data_mib, trials=trials, opts=opts)


def _check_fresh_processes(workers: Mapping[str, list[Worker]]) -> None:
    """Every sweep must start its own worker processes: a reused process would carry an earlier peak."""
    pids = [w.pid for ws in workers.values() for w in ws]
    if len(pids) != len(set(pids)):
        raise RuntimeError("memory benchmark: a worker process served two sweeps; its peak RSS would mix them")


def _result(workers: Mapping[str, list[Worker]], *, data_mib: float, trials: int, opts: BenchOptions) -> BenchResult:
    def row(arm: str, what: str, values: list[float], note: str = "") -> Row:
        return Row(f"{LABELS[arm]}: {what}", tuple(values), "MiB", note)

    res = BenchResult(
        "memory",
        f"peak memory per trial worker, dataset of {data_mib:.0f} MiB shared vs copied ({trials} trials/sweep)",
    )
    med: dict[tuple[str, str], float] = {}
    for arm in ARMS:
        ws = workers[arm]
        columns = {
            "idle RSS (first trial start)": [w.idle for w in ws],
            "peak RSS (VmHWM)": [w.peak for w in ws],
            "peak RSS above idle": [w.peak - w.idle for w in ws],
            "peak private (RssAnon) above idle": [w.peak_private - w.idle_private for w in ws],
            "peak shared object-store pages (RssShmem)": [w.peak_shmem for w in ws],
        }
        for what, values in columns.items():
            res.rows.append(row(arm, what, values, f"{len(ws)} workers"))
            med[arm, what] = statistics.median(values)
    private = "peak private (RssAnon) above idle"
    above = "peak RSS above idle"
    res.ratios = [
        Ratio(
            "private_by_value_vs_shared",
            med["by value", private] / max(med["shared", private], 1.0),
            "median private memory above idle per worker: by value ÷ shared (what sharing saves per worker)",
        ),
        Ratio(
            "shared_private_vs_dataset",
            med["shared", private] / data_mib,
            "median private memory above idle per worker, shared arm ÷ dataset size (the trainer's own memory; "
            "a private copy of the data would add 1)",
            goal="< 1 (no copy)",
        ),
        Ratio(
            "copies_saved_per_worker",
            (med["by value", private] - med["shared", private]) / data_mib,
            "(by-value − shared) median private memory above idle per worker ÷ dataset size (about 1 = sharing "
            "saves one whole copy of the data per worker)",
        ),
        Ratio(
            "shared_rss_vs_dataset",
            med["shared", above] / data_mib,
            "median peak RSS above idle per worker, shared arm ÷ dataset size (RSS counts read shared pages too)",
        ),
    ]
    res.notes = _notes(data_mib, trials, opts)
    return res


def _notes(data_mib: float, trials: int, opts: BenchOptions) -> list[str]:
    size = SMOKE_DATA if opts.smoke else DATA
    n = size["n_labelled"] + size["n_unlabelled"]
    paragraphs = [
        f"Dataset: synthetic-mer, {n} samples at dims {size['dims']}, float32: {data_mib:.0f} MiB "
        "(`FeatureSet.nbytes`: features, labels, mask). Config: mrccl.yaml with "
        + ", ".join(f"{k}={v}" for k, v in SET.items())
        + "; the space samples only optim.lr (seeded random search: the same configurations in both arms).",
        f"Each sweep: {trials} trials, 2 at a time (1 CPU each), actors reused (so {min(trials, 2)} worker process(es) "
        f"per sweep, each running ~{trials / min(trials, 2):g} trials; its peak is over all of them); {opts.repeats} "
        "sweep(s) per arm, arm order alternated; one Ray session; every worker process is checked to serve one sweep "
        "only.",
        "Idle = the worker's RSS (and RssAnon) when its first trial starts: Ray, Tune, torch and mer_core imported, "
        "the object-store reference fetched but not read. Private = RssAnon (the process's own heap), shared = "
        "RssShmem (pages of Ray's object store in /dev/shm that the worker has read); both sampled every "
        f"{POLL_S * 1000:.0f} ms, VmHWM exact. Units: MiB. In the by-value arm RssShmem is the pickled byte "
        "string, read zero-copy from the object store; the copy unpickled from it is private.",
        "RSS counts shared object-store pages in every worker that reads them, so per-worker peak RSS alone cannot "
        "show sharing; the machine pays for those pages once, and for private memory once per worker.",
    ]
    return [line for p in paragraphs for line in ("", p)][1:]  # blank lines: separate Markdown paragraphs
