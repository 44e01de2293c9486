"""The sweep's Optuna study, kept in an RDB storage so that it outlives the driver.

One study per sweep, named after the sweep, in `search.storage` (default: SQLite at
`runs/<sweep>/optuna.db`; on a cluster the PostgreSQL server MLflow uses). Optuna's own tools then
read it while the sweep runs (`optuna-dashboard sqlite:///runs/<sweep>/optuna.db`), a later sweep
can start from it (`sweeps.space.warm_start`), and `--resume` finds it again
(`sweeps.resume.study`). Each Optuna trial carries the Ray trial id that ran it (fused mode: the
member's `<ray trial id>-m<i>`) and its MLflow run id as user attributes; the MLflow run carries
the Optuna trial number (`sweeps.tracking.names.OPTUNA_TRIAL_TAG`).

The checks here only read: a bad URL, an unreachable server or a study that already exists is a
ConfigError (exit 2) before anything is created, in the storage or under runs/.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mer_core.errors import ConfigError
from sweeps.tracking.uri import redact

__all__ = [
    "MLFLOW_RUN_ATTR",
    "RAY_TRIAL_ATTR",
    "STUDY_FILE",
    "StudyLinks",
    "StudyRef",
    "check_storage",
    "default_storage",
    "retune_study_name",
    "study_names",
]

log = logging.getLogger("mersweep.search")

STUDY_FILE = "optuna.db"  # inside runs/<sweep>/
RAY_TRIAL_ATTR = "ray_trial_id"  # Optuna user attribute: the Ray trial (fused: member) that ran the trial
MLFLOW_RUN_ATTR = "mlflow_run_id"  # Optuna user attribute: the trial's MLflow child run
URL_FORMS = "an SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg2://USER@HOST/DB"


def default_storage(folder: Path) -> str:
    """The study's storage when `search.storage` is null: SQLite in the sweep's folder."""
    return f"sqlite:///{folder / STUDY_FILE}"


@dataclass(frozen=True)
class StudyRef:
    """Where a sweep's study lives: storage URL and study name."""

    storage: str
    name: str

    def describe(self) -> str:
        return f"study {self.name} in {redact(self.storage)}"

    def open_storage(self) -> optuna.storages.BaseStorage:
        # Optuna's own choice for a URL (an RDBStorage behind its cache of finished trials).
        return optuna.storages.get_storage(self.storage)

    def create(self, *, sampler: optuna.samplers.BaseSampler, mode: str, replace: bool = False) -> optuna.Study:
        """The sweep's new study (`check_storage` refused an existing one before).

        `replace`: a resumed sweep that Ray had saved nothing of starts afresh; the study its
        first attempt began is dropped with it.
        """
        if self.storage.startswith("sqlite:///"):
            Path(self.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        storage = self.open_storage()
        if replace:
            with contextlib.suppress(KeyError):  # never created: killed before Ray's first step
                optuna.delete_study(study_name=self.name, storage=storage)
        return optuna.create_study(
            storage=storage,
            study_name=self.name,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),  # Ray's schedulers stop trials, never Optuna
            direction="maximize" if mode == "max" else "minimize",
        )


def check_storage(url: str, *, field: str, name: str | None = None, exists: bool | None = None) -> None:
    """Refuse a storage URL that cannot work, reading only (nothing is created).

    Args:
        url: An SQLAlchemy database URL.
        field: The spec field that gave it, for the error.
        name: A study name to look for.
        exists: With `name`: True requires the study, False refuses it, None does not look.

    Raises:
        ConfigError: malformed URL, missing driver, SQLite folder missing, server unreachable,
            or the study's presence is not as `exists` requires.
    """
    names = study_names(url, field=field)
    if name is None or exists is None:
        return
    if exists and name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise ConfigError(field, f"a study in {redact(url)} (there: {known})", name, "no such study")
    if not exists and name in names:
        raise ConfigError(
            field,
            f"a storage without a study named {name} (or another sweep name: --set sweep.name=...)",
            redact(url),
            f"study {name} already exists there",
        )


def study_names(url: str, *, field: str) -> set[str]:
    """The study names stored at `url` (empty for an empty database); reads only.

    Optuna's own readers (`get_all_study_names`) create its tables first, so this asks the
    database directly, and leaves a SQLite file that does not exist yet uncreated.
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(field, URL_FORMS, redact(url), "not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(field, URL_FORMS + " (a file, not in memory)", redact(url), "no file")
        if not path.exists():
            if not path.parent.is_dir():
                raise ConfigError(field, URL_FORMS, redact(url), f"folder {path.parent} does not exist")
            return set()
    try:
        engine = sqlalchemy.create_engine(parsed, **_connect_args(parsed.get_backend_name()))
    except (NoSuchModuleError, ImportError) as err:
        raise ConfigError(field, URL_FORMS, redact(url), f"no driver for it ({err})") from None
    try:
        with engine.connect() as conn:
            if not sqlalchemy.inspect(conn).has_table("studies"):
                return set()
            rows = conn.execute(sqlalchemy.text("SELECT study_name FROM studies"))
            return {str(r[0]) for r in rows}
    except SQLAlchemyError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(field, URL_FORMS, redact(url), f"cannot read it: {redact(reason)}") from None
    finally:
        engine.dispose()


def _connect_args(backend: str) -> dict[str, Any]:
    # An unreachable server must fail the check in seconds, not after the driver's default minutes.
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": 5}}
    if backend == "mysql":
        return {"connect_args": {"connect_timeout": 5}}
    return {}


def retune_study_name(sweep: str, variant: str) -> str:
    """The study of an ablation variant's nuisance re-tuning (one per variant, beside the sweep's name)."""
    return f"{sweep}.retune.{variant}"


def tag_ray_trial(trial: optuna.Trial, unit_id: str) -> None:
    """Record on `trial` which Ray trial (fused: member) runs it."""
    trial.set_user_attr(RAY_TRIAL_ATTR, unit_id)


class StudyLinks:
    """The driver's link from a Ray trial (or fused member) to its Optuna trial, for MLflow.

    Looks the trial up by its `RAY_TRIAL_ATTR` among the studies' trials (a resume may have
    rebuilt a study under a new id, so each is found by name each time).
    """

    def __init__(self, ref: StudyRef, *, names: tuple[str, ...] | None = None) -> None:
        self.ref = ref
        self.names = names or (ref.name,)  # an ablation: one re-tuning study per variant
        self._storage: optuna.storages.BaseStorage | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None}  # a live connection is not state

    def _trials(self, states: tuple[TrialState, ...] | None = None) -> list[optuna.trial.FrozenTrial]:
        if self._storage is None:
            self._storage = self.ref.open_storage()
        trials: list[optuna.trial.FrozenTrial] = []
        for name in self.names:
            try:
                study_id = self._storage.get_study_id_from_name(name)
            except KeyError:  # not created yet, or being recreated by a resume
                continue
            trials += self._storage.get_all_trials(study_id, deepcopy=False, states=states)
        return trials

    def _candidates(self, units: set[str]) -> list[optuna.trial.FrozenTrial]:
        """The trials that may be `units`': a starting trial is RUNNING in Optuna, so the running ones
        are searched first (a few, where the whole history grows with the sweep); the rest only for
        a unit not found there (a resumed sweep relinking a trial that had ended)."""
        running = self._trials((TrialState.RUNNING,))
        if units <= {t.user_attrs.get(RAY_TRIAL_ATTR) for t in running}:
            return running
        return self._trials()

    def link(self, runs: Mapping[str, str | None]) -> dict[str, int]:
        """Record each unit's MLflow run id (None: not known yet) on its Optuna trial.

        Returns unit id -> Optuna trial number for the units found. Only a running trial takes the
        run id (Optuna freezes finished ones); a finished one still gives its number.
        """
        try:
            found: dict[str, int] = {}
            for t in self._candidates(set(runs)):
                unit = t.user_attrs.get(RAY_TRIAL_ATTR)
                if unit not in runs:
                    continue
                found[unit] = t.number
                if runs[unit] is not None and t.state == TrialState.RUNNING:
                    # No public setter by number; the storage's is what `Trial.set_user_attr` calls.
                    self._storage.set_trial_user_attr(t._trial_id, MLFLOW_RUN_ATTR, runs[unit])  # type: ignore[union-attr]
            return found
        except Exception as exc:  # the study is a record: a hiccup there must not stop the sweep
            log.warning("optuna: could not link trials %s to their MLflow runs: %s", sorted(runs), exc)
            return {}
