"""A `sitecustomize` directory that makes packages unimportable, for tests of what runs without them.

`blocking_env(tmp_path, ("ray", "optuna", "mlflow"))` returns an environment whose PYTHONPATH
starts with a directory holding a `sitecustomize.py`: every Python process started with it (and
every process those start, which inherit the environment) fails to import the named packages, as
on a machine where they are not installed, and appends each refused name to a log file, so a test
sees an import that some code caught and survived.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["blocking_env", "refused"]

_SITE = '''
import os
import sys

_BLOCKED = tuple(os.environ["MERSWEEP_TEST_BLOCKED"].split(","))
_LOG = os.environ["MERSWEEP_TEST_BLOCKED_LOG"]


class _Blocker:
    """Refuses the blocked packages and their submodules, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            with open(_LOG, "a") as log:
                log.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def blocking_env(tmp_path: Path, blocked: Sequence[str]) -> dict[str, str]:
    """The current environment plus a PYTHONPATH entry that blocks `blocked` (see the module docstring)."""
    site = tmp_path / "blocked-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(root), env.get("PYTHONPATH", "")) if p)
    env["MERSWEEP_TEST_BLOCKED"] = ",".join(blocked)
    env["MERSWEEP_TEST_BLOCKED_LOG"] = str(tmp_path / "blocked.log")
    return env


def refused(tmp_path: Path) -> list[str]:
    """Names the blocker refused so far, in order."""
    log = tmp_path / "blocked.log"
    return log.read_text().split() if log.exists() else []
