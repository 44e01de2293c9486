"""One process of the GPU check: `python -m benchmarks.gpu_worker JOB.json OUT.json`.

The check (`benchmarks.bench_gpu`) runs every measured arm in a worker like this one, so that
its own process never holds a CUDA context (it starts and stops MPS between arms) and so that
concurrent single-trial processes are real processes, as Ray's fractional GPUs start them.

A job is JSON:

- `kind: epoch`: the `epoch` benchmark (fp32, then bf16) on this device; OUT holds the results;
- `kind: arms`: `arms`, a list of `{label, mode, sets, deadline}` run one after another in this
  process (`mode`: `sequential` single runs, or `fused`: one population of all `sets`); an arm
  whose `deadline` (epoch seconds) has passed is skipped;

Every job first warms up (imports, CUDA context, cuBLAS handles, one tiny run), then touches
`ready` and waits for `go` (when given): the parent starts the clock of concurrent processes
only when all of them are warm. Each arm records its wall-clock start and end (`time.time()`,
comparable across processes), its peak allocated GPU memory and each member's outcome.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mer_core.configs import load_config, with_overrides
from mer_core.data import load_data
from mer_core.train import run
from mer_core.train.fused import train_population

__all__ = ["main"]

GO_TIMEOUT_S = 600.0
WARM = {"optim.max_epochs": 1, "optim.pretrain_epochs": 0, "self_training.rounds": 0}


def _cuda(device: str) -> bool:
    return device == "cuda" and torch.cuda.is_available()


def _wait_for(path: str | None) -> None:
    """Poll for the parent's go file (a barrier across processes without any extra dependency)."""
    if path is None:
        return
    limit = time.monotonic() + GO_TIMEOUT_S
    while not Path(path).exists():
        if time.monotonic() > limit:
            raise TimeoutError(f"no go signal at {path} within {GO_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


def _member(result: Any, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "status": result.status,
        "epochs": result.epochs,
        "f1": result.metrics.get("val/weighted_f1", float("nan")),
    }


def _why_skip(spec: dict[str, Any], last: dict[str, dict[str, float]]) -> str:
    """Why an arm should not run: past its deadline, or predicted (from the last fused arm's
    per-member time and memory) to miss it or not to fit in the GPU's free memory."""
    deadline = spec.get("deadline", float("inf"))
    if time.time() > deadline:
        return "the check's time budget ran out before this arm"
    k = len(spec["sets"])
    before = last.get(spec.get("family", ""))
    if spec["mode"] == "fused" and before is not None:
        if time.time() + before["seconds"] * k > deadline:
            return f"predicted {before['seconds'] * k:.0f} s from the previous fused arm: beyond the time budget"
        if before["bytes"] * k > 0.9 * spec.get("free_bytes", float("inf")):
            return f"predicted {before['bytes'] * k / 2**30:.1f} GiB: more than the free GPU memory"
    return ""


def _data(cfg: Any, cache: dict[str, Any]) -> Any:
    """The dataset of `cfg`, loaded once per data section (an arms job mixes quickstart and MER2024 data)."""
    key = repr(cfg.data)
    if key not in cache:
        cache[key] = load_data(cfg.data)
    return cache[key]


def _arm(
    spec: dict[str, Any], datasets: dict[str, Any], device: str, last: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Run one arm; `last` keeps the per-member seconds and bytes of the latest fused arm of each family
    (quickstart-sized or MER2024 dims: their members cost very differently)."""
    cfgs = [load_config(None, sets) for sets in spec["sets"]]
    why = _why_skip(spec, last)
    if why:
        return {"label": spec["label"], "skipped": why}
    data = _data(cfgs[0], datasets)
    if _cuda(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    results = train_population(cfgs, data) if spec["mode"] == "fused" else [run(c, data) for c in cfgs]
    end = time.time()
    peak = torch.cuda.max_memory_allocated() if _cuda(device) else 0
    if spec["mode"] == "fused":
        last[spec.get("family", "")] = {"seconds": (end - start) / len(cfgs), "bytes": peak / len(cfgs)}
    first = spec.get("first_index", 0)
    return {
        "label": spec["label"],
        "mode": spec["mode"],
        "start": start,
        "end": end,
        "peak_bytes": peak,
        "members": [_member(r, first + i) for i, r in enumerate(results)],
    }


def _warm_up(job: dict[str, Any], datasets: dict[str, Any]) -> None:
    """Imports, the CUDA context, cuBLAS and vmap's first trace, once per kind of data in the job:
    costs no timed arm should carry."""
    seen: set[str] = set()
    for spec in job["arms"]:
        cfg = with_overrides(load_config(None, spec["sets"][0]), WARM)
        if repr(cfg.data) in seen:
            continue
        seen.add(repr(cfg.data))
        data = _data(cfg, datasets)
        run(cfg, data)
        if any(a["mode"] == "fused" for a in job["arms"]):
            train_population([cfg, with_overrides(cfg, {"seed": cfg.seed + 1})], data)


def _epoch_job(job: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_epoch import bench_epoch  # the epoch benchmark only where it is asked for
    from benchmarks.common import BenchOptions

    out = []
    for bf16 in (False, True):
        steps = 1 if job["smoke"] else None  # the smoke form only shows that every part runs
        opts = BenchOptions(smoke=job["smoke"], repeats=job["repeats"], device=job["device"], bf16=bf16, steps=steps)
        out.append(dataclasses.asdict(bench_epoch(opts)))
    return {"results": out}


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    job = json.loads(Path(job_path).read_text())
    if job["kind"] == "epoch":
        Path(job["ready"]).touch()
        _wait_for(job.get("go"))
        out = _epoch_job(job)
    else:
        datasets: dict[str, Any] = {}
        for spec in job["arms"]:  # loaded before the clock: data generation is no arm's cost
            _data(load_config(None, spec["sets"][0]), datasets)
        _warm_up(job, datasets)
        Path(job["ready"]).touch()
        _wait_for(job.get("go"))
        last: dict[str, dict[str, float]] = {}
        out = {"arms": [_arm(spec, datasets, job["device"], last) for spec in job["arms"]]}
    out["device"] = torch.cuda.get_device_name() if _cuda(job["device"]) else "cpu"
    Path(out_path).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
