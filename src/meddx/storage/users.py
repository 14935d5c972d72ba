"""Accounts: argon2id password hashes, one-time passwords, login with lockout.

There is no default account and no default password: the first admin is made
with ``meddx users create NAME --admin``, which prints a random one-time
password once (the account must change it at first login). Passwords are never
logged, printed back or stored; only argon2id hashes are.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from meddx.exceptions import ConfigError
from meddx.storage.db import begin_write
from meddx.storage.models import ROLES, User, utcnow

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" is a denial of service
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")

# argon2-cffi's default is argon2id with the RFC 9106 low-memory profile (t=3, 64 MiB, p=4).
_HASHER = PasswordHasher()
_DUMMY: dict[tuple[int, int, int], str] = {}


class PasswordPolicyError(ConfigError):
    """The password does not meet the policy (length, not the username)."""


class UserExistsError(ConfigError):
    """An account with this username already exists."""


class UnknownUserError(ConfigError, LookupError):
    """No account with this username."""


def password_hasher() -> PasswordHasher:
    """The argon2id hasher in use (tests swap in a cheap one via ``meddx.storage.users._HASHER``)."""
    return _HASHER


def normalise_username(username: str) -> str:
    """Usernames are case-insensitive: stripped and lower-cased; 2-64 of ``a-z 0-9 . _ @ -``."""
    name = (username or "").strip().lower()
    if not _USERNAME.fullmatch(name):
        raise ConfigError(f"bad username {username!r}: use 2-64 of a-z, 0-9, '.', '_', '@', '-', "
                          "starting with a letter or digit", field="username")
    return name


def check_password_policy(password: str, username: str | None = None) -> None:
    """Raise PasswordPolicyError unless ``password`` has 12 to 1024 characters and is not the username."""
    if not isinstance(password, str):
        raise PasswordPolicyError("password must be text", field="password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters", field="password",
                                  hint="a passphrase of four or more words is easy to remember")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters", field="password")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("password must not contain the username", field="password")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string, salt and parameters included) of ``password``."""
    return password_hasher().hash(password)


def _dummy_hash() -> str:
    hasher = password_hasher()
    key = (hasher.time_cost, hasher.memory_cost, hasher.parallelism)
    if key not in _DUMMY:
        _DUMMY[key] = hasher.hash(secrets.token_urlsafe(16))
    return _DUMMY[key]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return password_hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    """A random 24-character one-time password (144 bits)."""
    return secrets.token_urlsafe(18)


def get_user(session: Session, username: str) -> User | None:
    """The account named ``username`` (case-insensitive), or None."""
    try:
        name = normalise_username(username)
    except ConfigError:
        return None
    return session.scalar(select(User).where(User.username == name))


def list_users(session: Session) -> list[User]:
    """All accounts, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(session: Session, username: str, role: str,
                password: str | None = None) -> tuple[User, str | None]:
    """Create an account; return it and the one-time password, if one was generated.

    Without ``password`` a random one-time password is generated, returned
    (show it once, never store it) and ``must_change_password`` is set. The
    session is flushed, not committed.
    """
    name = normalise_username(username)
    begin_write(session, User.__tablename__)  # SQLite: the uniqueness check and the insert in one write lock
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}", field="role")
    generated = None
    if password is None:
        generated = password = one_time_password()
    else:
        check_password_policy(password, name)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UserExistsError(f"user {name!r} already exists", field="username")
    user = User(username=name, role=role, password_hash=hash_password(password), active=True,
                must_change_password=generated is not None, failed_logins=0, locked_until=None,
                created_at=utcnow())
    session.add(user)
    session.flush()
    return user, generated


def set_password(session: Session, user: User, password: str, *, must_change: bool = False) -> None:
    """Replace the password (after the policy check); clears failed logins and any lockout."""
    check_password_policy(password, user.username)
    user.password_hash = hash_password(password)
    user.must_change_password = must_change
    user.failed_logins = 0
    user.locked_until = None
    session.flush()


def reset_password(session: Session, user: User) -> str:
    """Give the account a new one-time password (returned, to show once); it must be changed at login."""
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    return password


def set_active(session: Session, username: str, active: bool) -> User:
    """Enable or disable an account (disabled accounts cannot log in; nothing is deleted)."""
    begin_write(session, User.__tablename__)
    user = get_user(session, username)
    if user is None:
        raise UnknownUserError(f"no user {username!r}", field="username", hint="see `meddx users list`")
    user.active = active
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str, *, now: datetime | None = None,
                 commit: bool = True) -> User | None:
    """The account if ``username`` and ``password`` match an active, unlocked account; else None.

    Unknown users cost one argon2 verification of a dummy hash, so response
    time does not tell which usernames exist. Each wrong password counts; after
    5 in a row the account is locked for 15 minutes (attempts during the
    lockout are refused and not counted). The counter is committed by default
    (``commit=True``), so a caller that answers 401 and rolls back cannot undo it.
    Check ``user.must_change_password`` after a successful login.
    """
    now = now or utcnow()
    begin_write(session, User.__tablename__)  # SQLite: read-count-write without lost updates
    try:
        name = normalise_username(username)
    except ConfigError:
        name = None
    user = None
    if name is not None:
        user = session.scalars(select(User).where(User.username == name).with_for_update()
                               .execution_options(populate_existing=True)).first()
    if user is None or not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        _verify(_dummy_hash(), password if isinstance(password, str) else "")
        if commit:
            session.commit()
        return None

    ok = _verify(user.password_hash, password)
    if not user.active or user.is_locked(now):
        ok = False
    elif not ok:
        failures = user.failed_logins + 1
        if failures >= MAX_FAILED_LOGINS:
            user.failed_logins, user.locked_until = 0, now + LOCKOUT
        else:
            user.failed_logins = failures
    else:
        if user.failed_logins or user.locked_until is not None:
            user.failed_logins, user.locked_until = 0, None
        if password_hasher().check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
    session.flush()
    if commit:
        session.commit()
    return user if ok else None


def unlock(session: Session, username: str) -> User:
    """End a lockout now and reset the failed-login counter."""
    begin_write(session, User.__tablename__)
    user = get_user(session, username)
    if user is None:
        raise UnknownUserError(f"no user {username!r}", field="username")
    user.failed_logins, user.locked_until = 0, None
    session.flush()
    return user
