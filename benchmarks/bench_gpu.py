"""`gpu`: the GPU check. Epoch speed against the memory floor, and how to pack trials on one GPU.

    python -m benchmarks gpu            # on a GPU machine; about 6 minutes
    python -m benchmarks gpu --smoke    # anywhere: the same arms, tiny, on the CPU (says so)

Needs torch and the scientific stack only (no Ray, Optuna or MLflow): every arm runs in a
worker process (`benchmarks.gpu_worker`) that imports the trainer, never the sweep engine, and
this process never creates a CUDA context (it names the GPU through nvidia-smi), so it can
start and stop MPS between arms. Sections of RESULTS.md are tagged with the GPU's name:

- `epoch[cuda-<gpu>]`, `epoch[cuda-bf16-<gpu>]`: the epoch benchmark, with the memory floor of a step;
- `packing[<gpu>]`: trials per hour of the ways to put many small trials on one GPU:
  sequential single trials; N single-trial processes started at once (what Ray's fractional GPUs
  do), without and with MPS; one fused population of K; and at MER2024 dims, singles against
  fused K = 2, 4. Each arm gives trials per hour, peak GPU memory per member, the GPU's sampled
  utilisation, and how fused members agree with their single runs (epochs, |Δ val F1|).

The check must end within 6 minutes: each phase has a deadline, and an arm predicted to miss it
(from the per-member time of the arm before it) or not to fit in the free memory is skipped and
listed as such. One timed run per arm (no repeats: the budget), so the ratios are single samples.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Ratio, Row, nvidia_smi
from benchmarks.gpu_packing import Sampler, launch, mps
from benchmarks.population_micro import member_sets
from mer_core.errors import ConfigError

__all__ = ["BUDGET_S", "Sizes", "bench_gpu"]

BUDGET_S = 330.0  # the whole check within 6 minutes, leaving time for the workers' start and the tests
PHASES = {"suite": 0.6, "processes": 0.8, "mps": 1.0}  # share of the budget by which each phase ends


@dataclass(frozen=True)
class Sizes:
    """What one run measures: trial counts per arm."""

    sequential: int
    processes: tuple[int, ...]
    fused: tuple[int, ...]
    mer: tuple[int, ...]
    repeats: int


FULL = Sizes(sequential=8, processes=(4, 8, 16), fused=(4, 8, 16, 64, 256), mer=(1, 2, 4), repeats=3)
SMOKE = Sizes(sequential=2, processes=(2,), fused=(2,), mer=(1, 2), repeats=1)
TINY = [  # the smoke form: a few seconds per trial on a CPU
    "data.source=synthetic-mer",
    "data.labelled_fraction=1.0",
    "data.synthetic.n_labelled=120",
    "data.synthetic.n_unlabelled=60",
    "data.synthetic.dims={audio: 16, text: 16, video: 8}",
    "model.hidden_dim=16",
    "model.ff_dim=32",
    "optim.max_epochs=2",
    "optim.pretrain_epochs=1",
    "self_training.oversample_to=80",  # the recipe's 1000 rows per class would be most of a CPU trial's time
]
MER = [  # MER2024-SEMI dims and labelled set, the recipe's model, a short schedule (no unlabelled pool)
    "data.source=synthetic-mer",
    "data.folds=1",
    "data.synthetic.n_labelled=5030",
    "data.synthetic.n_unlabelled=0",
    "data.synthetic.dims={audio: 1024, text: 5120, video: 768}",
    "optim.max_epochs=4",
    "optim.patience=4",
    "optim.pretrain_epochs=1",
    "self_training.rounds=0",
]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _quick_sets(n: int, device: str, smoke: bool) -> list[list[str]]:
    return [s + (TINY if smoke else []) for s in member_sets(n, threads=1, device=device, dropout=False)]


def _mer_sets(n: int, device: str, smoke: bool) -> list[list[str]]:
    base = MER if not smoke else [*TINY, "data.folds=1"]
    return [[*base, f"seed={i}", f"runtime.device={device}", f"optim.lr={1e-4 * (1 + i)}"] for i in range(n)]


@BENCHMARKS.register("gpu")
def bench_gpu(opts: BenchOptions) -> Iterator[BenchResult]:
    """The GPU check's sections (see the module docstring); the CPU smoke form with `--smoke`."""
    found = nvidia_smi("name,memory.free")
    if found is None and not opts.smoke:
        raise ConfigError(
            "gpu",
            "a machine where nvidia-smi sees a GPU (--smoke runs the check's tiny form on the CPU)",
            "no GPU visible",
            "no CUDA device",
        )
    device = "cuda" if found is not None and not opts.smoke else "cpu"
    gpu = found[0] if found is not None else "no CUDA device (smoke on the CPU)"
    tag = _slug(gpu) if device == "cuda" else "cpu-smoke"
    sizes = SMOKE if opts.smoke else FULL
    started = time.time()
    # The 6-minute budget is the GPU run's; the smoke form shows every arm runs, however slow the CPU.
    budget = math.inf if opts.smoke else BUDGET_S
    deadlines = {phase: started + share * budget for phase, share in PHASES.items()}
    sampler = Sampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mersweep-gpu-check-") as tmp:
            work = Path(tmp)
            epoch_job = {"kind": "epoch", "device": device, "smoke": opts.smoke, "repeats": sizes.repeats}
            (epoch_out,) = launch([epoch_job], work)
            for raw in epoch_out["results"]:
                yield _result(raw, tag)
            arms = _run_arms(work, device, opts.smoke, sizes, deadlines, float(found[1]) if found else 0.0)
    finally:
        sampler.stop()
    yield _packing(arms, sampler, gpu, tag, device)


def _result(raw: dict[str, Any], tag: str) -> BenchResult:
    """A BenchResult back from a worker's JSON, its section tagged with the GPU."""
    rows = [Row(r["label"], tuple(r["samples"]), r["unit"], r["note"]) for r in raw["rows"]]
    ratios = [Ratio(**q) for q in raw["ratios"]]
    variant = "-".join(p for p in (raw["variant"], tag) if p)
    return BenchResult(raw["name"], raw["title"], rows, ratios, list(raw["notes"]), variant)


@dataclass
class Arm:
    """One measured way of running trials, merged from its workers' outputs."""

    label: str
    family: str  # "quick" (quickstart-sized) or "mer" (MER2024 dims): which single runs it compares with
    kind: str  # sequential | processes | mps | fused
    members: list[dict[str, Any]]
    start: float = 0.0
    end: float = 0.0
    peak_bytes: float = 0.0
    skipped: str = ""

    @property
    def wall(self) -> float:
        return self.end - self.start

    @property
    def per_hour(self) -> float:
        return len(self.members) / self.wall * 3600 if self.wall > 0 else float("nan")


def _merge(label: str, family: str, kind: str, outs: Sequence[dict[str, Any]]) -> Arm:
    skipped = [o["skipped"] for o in outs if "skipped" in o]
    if skipped:
        return Arm(label, family, kind, [], skipped=skipped[0])
    return Arm(
        label,
        family,
        kind,
        [m for o in outs for m in o["members"]],
        start=min(o["start"] for o in outs),
        end=max(o["end"] for o in outs),
        peak_bytes=sum(o["peak_bytes"] for o in outs),
    )


def _run_arms(
    work: Path, device: str, smoke: bool, sizes: Sizes, deadlines: dict[str, float], free_mib: float
) -> list[Arm]:
    quick = _quick_sets(max(sizes.fused + sizes.processes + (sizes.sequential,)), device, smoke)
    mer = _mer_sets(max(sizes.mer), device, smoke)
    suite = [{"label": f"sequential: {sizes.sequential} single trials, one after another", "mode": "sequential",
              "sets": quick[: sizes.sequential], "family": "quick", "kind": "sequential"}]  # fmt: skip
    suite += [{"label": f"fused: one population of K={k}", "mode": "fused", "sets": quick[:k], "family": "quick",
               "kind": "fused"} for k in sizes.fused if k < 256]  # fmt: skip
    suite += [{"label": f"MER2024 dims: {len(mer)} single trials, one after another", "mode": "sequential",
               "sets": mer, "family": "mer", "kind": "sequential"}]  # fmt: skip
    suite += [{"label": f"MER2024 dims: fused K={k}", "mode": "fused", "sets": mer[:k], "family": "mer",
               "kind": "fused"} for k in sizes.mer if k > 1]  # fmt: skip
    suite += [{"label": f"fused: one population of K={k}", "mode": "fused", "sets": quick[:k], "family": "quick",
               "kind": "fused"} for k in sizes.fused if k >= 256]  # fmt: skip
    for spec in suite:
        spec["deadline"] = deadlines["suite"]
        spec["free_bytes"] = free_mib * 2**20
    (out,) = launch([{"kind": "arms", "device": device, "arms": suite}], work)
    arms = [_merge(s["label"], s["family"], s["kind"], [o]) for s, o in zip(suite, out["arms"], strict=True)]
    seq = next(a for a in arms if a.kind == "sequential" and a.family == "quick")
    per_trial = seq.wall / max(len(seq.members), 1) if not seq.skipped else float("inf")
    for phase, kind in (("processes", "processes"), ("mps", "mps")):
        arms += _process_arms(work, device, quick, sizes.processes, per_trial, deadlines[phase], kind)
    return arms


def _process_arms(
    work: Path, device: str, quick: list[list[str]], counts: Sequence[int], per_trial: float, deadline: float, kind: str
) -> list[Arm]:
    """N single-trial processes started together, for each N (under MPS for kind `mps`)."""
    out: list[Arm] = []
    with _maybe_mps(work, kind, device) as (env, why):
        for n in counts:
            label = f"{n} single-trial processes at once" + (" under MPS" if kind == "mps" else "")
            if kind == "mps" and env is None:
                out.append(Arm(label, "quick", kind, [], skipped=f"MPS unavailable: {why}"))
                continue
            if time.time() + per_trial * n > deadline:  # worst case: no overlap at all
                out.append(Arm(label, "quick", kind, [], skipped="predicted to miss the check's time budget"))
                continue
            jobs = [
                {"kind": "arms", "device": device,
                 "arms": [{"label": label, "mode": "sequential", "sets": [quick[i]], "first_index": i}]}
                for i in range(n)
            ]  # fmt: skip
            outs = launch(jobs, work, env=env)
            out.append(_merge(label, "quick", kind, [o["arms"][0] for o in outs]))
    return out


def _maybe_mps(work: Path, kind: str, device: str):
    if kind == "mps" and device == "cuda":
        return mps(work)
    return nullcontext((None, "the smoke form runs on the CPU" if device != "cuda" else ""))


def _agreement(arm: Arm, singles: dict[tuple[str, int], dict[str, Any]]) -> str:
    pairs = [(m, singles.get((arm.family, m["index"]))) for m in arm.members]
    pairs = [(m, s) for m, s in pairs if s is not None]
    if arm.kind == "sequential" or not pairs:
        return "-" if arm.kind == "sequential" else "no single runs to compare"
    same = sum(m["epochs"] == s["epochs"] for m, s in pairs)
    gap = max(abs(m["f1"] - s["f1"]) for m, s in pairs)
    return f"epochs equal {same}/{len(pairs)}, max abs d F1 {gap:.1e}"


def _packing(arms: list[Arm], sampler: Sampler, gpu: str, tag: str, device: str) -> BenchResult:
    singles = {(a.family, m["index"]): m for a in arms if a.kind == "sequential" for m in a.members}
    table = [
        "| arm | trials | wall s | trials/hour | peak GPU MiB per member (torch) "
        "| GPU MiB in use per member (nvidia-smi) | GPU busy (sampled) | fused vs alone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows: list[Row] = []
    for a in arms:
        if a.skipped:
            table.append(f"| {a.label} | - | - | - | - | - | - | skipped: {a.skipped} |")
            continue
        seen = sampler.window(a.start, a.end)
        util = f"{sum(s.util for s in seen) / len(seen):.0f}% ({len(seen)} samples)" if seen else "n/a"
        used = f"{max(s.used_mib for s in seen) / len(a.members):.0f}" if seen else "n/a"
        peak = f"{a.peak_bytes / 2**20 / len(a.members):.0f}" if device == "cuda" else "n/a"
        table.append(
            f"| {a.label} | {len(a.members)} | {a.wall:.2f} | {a.per_hour:.0f} | {peak} | {used} | {util} "
            f"| {_agreement(a, singles)} |"
        )
        rows.append(Row(a.label, (a.per_hour,), "trials/h"))
    result = BenchResult("packing", f"trials per hour on one GPU ({gpu})", rows=rows, variant=tag)
    by_label = {r.label: r for r in rows}
    for name, fused, other, goal in (
        ("fused_k8_vs_mps8", "fused: one population of K=8", "8 single-trial processes at once under MPS", ">= 1.5"),
        ("fused_k8_vs_processes8", "fused: one population of K=8", "8 single-trial processes at once", ""),
        ("fused_k64_vs_mps16", "fused: one population of K=64", "16 single-trial processes at once under MPS", ">= 3"),
    ):
        if fused in by_label and other in by_label:
            value = by_label[fused].median / by_label[other].median
            result.ratios.append(Ratio(name, value, f"trials/hour of '{fused}' ÷ '{other}' (one run each)", goal))
    result.notes += [
        "Quickstart-sized trials (`benchmarks/population_micro.py` configs: bundled UCI digits, 20% labelled, "
        "max 15 epochs, patience 4, 2 pre-training epochs, 1 self-training round); every process is warm "
        "(imports, CUDA context, one tiny run) before the clock starts. Wall time runs from the first start to the "
        "last end of an arm's members. Torch's peak is what the allocator handed out; nvidia-smi's figure also "
        "holds every process's CUDA context and copy of the data.",
        "",
        *table,
    ]
    return result
