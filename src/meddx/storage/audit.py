"""The append-only, hash-chained audit log: who did what to which pseudonymised patient, with which model.

Each entry's ``hash`` is SHA-256 over a canonical JSON of its sequence number,
time, user, action, patient pseudonym, model version, input digest, output
digest, summary and the previous entry's hash (``prev_hash``; 64 zeros for
the first). Editing, deleting or reordering a stored entry therefore breaks
the chain, and :func:`verify` names where. Database triggers (created by the
migration) reject UPDATE and DELETE; the chain is what still catches someone
who drops the triggers first. Appends are serialised (SQLite ``BEGIN
IMMEDIATE``, PostgreSQL transaction-level advisory lock), so concurrent
writers cannot fork the chain.

What the chain cannot show on its own is the loss of the *newest* entries
(cutting the tail leaves a valid shorter chain): keep :attr:`VerifyResult.head_hash`
and the entry count somewhere else (a ticket, an e-mail) now and then.

Entries hold digests and short summaries only: never patient identifiers,
images or raw model outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from meddx.exceptions import ConfigError
from meddx.storage.db import begin_write
from meddx.storage.models import AuditEntry, utcnow

GENESIS_HASH = "0" * 64
HASH_VERSION = 1
# pg_advisory_xact_lock key that serialises appends ("meddx-au").
_PG_AUDIT_LOCK = 0x6D656464782D6175
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LIMITS = {"user": 64, "action": 64, "patient_pseudonym": 64, "model_version": 200, "summary": 255}


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, how many entries were checked, and what is wrong where."""

    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head_hash: str | None = None  # hash of the last entry; record it elsewhere to detect a cut tail


def output_digest(output: bytes | str | Mapping[str, Any] | Sequence[Any] | None) -> str | None:
    """SHA-256 hex of an output: bytes as they are, text as UTF-8, anything else as canonical JSON."""
    if output is None:
        return None
    if isinstance(output, (bytes, bytearray, memoryview)):
        data = bytes(output)
    elif isinstance(output, str):
        data = output.encode("utf-8")
    else:
        data = json.dumps(output, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=str).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def _ts_text(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(*, id: int, ts: datetime, user: str, action: str, patient_pseudonym: str | None,
               model_version: str | None, input_sha256: str | None, output_sha256: str | None,
               summary: str | None, prev_hash: str) -> str:
    """The chain hash of one entry (SHA-256 hex over canonical JSON of every field and ``prev_hash``)."""
    document = {
        "v": HASH_VERSION, "id": id, "ts": _ts_text(ts), "user": user, "action": action,
        "patient_pseudonym": patient_pseudonym, "model_version": model_version,
        "input_sha256": input_sha256, "output_sha256": output_sha256, "summary": summary,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_text(name: str, value: str | None, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise ConfigError("must not be empty", field=name)
        return None
    if not isinstance(value, str):
        raise ConfigError(f"must be text, not {type(value).__name__}", field=name)
    if len(value) > _LIMITS[name]:
        raise ConfigError(f"longer than {_LIMITS[name]} characters", field=name)
    return value


def _check_digest(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.lower()
    if not _SHA256.fullmatch(value):
        raise ConfigError("not a SHA-256 hex digest (64 hex digits)", field=name)
    return value


def _lock_chain(session: Session) -> None:
    """Hold the lock that serialises appends until the session's transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK})
    else:
        begin_write(session, AuditEntry.__tablename__)


def append(session: Session, *, user: str, action: str, patient_pseudonym: str | None = None,
           model_version: str | None = None, input_sha256: str | None = None,
           output: bytes | str | Mapping[str, Any] | Sequence[Any] | None = None,
           output_sha256: str | None = None, summary: str | None = None) -> AuditEntry:
    """Add one entry at the end of the chain and flush it; the caller commits.

    Commit soon: the append lock is held until the transaction ends, which
    also makes the audit entry atomic with the change it records.

    Args:
        user: who acted (a username, or e.g. ``cli:root`` for the command line).
        action: what happened, dotted (``study.upload``, ``result.view``, ``user.create``).
        patient_pseudonym: the patient concerned, by pseudonym only.
        model_version: ``name:version`` of the model used, if any.
        input_sha256: SHA-256 of the input (the plaintext upload).
        output: the output, stored only as its SHA-256 (see :func:`output_digest`);
            or give ``output_sha256`` directly.
        summary: a short outcome ("decision=positive"); no identifiers.
    """
    user_ = _check_text("user", user, required=True)
    action_ = _check_text("action", action, required=True)
    pseudonym = _check_text("patient_pseudonym", patient_pseudonym)
    version = _check_text("model_version", model_version)
    summary_ = _check_text("summary", summary)
    input_digest = _check_digest("input_sha256", input_sha256)
    if output is not None and output_sha256 is not None:
        raise ConfigError("give output or output_sha256, not both", field="output")
    out_digest = _check_digest("output_sha256", output_sha256) if output is None else output_digest(output)

    _lock_chain(session)
    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash, AuditEntry.ts).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    sequence = 1 if last is None else last.id + 1
    prev_hash = GENESIS_HASH if last is None else last.hash
    ts = utcnow()
    if last is not None and last.ts > ts:  # clock stepped back: keep the log's time order
        ts = last.ts
    entry = AuditEntry(id=sequence, ts=ts, user=user_, action=action_, patient_pseudonym=pseudonym,
                       model_version=version, input_sha256=input_digest, output_sha256=out_digest,
                       summary=summary_, prev_hash=prev_hash)
    entry.hash = entry_hash(id=sequence, ts=ts, user=user_, action=action_, patient_pseudonym=pseudonym,
                            model_version=version, input_sha256=input_digest, output_sha256=out_digest,
                            summary=summary_, prev_hash=prev_hash)
    session.add(entry)
    session.flush()
    return entry


def verify(session: Session) -> VerifyResult:
    """Walk the whole chain and report every entry that was altered, deleted or reordered.

    Reads table rows directly (not cached ORM objects), in batches.
    """
    table = AuditEntry.__table__
    problems: list[str] = []
    expected_id = 1
    prev_hash = GENESIS_HASH
    prev_id: int | None = None
    prev_ts: datetime | None = None
    count = 0
    result = session.execute(select(table).order_by(table.c.id).execution_options(yield_per=1000))
    for row in result:
        count += 1
        if row.id > expected_id:
            missing = f"entry {expected_id}" if row.id == expected_id + 1 else f"entries {expected_id}-{row.id - 1}"
            problems.append(f"entry {row.id}: {missing} missing before it (deleted?)")
        elif row.id < expected_id:  # cannot happen with a primary key, but never loop silently
            problems.append(f"entry {row.id}: out of sequence")
        ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
        if row.prev_hash != prev_hash:
            after = f"entry {prev_id}" if prev_id is not None else "the chain start"
            problems.append(f"entry {row.id}: prev_hash does not match {after} (deleted, inserted or reordered)")
        if prev_ts is not None and ts < prev_ts:
            problems.append(f"entry {row.id}: timestamp earlier than entry {prev_id} (reordered)")
        expected = entry_hash(id=row.id, ts=ts, user=row.username, action=row.action,
                              patient_pseudonym=row.patient_pseudonym, model_version=row.model_version,
                              input_sha256=row.input_sha256, output_sha256=row.output_sha256,
                              summary=row.summary, prev_hash=row.prev_hash)
        if expected != row.hash:
            problems.append(f"entry {row.id}: content does not match its hash (altered)")
        expected_id = max(expected_id, row.id) + 1
        prev_hash, prev_id, prev_ts = row.hash, row.id, ts
    return VerifyResult(ok=not problems, entries=count, problems=problems,
                        head_hash=prev_hash if count else None)


def tail(session: Session, n: int = 20) -> list[AuditEntry]:
    """The last ``n`` entries, oldest first."""
    if n <= 0:
        return []
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(n)).all()
    return list(reversed(rows))
