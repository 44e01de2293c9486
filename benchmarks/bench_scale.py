"""`scale`: the sweep's whole driver against plain Ray Tune, N bookkeeping trials on a multi-node cluster.

A local cluster (`ray.cluster_utils.Cluster`: a head with no CPUs, two worker nodes with declared
CPUs and a fake GPU each) runs the same N trials twice, each arm a driver process of its own:

(a) plain Ray Tune (`benchmarks.scale_plain`): the bookkeeping trial (sleeps, reports on a clock,
    like Ray's `test_bookkeeping_overhead.py`), Tune's random search, no scheduler, no callbacks;
(b) `run_sweep.py --address`: the same trial (`objective: bookkeeping`) through everything a sweep
    does: TPE on the stored Optuna study, ASHA, MLflow (SQLite), the progress display, the parent
    run and the end-of-sweep report.

Then (b) once more under another name, killed (SIGKILL) when half its trials have ended and
resumed (`--resume`), with lost and duplicate MLflow runs counted; outside the smoke, (c): (b) with
MLflow on an `mlflow server` over a throwaway PostgreSQL cluster; and TPE's ask timed on stored
studies of 100 and 1,000 (10,000 with `--trials 10000`) finished trials, with the sweep's default
window (`search.history`) and without one. Figures: wall time against (a), the driver's overhead
per trial, its peak RSS, MLflow rows written per second and the largest backlog, the end
report's time and the size of `trials.json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BENCHMARKS, SCALE_ARMS, BenchOptions, BenchResult, Ratio, Row
from sweeps.spec.schema import HISTORY

ROOT = Path(__file__).resolve().parents[1]
NODE_CPUS = 4  # declared CPUs of each of the 2 worker nodes: 8 trials at once
# The smoke keeps the three nodes but declares one CPU each: 2 trials at once, so each driver starts 2 trial
# workers instead of 8 (every one a Python process importing Ray, 4 drivers' worth on 2 cores); 8 trials, the
# kill after 4 of them.
SMOKE = {"trials": 8, "trial_s": 0.2, "node_cpus": 1}
FULL_TRIAL_S = 1.0  # Ray's release test: one-second trials reporting once a second
ASK_SIZES = (100, 1000)
DATA = {  # loaded once by the driver and shipped to the workers; the bookkeeping trial ignores it
    "source": "synthetic-mer",
    "seed": 0,
    "folds": 1,
    "synthetic": {"n_labelled": 120, "n_unlabelled": 60, "dims": {"audio": 8, "text": 8, "video": 8}},
}


@contextmanager
def local_cluster(*, workers: int = 2, cpus: int = NODE_CPUS) -> Iterator[tuple[str, dict[str, str]]]:
    """(address, env): a head with no CPUs and `workers` nodes of `cpus` CPUs and one fake GPU each.

    The nodes live under a short temp dir of their own (RAY_TMPDIR), so no other Ray on the
    machine joins this cluster, nor this benchmark another's.
    """
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(workers):  # one node's processes start while the one before registers
            cluster.add_node(wait=False, num_cpus=cpus, num_gpus=1)
        cluster.wait_for_nodes()
        yield cluster.address, {"RAY_TMPDIR": tmp}
    finally:
        cluster.shutdown()
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Driver:
    """One driver process: its wall time, peak RSS, exit status and stderr."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cwd: Path = Path()
    killed_at: int | None = None  # trials ended when it was killed (the kill-and-resume arm)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_driver(cmd: list[str], *, cwd: Path, env: dict[str, str], kill_after: int | None = None) -> Driver:
    """Run one driver to its end (or SIGKILL it once `kill_after` trials have ended: the progress
    lines say so), polling its peak RSS while it runs."""
    stderr_lines: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _peak_rss_mb(proc.pid))

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.append(line)
            ended = re.search(r"trials (\d+)/\d+ ended", line)
            if kill_after is not None and ended and int(ended.group(1)) >= kill_after and proc.poll() is None:
                peak[0] = max(peak[0], _peak_rss_mb(proc.pid))
                proc.send_signal(signal.SIGKILL)
                killed[0] = int(ended.group(1))

    killed: list[int | None] = [None]
    threads = [threading.Thread(target=poll, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for t in threads:
        t.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait()
    done.set()
    for t in threads:
        t.join(timeout=10)
    wall = time.perf_counter() - started
    return Driver(wall, peak[0], proc.returncode, stdout, "".join(stderr_lines), cwd=cwd, killed_at=killed[0])


def _sweep_spec(folder: Path, name: str, trials: int, trial_s: float, slots: int, *, report: bool = True) -> Path:
    spec = {
        "name": name,
        "kind": "search",
        "base": str(ROOT / "mer_core/configs/mrccl.yaml"),
        "data": DATA,
        "search_space": str(ROOT / "search_spaces/quick.yaml"),
        "search": {"algorithm": "tpe", "num_samples": trials, "seed": 0},
        "scheduler": {"kind": "asha", "grace_period": 1},  # a trial reports once: its only rung is its end
        "metric": "val/weighted_f1",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": slots},
        "tracking": {"report": report},
        "objective": {"name": "bookkeeping", "trial_s": trial_s, "report_every_s": trial_s},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, **extra}


@dataclass
class Tracking:
    """What MLflow holds of one sweep (read from its SQLite store)."""

    children: int = 0  # live child runs
    distinct: int = 0  # distinct trials among them
    finished: int = 0  # live child runs that ended (not RUNNING)
    rows: int = 0  # metric, param and tag rows of the experiment's runs
    parent: dict[str, float] = field(default_factory=dict)  # the parent run's tracking/* metrics


def read_tracking(uri: str) -> Tracking:
    """Child runs of the sweep's parent and the tracking/* metrics its driver logged on it, read from
    the MLflow store at the SQLAlchemy `uri` (SQLite or PostgreSQL) with bound parameters."""
    from sqlalchemy import create_engine, text

    engine = create_engine(uri)
    try:
        with engine.connect() as conn:

            def rows(sql: str, **args: str) -> list[tuple]:
                return [tuple(r) for r in conn.execute(text(sql), args)]

            parent = rows(
                "SELECT r.run_uuid FROM runs r WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid "
                "AND t.key = 'mlflow.parentRunId')"
            )[0][0]
            kids = rows(
                "SELECT r.run_uuid, r.status, (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid "
                "AND t.key = 'mersweep.trial_id') FROM runs r JOIN tags p ON p.run_uuid = r.run_uuid "
                "WHERE p.key = 'mlflow.parentRunId' AND p.value = :parent AND r.lifecycle_stage = 'active'",
                parent=parent,
            )
            counted = sum(rows(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("metrics", "params", "tags"))
            metrics = rows(
                "SELECT key, value FROM latest_metrics WHERE run_uuid = :parent AND key LIKE 'tracking/%'",
                parent=parent,
            )
    finally:
        engine.dispose()
    return Tracking(
        children=len(kids),
        distinct=len({k[2] for k in kids}),
        finished=sum(1 for k in kids if k[1] != "RUNNING"),
        rows=counted,
        parent={k: float(v) for k, v in metrics},
    )


def _report_seconds(stderr: str) -> float:
    found = re.search(r"^report: .* written in ([\d.]+) s", stderr, flags=re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def _trials_json_kb(folder: Path) -> float:
    found = list(folder.glob("mlruns/**/trials.json")) or list(folder.glob("runs/*/report/trials.json"))
    return max((p.stat().st_size for p in found), default=0) / 1024


def _check(driver: Driver, what: str) -> None:
    if driver.returncode != 0:
        raise RuntimeError(f"{what} exited {driver.returncode}:\n{driver.stderr[-3000:]}")


@BENCHMARKS.register("scale")
def bench_scale(opts: BenchOptions) -> Iterator[BenchResult]:
    """TPE ask latency; N bookkeeping trials, plain Ray Tune vs the whole driver; kill and resume.

    Three RESULTS.md sections, each written as soon as it is measured (a long run that is stopped
    keeps what it finished).
    """
    trials = opts.trials or (SMOKE["trials"] if opts.smoke else 1000)
    trial_s = SMOKE["trial_s"] if opts.smoke else FULL_TRIAL_S
    node_cpus = SMOKE["node_cpus"] if opts.smoke else NODE_CPUS
    slots = 2 * node_cpus
    # A PostgreSQL cluster and an MLflow server would take the smoke's whole budget to start.
    arms = set(opts.arms or [a for a in SCALE_ARMS if a != "postgres" or not opts.smoke])
    with tempfile.TemporaryDirectory(prefix="mersweep-bench-scale-") as tmp:
        work = Path(tmp)
        if "ask" in arms:
            from benchmarks.scale_ask import ask_latencies

            sizes = (*ASK_SIZES, 10_000) if trials >= 10_000 else ((100,) if opts.smoke else ASK_SIZES)
            yield _ask_result(ask_latencies(work, sizes, history=HISTORY))
        if not arms - {"ask"}:
            return
        with local_cluster(cpus=node_cpus) as (address, cluster_env):
            env = _env(cluster_env)
            plain = sweep = None
            if "plain" in arms:
                plain_cmd = [sys.executable, "-m", "benchmarks.scale_plain", "--address", address]
                plain_cmd += ["--trials", str(trials), "--slots", str(slots), "--trial-s", str(trial_s)]
                plain_cmd += ["--report-every-s", str(trial_s), "--folder", str(work / "plain")]
                plain = run_driver(plain_cmd, cwd=work, env=env)
                _check(plain, "plain Ray Tune")
            if "sweep" in arms:
                sweep_dir = work / "sweep"
                cmd = _sweep_cmd(sweep_dir, "scale", trials, trial_s, slots, address)
                sweep = run_driver(cmd, cwd=sweep_dir, env=env)
                _check(sweep, "the sweep")
            if plain is not None or sweep is not None:
                tracking = read_tracking(f"sqlite:///{work / 'sweep' / 'mlflow.db'}") if sweep is not None else None
                yield _wall_result((trials, trial_s, slots), plain, sweep, tracking)
            if "resume" in arms:
                resume_dir = work / "resume"
                # The smoke's resumed driver skips the end report (seconds of plotting): the report's figures are (b)'s.
                cmd = _sweep_cmd(resume_dir, "scale-resume", trials, trial_s, slots, address, report=not opts.smoke)
                killed = run_driver(cmd, cwd=resume_dir, env=env, kill_after=trials // 2)
                resumed = run_driver([*cmd, "--resume"], cwd=resume_dir, env=env)
                _check(resumed, "the resumed sweep")
                yield _resume_result(trials, killed, resumed, read_tracking(f"sqlite:///{resume_dir / 'mlflow.db'}"))
            if "postgres" in arms:
                yield _postgres_arm(work / "pg", (trials, trial_s, slots), address, env, plain)


def _sweep_cmd(
    folder: Path,
    name: str,
    trials: int,
    trial_s: float,
    slots: int,
    address: str,
    *,
    report: bool = True,
    uri: str | None = None,
) -> list[str]:
    """`run_sweep.py` on the cluster, its spec in `folder` (created); MLflow at `uri`, else SQLite in `folder`."""
    folder.mkdir(parents=True)
    spec = _sweep_spec(folder, name, trials, trial_s, slots, report=report)
    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    return [sys.executable, str(ROOT / "run_sweep.py"), str(spec), "--address", address, "--tracking-uri", uri]


def _ask_result(asks: dict[int, Any]) -> BenchResult:
    res = BenchResult("scale_ask", "TPE ask on a stored (SQLite) study of n finished trials, as the driver asks")
    for n, (windowed, whole) in asks.items():
        for label, t in ((f"search.history {HISTORY}", windowed), ("whole history", whole)):
            note = f"wall {t.total_ms:.1f} ms; of the CPU, TPE's model {t.model_ms:.1f} ms" + (
                "; goal <= 50" if t is windowed else ""
            )
            res.rows.append(Row(f"ask at {n} finished trials, {label}: CPU", (t.cpu_ms,), "ms", note))
    first, last = min(asks), max(asks)
    res.ratios = [
        Ratio(
            "model_growth_windowed",
            asks[last][0].model_ms / asks[first][0].model_ms,
            f"TPE model time at {last} ÷ at {first} finished trials, search.history {HISTORY}",
        ),
        Ratio(
            "model_growth_whole",
            asks[last][1].model_ms / asks[first][1].model_ms,
            "the same without a window",
        ),
    ]
    res.notes = [
        "Median of 9 asks (`study.ask()` + the space's define-by-run, each told before the next) after one that "
        "fills Optuna's cache. *CPU*: this process's CPU time, which a loaded machine moves far less than the "
        "wall time beside it (what the driver waited, load included), though contention still inflates it: "
        "compare figures of one run; *model*: TPE's search-space inference and "
        "sampling, the rest is writing the new trial and its params (one SQLite commit each), which does not "
        "grow with the history. At n <= search.history the two samplers are the same computation."
    ]
    return res


def _wall_result(
    shape: tuple[int, float, int], plain: Driver | None, sweep: Driver | None, tracking: Tracking | None
) -> BenchResult:
    """(a) against (b), or whichever of the two ran (`--arms`); `shape`: (trials, trial_s, slots)."""
    trials, trial_s, slots = shape
    res = BenchResult(
        "scale", f"{trials} bookkeeping trials of {trial_s:g} s on a 3-node local cluster ({slots} slots)"
    )
    ideal = trials * trial_s / slots
    if plain is not None:
        fit = json.loads(plain.stdout.strip().splitlines()[-1])
        res.rows += [
            Row("(a) plain Ray Tune: driver wall", (plain.wall_s,), "s", f"ideal {ideal:.1f} s"),
            Row("(a) driver peak RSS", (plain.peak_rss_mb,), "MiB"),
        ]
        res.ratios.append(Ratio("plain_tune_vs_ideal", plain.wall_s / ideal, "(a) wall ÷ (N x trial_s / slots)"))
        plain_slot = (plain.wall_s * slots - trials * trial_s) / trials
        res.notes.append(
            f"(a) slot-seconds not spent in trials: {plain_slot:.2f} s per trial (Ray's release test: about 0.14 s "
            f"on 16 idle CPUs); `tuner.fit()` alone took {fit['fit_s']:.0f} s of its {plain.wall_s:.0f} s."
        )
    if sweep is not None and tracking is not None:
        res.rows += [
            Row("(b) mersweep driver: wall", (sweep.wall_s,), "s", f"ideal {ideal:.1f} s; SQLite, report included"),
            Row("(b) driver peak RSS", (sweep.peak_rss_mb,), "MiB", "goal <= 2048"),
            Row("(b) end report", (_report_seconds(sweep.stderr),), "s", "goal <= 60"),
            Row("(b) trials.json", (_trials_json_kb(sweep.cwd),), "KiB"),
            Row("(b) MLflow rows per second of sending", (tracking.parent.get("tracking/rows_per_s", 0.0),), "rows/s"),
            Row("(b) MLflow largest backlog", (tracking.parent.get("tracking/backlog_max", 0.0),), "ops", "bound 500"),
        ]
        res.ratios.append(Ratio("sweep_vs_ideal", sweep.wall_s / ideal, "(b) wall ÷ (N x trial_s / slots)"))
        slot_overhead = (sweep.wall_s * slots - trials * trial_s) / trials
        res.notes += [
            f"(b) slot-seconds not spent in trials: {slot_overhead:.2f} s per trial.",
            f"MLflow (SQLite): {tracking.rows} metric, param and tag rows after (b) "
            f"({tracking.rows / sweep.wall_s:.0f} per second of the sweep's wall time); "
            f"{tracking.children} child runs for {trials} trials; the driver spent "
            f"{tracking.parent.get('tracking/send_s', 0.0):.0f} s sending them.",
        ]
    if plain is not None and sweep is not None:
        res.ratios.insert(0, Ratio("wall_vs_plain_tune", sweep.wall_s / plain.wall_s, "(b) wall ÷ (a) wall", "<= 1.15"))
        extra_ms = (sweep.wall_s - plain.wall_s) / trials * 1000
        res.notes.insert(0, f"Driver overhead per trial: {extra_ms:.0f} ms of wall time more than plain Tune.")
    return res


def _resume_result(trials: int, killed: Driver, resumed: Driver, after: Tracking) -> BenchResult:
    res = BenchResult("scale_resume", f"{trials} bookkeeping trials, the driver SIGKILLed half-way, then --resume")
    lost, duplicates = trials - after.distinct, after.children - after.distinct
    res.rows = [
        Row("killed driver: wall until the kill", (killed.wall_s,), "s", f"at {killed.killed_at} trials ended"),
        Row("resumed driver: wall", (resumed.wall_s,), "s"),
        Row("resumed driver peak RSS", (resumed.peak_rss_mb,), "MiB"),
    ]
    res.ratios = [
        Ratio("lost_runs", float(lost), "trials without a live MLflow child run after the resume (a count)", "0"),
        Ratio("duplicate_runs", float(duplicates), "live child runs beyond one per trial (a count)", "0"),
    ]
    res.notes = [
        f"After the resume: {after.distinct} trials with a live child run, {after.children} live child runs, "
        f"{after.finished} of them ended (superseded runs of trials Ray reran are soft-deleted, not counted)."
    ]
    return res


def _postgres_arm(
    folder: Path, shape: tuple[int, float, int], address: str, env: dict[str, str], plain: Driver | None
) -> BenchResult:
    """(c): (b) with MLflow on an `mlflow server` over PostgreSQL, as README's "On a cluster" sets it up.

    A throwaway PostgreSQL cluster (Debian's binaries, `initdb` in a temp dir, 127.0.0.1 only) and
    one MLflow server (one uvicorn worker) on it; the driver logs over HTTP. `shape`: (trials,
    trial_s, slots) of the other arms.
    """
    from tests.pg_helpers import pg_bin_dir, start_mlflow_server, start_postgres

    trials, trial_s, slots = shape
    res = BenchResult(
        "scale_pg", f"{trials} bookkeeping trials of {trial_s:g} s, MLflow on a server over PostgreSQL ({slots} slots)"
    )
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        res.notes = ["Not run: no PostgreSQL server binaries here (initdb, pg_ctl; `apt-get install postgresql`)."]
        return res
    pg = start_postgres(bin_dir)
    try:
        folder.mkdir()
        server = start_mlflow_server(pg, folder, "scale")
        try:
            cmd = _sweep_cmd(folder / "sweep", "scale-pg", trials, trial_s, slots, address, uri=server.uri)
            sweep = run_driver(cmd, cwd=folder / "sweep", env=env)
        finally:
            server.stop()
        _check(sweep, "the sweep on the MLflow server")
        tracking = read_tracking(pg.uri("scale"))
    finally:
        pg.stop()
    ideal = trials * trial_s / slots
    res.rows = [
        Row("(c) mersweep driver, MLflow server: wall", (sweep.wall_s,), "s", f"ideal {ideal:.1f} s"),
        Row("(c) driver peak RSS", (sweep.peak_rss_mb,), "MiB", "goal <= 2048"),
        Row("(c) end report", (_report_seconds(sweep.stderr),), "s", "goal <= 60"),
        Row("(c) MLflow rows per second of sending", (tracking.parent.get("tracking/rows_per_s", 0.0),), "rows/s"),
        Row("(c) MLflow largest backlog", (tracking.parent.get("tracking/backlog_max", 0.0),), "ops", "bound 500"),
        Row(
            "(c) live child runs",
            (float(tracking.children),),
            "runs",
            f"{tracking.distinct} distinct trials of {trials}",
        ),
    ]
    res.ratios = [Ratio("sweep_vs_ideal", sweep.wall_s / ideal, "(c) wall ÷ (N x trial_s / slots)")]
    if plain is not None:
        res.ratios.insert(0, Ratio("wall_vs_plain_tune", sweep.wall_s / plain.wall_s, "(c) wall ÷ (a) wall", "<= 1.15"))
        res.rows.insert(1, Row("(a) plain Ray Tune: driver wall (the same run's)", (plain.wall_s,), "s"))
    res.notes = [
        f"Slot-seconds not spent in trials: {(sweep.wall_s * slots - trials * trial_s) / trials:.2f} s per trial. "
        f"PostgreSQL after (c): {tracking.rows} metric, param and tag rows; {tracking.children} child runs "
        f"({tracking.distinct} distinct trials) for {trials} trials; the driver spent "
        f"{tracking.parent.get('tracking/send_s', 0.0):.0f} s sending them. The server, PostgreSQL and the Ray "
        "cluster share this machine's cores with the driver."
    ]
    return res
