"""Engines, sessions and migrations. SQLite (WAL, busy timeout) by default, PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "flywheel_read_only"  # execution option of `read_scope`'s connections


class DatabaseNotMigrated(RuntimeError):
    """The database schema is behind the code; `flywheel db upgrade` fixes it."""


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, open transactions, so that they can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # IMMEDIATE takes the write lock up front: a writer waits (busy timeout) instead of failing
        # with SQLITE_BUSY when it upgrades a read transaction that another process overtook. Reads
        # (`read_scope`) take no lock: a poll must not queue the writers.
        deferred = connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def _json_dumps(value) -> str:
    # Non-ASCII text stays readable in the JSON columns, so a text search finds it in prompts too.
    return json.dumps(value, ensure_ascii=False)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, json_serializer=_json_dumps, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True)


@lru_cache(maxsize=8)
def _cached_engine(url: str) -> Engine:
    return make_engine(url)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url` (default: the settings' database URL)."""
    if url is None:
        from flywheel.settings import get_settings  # storage stays importable without flywheel

        url = get_settings().database_url
    return _cached_engine(url)


_session_factories: WeakKeyDictionary[Engine, sessionmaker] = WeakKeyDictionary()
_sqlite_writers: WeakKeyDictionary[Engine, "_SqliteWriter"] = WeakKeyDictionary()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    engine = engine or get_engine()
    factory = _session_factories.get(engine)
    if factory is None:  # one per engine: each sessionmaker builds a Session class, which costs a lot of CPU
        factory = _session_factories[engine] = sessionmaker(bind=engine, expire_on_commit=False)
    with _one_writer(engine), factory() as session, session.begin():
        yield session


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A transaction that only reads: on SQLite it takes no write lock (every `session_scope` does), so a
    frequent poll (the bot's question feed, in every bot process) never makes a writer wait."""
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with Session(bind=connection) as session:
            yield session


class _SqliteWriter:
    """SQLite runs one transaction at a time (they are all IMMEDIATE) and makes the others poll for its lock
    with sleeps of up to 100 ms: under a burst of a hundred threads, or of several bot processes committing
    at once, that is seconds of waiting. Writers queue here instead and are handed the turn at once: the
    threads of this process on a lock, then the processes on an flock of a file beside the database (the
    kernel wakes the next one; it frees the turn of a process that dies). A database in memory is this
    process's alone."""

    def __init__(self, database: str | None):
        self._thread_lock = threading.RLock()
        self._depth = 0  # nested scopes of the thread holding the turn
        self._path = f"{database}.writer-lock" if database and database != ":memory:" else None
        self._file, self._pid = None, 0

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth == 1 and self._path:
            fcntl.flock(self._lock_file(), fcntl.LOCK_EX)

    def __exit__(self, *_exc) -> None:
        if self._depth == 1 and self._path:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._depth -= 1
        self._thread_lock.release()

    def _lock_file(self):
        # Opened per process: a forked child sharing its parent's open file would share its lock too.
        if self._pid != os.getpid():
            self._file, self._pid = open(self._path, "a+b"), os.getpid()  # noqa: SIM115 - lives with the engine
        return self._file


def _one_writer(engine: Engine) -> contextlib.AbstractContextManager:
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    writer = _sqlite_writers.get(engine)
    if writer is None:
        writer = _sqlite_writers.setdefault(engine, _SqliteWriter(engine.url.database))
    return writer


def is_transient(exc: DBAPIError) -> bool:
    """The database was unreachable or restarting (not a refusal of the statement itself)."""
    return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_migrated(engine: Engine | None = None) -> None:
    """Refuse to run against a database whose schema is not at the code's head revision."""
    engine = engine or get_engine()
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"the database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none (empty)'}, the code needs {head}: run `flywheel db upgrade` (or `flywheel init`)."
        )
