"""Shared pytest fixtures: small, fast, seeded data configs (generic, any test may use them)."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, SyntheticConfig
from tests.pg_helpers import postgres  # noqa: F401  (session fixture: one PostgreSQL for all server tests)

# Test workers share the machine's cores (pytest-xdist runs one per core): torch's default of one
# thread per core makes every small matmul of one worker contend with the other's, measured 12x
# slower (tests/test_train.py: 253 s against 21 s under load). One thread each; a test that needs
# more sets runtime.threads, and subprocesses a test starts inherit the limit (OMP_NUM_THREADS).
TEST_THREADS = 1
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the repository's packages once, before any test (or xdist worker) starts, and let
    pytest-xdist hand out the files in collection order (see LONGEST_FIRST).

    The suite starts hundreds of fresh interpreters (CLI runs, sweep drivers, Ray's trial workers),
    and each imports most of the repository. Where PYTHONDONTWRITEBYTECODE is set none of them
    writes its bytecode, so each compiled the same modules again: about 0.2 CPU-s per process.
    compileall writes the (git-ignored) __pycache__ folders regardless; elsewhere this is a no-op.
    """
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    # pytest-xdist's loadfile/loadscope would otherwise reorder the files by their number of tests,
    # which puts the long end-to-end files (few tests each) last: the collection order is the schedule.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    import compileall

    root = Path(__file__).resolve().parents[1]
    for package in ("mer_core", "sweeps", "analysis", "search_spaces", "benchmarks", "tests"):
        if (root / package).is_dir():
            compileall.compile_dir(root / package, quiet=2)


# The longest test files, longest first (whole-file wall times of suite runs on 2 cores: the chained
# resume tests about 250 s, the benchmark smokes and the fault, multi-node, ablation and display
# files 60-130 s each). pytest-xdist hands out files in the order given here (`pytest_configure`
# turns its own reordering off); a long file that starts late decides when the run ends while the
# other workers idle. Run first, the short files fill the workers' last minutes instead.
LONGEST_FIRST = (
    "test_sweep_resume.py",
    "test_benchmarks_smoke.py",
    "test_benchmarks_scale.py",
    "test_faults.py",
    "test_multinode.py",
    "test_ablation.py",
    "test_cli_display.py",
    "test_mlflow_outage.py",
    "test_ray_gpus.py",
    "test_sweep_fused.py",
    "test_optuna_storage.py",
    "test_mlflow_ui.py",
    "test_mlflow_server.py",
    "test_ray_loopback.py",
    "test_sweep_sigterm.py",
    "test_servers_stop.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of LONGEST_FIRST first, in its order; every other file after them, as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one pytest-xdist worker more than the CPUs this process may run on.

    Part of the suite waits on something other than the CPU (a sweep's time budget running out, an
    MLflow server that is away, trials holding a GPU share, servers starting): with one worker per
    core, a core then idles. Measured on 2 cores: 2 workers took 625 s with 127 idle CPU-seconds,
    3 workers 581 s with 18, for 2% more CPU-seconds. `--maxprocesses` still caps it, and
    $PYTEST_XDIST_AUTO_NUM_WORKERS still overrides it.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return len(usable) + 1


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """Every test starts at TEST_THREADS torch threads (a run with runtime.threads may have left more)."""
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _logger_levels_restored() -> Iterator[None]:
    """Logger levels belong to the process, and xdist runs many test files in one: a test (or the
    code it runs in-process, e.g. a sweep's quiet mode) that sets one must not decide what a test
    of another file sees. Every level a test changed is put back after it."""
    manager = logging.Logger.manager
    before = {name: lg.level for name, lg in list(manager.loggerDict.items()) if isinstance(lg, logging.Logger)}
    root = logging.getLogger().level
    yield
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and lg.level != before.get(name, logging.NOTSET):
            lg.setLevel(before.get(name, logging.NOTSET))
    logging.getLogger().setLevel(root)


@pytest.fixture
def tiny_data_cfg() -> DataConfig:
    """A few hundred synthetic samples with non-MER modality names (nothing may assume audio/text/video)."""
    return DataConfig(
        source="synthetic-mer",
        seed=0,
        folds=3,
        synthetic=SyntheticConfig(
            n_labelled=120,
            n_unlabelled=200,
            dims=FrozenDict({"alpha": 8, "beta": 12, "gamma": 6, "delta": 4}),
            signal=FrozenDict({"alpha": 1.0}),
        ),
    )


def once_per_session(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `make(folder)` filled, made once for the whole test run.

    Under pytest-xdist each worker is a process with its own session fixtures; the first worker
    to ask makes the folder in the run's shared temp directory (under a lock) and the others wait
    for it and reuse it, so a shared sweep runs once, not once per worker. Its users only read it
    (a test that writes to the store works on a copy of mlflow.db).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # pytest-of-<user>/pytest-<n>/, shared by the workers
    folder, done = root / name, root / f"{name}.done"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed here left behind
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created and migrated once for the whole run.

    MLflow migrates a new SQLite store through its whole schema history: about 1.4 CPU-s, paid by
    every sweep on a fresh store. Tests whose subject is not the store's creation start from a copy
    of this one (`sqlite_store(path, template=mlflow_template)`), which MLflow opens as it is. What
    a user's first sweep prints while MLflow creates its store is tested on fresh stores
    (tests/test_cli_display.py).
    """
    from benchmarks.common import empty_store

    folder = once_per_session(tmp_path_factory, "mlflow-template", lambda made: empty_store(made / "empty.db"))
    return folder / "empty.db"


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template: Path) -> str:
    """The tracking URI of tmp_path/mlflow.db, an empty store already migrated (a copy of the template)."""
    from benchmarks.common import sqlite_store

    return sqlite_store(tmp_path / "mlflow.db", template=mlflow_template)


def _cli_sweep(work: Path, spec: Path, template: Path) -> None:
    """`python run_sweep.py SPEC` in `work` into work/mlflow.db (a copy of `template`), run in this process
    on its Ray session (`run_sweep_here`); its stdout and stderr kept beside it."""
    from benchmarks.common import sqlite_store
    from tests.sweep_helpers import run_sweep_here

    uri = sqlite_store(work / "mlflow.db", template=template)
    proc = run_sweep_here([str(spec), "--tracking-uri", uri], cwd=work)
    (work / "cli.stdout").write_text(proc.stdout)
    (work / "cli.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def search_sweep(tmp_path_factory, mlflow_template):
    """A finished 6-trial TPE + ASHA sweep on small synthetic data, logged to a temporary sqlite
    MLflow store through the real CLI (shared by the end-to-end and analysis tests; runs once).

    Returns (work folder, tracking URI, experiment name); the sweep folder is work/runs/an-search,
    the CLI's output work/cli.stdout and work/cli.stderr.
    """
    from tests.sweep_helpers import write_sweep

    work = once_per_session(
        tmp_path_factory, "analysis-search", lambda w: _cli_sweep(w, write_sweep(w, "an-search"), mlflow_template)
    )
    return work, f"sqlite:///{work / 'mlflow.db'}", "an-search"


@pytest.fixture(scope="session")
def ablation_sweep(tmp_path_factory, mlflow_template):
    """A finished ablation (3 variants x 3 paired seeds, no re-tuning) on small synthetic data,
    logged to a temporary sqlite MLflow store through the real CLI (runs once).

    Returns (work folder, tracking URI, experiment name); the sweep folder is work/runs/an-ablation.
    """
    from tests.sweep_helpers import SMALL_SET, write_sweep

    def make(work: Path) -> None:
        variants = {"full": {}, "no_nee": {"nee.enabled": False}, "fusion_only": {"loss.cls_heads": "fusion"}}
        spec = write_sweep(
            work,
            "an-ablation",
            kind="ablation",
            search_space=None,
            ablation={"reference": "full", "variants": variants, "seeds": [0, 1, 2]},
            resources={"cpu": 1, "gpu": 0, "max_concurrent": 2},
            # 9 short trials. float64: tests/test_fused_ablation.py runs this ablation again fused and compares
            # each seed's val/loss with its run here; in float32 the fused kernels' other rounding, which
            # training amplifies and which differs by CPU and BLAS, would decide that test's verdict.
            set={**SMALL_SET, "optim.max_epochs": 4, "self_training.rounds": 0, "runtime.precision": "fp64"},
        )
        _cli_sweep(work, spec, mlflow_template)

    work = once_per_session(tmp_path_factory, "analysis-ablation", make)
    return work, f"sqlite:///{work / 'mlflow.db'}", "an-ablation"
