"""``meddx users`` and ``meddx audit`` through Typer's CliRunner, on SQLite (default URL) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from meddx.cli.audit import app as audit_app
from meddx.cli.users import app as users_app
from meddx.exceptions import ConfigError
from meddx.storage import users
from meddx.storage.db import database_url, make_engine, session_factory

runner = CliRunner()


@pytest.fixture
def cli_db(backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MEDDX_HOME in tmp_path; SQLite at the default place (created by the CLI), or a PostgreSQL test database."""
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "home"))
    if backend == "sqlite":
        monkeypatch.delenv("MEDDX_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("MEDDX_DATABASE_URL", request.getfixturevalue("db_url"))
    return database_url()


def _authenticate(url: str, username: str, password: str) -> users.User | None:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return users.authenticate(s, username, password)
    finally:
        engine.dispose()


def test_create_prints_one_time_password_once(cli_db: str, backend: str, tmp_path: Path) -> None:
    result = runner.invoke(users_app, ["create", "Admin", "--admin"])
    assert result.exit_code == 0, result.output
    one_time = result.stdout.strip()
    assert len(one_time) >= 20 and "\n" not in one_time
    assert result.output.count(one_time) == 1
    assert "created user admin (role admin)" in result.stderr
    if backend == "sqlite":
        assert (tmp_path / "home" / "meddx.db").exists()
    user = _authenticate(cli_db, "admin", one_time)
    assert user is not None and user.role == "admin" and user.must_change_password

    listing = runner.invoke(users_app, ["list"])
    assert listing.exit_code == 0 and one_time not in listing.output
    assert "admin" in listing.stdout and "yes" in listing.stdout


def test_create_with_password_stdin_and_roles(cli_db: str) -> None:
    result = runner.invoke(users_app, ["create", "eve", "--role", "engineer", "--password-stdin"],
                           input="a long enough passphrase\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "passphrase" not in result.output
    assert _authenticate(cli_db, "eve", "a long enough passphrase").role == "engineer"

    short = runner.invoke(users_app, ["create", "frank", "--password-stdin"], input="short\n")
    assert isinstance(short.exception, users.PasswordPolicyError)
    clash = runner.invoke(users_app, ["create", "gina", "--admin", "--role", "clinician"])
    assert isinstance(clash.exception, ConfigError)
    bad_role = runner.invoke(users_app, ["create", "hal", "--role", "root"])
    assert bad_role.exit_code == 2
    default = runner.invoke(users_app, ["create", "ida"])
    assert default.exit_code == 0 and "(role clinician)" in default.stderr


def test_disable_reset_and_audit(cli_db: str) -> None:
    one_time = runner.invoke(users_app, ["create", "jo"]).stdout.strip()
    assert runner.invoke(users_app, ["disable", "jo"]).exit_code == 0
    assert _authenticate(cli_db, "jo", one_time) is None
    assert isinstance(runner.invoke(users_app, ["disable", "nobody"]).exception, users.UnknownUserError)
    assert runner.invoke(users_app, ["enable", "jo"]).exit_code == 0
    reset = runner.invoke(users_app, ["reset-password", "jo"])
    new = reset.stdout.strip()
    assert reset.exit_code == 0 and new != one_time
    assert _authenticate(cli_db, "jo", new) is not None

    verify = runner.invoke(audit_app, ["verify"])
    assert verify.exit_code == 0, verify.output
    assert "audit log intact: 4 entries" in verify.stdout
    tail = runner.invoke(audit_app, ["tail", "-n", "2"])
    lines = tail.stdout.strip().splitlines()
    assert tail.exit_code == 0 and len(lines) == 2
    assert lines[0].startswith("3 ") and "user.enable" in lines[0] and "user.reset_password" in lines[1]
    assert new not in tail.output and one_time not in tail.output


def test_audit_verify_fails_on_tampering(cli_db: str) -> None:
    empty = runner.invoke(audit_app, ["tail"])
    assert empty.exit_code == 0 and "empty" in empty.stdout
    for name in ("kim", "lee", "max"):
        assert runner.invoke(users_app, ["create", name]).exit_code == 0
    engine = make_engine(cli_db)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            else:
                conn.exec_driver_sql("DROP TRIGGER audit_log_append_only ON audit_log")
            conn.exec_driver_sql("UPDATE audit_log SET summary = 'kim role=admin' WHERE id = 1")
    finally:
        engine.dispose()
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 2
    assert "BROKEN" in result.stdout and "entry 1: content does not match its hash" in result.stdout
