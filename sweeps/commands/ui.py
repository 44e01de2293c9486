"""`mersweep ui runs/<sweep>`: MLflow's UI (and optuna-dashboard) on one sweep's stores, on 127.0.0.1.

The sweep's folder says where its runs went (`mersweep_state.json`: tracking URI, experiment). A
store on this machine (sqlite, a file store, a database) gets `mlflow server` of its own; a
tracking server is the UI already, so its address is printed. When the sweep kept its Optuna study
(`runs/<sweep>/optuna.db`), optuna-dashboard serves it too, if installed in this interpreter's
environment. The URLs are printed (MLflow's as its training-runs view) and the command stays in the
foreground until Ctrl-C or SIGTERM, then stops what it started within seconds, a second Ctrl-C
included (`sweeps.commands.servers`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from mer_core.errors import UserInputError
from mer_core.verbosity import is_verbose
from sweeps.commands.servers import Server, ServerGroup, console_script
from sweeps.resume.state import STATE_FILE, SweepState, read_state
from sweeps.tracking.uri import redact, ui_link

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
    dashboard = console_script(DASHBOARD) if study.is_file() else None
    with ServerGroup(prefix="mersweep-ui-", quiet=not is_verbose()) as servers:
        started: list[tuple[Server, str]] = []
        if _is_server(uri):
            mlflow_url = uri.rstrip("/")
        else:
            mlflow_url = f"http://{HOST}:{args.port or _free_port()}"
            started.append((_start_mlflow(servers, uri, mlflow_url), mlflow_url))
        dashboard_url = None
        if dashboard is not None:
            dashboard_url = f"http://{HOST}:{args.dashboard_port or _free_port()}"
            started.append((_start_dashboard(servers, dashboard, study, dashboard_url), dashboard_url))
        for server, url in started:
            server.wait_answering(url, timeout=START_TIMEOUT_S)
        print(f"sweep {state.sweep}: experiment {state.experiment!r} in {redact(uri)}")
        print(f"MLflow UI:        {_experiment_url(mlflow_url, state)}")
        if dashboard_url:
            print(f"optuna-dashboard: {dashboard_url}")
        elif study.is_file():
            print(f"optuna-dashboard: not installed; `pip install {DASHBOARD}`, then run this again")
        if not servers.servers:
            return 0  # a tracking server is already up: nothing to keep running
        names = " and ".join(server.name for server in servers.servers)
        print(f"Ctrl-C stops {names}", flush=True)
        ended = servers.wait()
        if ended is not None:
            print(f"error: {ended.name} exited with status {ended.proc.returncode}: {ended.last_line()}")
            return 1
        print(f"stopping {names}", file=sys.stderr, flush=True)
        return 0


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start_mlflow(servers: ServerGroup, uri: str, url: str) -> Server:
    port = urllib.parse.urlsplit(url).port
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    # MLflow's background job runner (GenAI jobs) is of no use for a sweep's runs.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", HOST, "--port", str(port), "--workers", "1"]
    return servers.start("MLflow UI", cmd, env=env)


def _start_dashboard(servers: ServerGroup, script: list[str], study: Path, url: str) -> Server:
    port = urllib.parse.urlsplit(url).port
    return servers.start(DASHBOARD, [*script, f"sqlite:///{study}", "--host", HOST, "--port", str(port)])


def _experiment_url(base: str, state: SweepState) -> str:
    """The experiment's page (its runs table), or the UI's front page if the server cannot say."""
    query = urllib.parse.urlencode({"experiment_name": state.experiment})
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as resp:
            experiment_id = json.load(resp)["experiment"]["experiment_id"]
    except (OSError, ValueError, KeyError):
        return base
    return ui_link(base, experiment_id)
