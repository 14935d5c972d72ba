"""Authentication for the service: short-lived signed tokens, cookie sessions with CSRF, login rate limits.

API clients use the OAuth2 password flow (``POST /api/auth/token``) and send
``Authorization: Bearer <token>``; the web page keeps the same token in an
HttpOnly, SameSite=Strict cookie and protects its forms with a double-submit
CSRF token. Tokens are HS256 JWTs that live 15 minutes and carry the user's
role; the signing key comes from ``MEDDX_TOKEN_SECRET`` or a 0600 key file.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
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
    username: str
    role: str
    expires: float


def issue_token(secret: bytes, username: str, role: str, minutes: int = TOKEN_MINUTES) -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": username, "role": role, "iat": now, "exp": now + minutes * 60, "jti": secrets.token_hex(8)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(secret: bytes, token: str) -> TokenData | None:
    """The token's claims, or None when it is invalid or expired."""
    import jwt

    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]})
    except jwt.PyJWTError:
        return None
    if claims.get("role") not in ROLES:
        return None
    return TokenData(str(claims["sub"]), str(claims["role"]), float(claims["exp"]))


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window, in memory)."""

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Record an attempt; False when the key is over its limit (the attempt is refused)."""
        now = time.monotonic()
        with self._lock:
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
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, form_value: str | None) -> bool:
    return bool(cookie) and bool(form_value) and secrets.compare_digest(str(cookie), str(form_value))
