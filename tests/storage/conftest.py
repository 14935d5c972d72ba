"""Fixtures for the storage tests: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``MEDDX_TEST_POSTGRES_URL`` (a role that may CREATE
DATABASE) or, when ``initdb``/``pg_ctl`` exist, from a throwaway server this
file starts once per test session in a temporary folder (unix socket only, no
TCP listener) and stops at the end. Without either, PostgreSQL tests are
skipped, except under CI (``CI`` set), where they fail with a hint.
"""

from __future__ import annotations

import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, profiles
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from meddx.storage import users as users_module
from meddx.storage.db import make_engine, session_factory, upgrade
from meddx.storage.models import Base

try:
    import pwd
except ImportError:  # Windows: no users to switch to
    pwd = None  # type: ignore[assignment]

REAL_HASHER = users_module._HASHER
ENV_URL = "MEDDX_TEST_POSTGRES_URL"
_INSTALL_HINT = ("install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) "
                 f"or set {ENV_URL}=postgresql://USER@HOST/DB for a server where USER may CREATE DATABASE")


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _unavailable(message: str) -> None:
    if _under_ci():
        pytest.fail(f"{message}; {_INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{message}; {_INSTALL_HINT}")


def _pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, else their folder on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
                        reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(pg_ctl).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A throwaway PostgreSQL cluster in a temporary folder (run as `postgres` when we are root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="meddx-pg-"))  # not pytest's root-only basetemp
        self.data, self.sock, self.log = self.base / "data", self.base / "sock", self.base / "server.log"
        self.port = _free_port()
        self.prefix: list[str] = []
        if pwd is not None and os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                _unavailable("running as root and there is no `postgres` user to run the test server")
            self.sock.mkdir()
            for path in (self.base, self.sock):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            if shutil.which("runuser"):
                self.prefix = ["runuser", "-u", "postgres", "--"]
            else:
                self.prefix = ["su", "postgres", "-s", "/bin/sh", "-c"]
        else:
            self.sock.mkdir()

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        full = [*self.prefix, shlex.join(command)] if self.prefix[:1] == ["su"] else [*self.prefix, *command]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> str:
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                         "--locale=C", "--no-sync", "--no-instructions")
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = (f"-p {self.port} -k {shlex.quote(str(self.sock))} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log}")
        return f"postgresql+psycopg://postgres@/postgres?host={self.sock}&port={self.port}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server (maintenance database) where the tests may create databases."""
    value = os.environ.get(ENV_URL, "").strip()
    if value:
        yield value
        return
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("PostgreSQL not found (no initdb/pg_ctl)")
    server = _Server(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _pg_admin(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def _create_database(admin: Engine, base_url: str, template: str = "template0") -> str:
    name = f"meddx_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return make_url(base_url).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def _drop_database(admin: Engine, url: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _pg_shared(_pg_admin: Engine, postgres_url: str) -> Iterator[tuple[str, list[str]]]:
    """One database migrated to head for the whole session, and its audit trigger DDL as migrated.

    Creating a database per test costs ~0.3 s; instead :func:`db_url` resets
    this one (tables emptied, identities restarted, triggers restored exactly
    as the migration made them, in case a test dropped them).
    """
    url = _create_database(_pg_admin, postgres_url)
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        ddl = [conn.execute(text("SELECT pg_get_functiondef('audit_log_reject_change'::regproc)")).scalar_one()]
        ddl += conn.execute(text("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                                 "WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal ORDER BY tgname")
                            ).scalars().all()
    engine.dispose()
    assert len(ddl) == 3, ddl
    yield url, ddl
    _drop_database(_pg_admin, url)


def _reset_pg(url: str, trigger_ddl: list[str]) -> None:
    """Empty every table of the shared test database and restore the migration's triggers."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text("DROP FUNCTION IF EXISTS audit_log_reject_change() CASCADE"))
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            for statement in trigger_ddl:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run."""
    return request.param


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty database (no tables) on the current backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        admin = request.getfixturevalue("_pg_admin")
        url = _create_database(admin, request.getfixturevalue("postgres_url"))
        yield url
        _drop_database(admin, url)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database migrated to head on the current backend (PostgreSQL: reset, shared)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'meddx.db'}"
        upgrade(url)
        yield url
    else:
        url, trigger_ddl = request.getfixturevalue("_pg_shared")
        _reset_pg(url, trigger_ddl)
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database of the current backend."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on :func:`engine`."""
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One session on :func:`engine`, closed after the test."""
    with sessions() as s:
        yield s


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests hash with argon2id's cheapest parameters (the real ones cost ~0.1 s per hash)."""
    monkeypatch.setattr(users_module, "_HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))


@pytest.fixture
def real_hasher() -> PasswordHasher:
    """The hasher meddx really uses (saved before the cheap one was patched in)."""
    return REAL_HASHER


@pytest.fixture
def encryption_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A random key set in MEDDX_ENCRYPTION_KEY (hex) for this test."""
    key = secrets.token_bytes(32)
    monkeypatch.setenv("MEDDX_ENCRYPTION_KEY", key.hex())
    return key
