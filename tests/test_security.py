"""Security basics: YAML and pickles never run code, model files load tensors only, credentials in a
tracking URI are never printed or stored, and the services the project starts listen on 127.0.0.1.

The source scans read the project's own .py files with `ast` (not grep), so an alias
(`import yaml as y; y.load(...)`) is caught and the names this file lists are not.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmarks.common import sqlite_store
from tests.pg_helpers import MlflowServer, require_postgres, start_postgres
from tests.sweep_helpers import ROOT, SMALL_SET, cli_env, run_cli, run_sweep_here, write_sweep
from tests.test_cli_errors import FEATURES_DATA, make_features

SKIP_DIRS = {"runs", "mlruns", "__pycache__", "build", "dist", "node_modules"}  # plus every dot-folder
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
UNSAFE_YAML |= {"Loader", "UnsafeLoader", "FullLoader", "Unpickler", "UnsafeConstructor", "FullConstructor"}


def project_py_files() -> Iterator[Path]:
    """The project's Python sources (no virtualenvs, caches, sweep outputs)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        yield from (Path(folder) / f for f in sorted(files) if f.endswith(".py"))


def _module_aliases(tree: ast.AST, module: str) -> set[str]:
    """Names a file binds to `module` (`import yaml`, `import yaml as y`)."""
    return {
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == module
    }


def _uses(tree: ast.AST, module: str, names: set[str]) -> Iterator[ast.AST]:
    """Nodes that reach `module.<name>` for a name in `names`: attribute access or `from module import`."""
    aliases = _module_aliases(tree, module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                yield node
        elif isinstance(node, ast.ImportFrom) and node.module == module and any(a.name in names for a in node.names):
            yield node


def _parsed() -> Iterator[tuple[Path, ast.AST]]:
    for path in project_py_files():
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --- (a) YAML is loaded safely --------------------------------------------------------------------------------


def test_no_unsafe_yaml_loader_in_the_project():
    found = [f"{path}:{node.lineno}" for path, tree in _parsed() for node in _uses(tree, "yaml", UNSAFE_YAML)]
    assert not found, f"use yaml.safe_load / yaml.safe_dump only: {found}"
    assert any("safe_load" in p.read_text() for p in project_py_files()), "the scan saw no YAML loading at all"


@dataclass(frozen=True)
class Door:
    """One place YAML enters, poisoned: `{payload}` in the files or args becomes a python/object tag."""

    files: dict[str, str]
    args: list[str]
    sweep: dict | None = None  # write_sweep(overrides) as "sweep.yaml": a valid sweep naming the poisoned file
    train: bool = False  # python -m mer_core.train instead of run_sweep.py
    names: str = "invalid YAML"  # what the one-line error says


DOORS = {
    "sweep-file": Door({"bad.yaml": "name: {payload}\n"}, ["bad.yaml"]),
    "base-config": Door({"base.yaml": "seed: {payload}\n"}, ["sweep.yaml"], sweep={"base": "base.yaml"}),
    "search-space": Door({"space.yaml": "params: {payload}\n"}, ["sweep.yaml"], sweep={"search_space": "space.yaml"}),
    "train-config": Door({"c.yaml": "seed: {payload}\n"}, ["c.yaml"], train=True),
    # A --set value is read as YAML too; a tag it cannot load stays a plain string, which `seed` refuses.
    "set-value": Door({}, ["--set", "seed={payload}"], train=True, names="seed"),
}


@pytest.mark.parametrize("door", list(DOORS))
def test_python_tags_in_yaml_are_refused_and_never_run(door, tmp_path):
    case, marker = DOORS[door], tmp_path / "pwned"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    for rel, text in case.files.items():
        (tmp_path / rel).write_text(text.replace("{payload}", payload))
    if case.sweep is not None:
        write_sweep(tmp_path, "sweep", **case.sweep)
    args = [a.replace("{payload}", payload) for a in case.args]
    if case.train:
        cmd = [sys.executable, "-m", "mer_core.train", *args]
        proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    else:
        proc = run_cli(args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1 and case.names in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists(), "YAML ran a command"


# --- pickled label files are refused unless trusted -------------------------------------------------------------


class _Payload:
    """Unpickling an instance runs `touch marker` (what a malicious label-6way.npz could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _poisoned_npz(path: Path, marker: Path) -> Path:
    np.savez(path, train_corpus=np.array([_Payload(marker)], dtype=object))
    return path


def test_the_pickle_payload_is_live(tmp_path):
    """Guards the test below: this archive really runs its command when unpickled."""
    marker = tmp_path / "pwned"
    with np.load(_poisoned_npz(tmp_path / "labels.npz", marker), allow_pickle=True) as archive:
        archive["train_corpus"]
    assert marker.exists()


def test_untrusted_pickled_labels_are_refused_and_never_run(tmp_path):
    marker, work = tmp_path / "pwned", tmp_path / "work"
    feats = make_features(tmp_path / "feats", "none")
    _poisoned_npz(feats / "label-6way.npz", marker)
    work.mkdir()
    features = {**FEATURES_DATA["features"], "root": str(feats), "labels": "label-6way.npz"}
    write_sweep(work, "bad", data={**FEATURES_DATA, "features": features})
    proc = run_cli(["bad.yaml"], cwd=work, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.features.trust_pickle=true" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not marker.exists(), "the label file was unpickled"


# --- (b) model files load tensors only --------------------------------------------------------------------------


def _torch_loads(tree: ast.AST) -> Iterator[ast.Call]:
    aliases = _module_aliases(tree, "torch")
    direct = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "torch"
        for a in n.names
        if a.name == "load"
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "load":
            if isinstance(func.value, ast.Name) and func.value.id in aliases:
                yield node
        elif isinstance(func, ast.Name) and func.id in direct:
            yield node


def test_every_torch_load_passes_weights_only_true():
    calls, unsafe = 0, []
    for path, tree in _parsed():
        for call in _torch_loads(tree):
            calls += 1
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                unsafe.append(f"{path}:{call.lineno}")
    assert not unsafe, f"torch.load without weights_only=True (unpickles arbitrary objects): {unsafe}"
    assert calls >= 1, "the scan found no torch.load at all: is it still looking at the project?"


# --- (c) credentials in a tracking URI are redacted everywhere ----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_template):
    """A real MLflow tracking server (sqlite backend), started the way the tests start it: 127.0.0.1."""
    folder = tmp_path_factory.mktemp("security_server")
    srv = MlflowServer(sqlite_store(folder / "db.sqlite", template=mlflow_template), folder)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def _with_credentials(uri: str, password: str) -> str:
    return uri.replace("http://", f"http://user:{password}@")


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[str]:
    for item in client.list_artifacts(run_id, path):
        yield from _artifact_paths(client, run_id, item.path) if item.is_dir else (item.path,)


@pytest.mark.slow
def test_credentials_in_the_tracking_uri_are_never_printed_or_stored(server, tmp_path):
    """The sweep file's tracking.uri and --tracking-uri both hold a password (the flag wins)."""
    spec_uri, cli_uri = _with_credentials(server.uri, "spec-secret"), _with_credentials(server.uri, "cli-secret")
    spec = write_sweep(
        tmp_path,
        "cred",
        set={**SMALL_SET, "optim.max_epochs": 2, "optim.pretrain_epochs": 0},
        search={"algorithm": "random", "num_samples": 2, "seed": 0},
        scheduler={"kind": "none"},
        tracking={"uri": spec_uri},
    )
    proc = run_sweep_here([str(spec), "--tracking-uri", cli_uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "secret" not in proc.stdout + proc.stderr

    runs = tmp_path / "runs"
    leaking = [str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file() and b"secret" in p.read_bytes()]
    assert not leaking, f"credentials stored in runs/: {leaking}"
    state = json.loads((runs / "cred" / "mersweep_state.json").read_text())
    redacted = server.uri.replace("http://", "http://***@")
    assert state["tracking_uri"] == redacted
    assert yaml.safe_load(state["spec_yaml"])["tracking"]["uri"] == redacted

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("cred")
    logged = client.search_runs([exp.experiment_id], max_results=100)
    assert len(logged) == 3  # the parent and one child per trial
    for run in logged:
        values = [*run.data.params.values(), *run.data.tags.values(), run.info.run_name or ""]
        assert not [v for v in values if "secret" in v], f"credentials in params/tags of {run.info.run_id}"
        for path in _artifact_paths(client, run.info.run_id):
            local = Path(client.download_artifacts(run.info.run_id, path, str(tmp_path / "dl" / run.info.run_id)))
            assert b"secret" not in local.read_bytes(), f"credentials in artifact {path} of {run.info.run_id}"
    parent = next(r for r in logged if "mlflow.parentRunId" not in r.data.tags)
    sweep_yaml = client.download_artifacts(parent.info.run_id, "sweep.yaml", str(tmp_path / "parent"))
    assert yaml.safe_load(Path(sweep_yaml).read_text())["tracking"]["uri"] == redacted
    assert "http://***@127.0.0.1" in parent.data.tags["mersweep.command"]


# --- (d) services the project starts listen on 127.0.0.1 -------------------------------------------------------


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets listening on `port` (Linux /proc/net/tcp and tcp6)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(packed))
    return found


def _loopback_only(addresses: set) -> bool:
    mapped = [getattr(a, "ipv4_mapped", None) or a for a in addresses]
    return bool(addresses) and all(a.is_loopback for a in mapped)


def test_listening_addresses_reads_the_kernel_table():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        probe.listen()
        port = probe.getsockname()[1]
        assert listening_addresses(port) == {ipaddress.ip_address("127.0.0.1")}


@pytest.mark.slow
def test_the_mlflow_server_listens_on_loopback_only(server):
    addresses = listening_addresses(server.port)
    assert _loopback_only(addresses), f"mlflow server on {server.port} listens on {addresses}"


@pytest.mark.slow
def test_postgresql_listens_on_loopback_only():
    pg = start_postgres(require_postgres())
    try:
        addresses = listening_addresses(pg.port)
        assert _loopback_only(addresses), f"postgres on {pg.port} listens on {addresses}"
    finally:
        pg.stop()


WILDCARDS = {"0.0.0.0", "::", "[::]"}  # every interface


def _ray_inits() -> list[tuple[Path, ast.Call]]:
    """Every `ray.init(...)` call in the project's code (the scan must find some)."""
    inits = [
        (path, call)
        for path, tree in _parsed()
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "ray.init"
    ]
    assert inits, "the scan found no ray.init"
    return inits


def test_no_service_is_told_to_listen_on_every_interface():
    """No host/bind string in the code is a wildcard, and the local Ray cluster starts no dashboard."""
    this = Path(__file__).resolve().relative_to(ROOT)
    wild = [
        f"{path}:{node.lineno}"
        for path, tree in _parsed()
        if path != this  # this file names the wildcards it looks for
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip() in WILDCARDS
    ]
    assert not wild, f"wildcard listen address: {wild}"
    for path, call in _ray_inits():
        keywords = {k.arg: k.value for k in call.keywords}
        if path.parts[0] == "sweeps":  # the product's own Ray start-up
            dashboard = keywords.get("include_dashboard")
            assert isinstance(dashboard, ast.Constant) and dashboard.value is False, f"{path}:{call.lineno}"
        host = keywords.get("dashboard_host")
        assert host is None or ast.literal_eval(host) in ("127.0.0.1", "localhost"), f"{path}:{call.lineno}"


def test_every_ray_start_says_which_cluster():
    """Every `ray.init` names its address (a dict unpacked into it counts when it names one): without
    one Ray joins the cluster this machine last started, `ray start`'s or a dead one whose address
    file was left in /tmp/ray, where `ray.init` then waits for ever."""

    def names_address(call: ast.Call) -> bool:
        unpacked = [k.value.keys for k in call.keywords if k.arg is None and isinstance(k.value, ast.Dict)]
        in_dict = any(isinstance(key, ast.Constant) and key.value == "address" for keys in unpacked for key in keys)
        return in_dict or any(k.arg == "address" for k in call.keywords)

    unnamed = [f"{path}:{call.lineno}" for path, call in _ray_inits() if not names_address(call)]
    assert not unnamed, f"ray.init without an address: {unnamed}"
