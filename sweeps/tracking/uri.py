"""The tracking store's URI: which one a sweep uses, how it is shown, and whether it is usable.

`resolve_tracking_uri` picks it (flag, sweep, environment, local default); `redact` takes the
credentials out wherever it is shown or stored; `check_reachable` is asked once, at the end of
`prepare`, so a bad URI exits 2 before anything is written.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mer_core.errors import ConfigError, UserInputError
from sweeps.tracking.names import UI_TRAINING_QUERY

_CRED = re.compile(r"(?<=://)[^/@\s]+@")


def redact(uri: str) -> str:
    """A tracking URI without credentials (`https://user:pw@host` -> `https://***@host`)."""
    return _CRED.sub("***@", uri)


def ui_base(uri: str) -> str | None:
    """The address of the MLflow UI that serves a tracking URI: an http(s) server without its
    credentials (a link must not carry them), or None for a local store (no server to link to)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}".rstrip("/")


def ui_link(base: str, experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """A page of MLflow's UI: the experiment's runs, a run, or one artifact of a run.

    `base` is a server (`ui_base`), or "" for a link relative to whatever UI shows it (a run's note).
    """
    page = f"#/experiments/{experiment_id}"
    if run_id is not None:
        page += f"/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return f"{base}/{page}?{UI_TRAINING_QUERY}" if base else f"{page}?{UI_TRAINING_QUERY}"


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """--tracking-uri, else the sweep's tracking.uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    uri = cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


# Stores MLflow can log to (a `+driver` suffix picks the database driver: postgresql+psycopg2://).
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast (exit 2) when the tracking store cannot be used, before anything is written.

    A local path, file:// or sqlite:// store is created on first use; an HTTP server is asked for
    /health; a database gets one connection attempt, which writes nothing. Databricks URIs are
    left to MLflow (their login lives in a profile, not in the URI).
    """
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    family = scheme.split("+")[0]  # postgresql+psycopg2 -> postgresql
    if family not in ("", *TRACKING_SCHEMES):
        raise ConfigError("tracking.uri", f"a path or a URI with scheme {', '.join(TRACKING_SCHEMES)}", redact(uri))
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif family not in ("", "file", "sqlite", "databricks"):
        _check_store(uri, family)


def _check_http(uri: str, timeout: float) -> None:
    # Probe without userinfo: urllib would take `user:pw@host` for the host name. /health needs
    # no login, and any answer below 500 (401 included) means a server is there.
    scheme, _, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    url = f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}".rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status < 500:
                return
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return
    except (urllib.error.URLError, OSError, ValueError):
        pass
    raise UserInputError(f"tracking.uri: MLflow tracking server unreachable; given: {redact(uri)}")


def _check_store(uri: str, family: str) -> None:
    """One connection attempt to a database store (MLflow itself would retry for minutes, logging each try)."""
    import sqlalchemy

    # A bounded wait for a host that drops packets; the drivers of these two both take `connect_timeout`.
    connect_args = {"connect_timeout": 10} if family in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
    except ModuleNotFoundError as err:
        raise UserInputError(
            f"tracking.uri: the database driver for this URI is not installed ({err}; for PostgreSQL: "
            f"pip install psycopg2-binary and use postgresql+psycopg2://); given: {redact(uri)}"
        ) from None
    except Exception as err:  # any failure to connect is the user's URI or their server
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserInputError(
            f"tracking.uri: tracking store unreachable ({_without_password(reason, uri)}); given: {redact(uri)}"
        ) from None


def _without_password(text: str, uri: str) -> str:
    """`text` (a driver's error message) with the URI's credentials, if any, masked."""
    password = urllib.parse.urlsplit(uri).password
    text = redact(text)
    return text.replace(password, "***") if password else text
