"""Accounts: argon2id password hashes, one-time passwords, login with lockout, login sessions.

There is no default account and no default password: the first admin is made
with ``meddx users create NAME --admin``, which prints a random one-time
password once (the account must change it at first login). Passwords are never
logged, printed back or stored; only argon2id hashes are. A password must have
12 characters, must not be a common or breached one or a trivial pattern
(``aaaaaaaaaaaa``, ``123456789012``), and must differ from the current one.

Every login opens a :class:`~meddx.storage.models.LoginSession`; setting or
resetting a password, or disabling the account, ends the account's sessions.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from meddx.exceptions import ConfigError
from meddx.storage.db import begin_write
from meddx.storage.models import ROLES, LoginSession, User, utcnow

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" is a denial of service
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")

# argon2-cffi's default is argon2id with the RFC 9106 low-memory profile (t=3, 64 MiB, p=4).
_HASHER = PasswordHasher()
_DUMMY: dict[tuple[int, int, int], str] = {}


class PasswordPolicyError(ConfigError):
    """The password does not meet the policy (length, not common or trivial, not the username, not the current)."""


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
    """Raise PasswordPolicyError unless ``password`` has 12 to 1024 characters, is not the username, and is
    neither a common or breached password nor a trivial pattern (see :func:`trivial_password`)."""
    if not isinstance(password, str):
        raise PasswordPolicyError("password must be text", field="password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters", field="password",
                                  hint="a passphrase of four or more words is easy to remember")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters", field="password")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("password must not contain the username", field="password")
    reason = trivial_password(password)
    if reason:
        raise PasswordPolicyError(f"password too easy to guess: {reason}", field="password",
                                  hint="a passphrase of four or more unrelated words is easy to remember")


# Character orders people type as "patterns": digits (with 0 after 9, as on a keyboard), the alphabet,
# the keyboard's letter rows and its diagonal columns.
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm",
              "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p")
_MIN_DISTINCT = 5


def trivial_password(password: str) -> str | None:
    """Why ``password`` is trivially guessable, or None.

    Refused: a common or breached password (Django's list of the 20,000 most
    common, see :mod:`meddx.storage._common_passwords`), such a word padded with
    digits or symbols (``monkey123456``), fewer than 5 different characters
    (``aaaaaaaaaaaa``), a repeated block (``qwertyqwerty``) and a run along the
    digits, the alphabet or the keyboard (``123456789012``, ``qwertyuiopas``).
    Case and Unicode width do not matter.
    """
    from meddx.storage._common_passwords import LONG, WORDS

    text = unicodedata.normalize("NFKC", password).casefold()
    if text in LONG or text.strip() in LONG:
        return "it is on a list of common and breached passwords"
    core = text.strip("0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    if core in WORDS or core in LONG:
        return f"a common password ({core!r}) with digits or symbols added"
    if len(set(text)) < _MIN_DISTINCT:
        return f"fewer than {_MIN_DISTINCT} different characters"
    if text in (text + text)[1:-1]:
        return "one block of characters repeated"
    for order in _SEQUENCES:
        cycle = order * (len(text) // len(order) + 2)
        if text in cycle or text in cycle[::-1]:
            return "a run of neighbouring keys or consecutive characters"
    return None


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


def set_password(session: Session, user: User, password: str, *, must_change: bool = False,
                 keep_session: str | None = None) -> None:
    """Replace the password (after the policy check) and end the account's login sessions.

    The new password must differ from the current one (a one-time password an
    admin saw must not stay valid). Every login session of the account ends except
    ``keep_session`` (the one making the change), so a stolen token or an
    unattended browser stops working. Clears failed logins and any lockout.
    """
    begin_write(session, User.__tablename__)  # SQLite: read the current hash and write the new one in one lock
    check_password_policy(password, user.username)
    if _verify(user.password_hash, password):
        raise PasswordPolicyError("the new password must differ from the current one", field="new_password",
                                  hint="choose a password you have not used on this account")
    user.password_hash = hash_password(password)
    user.must_change_password = must_change
    user.failed_logins = 0
    user.locked_until = None
    end_login_sessions(session, user, keep=keep_session)
    session.flush()


def reset_password(session: Session, user: User) -> str:
    """Give the account a new one-time password (returned, to show once); it must be changed at login.
    Every login session of the account ends."""
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    end_login_sessions(session, user)
    session.flush()
    return password


def set_active(session: Session, username: str, active: bool) -> User:
    """Enable or disable an account (disabled accounts cannot log in; nothing is deleted)."""
    begin_write(session, User.__tablename__)
    user = get_user(session, username)
    if user is None:
        raise UnknownUserError(f"no user {username!r}", field="username", hint="see `meddx users list`")
    user.active = active
    if not active:
        end_login_sessions(session, user)
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


# --- login sessions ------------------------------------------------------------------------------------------


def _session_key(session_id: str) -> str:
    """The stored key of a session id (its SHA-256): a database reader learns no usable id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_login_session(session: Session, user: User, lifetime: timedelta, *, now: datetime | None = None) -> str:
    """Start a login session for ``user`` that lasts ``lifetime``; return its random id (for the token).

    Sessions that expired more than a day ago are deleted on the way (the
    table holds about one row per login of the last day). Flushed, not committed.
    """
    begin_write(session, LoginSession.__tablename__)  # SQLite: the lock before the user row is (re)read
    now = now or utcnow()
    session_id = secrets.token_urlsafe(24)
    session.execute(delete(LoginSession).where(LoginSession.expires_at < now - timedelta(days=1)))
    session.add(LoginSession(id=_session_key(session_id), user_id=user.id, created_at=now, expires_at=now + lifetime,
                             ended_at=None))
    session.flush()
    return session_id


def login_session_active(session: Session, session_id: str, user: User, *, now: datetime | None = None) -> bool:
    """True while ``session_id`` is a session of ``user`` that has neither ended nor expired."""
    if not session_id:
        return False
    row = session.get(LoginSession, _session_key(session_id))
    now = now or utcnow()
    return row is not None and row.user_id == user.id and row.ended_at is None and row.expires_at > now


def end_login_session(session: Session, session_id: str) -> bool:
    """End one login session (logout); False when there was no live one. Flushed, not committed."""
    result = session.execute(update(LoginSession).where(LoginSession.id == _session_key(session_id),
                                                        LoginSession.ended_at.is_(None)).values(ended_at=utcnow()))
    return bool(result.rowcount)


def end_login_sessions(session: Session, user: User, *, keep: str | None = None) -> int:
    """End every live login session of ``user`` except ``keep``; return how many ended."""
    query = update(LoginSession).where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
    if keep:
        query = query.where(LoginSession.id != _session_key(keep))
    return int(session.execute(query.values(ended_at=utcnow())).rowcount or 0)
