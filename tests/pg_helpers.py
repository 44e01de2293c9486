"""A throwaway PostgreSQL cluster and MLflow tracking servers on it, for the tracking-server tests.

The cluster is what README "On a cluster" describes (an MLflow server on a PostgreSQL backend
store), started for real: Debian's `postgresql` binaries, `initdb` into a temp dir, listening on
127.0.0.1 only (socket in the temp dir too), password auth. `.ci/run` installs the package and sets
MERSWEEP_REQUIRE_POSTGRES=1, so there a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sweep_helpers import free_port

REQUIRE_ENV = "MERSWEEP_REQUIRE_POSTGRES"
PG_USER = "mlflow"
_SERVER_SETTINGS = (
    "listen_addresses = '127.0.0.1'",  # never reachable from other hosts
    # A test cluster: durability buys nothing here and fsyncs cost seconds on a busy 2-core box.
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
)


def pg_bin_dir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: $PATH first, else Debian's newest version."""
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return Path(pg_ctl).resolve().parent  # Debian links them from /usr/lib/postgresql/<v>/bin
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def require_postgres() -> Path:
    """PostgreSQL's bin folder, or skip (fail under MERSWEEP_REQUIRE_POSTGRES=1) when it is missing."""
    missing = []
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        missing.append("PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    try:
        import psycopg2  # noqa: F401  (MLflow's driver for postgresql:// backend stores)
    except ImportError:
        missing.append("the psycopg2 driver: pip install -r requirements-dev.txt")
    if missing:
        reason = "tracking-server tests need " + " and ".join(missing)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
    return bin_dir


def _unprivileged_owner() -> tuple[int, int] | None:
    """Who runs PostgreSQL: initdb refuses root, so as root use `postgres` (Debian's), else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and neither user 'postgres' nor 'nobody' exists to run PostgreSQL")


@dataclass
class Postgres:
    """A running cluster in `root` (data, socket, log), owned by `owner` (None: this user)."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    owner: tuple[int, int] | None

    def _run(self, *args: str, timeout: float = 120) -> None:
        kwargs = {} if self.owner is None else {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}
        proc = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,  # the unprivileged owner may not be allowed into our working directory
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if proc.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{tail}")

    def uri(self, database: str) -> str:
        # The driver named: SQLAlchemy 2.1's bare `postgresql://` means psycopg 3, we install psycopg2.
        return f"postgresql+psycopg2://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database (one per MLflow server, so tests never see each other's runs): its URI."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, password=self.password, dbname="postgres"
        )
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def stop(self) -> None:
        """Fast shutdown (disconnects clients), then remove the temp dir."""
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            _kill_postmaster(self.root / "data" / "postmaster.pid")
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_postmaster(pid_file: Path) -> None:
    """Last resort when pg_ctl could not stop the cluster: no postgres may outlive the tests."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster takes its backends along
    except (OSError, ValueError, IndexError):
        pass


def start_postgres(bin_dir: Path) -> Postgres:
    """initdb into a fresh temp dir and start the cluster on a free port (password auth only)."""
    owner = _unprivileged_owner()
    root = Path(tempfile.mkdtemp(prefix="mersweep-pg-"))  # /tmp itself: pytest's tmp dirs are root-only
    pg = Postgres(bin_dir, root, free_port(), secrets.token_hex(16), owner)
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(pg.password + "\n")
        if owner is not None:
            for path in (root, pwfile):
                os.chown(path, *owner)
        data = str(root / "data")
        pg._run("initdb", "-D", data, "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "-N")
        pwfile.unlink()
        settings = [*_SERVER_SETTINGS, f"port = {pg.port}", f"unix_socket_directories = '{root}'"]
        with open(root / "data" / "postgresql.conf", "a") as conf:
            conf.write("\n# mersweep test cluster\n" + "\n".join(settings) + "\n")
        pg._run("pg_ctl", "-D", data, "-l", str(root / "postgres.log"), "-w", "-t", "60", "start")
    except BaseException:
        pg.stop()
        raise
    return pg


@dataclass
class MlflowServer:
    """`mlflow server` on a backend store; `kill` + `start` is a crash and a restart on the same port."""

    backend_uri: str
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: 2 cores are plenty busy
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri]
        cmd += ["--artifacts-destination", str(self.folder / "art"), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", "1"]
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 (the server outlives this function)
        # Its own session: stopping it stops everything it started (uvicorn workers).
        self.proc = subprocess.Popen(
            cmd, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        log = self.folder / "server.log"
        return log.read_text()[-3000:] if log.is_file() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed host would: no goodbye to clients."""
        stop_process_group(self.proc, ((signal.SIGKILL, 10),))

    def stop(self) -> None:
        stop_process_group(self.proc, ((signal.SIGTERM, 15), (signal.SIGKILL, 10)))


def stop_process_group(proc: subprocess.Popen | None, steps: tuple[tuple[int, float], ...]) -> None:
    """Signal `proc`'s process group step by step until the leader and all its children are gone."""
    if proc is None:
        return
    for sig, wait in steps:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if _group_gone(proc.pid, wait):
            break
    proc.poll()


def _group_gone(pgid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster for the session; each MLflow server gets a database of its own."""
    pg = start_postgres(require_postgres())
    yield pg
    pg.stop()


def start_mlflow_server(pg: Postgres, folder: Path, database: str) -> MlflowServer:
    """An MLflow server on a fresh database of `pg`, healthy; the caller stops it."""
    server = MlflowServer(pg.create_database(database), folder)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
