"""The hash-chained audit log: verify, tampering detected, triggers, concurrent appends (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from meddx.exceptions import ConfigError
from meddx.storage import audit
from meddx.storage.models import AuditEntry


def _fill(sessions, n: int = 5) -> list[AuditEntry]:  # noqa: ANN001
    entries = []
    with sessions() as s:
        for i in range(n):
            entries.append(audit.append(
                s, user=f"dr{i % 2}", action="study.upload", patient_pseudonym=f"pt-{i:024x}",
                model_version="chest-cnn:1.2.0", input_sha256=hashlib.sha256(bytes([i])).hexdigest(),
                output={"p": 0.1 * i, "decision": "negative"}, summary=f"n={i}"))
        s.commit()
    return entries


def _drop_triggers(engine: Engine) -> None:
    """What an attacker with database access would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_append_only ON audit_log")


def test_chain_verifies(sessions) -> None:  # noqa: ANN001
    with sessions() as s:
        assert audit.verify(s) == audit.VerifyResult(ok=True, entries=0, problems=[], head_hash=None)
    entries = _fill(sessions)
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    assert entries[2].output_sha256 == audit.output_digest({"decision": "negative", "p": 0.1 * 2})
    with sessions() as s:
        result = audit.verify(s)
        assert result.ok and result.entries == 5 and result.head_hash == entries[-1].hash
        assert [e.id for e in audit.tail(s, 2)] == [4, 5]
        more = audit.append(s, user="admin", action="user.create")  # appending continues the chain
        s.commit()
        assert more.id == 6 and more.prev_hash == entries[-1].hash
        assert audit.verify(s).ok


def test_bad_arguments_are_refused(session) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError):
        audit.append(session, user="", action="x")
    with pytest.raises(ConfigError):
        audit.append(session, user="u", action="x", input_sha256="not-a-digest")
    with pytest.raises(ConfigError):
        audit.append(session, user="u", action="x", summary="s" * 300)
    with pytest.raises(ConfigError):
        audit.append(session, user="u", action="x", output=b"o", output_sha256="0" * 64)


def test_triggers_reject_update_and_delete(sessions, engine: Engine) -> None:  # noqa: ANN001
    _fill(sessions, 2)
    statements = ["UPDATE audit_log SET action = 'forged' WHERE id = 1", "DELETE FROM audit_log WHERE id = 2"]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
    with sessions() as s:
        assert audit.verify(s).entries == 2


def test_edited_row_is_detected(sessions, engine: Engine) -> None:  # noqa: ANN001
    _fill(sessions)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET summary = 'n=99' WHERE id = 3")
    with sessions() as s:
        result = audit.verify(s)
    assert not result.ok and result.entries == 5
    assert result.problems == ["entry 3: content does not match its hash (altered)"]


def test_edited_row_with_recomputed_hash_is_detected(sessions, engine: Engine) -> None:  # noqa: ANN001
    entries = _fill(sessions)
    _drop_triggers(engine)
    e = entries[1]
    forged = audit.entry_hash(id=e.id, ts=e.ts, user="someone-else", action=e.action,
                              patient_pseudonym=e.patient_pseudonym, model_version=e.model_version,
                              input_sha256=e.input_sha256, output_sha256=e.output_sha256, summary=e.summary,
                              prev_hash=e.prev_hash)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET username = 'someone-else', hash = :h WHERE id = 2"), {"h": forged})
    with sessions() as s:
        result = audit.verify(s)
    assert not result.ok
    assert any(p.startswith("entry 3: prev_hash") for p in result.problems), result.problems


def test_deleted_row_is_detected(sessions, engine: Engine) -> None:  # noqa: ANN001
    _fill(sessions)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE id = 3")
    with sessions() as s:
        result = audit.verify(s)
    assert not result.ok and result.entries == 4
    assert "entry 4: entry 3 missing before it (deleted?)" in result.problems
    assert any(p.startswith("entry 4: prev_hash does not match entry 2") for p in result.problems)


def test_deleted_first_row_is_detected(sessions, engine: Engine) -> None:  # noqa: ANN001
    _fill(sessions, 3)
    _drop_triggers(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE id = 1")
    with sessions() as s:
        result = audit.verify(s)
    assert not result.ok
    assert "entry 2: entry 1 missing before it (deleted?)" in result.problems


def test_reordered_rows_are_detected(sessions, engine: Engine) -> None:  # noqa: ANN001
    _fill(sessions)
    _drop_triggers(engine)
    with engine.begin() as conn:  # swap entries 2 and 4
        conn.exec_driver_sql("UPDATE audit_log SET id = -1 WHERE id = 2")
        conn.exec_driver_sql("UPDATE audit_log SET id = 2 WHERE id = 4")
        conn.exec_driver_sql("UPDATE audit_log SET id = 4 WHERE id = -1")
    with sessions() as s:
        result = audit.verify(s)
    assert not result.ok
    named = {int(p.split(":")[0].split()[1]) for p in result.problems}
    assert {2, 4} <= named, result.problems
    assert "entry 2: content does not match its hash (altered)" in result.problems


def test_concurrent_appends_do_not_fork_the_chain(sessions) -> None:  # noqa: ANN001
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for i in range(8):
                with sessions() as s:
                    audit.append(s, user=name, action="result.view", summary=str(i))
                    s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"u{t}",)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with sessions() as s:
        result = audit.verify(s)
    assert result.ok and result.entries == 32, result.problems
