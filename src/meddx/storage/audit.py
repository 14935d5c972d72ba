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

A hash chain alone cannot stop someone with write access to the database:
they can edit an entry and recompute every later hash, or cut the newest
entries (a shorter chain is still valid). So the chain is *anchored* outside
the database (:class:`AuditAnchor`):

- every entry carries ``mac`` = HMAC-SHA256 of its hash under the audit key,
  a file in ``$MEDDX_HOME/keys/audit.key`` (0600, made on first use, never in
  the database): recomputed hashes without the key give wrong MACs;
- after each commit the new head (id, hash) is appended, with its own MAC, to
  a checkpoint file outside the database (``$MEDDX_HOME/audit/``, one file per
  database): a rewritten entry differs from its checkpoint, and a checkpoint
  beyond the database's last entry shows that the newest entries were deleted.

Entries written before migration 0003 have no MAC; :func:`verify` checks them by
the chain alone and says so (any rewrite reaching an anchored entry still shows).

Entries hold digests and short summaries only: never patient identifiers,
images or raw model outputs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select, text
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
    head_hash: str | None = None  # hash of the last entry
    notes: list[str] = field(default_factory=list)  # facts that are not problems (old unanchored entries)
    anchored: int = 0  # entries carrying a MAC


ENV_AUDIT_KEY = "MEDDX_AUDIT_KEY"
_KEY_BYTES = 32
_PENDING = "meddx_audit_checkpoints"
_log = logging.getLogger(__name__)


def _database_id(url: Any) -> str:
    """A stable name for one database (its URL without password; SQLite: the absolute file path)."""
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    return hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AuditAnchor:
    """The secret and the file that anchor one database's audit chain outside that database.

    ``key`` is None when no key exists yet (a database that was never written to
    with anchoring, or a host without the service's key file).
    """

    key: bytes | None
    key_path: Path
    checkpoints: Path

    @classmethod
    def for_url(cls, url: Any, *, home: Path | None = None, create: bool = True) -> AuditAnchor:
        """The anchor of the database at ``url``: key ``HOME/keys/audit.key`` (or ``MEDDX_AUDIT_KEY``, hex),
        checkpoints ``HOME/audit/checkpoints-<database id>.log``. ``create`` makes a missing key (0600)."""
        from meddx.config import home_dir

        home = home or home_dir()
        key_path = home / "keys" / "audit.key"
        checkpoints = home / "audit" / f"checkpoints-{_database_id(url)}.log"
        env = os.environ.get(ENV_AUDIT_KEY, "").strip()
        if env:
            try:
                key = bytes.fromhex(env)
            except ValueError:
                raise ConfigError("not hex", field=ENV_AUDIT_KEY,
                                  hint="64 hex digits, e.g. from `python -c 'import secrets; "
                                       "print(secrets.token_hex(32))'`") from None
            if len(key) < 16:
                raise ConfigError("shorter than 16 bytes", field=ENV_AUDIT_KEY, hint="use 32 random bytes (64 hex)")
            return cls(key, key_path, checkpoints)
        return cls(_load_key(key_path, create=create), key_path, checkpoints)

    def mac(self, kind: str, entry_id: int, entry_hash_: str) -> str:
        """HMAC-SHA256 (hex) of ``kind:id:hash`` under the key."""
        if self.key is None:
            raise ConfigError("no audit key", field="audit key", hint=f"create it by appending, or copy "
                                                                       f"{self.key_path} from the service's home")
        return hmac.new(self.key, f"meddx-audit-{kind}:{entry_id}:{entry_hash_}".encode(), hashlib.sha256).hexdigest()

    def write_checkpoint(self, entry_id: int, entry_hash_: str) -> None:
        """Append one signed checkpoint line (id, hash, MAC) to the checkpoint file (0600, append-only use)."""
        line = json.dumps({"id": entry_id, "hash": entry_hash_, "mac": self.mac("checkpoint", entry_id, entry_hash_)},
                          separators=(",", ":")) + "\n"
        self.checkpoints.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.checkpoints, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one write() of a short line: concurrent writers do not interleave
        finally:
            os.close(fd)

    def read_checkpoints(self) -> tuple[dict[int, str], list[str]]:
        """Checkpointed ``{id: hash}`` and the problems found reading the file (bad lines, forged MACs)."""
        found: dict[int, str] = {}
        problems: list[str] = []
        if not self.checkpoints.is_file():
            return found, problems
        with open(self.checkpoints, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    record = json.loads(line)
                    entry_id, digest, mac = int(record["id"]), str(record["hash"]), str(record["mac"])
                except (ValueError, KeyError, TypeError):
                    problems.append(f"checkpoint line {number}: unreadable (the checkpoint file was edited)")
                    continue
                if self.key is None or not hmac.compare_digest(mac, self.mac("checkpoint", entry_id, digest)):
                    problems.append(f"checkpoint line {number}: its MAC does not match the audit key (forged)")
                    continue
                if found.get(entry_id, digest) != digest:
                    problems.append(f"checkpoint line {number}: entry {entry_id} checkpointed with two hashes")
                found[entry_id] = digest
        return found, problems


def _load_key(path: Path, *, create: bool) -> bytes | None:
    """The audit key from ``path``; made (32 random bytes, 0600, folder 0700) when missing and ``create``."""
    if path.is_file():
        key = path.read_bytes()
        if len(key) < 16:
            raise ConfigError(f"{path} holds {len(key)} bytes", field="audit key",
                              hint="restore the key file from a backup (a new key makes old MACs fail)")
        return key
    if not create:
        return None
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


_ANCHORS: dict[tuple[str, str, str], AuditAnchor] = {}
_BOUND: weakref.WeakKeyDictionary[Engine, AuditAnchor] = weakref.WeakKeyDictionary()


def bind_anchor(engine: Engine, anchor: AuditAnchor) -> None:
    """Make every session on ``engine`` use ``anchor`` (the service binds its own home's key at start-up,
    whatever ``$MEDDX_HOME`` says later)."""
    _BOUND[engine] = anchor


def anchor_for(session: Session, *, create: bool = True) -> AuditAnchor:
    """The anchor bound to the session's engine, else the one under the current ``$MEDDX_HOME``
    (cached once it has a key)."""
    from meddx.config import home_dir

    engine = session.get_bind().engine
    bound = _BOUND.get(engine)
    if bound is not None:
        return bound
    url = engine.url
    cache_key = (str(home_dir()), url.render_as_string(hide_password=True), os.environ.get(ENV_AUDIT_KEY, ""))
    anchor = _ANCHORS.get(cache_key)
    if anchor is None or anchor.key is None:
        anchor = AuditAnchor.for_url(url, create=create)
        if anchor.key is not None:
            _ANCHORS[cache_key] = anchor
    return anchor


@event.listens_for(Session, "after_commit")
def _write_checkpoints(session: Session) -> None:
    """After a commit that appended entries, checkpoint the newest one outside the database."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    anchor, entry_id, digest = max(pending, key=lambda item: item[1])
    try:
        anchor.write_checkpoint(entry_id, digest)
    except OSError:  # the entry is committed; a missing checkpoint only weakens the tail check
        _log.exception("could not write the audit checkpoint to %s", anchor.checkpoints)


@event.listens_for(Session, "after_rollback")
def _drop_checkpoints(session: Session) -> None:
    session.info.pop(_PENDING, None)


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
    anchor = anchor_for(session)
    entry.mac = anchor.mac("entry", sequence, entry.hash)
    session.add(entry)
    session.flush()
    session.info.setdefault(_PENDING, []).append((anchor, sequence, entry.hash))
    return entry


def verify(session: Session, anchor: AuditAnchor | None = None) -> VerifyResult:
    """Walk the whole chain and report every entry that was altered, deleted or reordered.

    Besides the chain, checks each entry's MAC and the checkpoints against
    ``anchor`` (default: :func:`anchor_for` the session, never creating a key),
    so a chain rewritten with recomputed hashes, or cut at its newest end, is
    reported too. Reads table rows directly (not cached ORM objects), in batches.
    """
    anchor = anchor or anchor_for(session, create=False)
    checkpoints, problems = anchor.read_checkpoints()
    first_checkpoint = min(checkpoints) if checkpoints else None
    legacy: list[int] = []
    anchored = 0
    table = AuditEntry.__table__
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
        if row.mac is None:
            if anchored or (first_checkpoint is not None and row.id >= first_checkpoint):
                problems.append(f"entry {row.id}: no MAC although the chain is anchored before it (rewritten)")
            else:
                legacy.append(row.id)
        elif anchor.key is None:
            if not anchored:
                problems.append(f"entry {row.id}: carries a MAC but the audit key {anchor.key_path} is missing: "
                                f"verify on the service's host (its MEDDX_HOME), or restore the key file")
            anchored += 1
        else:
            anchored += 1
            if not hmac.compare_digest(row.mac, anchor.mac("entry", row.id, row.hash)):
                problems.append(f"entry {row.id}: MAC does not match the audit key (rewritten without the key)")
        checkpointed = checkpoints.pop(row.id, None)
        if checkpointed is not None and checkpointed != row.hash:
            problems.append(f"entry {row.id}: differs from the checkpoint written when it was committed (rewritten)")
        expected_id = max(expected_id, row.id) + 1
        prev_hash, prev_id, prev_ts = row.hash, row.id, ts
    last_id = expected_id - 1
    for entry_id in sorted(i for i in checkpoints if i <= last_id):
        problems.append(f"entry {entry_id} was checkpointed but is missing (deleted)")
    beyond = [i for i in checkpoints if i > last_id]
    if beyond:
        problems.append(f"entry {max(beyond)} was checkpointed but the log ends at entry {last_id}: "
                        f"the newest entries were deleted")
    if anchored and anchor.key is not None and not anchor.checkpoints.is_file():
        problems.append(f"the checkpoint file {anchor.checkpoints} is missing: deletion of the newest entries "
                        f"cannot be ruled out (restore it from a backup)")
    notes = []
    if legacy:
        span = f"entry {legacy[0]}" if len(legacy) == 1 else f"entries {legacy[0]}-{legacy[-1]}"
        notes.append(f"{span} predate the audit anchor (written before migration 0003): checked by the hash "
                     f"chain only; any rewrite reaching a later, anchored entry still shows")
    return VerifyResult(ok=not problems, entries=count, problems=problems,
                        head_hash=prev_hash if count else None, notes=notes, anchored=anchored)


def tail(session: Session, n: int = 20) -> list[AuditEntry]:
    """The last ``n`` entries, oldest first."""
    if n <= 0:
        return []
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(n)).all()
    return list(reversed(rows))
