"""Shared pieces of the benchmarks: the registry, options, results, timing and RESULTS.md.

Every figure is a ratio against a baseline measured in the same run (the project's performance
principles): absolute seconds depend on the machine and on whatever else it is running,
ratios measured side by side much less so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mer_core.registry import Registry

if TYPE_CHECKING:
    from sweeps.execution.prepare import PreparedSweep

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class BenchOptions:
    """What `python -m benchmarks` passes to every benchmark (each reads what it needs).

    Attributes:
        smoke: Tiny sizes, seconds per benchmark; results are not written to RESULTS.md.
        repeats: Timed repeats per arm; figures are medians over them.
        device: `auto`, `cpu` or `cuda` (benchmarks that train a model on one device).
        bf16: bf16 autocast in the training step (both arms alike).
        steps: Timed optimizer steps per repeat (epoch benchmark); None = its default.
        trials: Trials per arm (overhead), per sweep (memory; search_efficiency: random search, ASHA arms get
            twice as many); None = its default.
        seeds: Sampler seeds per arm (search_efficiency); None = its default.
        tag: Extra label of this run's sections in RESULTS.md (e.g. the machine), so runs on
            other machines or settings sit next to each other instead of replacing each other.
        arms: The parts of a benchmark to run (scale: `SCALE_ARMS`); None = all of them. A long run can
            then be split, e.g. 10,000 trials through the driver without plain Tune's hours beside it.
        store_template: Where an empty MLflow SQLite store, schema already migrated, is kept (made on first
            use) that each sweep's store starts as a copy of; None: MLflow creates each store, as on a
            user's first sweep. The smoke sets it: MLflow's migrations take seconds per fresh store.
    """

    smoke: bool = False
    repeats: int = 3
    device: str = "auto"
    bf16: bool = False
    steps: int | None = None
    trials: int | None = None
    seeds: int | None = None
    tag: str = ""
    store_template: Path | None = None
    arms: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Row:
    """One measured arm: the median and the raw samples (seconds unless `unit` says otherwise)."""

    label: str
    samples: tuple[float, ...]
    unit: str = "s"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Ratio:
    """A headline figure: `value` = numerator / denominator, both measured in the same run."""

    name: str
    value: float
    meaning: str
    goal: str = ""


@dataclass
class BenchResult:
    """What one benchmark returns: measured rows, headline ratios, free-form notes (Markdown).

    `variant` (e.g. "cuda-bf16") keeps results of other settings in their own RESULTS.md section.
    """

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variant: str = ""

    def key(self, tag: str = "") -> str:
        """The section key: `name`, or `name[variant-tag]` for other settings."""
        suffix = "-".join(p for p in (self.variant, tag) if p)
        return f"{self.name}[{suffix}]" if suffix else self.name


# A benchmark returns its result, or yields several (one RESULTS.md section each, written as each arrives).
BenchFn = Callable[[BenchOptions], BenchResult | Iterable[BenchResult]]

# Benchmarks that run others as their parts: selecting both runs the part once.
INCLUDES: dict[str, tuple[str, ...]] = {"search_efficiency": ("search_mf",)}

# The parts of `python -m benchmarks scale` (`--arms`): TPE's ask, plain Tune, the whole driver, kill and
# resume, the driver on an MLflow server over PostgreSQL (here so the CLI checks them before any import).
SCALE_ARMS = ("ask", "plain", "sweep", "resume", "postgres")

# Filled once, by importing the benchmark modules (benchmarks/__init__.py); never mutated after.
BENCHMARKS: Registry[BenchFn] = Registry("benchmark")


def timed(fn: Callable[[], object], *, sync: Callable[[], None] | None = None) -> float:
    """Wall seconds of one call of `fn`; `sync` (e.g. cuda.synchronize) runs before both clock reads."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


class CallTimer:
    """Accumulates wall time spent in patched callables (outermost calls only: no double counting)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth = 0

    @contextlib.contextmanager
    def patch(self, group: str, owner: Any, names: tuple[str, ...]) -> Iterator[None]:
        """Time every call of `owner.<name>` into `group` while the context is open."""
        originals = {n: getattr(owner, n) for n in names}

        def wrap(fn):
            def timed_call(*args, **kwargs):
                self._depth += 1
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._depth -= 1
                    if self._depth == 0:
                        self.seconds[group] = self.seconds.get(group, 0.0) + time.perf_counter() - start

            return timed_call

        for n, fn in originals.items():
            setattr(owner, n, wrap(fn))
        try:
            yield
        finally:
            for n, fn in originals.items():
                setattr(owner, n, fn)


# The Ray session the smoke starts once for the in-process benchmarks that share it (`SHARES_RAY`): each
# start and stop is seconds on 2 cores. Two CPUs: every one of them runs 2 trials at a time.
SMOKE_RAY: dict[str, Any] = {
    "num_cpus": 2,
    "include_dashboard": False,
    "log_to_driver": False,
    "logging_level": "WARNING",
}


@contextlib.contextmanager
def ray_session(*, start: bool = True, **init: Any) -> Iterator[None]:
    """Ray for one benchmark: the session already up, if any, left up (the smoke shares one); else
    `ray.init(**init)` (`start` False: the sweep engine starts it) and `ray.shutdown()` after.

    A cluster of its own unless `init` names an address: Ray's default joins whatever cluster this
    machine last started (`ray start`, or a dead one whose address file was left behind, where
    `ray.init` then waits for ever)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if start:
        ray.init(**{"address": "local", **init})
    try:
        yield
    finally:
        ray.shutdown()


def sweep_here(sweep: Path, *, tracking_uri: str, runs_root: Path) -> PreparedSweep:
    """Run the sweep at `sweep` exactly as `python run_sweep.py SWEEP` does after parsing its
    arguments, in this process (and in its Ray session, if one is up); returns it as it ran (its
    spec, and its folder `runs_root/<sweep name>/`).

    Raises:
        KeyboardInterrupt: the sweep was stopped by Ctrl-C (Tune then ends `fit()` early instead of
            raising), so that a benchmark stops there and not at its next sweep.
    """
    from sweeps.execution.engine import execute
    from sweeps.execution.prepare import prepare
    from sweeps.spec import load_sweep

    prepared = prepare(load_sweep(sweep), resume=False, tracking_uri=tracking_uri, runs_root=runs_root)
    if execute(prepared, address=None, argv=["run_sweep.py", sweep.name]).interrupted:
        raise KeyboardInterrupt
    return prepared


def sqlite_store(path: Path, *, template: Path | None) -> str:
    """The tracking URI of an MLflow SQLite store at `path`, a copy of `template` when one is given.

    The template is an empty store MLflow has created and migrated (`empty_store`), made here on
    first use; MLflow opens a copy without migrating again. Without one, the sweep's tracker
    creates the store.
    """
    if template is not None:
        if not template.exists():
            empty_store(template)
        shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def empty_store(path: Path) -> None:
    """Create an empty MLflow SQLite store at `path`, migrated to this MLflow's schema."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates it


def ratio(num: Row, den: Row, name: str, meaning: str, goal: str = "") -> Ratio:
    """The median over repeats of num / den, paired by repeat.

    Pairing (both arms of a ratio ran back to back within a repeat) cancels load that drifts
    between repeats on a shared machine; with equal repeats it is what the ratio of medians
    estimates, without one noisy repeat of one arm skewing it.
    """
    pairs = [a / b for a, b in zip(num.samples, den.samples, strict=True)]
    return Ratio(
        name=name, value=statistics.median(pairs), meaning=f"{meaning}; median of per-repeat ratios", goal=goal
    )


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=RESULTS_PATH.parent
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def nvidia_smi(query: str, *, index: int = 0) -> list[str] | None:
    """`nvidia-smi --query-gpu=QUERY` of GPU `index` as strings, or None where nvidia-smi cannot answer.

    Asks the driver, not CUDA: the process that calls it creates no CUDA context (the GPU check
    starts and stops MPS, which a context held by the parent could block).
    """
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", f"--id={index}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]


def machine_line(device: str = "cpu", *, gpu: bool = False) -> str:
    """CPU model and cores, load average, versions and date: the context every figure needs.

    Args:
        device: the device a benchmark trained on (`cuda`/`auto`: name the GPU through torch).
        gpu: name the GPU through nvidia-smi instead (the GPU check's parent never touches CUDA).
    """
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    versions = ", ".join(f"{p} {_version(p)}" for p in ("torch", "ray", "optuna", "mlflow"))
    if gpu:
        found = nvidia_smi("name,driver_version")
        gpu_text = f"; GPU {found[0]} (driver {found[1]})" if found and len(found) > 1 else "; no GPU visible"
    elif device != "cpu" and torch.cuda.is_available():
        gpu_text = f"; GPU {torch.cuda.get_device_name()}"
    else:
        gpu_text = ""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores ({usable} usable, torch threads {torch.get_num_threads()}){gpu_text}; "
        f"load average at start {load}; "
        f"Python {platform.python_version()}; {versions}; commit {_git_commit()} (plus uncommitted changes, if any); "
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )


def format_console(result: BenchResult) -> str:
    """The printed table of one benchmark, ending with one `ratio <bench>.<name> = X.XXx` line per ratio."""
    lines = [f"== {result.name}: {result.title}"]
    width = max([len(r.label) for r in result.rows] + [10])
    for r in result.rows:
        spread = f"[{min(r.samples):.3f} .. {max(r.samples):.3f}]" if len(r.samples) > 1 else ""
        lines.append(f"  {r.label:<{width}}  {r.median:10.3f} {r.unit:<6} {spread} {r.note}".rstrip())
    for q in result.ratios:
        goal = f" (goal {q.goal})" if q.goal else ""
        lines.append(f"ratio {result.name}.{q.name} = {q.value:.2f}x  [{q.meaning}]{goal}")
    return "\n".join(lines)


def format_markdown(result: BenchResult, machine: str, command: str, *, key: str) -> str:
    """One benchmark's section of RESULTS.md (between `key` markers, so a later run can replace it)."""
    out = [f"<!-- bench:{key} -->", f"## {key}: {result.title}", ""]
    out += [f"Machine: {machine}", "", f"Command: `{command}`", ""]
    out += ["| figure | value | goal | meaning |", "|---|---|---|---|"]
    out += [f"| **{q.name}** | **{q.value:.2f}x** | {q.goal or '-'} | {q.meaning} |" for q in result.ratios]
    out += ["", "| arm | median | repeats (min .. max) | note |", "|---|---|---|---|"]
    for r in result.rows:
        spread = f"{len(r.samples)} ({min(r.samples):.3f} .. {max(r.samples):.3f})"
        out.append(f"| {r.label} | {r.median:.3f} {r.unit} | {spread} | {r.note} |")
    if result.notes:
        out += ["", *result.notes]
    out += ["", f"<!-- /bench:{key} -->"]
    return "\n".join(out)


_HEADER = """# mersweep benchmarks

Written by `python -m benchmarks` (one section per benchmark; running a subset replaces only
its sections). Every headline figure is a ratio against a baseline measured in the same run,
medians of the repeats stated in the table.
"""


_SECTION = re.compile(r"<!-- bench:(\S+) -->.*?<!-- /bench:\1 -->", re.DOTALL)


def read_sections(text: str) -> dict[str, str]:
    """Section key -> section text of a RESULTS.md."""
    return {m.group(1): m.group(0) for m in _SECTION.finditer(text)}


def update_results(path: Path, sections: dict[str, str]) -> None:
    """Replace or add `sections` in the Markdown file at `path`, keeping the others; sections sorted by key.

    Sorting puts a benchmark's variants (`epoch`, `epoch[cuda-h100]`, ...) next to each other.
    """
    merged = {**(read_sections(path.read_text()) if path.exists() else {}), **sections}
    body = "\n\n".join(merged[k] for k in sorted(merged))
    path.write_text(_HEADER + "\n" + body + "\n")


def pct_table(parts: Sequence[tuple[str, float]], *, header: str) -> list[str]:
    """A Markdown table of named seconds with their share of the total."""
    total = sum(v for _, v in parts) or 1.0
    lines = [f"| {header} | seconds | share |", "|---|---|---|"]
    lines += [f"| {name} | {v:.4f} | {100 * v / total:.0f}% |" for name, v in parts]
    return lines
