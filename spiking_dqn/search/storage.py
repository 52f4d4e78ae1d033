"""Where the threshold search keeps its Optuna studies: in memory, SQLite or PostgreSQL.

``None`` is an in-memory storage (lost with the process). A database URL
(``sqlite:///search.db``, ``postgresql://user:password@host/db``) is an Optuna
``RDBStorage``: finished evaluations persist, so a search that is interrupted continues
where it stopped when it is run again, and several processes (or machines, or chips)
can share one study (see :mod:`spiking_dqn.search.studies`). :func:`open_storage`
connects before anything else happens, so a malformed URL, an unknown scheme, a missing
driver or an unreachable database is a clear :class:`StorageUnavailableError` before any
work.

An Optuna journal file (``journal:///abs/path.log``, ``journal://relative/path.log``, or a
plain path ending in ``.log`` or ``.journal``: :func:`journal_path`) is a ``JournalStorage``
on a ``JournalFileBackend``: no database server, several processes on one machine (or on
machines sharing the file system) may append to it. Optuna 5.1 gives journal storages no
heartbeats; :class:`HeartbeatJournalStorage` adds them (a trial system attribute with the
time of its last heartbeat), so that a running trial whose process died is detected there too.
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError

from spiking_dqn.semantics.checks import check_int

#: Default seconds between heartbeats of a running evaluation in a database storage.
HEARTBEAT_INTERVAL = 10
#: The storage URL forms, for messages.
URL_FORMS = "sqlite:///search.db (a local file) or postgresql://user:password@host:5432/dbname (a server)"
#: Suffixes of a plain path that names an Optuna journal file, and the journal scheme.
JOURNAL_SUFFIXES = (".log", ".journal")
JOURNAL_SCHEME = "journal:"
#: The journal forms, for messages.
JOURNAL_FORMS = "journal:///path/study.log or a path ending in .log (an Optuna journal file)"
#: Trial system attribute holding the time (``time.time()``) of a journal trial's last heartbeat.
HEARTBEAT_ATTR = "heartbeat"
StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class StorageUnavailableError(ConnectionError):
    """The study storage (database URL) cannot be opened or reached."""


def mask_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: show it as given
        return url


def parse_storage_url(storage: str) -> URL:
    """The SQLAlchemy URL of a storage string, checked without importing a driver or connecting.

    :param storage: a database URL
    :raises StorageUnavailableError: a malformed URL, or a scheme no SQLAlchemy dialect knows
    """
    shown = mask_url(storage)
    try:
        url = make_url(storage)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and others
        raise StorageUnavailableError(f"invalid storage URL {shown!r} ({exc}); use e.g. {URL_FORMS}") from None
    try:
        url.get_dialect()  # the dialect class only: no driver is imported, nothing is connected
    except NoSuchModuleError:
        raise StorageUnavailableError(
            f"cannot open storage {shown!r}: unknown URL scheme {url.drivername!r} (SQLAlchemy has no dialect "
            f"of that name); use {URL_FORMS}"
        ) from None
    return url


def open_storage(
    storage: str | BaseStorage | None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    stale_trial_callback: StaleTrialCallback | None = None,
) -> BaseStorage:
    """An Optuna storage from ``None`` (in memory), a database URL or a storage object.

    A URL is checked by connecting to it first: a database that cannot be reached, a
    missing driver, an unknown scheme or a malformed URL raise
    :class:`StorageUnavailableError` with the reason, before any evaluation. For SQLite
    the folder of the file is created.

    :param storage: ``None``, a SQLAlchemy URL, or an Optuna ``BaseStorage``
    :param heartbeat_interval: seconds between heartbeats of running trials (database URLs)
    :param grace_period: seconds without heartbeat after which a running trial counts as
        dead (default ``2 * heartbeat_interval``)
    :param stale_trial_callback: called with each running trial found dead (e.g. Optuna's
        ``RetryHeartbeatStaleTrialCallback``, which queues it again)
    :raises StorageUnavailableError: the URL cannot be used
    :raises TypeError: neither None, a string nor a storage
    """
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise TypeError(f"storage must be None, a database URL or an optuna storage, got {type(storage).__name__}")
    heartbeat_interval = check_int(
        heartbeat_interval, "heartbeat_interval", minimum=1, what="a positive integer (seconds)"
    )
    journal = journal_path(storage)
    if journal is not None:
        return open_journal(journal, heartbeat_interval, grace_period, stale_trial_callback)
    shown = mask_url(storage)
    url = parse_storage_url(storage)
    backend = url.get_backend_name()
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 takes psycopg (3) for a bare postgresql:// URL; use psycopg2 when
        # only that one is installed (psycopg2-binary is what the project depends on).
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = url.set(drivername="postgresql+psycopg2")
            storage = url.render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        # Several processes may write one SQLite file: wait for its lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif backend in ("postgresql", "mysql"):
        engine_kwargs["pool_pre_ping"] = True
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sqlalchemy.create_engine(storage, **engine_kwargs)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        hint = " (pip install psycopg2-binary)" if backend == "postgresql" else ""
        raise StorageUnavailableError(
            f"cannot open storage {shown!r}: the database driver is not installed: {exc}{hint}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - OperationalError, ArgumentError, driver errors
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageUnavailableError(
            f"cannot reach storage {shown!r}: {reason}. Check that the database server is running and "
            "reachable and that the URL (user, password, host, port, database) is right; nothing was evaluated."
        ) from None
    # Workers that start together on a fresh database race to create Optuna's tables; the
    # losers' transactions fail and are retried once the winner's schema is there.
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=stale_trial_callback,
                )
        except Exception as exc:  # noqa: BLE001 - schema creation failed (race, permissions, version)
            if attempt == 5:
                raise StorageUnavailableError(f"cannot use storage {shown!r} for Optuna studies: {exc}") from None
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """True when running trials in this storage send heartbeats (so dead workers are detected)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return get_interval is not None and get_interval() is not None


def journal_path(storage: str) -> str | None:
    """The file of a journal storage string, or None for any other storage string.

    ``journal:///abs/study.log`` -> ``/abs/study.log``; ``journal://runs/study.log`` ->
    ``runs/study.log``; a path without ``://`` ending in one of :data:`JOURNAL_SUFFIXES` -> itself.

    :param storage: a storage string
    :raises StorageUnavailableError: ``journal:`` without a path
    """
    if storage.startswith(JOURNAL_SCHEME):
        path = storage[len(JOURNAL_SCHEME):]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise StorageUnavailableError(f"storage {storage!r} names no journal file; use {JOURNAL_FORMS}")
        return path
    if "://" not in storage and storage.endswith(JOURNAL_SUFFIXES):
        return storage
    return None


def open_journal(
    path: str, heartbeat_interval: int, grace_period: int | None, stale_trial_callback: StaleTrialCallback | None
) -> HeartbeatJournalStorage:
    """An Optuna journal file storage with heartbeats (its folder created).

    :raises StorageUnavailableError: the file cannot be created or read
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        backend = JournalFileBackend(path)
        return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, stale_trial_callback)
    except (OSError, ValueError) as exc:
        raise StorageUnavailableError(f"cannot open journal storage {path!r}: {exc}") from None


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's ``JournalStorage`` with heartbeats: ``study.optimize`` records them, and
    ``optuna.storages.fail_stale_trials`` fails the running trials whose last heartbeat is older than
    ``grace_period`` seconds (default ``2 * heartbeat_interval``; the workers' clocks are compared).

    :param backend: the journal backend
    :param heartbeat_interval: seconds between heartbeats
    :param grace_period: seconds without heartbeat after which a running trial counts as dead
    :param stale_trial_callback: called with each trial failed that way
    """

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int | None = None,
                 stale_trial_callback: StaleTrialCallback | None = None) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        """Record the time of the trial's heartbeat (nothing once the trial has finished)."""
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [
            t._trial_id  # noqa: SLF001 - the id Optuna's fail_stale_trials expects
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if HEARTBEAT_ATTR in t.system_attrs and now - float(t.system_attrs[HEARTBEAT_ATTR]) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats."""
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        """The callback called with each trial found dead."""
        return self.stale_trial_callback


def serialize_sqlite(storage: BaseStorage) -> BaseStorage:
    """An SQLite ``RDBStorage`` whose transactions all start with ``BEGIN IMMEDIATE`` (one at a time); others as given.

    SQLite has no ``SELECT ... FOR UPDATE``, and its Python driver begins a transaction only at
    the first write, after the read that found a queued trial still waiting: two workers could
    both pop the same queued (``WAITING``) trial. Serialized, the second one sees it running.
    (PostgreSQL locks the row; a journal storage rejects the second pop.)

    :param storage: an opened storage
    """
    if not isinstance(storage, RDBStorage) or storage.engine.dialect.name != "sqlite":
        return storage
    engine = storage.engine

    def no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", no_implicit_transactions)
    sqlalchemy.event.listen(engine, "begin", begin_immediate)
    engine.dispose()  # connections opened before the listeners are not reused
    return storage
