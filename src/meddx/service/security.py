"""Authentication primitives: short-lived signed tokens, CSRF tokens, origin checks, login rate limits.

API clients use the OAuth2 password flow (``POST /api/auth/token``) and send
``Authorization: Bearer <token>``; the web page keeps the same token in an
HttpOnly, SameSite=Strict cookie. Tokens are HS256 JWTs that live 15 minutes and
carry the user's role and the id of a server-side login session (``sid``), which
:mod:`meddx.service.sessions` checks on every request so that logout and a
password change end them at once. CSRF tokens are derived from that session id
(:func:`csrf_token`), so they are bound to the session and change at every login.
The signing key comes from ``MEDDX_TOKEN_SECRET`` or a 0600 key file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import Path

TOKEN_MINUTES = 15
ALGORITHM = "HS256"
ROLES = ("clinician", "engineer", "admin")


def load_secret(path: Path) -> bytes:
    """The token signing key: ``MEDDX_TOKEN_SECRET`` or ``path`` (created 0600 on first use)."""
    env = os.environ.get("MEDDX_TOKEN_SECRET")
    if env:
        return env.encode()
    if path.is_file():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


@dataclass(frozen=True)
class TokenData:
    """A verified token: who, which role, until when, and its login session (empty for a token without one)."""

    username: str
    role: str
    expires: float
    session_id: str = ""


def issue_token(secret: bytes, username: str, role: str, minutes: int = TOKEN_MINUTES,
                session_id: str | None = None) -> str:
    """A signed token for ``username``; the service only accepts tokens naming a live ``session_id``."""
    import jwt

    now = int(time.time())
    claims: dict[str, object] = {"sub": username, "role": role, "iat": now, "exp": now + minutes * 60,
                                 "jti": secrets.token_hex(8)}
    if session_id:
        claims["sid"] = session_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(secret: bytes, token: str, *, verify_exp: bool = True) -> TokenData | None:
    """The token's claims, or None when it is invalid or (unless ``verify_exp=False``) expired."""
    import jwt

    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"],
                                                                            "verify_exp": verify_exp})
    except jwt.PyJWTError:
        return None
    if claims.get("role") not in ROLES:
        return None
    sid = claims.get("sid")
    return TokenData(str(claims["sub"]), str(claims["role"]), float(claims["exp"]),
                     sid if isinstance(sid, str) else "")


def login_key(client: str, username: str) -> str:
    """The rate-limit key of a login attempt: the client and the user name as the account lookup sees it.

    Stripped, NFKC-normalised and case-folded, so ``" Doc "``, ``"DOC"`` and ``"doc"`` share one budget
    (padding or re-casing the name must not buy more attempts).
    """
    name = unicodedata.normalize("NFKC", username or "").strip().casefold()
    return f"{client}|{name}"


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window, in memory, per process).

    Keys whose window has passed are dropped once more than ``max_keys`` are held, so
    a spray of made-up user names cannot grow the table without bound.
    """

    def __init__(self, limit: int = 5, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Record an attempt; False when the key is over its limit (the attempt is refused)."""
        now = time.monotonic()
        with self._lock:
            if len(self._events) > self.max_keys:
                self._events = {k: e for k, e in self._events.items() if e and e[-1] > now - self.window}
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def retry_after(self, key: str) -> int:
        with self._lock:
            events = self._events.get(key)
            if not events:
                return 0
            return max(1, int(events[0] + self.window - time.monotonic()) + 1)


def new_csrf_token() -> str:
    """A random token for the pre-login form (the login page has no session to bind one to)."""
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, session_id: str) -> str:
    """The CSRF token of a login session: an HMAC of its id, so it is bound to the session and a new login
    (a new session id) rotates it; nothing to store, and a token planted before login is worthless."""
    digest = hmac.new(secret, b"meddx-csrf|" + session_id.encode(), hashlib.sha256).digest()
    return digest[:24].hex()


def csrf_ok(expected: str | None, value: str | None) -> bool:
    """True when ``value`` equals ``expected`` (both present; constant-time)."""
    return bool(expected) and bool(value) and secrets.compare_digest(str(expected), str(value))


def same_origin(origin: str | None, host: str | None) -> bool:
    """False when a browser's ``Origin`` (or ``Referer``) names another site than the ``Host`` it sent to.

    No header at all passes (non-browser clients send none; CSRF tokens still apply); ``"null"``
    (sandboxed frames, some redirects) does not. Host and port are compared, not the scheme, so a
    TLS-terminating proxy that passes the ``Host`` header through works.
    """
    if origin is None:
        return True
    from urllib.parse import urlsplit

    try:
        seen = urlsplit(origin.strip())
        target = urlsplit("//" + (host or "").strip())
        default = {"http": 80, "https": 443}.get(seen.scheme)
        if default is None or not seen.hostname or not target.hostname:
            return False
        return (seen.hostname, seen.port or default) == (target.hostname, target.port or default)
    except ValueError:  # a malformed port
        return False
