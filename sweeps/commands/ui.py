"""`mersweep ui runs/<sweep>`: MLflow's UI (and optuna-dashboard) on one sweep's stores, on 127.0.0.1.

The sweep's folder says where its runs went (`mersweep_state.json`: tracking URI, experiment). A
store on this machine (sqlite, a file store, a database) gets `mlflow server` of its own; a
tracking server is the UI already, so its address is printed. When the sweep kept its Optuna study
(`runs/<sweep>/optuna.db`), optuna-dashboard serves it too, if installed. The URLs are printed and
the command stays in the foreground until Ctrl-C, then stops what it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mer_core.errors import UserInputError
from mer_core.verbosity import is_verbose
from sweeps.resume.state import STATE_FILE, SweepState, read_state

HOST = "127.0.0.1"  # a UI on the loopback only: the store holds everything the sweep logged
START_TIMEOUT_S = 120.0  # `mlflow server` on a busy 2-core machine takes tens of seconds
STUDY_FILE = "optuna.db"  # where a sweep keeps its Optuna study (runs/<sweep>/optuna.db)
DASHBOARD = "optuna-dashboard"
FIELD = "RUNS_DIR"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", metavar=FIELD, help="a sweep's folder, e.g. runs/quickstart")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="the sweep's tracking store, where its folder holds it without credentials (default: the folder's)",
    )
    p.add_argument("--port", type=int, default=0, help="port of MLflow's UI (default: a free one)")
    p.add_argument("--dashboard-port", type=int, default=0, help="port of optuna-dashboard (default: a free one)")


@dataclass
class Child:
    """A server this command started, in a session of its own (Ctrl-C reaches only this process)."""

    name: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""


def run(args: argparse.Namespace) -> int:
    folder = Path(args.runs_dir)
    inside = sorted(str(p.parent) for p in folder.glob(f"*/{STATE_FILE}"))
    if inside and not (folder / STATE_FILE).is_file():  # `runs/` given for `runs/<sweep>`
        raise UserInputError(f"{FIELD}: {folder} is a folder of sweeps; expected one of {', '.join(inside)}")
    state = read_state(folder, field=FIELD)
    uri = _store_uri(args.tracking_uri or state.tracking_uri, explicit=args.tracking_uri is not None)
    for flag, port in (("--port", args.port), ("--dashboard-port", args.dashboard_port)):
        if not 0 <= port <= 65535:
            raise UserInputError(f"{flag}: expected 0 (a free port) to 65535; got {port}")
    study = folder.resolve() / STUDY_FILE
    with tempfile.TemporaryDirectory(prefix="mersweep-ui-") as logs, _stopped_on_exit() as children:
        started: list[tuple[Child, str]] = []
        if _is_server(uri):
            mlflow_url = uri.rstrip("/")
        else:
            mlflow_url = f"http://{HOST}:{args.port or _free_port()}"
            started.append((_start_mlflow(uri, mlflow_url, Path(logs)), mlflow_url))
        dashboard_url = None
        if study.is_file() and shutil.which(DASHBOARD):
            dashboard_url = f"http://{HOST}:{args.dashboard_port or _free_port()}"
            started.append((_start_dashboard(study, dashboard_url, Path(logs)), dashboard_url))
        children.extend(child for child, _ in started)
        for child, url in started:
            _wait_answering(child, url)
        print(f"sweep {state.sweep}: experiment {state.experiment!r} in {_shown(uri)}")
        print(f"MLflow UI:        {_experiment_url(mlflow_url, state)}")
        if dashboard_url:
            print(f"optuna-dashboard: {dashboard_url}")
        elif study.is_file():
            print(f"optuna-dashboard: not installed; `pip install {DASHBOARD}`, then run this again")
        if not children:
            return 0  # a tracking server is already up: nothing to keep running
        print("Ctrl-C stops " + " and ".join(c.name for c in children), flush=True)
        return _wait(children)


def _store_uri(uri: str, *, explicit: bool) -> str:
    """The store as `mlflow server` takes it: local paths absolute (the server runs elsewhere)."""
    if "***@" in uri and not explicit:
        raise UserInputError(
            f"--tracking-uri: the sweep's folder keeps its tracking URI without the credentials ({uri}); "
            "pass the full URI with --tracking-uri"
        )
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme == "":
        return Path(uri).resolve().as_uri()
    if scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"  # relative to where the sweep ran
    return uri


def _is_server(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in ("http", "https")


def _shown(uri: str) -> str:
    from sweeps.tracking.uri import redact

    return redact(uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    out = None if is_verbose() else open(log, "w")  # noqa: SIM115 (the child writes it while it runs)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()
    return Child(name, proc, log)


def _start_mlflow(uri: str, url: str, logs: Path) -> Child:
    port = urllib.parse.urlsplit(url).port
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    # MLflow's background job runner (GenAI jobs) is of no use for a sweep's runs.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", HOST, "--port", str(port), "--workers", "1"]
    return _spawn("MLflow UI", cmd, logs / "mlflow-server.log", env)


def _start_dashboard(study: Path, url: str, logs: Path) -> Child:
    port = urllib.parse.urlsplit(url).port
    cmd = [shutil.which(DASHBOARD) or DASHBOARD, f"sqlite:///{study}", "--host", HOST, "--port", str(port)]
    return _spawn(DASHBOARD, cmd, logs / "optuna-dashboard.log")


def _wait_answering(child: Child, url: str) -> None:
    """Until `url` answers HTTP; RuntimeError (with the server's last lines) if it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.proc.returncode}: {_last_line(child)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an answer, whatever its status: the server is up
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{child.name} did not answer at {url} within {START_TIMEOUT_S:.0f} s: {_last_line(child)}")


def _last_line(child: Child) -> str:
    lines = [ln for ln in child.log_tail().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _experiment_url(base: str, state: SweepState) -> str:
    """The experiment's page (its runs table), or the UI's front page if the server cannot say."""
    query = urllib.parse.urlencode({"experiment_name": state.experiment})
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as resp:
            experiment_id = json.load(resp)["experiment"]["experiment_id"]
    except (OSError, ValueError, KeyError):
        return base
    return f"{base}/#/experiments/{experiment_id}"


def _wait(children: list[Child]) -> int:
    """Until Ctrl-C (0) or a server exits by itself (1, with its last line)."""
    try:
        while True:
            for child in children:
                if child.proc.poll() is not None:
                    print(f"error: {child.name} exited with status {child.proc.returncode}: {_last_line(child)}")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping " + " and ".join(c.name for c in children), file=sys.stderr)
        return 0


@contextlib.contextmanager
def _stopped_on_exit() -> Iterator[list[Child]]:
    """A list of started servers, each stopped (its whole process group) when the block exits.

    SIGTERM (a service manager, `kill`) stops this command the way Ctrl-C does, so the servers go too.
    """
    children: list[Child] = []

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield children
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop([child.proc for child in children])


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each server's process group (uvicorn's workers too), all at once; SIGKILL to what
    is left after 10 s, and to any worker a server left behind."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.01))
        if all(proc.poll() is not None for proc in procs):
            break
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
