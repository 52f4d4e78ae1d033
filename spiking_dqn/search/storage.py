"""Where the threshold search keeps its Optuna studies: in memory, SQLite or PostgreSQL.

``None`` is an in-memory storage (lost with the process). A database URL
(``sqlite:///search.db``, ``postgresql://user:password@host/db``) is an Optuna
``RDBStorage``: finished evaluations persist, so a search that is interrupted continues
where it stopped when it is run again, and several processes (or machines, or chips)
can share one study (see :mod:`spiking_dqn.search.studies`). :func:`open_storage`
connects before anything else happens, so a malformed URL, an unknown scheme, a missing
driver or an unreachable database is a clear :class:`StorageUnavailableError` before any
work.
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
import warnings
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError

from spiking_dqn.semantics.checks import check_int

#: Default seconds between heartbeats of a running evaluation in a database storage.
HEARTBEAT_INTERVAL = 10
#: The storage URL forms, for messages.
URL_FORMS = "sqlite:///search.db (a local file) or postgresql://user:password@host:5432/dbname (a server)"


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
