"""Storage layer of the clinician service: database, encryption at rest, blobs, audit log, accounts,
drift monitors.

Needs the ``serve`` extra (SQLAlchemy, Alembic, psycopg, cryptography, argon2-cffi).

Typical start-up::

    from meddx.storage import BlobStore, Encryptor, open_database

    engine, Session = open_database()          # MEDDX_DATABASE_URL or $MEDDX_HOME/meddx.db, migrated
    encryptor = Encryptor.from_config()        # MEDDX_ENCRYPTION_KEY or $MEDDX_HOME/keys/storage.key
    blobs = BlobStore(encryptor=encryptor)     # $MEDDX_HOME/blobs, ciphertext only
"""

from __future__ import annotations

from meddx.storage import audit, drift, users
from meddx.storage.audit import VerifyResult
from meddx.storage.blobs import BlobNotFoundError, BlobStore
from meddx.storage.crypto import DecryptionError, Encryptor, rotate_key_file
from meddx.storage.db import (
    begin_write,
    database_url,
    make_engine,
    open_database,
    session_factory,
    upgrade,
)
from meddx.storage.models import (
    ROLES,
    AuditEntry,
    Base,
    DriftAlarm,
    DriftMonitorRecord,
    DriftPoint,
    Job,
    Patient,
    Result,
    Study,
    User,
    new_pseudonym,
    record_aad,
    safe_display_name,
    utcnow,
)
from meddx.storage.users import authenticate, create_user, set_password

__all__ = [
    "ROLES",
    "AuditEntry",
    "Base",
    "BlobNotFoundError",
    "BlobStore",
    "DecryptionError",
    "DriftAlarm",
    "DriftMonitorRecord",
    "DriftPoint",
    "Encryptor",
    "Job",
    "Patient",
    "Result",
    "Study",
    "User",
    "VerifyResult",
    "audit",
    "authenticate",
    "begin_write",
    "create_user",
    "database_url",
    "drift",
    "make_engine",
    "new_pseudonym",
    "open_database",
    "record_aad",
    "rotate_key_file",
    "safe_display_name",
    "session_factory",
    "set_password",
    "upgrade",
    "users",
    "utcnow",
]
