"""Database URL, engine settings, and the migration matching the models on both backends."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text
from sqlalchemy.exc import IntegrityError

from meddx.exceptions import ConfigError
from meddx.storage import db
from meddx.storage.crypto import Encryptor
from meddx.storage.models import Base, Job, Patient, Result, Study, User, utcnow

TABLES = {"users", "patients", "studies", "results", "jobs", "audit_log", "drift_monitors", "drift_points",
          "drift_alarms", "care_teams", "care_team_members", "break_glass", "login_sessions"}
HEAD = "0004"  # the newest migration


def _diff(engine, metadata: MetaData) -> list:  # noqa: ANN001
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, metadata)


def test_database_url_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDDX_DATABASE_URL", raising=False)
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "home"))
    assert db.database_url() == f"sqlite:///{tmp_path / 'home' / 'meddx.db'}"
    monkeypatch.setenv("MEDDX_DATABASE_URL", "postgresql://u@h/d")
    assert db.database_url() == "postgresql://u@h/d"


def test_postgres_urls_get_psycopg3_and_others_are_refused() -> None:
    engine = db.make_engine("postgresql://u@localhost/d")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()
    with pytest.raises(ConfigError, match="unsupported database"):
        db.make_engine("mysql://u@h/d")
    with pytest.raises(ConfigError, match="not a database URL"):
        db.make_engine("not a url")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    engine.dispose()
    assert (tmp_path / "sub" / "x.db").exists()
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / "sub" / "x.db").stat().st_mode) == 0o600


def test_migration_matches_models(empty_db_url: str) -> None:
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        assert _diff(engine, Base.metadata) == []
        assert db.current_revision(engine) == HEAD
        names = set(inspect(engine).get_table_names())
        assert TABLES <= names and names - TABLES == {"alembic_version"}
        # the comparison really looks: an extra table and column show up as differences
        other = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(other)
        Table("extra", other, Column("id", Integer, primary_key=True))
        other.tables["users"].append_column(Column("nickname", Integer))
        kinds = {d[0] for d in _diff(engine, other)}
        assert {"add_table", "add_column"} <= kinds
        # check constraints (not compared by Alembic) have the models' names
        insp = inspect(engine)
        for table in Base.metadata.sorted_tables:
            expected = {c.name for c in table.constraints if c.__class__.__name__ == "CheckConstraint"}
            assert {c["name"] for c in insp.get_check_constraints(table.name)} == expected, table.name
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_works(empty_db_url: str) -> None:
    db.upgrade(empty_db_url)
    db.upgrade(empty_db_url)
    config = db.alembic_config(empty_db_url)
    command.downgrade(config, "base")
    engine = db.make_engine(empty_db_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
        db.upgrade(engine)
        assert _diff(engine, Base.metadata) == []
    finally:
        engine.dispose()


def test_models_round_trip_with_encrypted_fields(sessions, engine, backend: str, tmp_path: Path) -> None:  # noqa: ANN001
    enc = Encryptor(b"k" * 32)
    marker = f"secret-finding-{uuid.uuid4().hex}"
    with sessions() as s:
        user = User(username="dr.a", role="clinician", password_hash="x")
        patient = Patient()
        s.add_all([user, patient])
        s.flush()
        study = Study(patient_id=patient.id, uploaded_by=user.id, modality="xray", content_type="image/png",
                      sha256="0" * 64, size=3, blob_id="upload/" + "a" * 32, display_name="xray-1.png")
        result = Result(study=study, model_name="m", model_version="1", decision="positive")
        result.set_prediction(enc, {"finding": marker, "p": 0.93})
        job = Job(kind="predict", owner_id=user.id)
        job.set_result(enc, {"note": marker})
        s.add_all([study, result, job])
        s.commit()
        ids = (result.id, job.id)
    with sessions() as s:
        result = s.get(Result, ids[0])
        job = s.get(Job, ids[1])
        assert result.get_prediction(enc) == {"finding": marker, "p": 0.93}
        assert job.get_result(enc) == {"note": marker}
        assert marker.encode() not in result.prediction
        assert job.status == "queued" and job.progress == 0.0
        assert result.created_at.tzinfo is not None and job.updated_at.tzinfo is not None
        assert result.study.patient.pseudonym.startswith("pt-")
        # a ciphertext moved to another row does not decrypt
        other = Result(study_id=result.study_id, model_name="m", model_version="2", decision="negative",
                       prediction=result.prediction)
        s.add(other)
        s.flush()
        with pytest.raises(Exception, match="authentication failed"):
            other.get_prediction(enc)
        s.rollback()
    if backend == "sqlite":  # nothing of the plaintext in the database files
        for path in tmp_path.glob("meddx.db*"):
            assert marker.encode() not in path.read_bytes(), path


def test_constraints_are_enforced(sessions) -> None:  # noqa: ANN001
    with sessions() as s:
        s.add(Study(patient_id=999, uploaded_by=999, modality="x", content_type="x", sha256="0" * 64, size=1,
                    blob_id="upload/" + "b" * 32))
        with pytest.raises(IntegrityError):  # foreign keys are on (SQLite too)
            s.flush()
        s.rollback()
        s.add(User(username="bad", role="root", password_hash="x"))
        with pytest.raises(IntegrityError):
            s.flush()
        s.rollback()


def test_naive_datetimes_are_refused(sessions) -> None:  # noqa: ANN001
    from datetime import datetime

    with sessions() as s:
        s.add(User(username="n", role="admin", password_hash="x", created_at=datetime(2024, 1, 1)))
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()
        s.rollback()
        s.add(User(username="n", role="admin", password_hash="x", locked_until=utcnow()))
        s.commit()
        assert s.scalar(select(User.locked_until)).tzinfo is not None


def test_begin_write_takes_the_sqlite_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    other = db.make_engine(url, connect_args={"timeout": 0.1})
    try:
        with db.session_factory(engine)() as s:
            db.begin_write(s, "users")
            with other.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout = 100")
                with pytest.raises(Exception, match="locked"):
                    conn.execute(text("DELETE FROM users WHERE 0"))
            s.rollback()
    finally:
        engine.dispose()
        other.dispose()


def test_display_names_and_pseudonyms_carry_no_identifiers() -> None:
    from meddx.storage.models import new_pseudonym, safe_display_name

    assert safe_display_name("C:\\scans\\SMITH_John_1957.NII.GZ", "ct-3f2a") == "ct-3f2a.nii.gz"
    assert safe_display_name("../../etc/passwd", "upload") == "upload"
    assert safe_display_name("MRN1234567.2024-01-02.dcm", "xray") == "xray.dcm"
    assert safe_display_name("x.exe ;rm -rf", "../up") == "up"
    assert safe_display_name(None, "") == "upload"
    a, b = new_pseudonym(), new_pseudonym()
    assert a != b and a.startswith("pt-") and len(a) == 27


def test_open_database_migrates(tmp_path: Path) -> None:
    engine, sessions = db.open_database(f"sqlite:///{tmp_path / 'o.db'}")
    try:
        assert db.current_revision(engine) == HEAD
        with sessions() as s:
            assert s.scalars(select(User)).all() == []
    finally:
        engine.dispose()
