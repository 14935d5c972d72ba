"""The audit chain is anchored outside the database (issue 18, item 8), and refusals are audited (lows).

With write access to the database one could edit an entry and recompute every
later hash, or delete the newest entries, and ``meddx audit verify`` said
"intact". Now every entry carries a MAC under a key kept in ``MEDDX_HOME/keys``
and every commit checkpoints the head in a signed file outside the database.
Runs against the real app on SQLite and PostgreSQL (``tests/service/conftest.py``).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from meddx.cli.audit import app as audit_app
from meddx.storage import audit
from tests.service.conftest import Service, _create_database, _drop_database, png_bytes  # fixtures: conftest.py

runner = CliRunner()


def _drop_triggers(engine: Engine) -> None:
    """What an attacker with database access does first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT * FROM audit_log ORDER BY id")))


def _rewrite(engine: Engine, entry_id: int, *, clear_macs: bool = False) -> None:
    """Edit entry ``entry_id`` and recompute every later hash so that the chain itself is valid again."""
    rows = _rows(engine)
    prev = audit.GENESIS_HASH
    with engine.begin() as conn:
        for row in rows:
            user = "someone-else" if row.id == entry_id else row.username
            ts = row.ts if isinstance(row.ts, datetime) else datetime.fromisoformat(row.ts)  # SQLite: text
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            digest = audit.entry_hash(id=row.id, ts=ts, user=user, action=row.action,
                                      patient_pseudonym=row.patient_pseudonym, model_version=row.model_version,
                                      input_sha256=row.input_sha256, output_sha256=row.output_sha256,
                                      summary=row.summary, prev_hash=prev)
            conn.execute(text("UPDATE audit_log SET username = :u, prev_hash = :p, hash = :h"
                              + (", mac = NULL" if clear_macs else "") + " WHERE id = :i"),
                         {"u": user, "p": prev, "h": digest, "i": row.id})
            prev = digest


def _verify() -> tuple[int, str]:
    result = runner.invoke(audit_app, ["verify"])
    return result.exit_code, result.stdout


def _activity(svc: Service) -> None:
    """A few audited actions through the API."""
    h = svc.headers("clinician")
    for seed in (1, 2):
        response = svc.client.post("/api/studies", headers=h, data={"patient_id": f"MRN-{seed}"},
                                   files={"file": ("x.png", png_bytes(seed=seed), "image/png")})
        assert response.status_code == 201, response.text
        assert svc.client.get(response.json()["links"]["self"], headers=h).status_code == 200


@pytest.fixture
def tampered(make_service: Any) -> Iterator[tuple[Service, Engine]]:
    svc = make_service()
    _activity(svc)
    code, out = _verify()
    assert code == 0 and "intact" in out, out
    engine = svc.raw_engine()
    _drop_triggers(engine)
    try:
        yield svc, engine
    finally:
        engine.dispose()


def test_key_and_checkpoints_live_outside_the_database_owner_only(make_service: Any) -> None:
    svc = make_service()
    _activity(svc)
    key = svc.home / "keys" / "audit.key"
    (checkpoints,) = (svc.home / "audit").glob("checkpoints-*.log")
    for path in (key, checkpoints):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert key.read_bytes() not in svc.database_text()
    rows = _rows(svc.raw_engine())
    assert all(r.mac for r in rows)
    last = json.loads(checkpoints.read_text().splitlines()[-1])
    assert last["id"] == rows[-1].id and last["hash"] == rows[-1].hash
    code, out = _verify()
    assert code == 0 and f"{len(rows)} anchored" in out, out


def test_the_service_keeps_its_own_homes_key(make_service: Any, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """The key is bound when the service starts: a later change of MEDDX_HOME in the process does not split the
    chain between two keys."""
    svc = make_service()
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "elsewhere"))
    for path in ("/api/admin/users", "/api/admin/teams", "/api/admin/audit"):  # audited reads
        assert svc.client.get(path, headers=svc.headers("admin")).status_code == 200
    assert not (tmp_path / "elsewhere" / "keys" / "audit.key").exists()
    svc.set_env(monkeypatch)
    code, out = _verify()
    assert code == 0 and "intact" in out, out


@pytest.mark.parametrize("clear_macs", [False, True], ids=["macs-kept", "macs-cleared"])
def test_a_rewritten_chain_is_detected(tampered: tuple[Service, Engine], clear_macs: bool) -> None:
    svc, engine = tampered
    _rewrite(engine, 3, clear_macs=clear_macs)
    with svc.ctx.sessions() as session:  # the chain alone is consistent again: only the anchor can tell
        chain_only = audit.verify(session, audit.AuditAnchor(None, svc.home / "none", svc.home / "none.log"))
    assert not [p for p in chain_only.problems if "prev_hash" in p or "does not match its hash" in p]
    code, out = _verify()
    assert code == 2 and "BROKEN" in out, out
    assert "entry 3:" in out and ("MAC" in out or "checkpoint" in out), out
    admin = svc.client.get("/api/admin/audit/verify", headers=svc.headers("admin")).json()
    assert not admin["ok"] and any("entry 3" in p for p in admin["problems"])


def test_deleting_the_newest_entries_is_detected(tampered: tuple[Service, Engine]) -> None:
    svc, engine = tampered
    last = _rows(engine)[-1].id
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id > :n"), {"n": last - 3})
    code, out = _verify()
    assert code == 2, out
    assert f"entry {last} was checkpointed but the log ends at entry {last - 3}" in out, out


def test_a_forged_checkpoint_is_detected(tampered: tuple[Service, Engine]) -> None:
    svc, _ = tampered
    (checkpoints,) = (svc.home / "audit").glob("checkpoints-*.log")
    with open(checkpoints, "a") as fh:
        fh.write(json.dumps({"id": 1, "hash": "0" * 64, "mac": "1" * 64}) + "\n")
    code, out = _verify()
    assert code == 2 and "MAC does not match the audit key (forged)" in out, out


def test_a_missing_key_is_named_not_ignored(tampered: tuple[Service, Engine], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    svc, _ = tampered
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "another-home"))  # verifying away from the service's home
    if svc.backend == "sqlite":
        monkeypatch.setenv("MEDDX_DATABASE_URL", svc.url)
    code, out = _verify()
    assert code == 2 and "audit key" in out and "is missing" in out, out


def test_old_databases_stay_verifiable(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A log written before the anchor existed (migration 0002) verifies, says so, and gets anchored from then on."""
    from meddx.storage.db import make_engine, session_factory, upgrade
    from meddx.storage.models import utcnow

    admin = None
    if backend == "postgresql":
        admin = request.getfixturevalue("_pg_admin")
        url = _create_database(admin, request.getfixturevalue("postgres_url"))
        monkeypatch.setenv("MEDDX_DATABASE_URL", url)
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        monkeypatch.setenv("MEDDX_DATABASE_URL", url)
    try:
        upgrade(url, "0002")
        engine = make_engine(url)
        prev = audit.GENESIS_HASH
        with engine.begin() as conn:  # what meddx before the anchor wrote
            for i in (1, 2, 3):
                ts = utcnow()
                digest = audit.entry_hash(id=i, ts=ts, user="old", action="study.upload", patient_pseudonym=None,
                                          model_version=None, input_sha256=None, output_sha256=None, summary=None,
                                          prev_hash=prev)
                conn.execute(text("INSERT INTO audit_log (id, ts, username, action, prev_hash, hash) "
                                  "VALUES (:i, :ts, 'old', 'study.upload', :p, :h)"),
                             {"i": i, "ts": ts if backend == "postgresql" else ts.replace(tzinfo=None),
                              "p": prev, "h": digest})
                prev = digest
        upgrade(url)
        code, out = _verify()
        assert code == 0 and "entries 1-3 predate the audit anchor" in out, out
        sessions = session_factory(engine)
        with sessions() as session:
            audit.append(session, user="new", action="study.view")
            session.commit()
        code, out = _verify()
        assert code == 0 and "1 anchored" in out, out
        _drop_triggers(engine)
        _rewrite(engine, 2)  # a rewrite inside the old part still reaches the anchored entry
        code, out = _verify()
        assert code == 2 and "entry 4:" in out, out
        engine.dispose()
    finally:
        if admin is not None:
            _drop_database(admin, url)


# --- refused actions are audited (issue 18, lows) --------------------------------------------------------------


def _entries(svc: Service, action: str) -> list[Any]:
    from meddx.storage.models import AuditEntry

    with svc.ctx.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)).all())


def test_refused_uploads_are_audited(service: Service) -> None:
    before = len(_entries(service, "study.refused"))
    response = service.client.post("/api/studies", headers=service.headers("clinician"),
                                   files={"file": ("notes.txt", b"just some text, not an image", "text/plain")})
    assert response.status_code == 415
    after = _entries(service, "study.refused")
    assert len(after) == before + 1 and after[-1].summary == "HTTP 415" and after[-1].user == "clinician"


def test_rate_limited_logins_are_audited(service: Service) -> None:
    before = len(_entries(service, "auth.rate_limited"))
    codes = [service.client.post("/api/auth/token", data={"username": "ratelimit-probe", "password": "wrong"}
                                 ).status_code for _ in range(service.ctx.settings.login_attempts_per_minute + 2)]
    assert codes[-1] == 429
    after = _entries(service, "auth.rate_limited")
    assert len(after) == before + codes.count(429)
    assert all(e.user == "anonymous" and "ratelimit-probe" not in (e.summary or "") for e in after)


def test_server_errors_are_audited(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[str]:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(service.ctx, "model_refs", broken)
    client = TestClient(service.app, raise_server_exceptions=False)
    assert client.get("/api/models", headers=service.headers("engineer")).status_code == 500
    failed = _entries(service, "request.failed")
    assert failed and failed[-1].summary == "GET /api/models -> HTTP 500" and failed[-1].user == "engineer"


def test_admin_reads_are_audited(service: Service) -> None:
    h = service.headers("admin")
    for path, action in (("/api/admin/users", "admin.users.read"), ("/api/admin/audit", "admin.audit.read"),
                         ("/api/admin/audit/verify", "admin.audit.verify"), ("/api/admin/teams", "admin.teams.read"),
                         ("/api/admin/break-glass", "admin.break_glass.read")):
        before = len(_entries(service, action))
        assert service.client.get(path, headers=h).status_code == 200, path
        assert len(_entries(service, action)) == before + 1, action


def test_tampering_with_the_real_servers_log_is_detected(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn on loopback writes the log; someone with database access rewrites it, then cuts its tail."""
    from meddx.storage.db import make_engine
    from tests.security.conftest import bearer

    name, password = live.add_user(prefix="doc")
    token = live.token(name, password)
    with live.client() as client:
        for seed in (1, 2):
            response = client.post("/api/studies", headers=bearer(token), data={"patient_id": f"MRN-L{seed}"},
                                   files={"file": ("x.png", png_bytes(seed=seed), "image/png")})
            assert response.status_code == 201, response.text
    monkeypatch.setenv("MEDDX_HOME", str(live.home))  # verify where the service keeps its key and checkpoints
    monkeypatch.setenv("MEDDX_DATABASE_URL", live.database_url)
    code, out = _verify()
    assert code == 0 and "intact" in out, out
    engine = make_engine(live.database_url)
    try:
        _drop_triggers(engine)
        last = _rows(engine)[-1].id
        _rewrite(engine, 2)
        code, out = _verify()
        assert code == 2 and "entry 2: MAC does not match" in out, out
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log WHERE id > :n"), {"n": last - 2})
        code, out = _verify()
        assert code == 2 and f"entry {last} was checkpointed but the log ends at entry {last - 2}" in out, out
    finally:
        engine.dispose()
