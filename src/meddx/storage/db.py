"""Database connection: URL, engine, sessions and schema migrations.

The service keeps its accounts, studies, results, jobs and the audit log in one
SQL database: SQLite by default (a file in ``$MEDDX_HOME``, fine for one
machine) or PostgreSQL (``MEDDX_DATABASE_URL=postgresql://user@host/db``) when
several service processes share it. The schema is owned by the Alembic
migrations in :mod:`meddx.storage.migrations`; :func:`upgrade` applies them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from meddx.config import home_dir
from meddx.exceptions import ConfigError

ENV_URL = "MEDDX_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: How long SQLite waits for another writer before "database is locked" (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 15_000
#: Execution option read by the SQLite ``begin`` hook: "DEFERRED" (default) or "IMMEDIATE".
SQLITE_BEGIN_OPTION = "meddx_sqlite_begin"
# pg_advisory_xact_lock key that serialises concurrent `upgrade()` calls ("meddx-mg").
_PG_MIGRATION_LOCK = 0x6D656464782D6D67


def database_url() -> str:
    """The database URL from ``MEDDX_DATABASE_URL``, else SQLite at ``$MEDDX_HOME/meddx.db``."""
    value = os.environ.get(ENV_URL, "").strip()
    if value:
        return value
    return f"sqlite:///{home_dir() / 'meddx.db'}"


def _normalise(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}", field=ENV_URL,
                          hint="use sqlite:///PATH or postgresql://USER@HOST/DB") from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise ConfigError(f"unsupported database {backend!r}", field=ENV_URL,
                          hint="use sqlite:///PATH or postgresql://USER@HOST/DB")
    return parsed


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (default :func:`database_url`).

    SQLite: the folder and an owner-only (0600) database file are created, and every connection gets WAL journal mode
    (readers do not block the writer), ``foreign_keys=ON`` and a busy timeout;
    SQLAlchemy emits BEGIN itself so transactions (and DDL) really are
    transactional, and ``BEGIN IMMEDIATE`` is used when a connection carries the
    execution option ``meddx_sqlite_begin="IMMEDIATE"`` (see :func:`begin_write`).
    PostgreSQL: the psycopg 3 driver, with ``pool_pre_ping``.
    """
    parsed = _normalise(url if url is not None else database_url())
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **kwargs)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # accounts and audit inside: owner-only (SQLite gives -wal/-shm the same mode)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not sqlite3, decides when to BEGIN
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = str(connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        if mode not in {"DEFERRED", "IMMEDIATE", "EXCLUSIVE"}:
            raise ConfigError(f"unknown SQLite BEGIN mode {mode!r}", field=SQLITE_BEGIN_OPTION)
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def begin_write(session: Session, table: str) -> None:
    """Make the session's transaction hold the write lock now, before it reads.

    Read-then-write sequences (the audit chain head, failed-login counters) must
    not interleave. On SQLite a fresh transaction starts with ``BEGIN IMMEDIATE``;
    if one is already open, a no-op ``DELETE ... WHERE 0`` on ``table`` takes the
    lock (waiting up to the busy timeout). PostgreSQL needs nothing here: callers
    use row locks or advisory locks there.

    Why: in WAL mode a transaction that read first and then writes fails at once
    with "database is locked" if another connection committed in between. Call
    this at the start of any read-then-write unit of work (``table`` is any
    existing table; nothing is deleted).
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    if not session.in_transaction():
        with warnings.catch_warnings():  # "already established" cannot happen here, but never warn
            warnings.simplefilter("ignore")
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    session.execute(text(f'DELETE FROM "{table}" WHERE 0'))


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic ``Config`` built in code (no alembic.ini): our migrations, ``url``."""
    from alembic.config import Config

    parsed = _normalise(url if url is not None else database_url())
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", parsed.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def upgrade(url: str | URL | Engine | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default :func:`database_url`) to ``revision``.

    Safe to call at every start-up: it does nothing when the schema is current,
    and concurrent callers are serialised (SQLite write lock, PostgreSQL advisory
    lock), so several service workers starting together do not race.
    """
    from alembic import command

    engine = url if isinstance(url, Engine) else make_engine(url)
    config = alembic_config(engine.url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                connection = connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def open_database(url: str | URL | None = None, *, migrate: bool = True) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and session factory for ``url`` (default :func:`database_url`), migrated to head first.

    The one call a service or command needs at start-up; dispose the engine when done.
    """
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return engine, session_factory(engine)


@contextlib.contextmanager
def database_session(url: str | URL | None = None) -> Iterator[Session]:
    """One session on the (migrated) database for a command's single unit of work; the engine is disposed after."""
    engine, sessions = open_database(url)
    try:
        with sessions() as session:
            yield session
    finally:
        engine.dispose()
