"""The service's tables as SQLAlchemy 2.0 typed ORM classes.

What is deliberately *not* here: original patient identifiers (a patient is a
random pseudonym), original upload file names (only a sanitised display name),
and any plaintext prediction or upload (predictions, job results and blobs are
AES-GCM ciphertext, see :mod:`meddx.storage.crypto`). The schema itself is
created by the Alembic migrations, which a test keeps identical to these
classes.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

if TYPE_CHECKING:
    from meddx.storage.crypto import Encryptor

ROLES = ("clinician", "engineer", "admin")
JOB_STATUSES = ("queued", "running", "done", "failed")

# Constraint names are fixed by convention so the migration can name them identically.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, microsecond precision (what the database keeps)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite has no time zones and would hand back naive datetimes; comparing them
    with aware ones (lockout expiry) would raise. Naive input is refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one (e.g. meddx.storage.models.utcnow())")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def record_aad(kind: str, record_id: object) -> bytes:
    """Associated data binding a ciphertext to one field of one record (no swapping between rows)."""
    return f"meddx/{kind}/{record_id}".encode()


class User(Base):
    """A person who logs in: clinician (uploads, reads results), engineer (models), admin (accounts)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('clinician', 'engineer', 'admin')", name="role"),
                      CheckConstraint("failed_logins >= 0", name="failed_logins"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def is_locked(self, now: datetime | None = None) -> bool:
        """True while a lockout after too many failed logins lasts."""
        return self.locked_until is not None and self.locked_until > (now or utcnow())

    def __repr__(self) -> str:  # never the password hash
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r}, active={self.active!r})"


def new_pseudonym() -> str:
    """A random patient pseudonym (``pt-`` and 24 hex digits); never derived from an identifier."""
    return f"pt-{secrets.token_hex(12)}"


class Patient(Base):
    """A patient, known to the service only by a pseudonym."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True, default=new_pseudonym)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


_EXTENSION = re.compile(r"\.[a-z0-9]{1,8}")
_COMPRESSED = {".gz", ".bz2", ".xz", ".zst"}


def safe_display_name(original_filename: str | None, label: str) -> str:
    """A display name that keeps only ``label`` and the file's extension.

    Upload names often carry patient names or record numbers
    ("SMITH_John_1957.dcm"); they are never stored. ``safe_display_name(name,
    "ct-3f2a")`` gives ``"ct-3f2a.dcm"`` (``.nii.gz`` style double extensions
    kept, anything odd dropped).
    """
    clean_label = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:64] or "upload"
    base = (original_filename or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
    suffixes = PurePosixPath(base).suffixes if base not in {"", ".", ".."} else []
    extension = ""
    if suffixes and _EXTENSION.fullmatch(suffixes[-1]):
        extension = suffixes[-1]
        if extension in _COMPRESSED and len(suffixes) > 1 and _EXTENSION.fullmatch(suffixes[-2]):
            extension = suffixes[-2] + extension
    return f"{clean_label}{extension}"


class Study(Base):
    """One upload (an image, a signal, a record) for a patient; the bytes are an encrypted blob."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint("size >= 0", name="size"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modality: Mapped[str] = mapped_column(String(32))
    content_type: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))  # of the plaintext upload, for the audit trail
    size: Mapped[int] = mapped_column(BigInteger)  # plaintext bytes
    blob_id: Mapped[str] = mapped_column(String(128))  # BlobStore id of the encrypted upload
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)  # see safe_display_name

    patient: Mapped[Patient] = relationship(back_populates="studies")
    uploader: Mapped[User] = relationship()
    results: Mapped[list[Result]] = relationship(back_populates="study", passive_deletes=True)


class Result(Base):
    """A model's output for a study: encrypted prediction JSON, the decision, an encrypted overlay."""

    __tablename__ = "results"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    prediction: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM of the prediction JSON
    decision: Mapped[str] = mapped_column(String(64))  # e.g. "positive", "negative", "abstain"
    overlay_blob_id: Mapped[str | None] = mapped_column(String(128), nullable=True)

    study: Mapped[Study] = relationship(back_populates="results")

    def set_prediction(self, encryptor: Encryptor, prediction: Any) -> None:
        """Encrypt ``prediction`` (JSON-serialisable) into :attr:`prediction`, bound to this row's id."""
        if self.id is None:
            self.id = uuid.uuid4()
        self.prediction = encryptor.encrypt(_dump_json(prediction), record_aad("result.prediction", self.id))

    def get_prediction(self, encryptor: Encryptor) -> Any:
        """Decrypt :attr:`prediction`; raises DecryptionError if it was altered or moved to another row."""
        return json.loads(encryptor.decrypt(self.prediction, record_aad("result.prediction", self.id)))


class Job(Base):
    """A background task (prediction, report) that a client polls: status, progress, encrypted result."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
                      CheckConstraint("progress >= 0 AND progress <= 1", name="progress"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # AES-GCM of the result JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    owner: Mapped[User] = relationship()

    def set_result(self, encryptor: Encryptor, result: Any) -> None:
        """Encrypt ``result`` (JSON-serialisable) into :attr:`result`, bound to this job's id."""
        if self.id is None:
            self.id = uuid.uuid4()
        self.result = encryptor.encrypt(_dump_json(result), record_aad("job.result", self.id))

    def get_result(self, encryptor: Encryptor) -> Any:
        """Decrypt :attr:`result` (None when there is none yet)."""
        if self.result is None:
            return None
        return json.loads(encryptor.decrypt(self.result, record_aad("job.result", self.id)))


class AuditEntry(Base):
    """One line of the append-only, hash-chained audit log (see :mod:`meddx.storage.audit`).

    ``id`` is the chain's sequence number (1, 2, 3, ... without gaps), assigned
    under a lock by :func:`meddx.storage.audit.append`, so a deleted row shows as
    a gap. Database triggers reject UPDATE and DELETE.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user: Mapped[str] = mapped_column("username", String(64))  # "user" is reserved in PostgreSQL
    action: Mapped[str] = mapped_column(String(64))
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    model_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[str | None] = mapped_column(String(255), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC-SHA256 of the hash under the audit key kept outside the database (meddx.storage.audit);
    # NULL only for entries written before migration 0003 anchored the chain
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def __repr__(self) -> str:
        return f"AuditEntry(id={self.id!r}, user={self.user!r}, action={self.action!r}, hash={self.hash[:12]!r})"


class CareTeam(Base):
    """A care team or department an admin configures: its members see each other's studies."""

    __tablename__ = "care_teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[CareTeamMember]] = relationship(back_populates="team", passive_deletes=True)


class CareTeamMember(Base):
    """One account's membership of one care team (managed by admins only)."""

    __tablename__ = "care_team_members"

    team_id: Mapped[int] = mapped_column(ForeignKey("care_teams.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    team: Mapped[CareTeam] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class BreakGlassGrant(Base):
    """An emergency access grant: one account reads studies outside its teams until ``expires_at``.

    ``patient_pseudonym`` limits it to one patient (None: every patient). The
    reason is AES-GCM ciphertext (people type names into free text); every use
    is an ``access.break_glass_use`` audit entry naming the grant.
    """

    __tablename__ = "break_glass"
    __table_args__ = (CheckConstraint("expires_at > created_at", name="window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM, record_aad("break_glass.reason", id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    user: Mapped[User] = relationship()


class DriftMonitorRecord(Base):
    """A served model's drift monitor (:class:`meddx.trust.drift.DriftMonitor`), kept across restarts.

    ``state`` is the monitor's ``to_dict()`` as JSON (thresholds, CUSUM, recent window);
    ``studies`` and ``rejected`` count every study since the monitor was made, rejected
    inputs included, and are never reset (the monitor's own ``n`` restarts on a reset).
    No patient data: flags and scores only.
    """

    __tablename__ = "drift_monitors"
    __table_args__ = (UniqueConstraint("model_name", "model_version", name="uq_drift_monitors_model"),
                      CheckConstraint("studies >= 0 AND rejected >= 0", name="counts"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    state: Mapped[str] = mapped_column(Text)  # DriftMonitor.to_dict() as JSON
    studies: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    alarm: Mapped[bool] = mapped_column(Boolean, default=False)  # an unacknowledged alarm is open

    points: Mapped[list[DriftPoint]] = relationship(back_populates="monitor", passive_deletes=True)
    alarms: Mapped[list[DriftAlarm]] = relationship(back_populates="monitor", passive_deletes=True)


class DriftPoint(Base):
    """One study as the drift monitor saw it: the history the admin page draws."""

    __tablename__ = "drift_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("drift_monitors.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    study: Mapped[int] = mapped_column(Integer)  # the monitor's ``studies`` count after this one
    rejected: Mapped[bool] = mapped_column(Boolean, default=False)  # the input check refused it: no test fed
    flagged: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # the OOD gate's verdict
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # the model score the KS test reads
    cusum: Mapped[float | None] = mapped_column(Float, nullable=True)
    ks: Mapped[float | None] = mapped_column(Float, nullable=True)
    recent_flag_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    alarm: Mapped[bool] = mapped_column(Boolean, default=False)

    monitor: Mapped[DriftMonitorRecord] = relationship(back_populates="points")


class DriftAlarm(Base):
    """A drift alarm: when it fired, why, and who acknowledged it (which resets the monitor)."""

    __tablename__ = "drift_alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("drift_monitors.id", ondelete="CASCADE"), index=True)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    at_study: Mapped[int] = mapped_column(Integer)  # the monitor's ``studies`` count when it fired
    reason: Mapped[str] = mapped_column(Text)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    monitor: Mapped[DriftMonitorRecord] = relationship(back_populates="alarms")


class LoginSession(Base):
    """One login: every token names its session, and a request is refused once the session has ended.

    Logout ends one session; a password change ends every other session of the
    account; a reset or a disabled account ends them all (see
    :mod:`meddx.service.sessions`). ``id`` is the SHA-256 of the random session id
    the token carries, so a database reader learns no usable session id.
    """

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# The migration creates these triggers; the same DDL runs on metadata.create_all() so that
# schemas made without Alembic (quick experiments, other people's tests) are append-only too.
AUDIT_TRIGGER_DDL: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ),
    "postgresql": (
        "CREATE FUNCTION audit_log_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only (' || TG_OP || ' rejected)', "
        "ERRCODE = 'insufficient_privilege'; END $$",
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change()",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change()",
    ),
}

for _dialect, _statements in AUDIT_TRIGGER_DDL.items():
    for _statement in _statements:
        event.listen(AuditEntry.__table__, "after_create", DDL(_statement).execute_if(dialect=_dialect))
event.listen(AuditEntry.__table__, "before_drop",
             DDL("DROP FUNCTION IF EXISTS audit_log_reject_change() CASCADE").execute_if(dialect="postgresql"))
