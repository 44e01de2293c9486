"""How the GPU check runs its arms: worker processes, a start barrier, MPS and utilisation sampling.

`launch` starts workers (`benchmarks.gpu_worker`), waits until every one is warm, then starts
them together and samples the GPU (`nvidia-smi`: utilisation and memory in use) until they end.
`Mps` starts NVIDIA's Multi-Process Service daemon for the arms that measure it and stops it
again, with pipe and log directories of its own, so nothing outside the check is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import nvidia_smi

__all__ = ["Sample", "Sampler", "launch", "mps"]

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Sample:
    """One reading of the GPU: wall-clock time, utilisation in percent, memory in use (MiB)."""

    at: float
    util: float
    used_mib: float


@dataclass
class Sampler:
    """Reads the GPU every `period` seconds on a thread, until stopped (no samples without nvidia-smi)."""

    period: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            found = nvidia_smi("utilization.gpu,memory.used")
            if found is None or len(found) < 2:
                return  # no nvidia-smi (a CPU smoke run): the table says n/a
            try:
                self.samples.append(Sample(time.time(), float(found[0]), float(found[1])))
            except ValueError:
                return
            self._stop.wait(self.period)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def launch(jobs: Sequence[dict[str, Any]], workdir: Path, *, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run `jobs` as concurrent worker processes started together; their outputs, in order.

    Raises:
        RuntimeError: a worker failed (the message holds the tail of its log).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="launch-", dir=workdir))
    go = run_dir / "go"
    procs = []
    for i, job in enumerate(jobs):
        job = {**job, "ready": str(run_dir / f"ready-{i}"), "go": str(go)}
        (run_dir / f"job-{i}.json").write_text(json.dumps(job))
        log = open(run_dir / f"log-{i}.txt", "w")  # noqa: SIM115 (closed when the worker ends)
        cmd = [sys.executable, "-m", "benchmarks.gpu_worker", *(str(run_dir / f"{n}-{i}.json") for n in ("job", "out"))]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=_env(env), stdout=log, stderr=subprocess.STDOUT), log))
    try:
        limit = time.monotonic() + READY_TIMEOUT_S
        while not all((run_dir / f"ready-{i}").exists() for i in range(len(jobs))):
            for i, (proc, _) in enumerate(procs):
                if proc.poll() is not None:
                    _fail(run_dir, i, proc.returncode)
            if time.monotonic() > limit:
                raise RuntimeError(f"workers not ready within {READY_TIMEOUT_S:.0f} s (logs in {run_dir})")
            time.sleep(0.05)
        go.touch()
        for i, (proc, _) in enumerate(procs):
            if proc.wait() != 0:
                _fail(run_dir, i, proc.returncode)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return [json.loads((run_dir / f"out-{i}.json").read_text()) for i in range(len(jobs))]


def _fail(run_dir: Path, i: int, code: int | None) -> None:
    log = (run_dir / f"log-{i}.txt").read_text()
    last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
    # The CLI prints one line: the worker's last line goes first, its log's tail to stderr.
    print(log[-3000:], file=sys.stderr)
    raise RuntimeError(f"GPU check worker {i} exited with status {code}: {last}")


@contextmanager
def mps(workdir: Path) -> Iterator[tuple[dict[str, str] | None, str]]:
    """NVIDIA MPS for the processes this check starts: `with mps(dir) as (env, why):`.

    Yields the environment that connects a worker to the daemon and "", or None and why MPS
    could not start. The daemon gets its own pipe and log directories (CUDA_MPS_PIPE_DIRECTORY,
    CUDA_MPS_LOG_DIRECTORY) and is stopped on exit (`quit` to the control daemon), also when
    an arm fails.
    """
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        yield None, "nvidia-cuda-mps-control is not on PATH"
        return
    pipe, logs = workdir / "mps-pipe", workdir / "mps-log"
    pipe.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
    try:
        started = subprocess.run([control, "-d"], env=_env(env), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        yield None, f"nvidia-cuda-mps-control -d failed: {err}"
        return
    if started.returncode != 0:
        yield None, f"nvidia-cuda-mps-control -d exited {started.returncode}: {started.stderr.strip()[:200]}"
        return
    try:
        yield env, ""
    finally:
        subprocess.run([control], input="quit\n", env=_env(env), capture_output=True, text=True, timeout=30)
