"""Request-body limits, enforced while the body arrives, and authentication before an upload is read.

FastAPI parses a multipart body (spooling every file to disk) *before* any
route dependency runs, so without this middleware a 200 MiB upload is received
in full before it is refused with 413, and an anonymous one before its 401.
:class:`UploadLimits` sits in front of the app and, for each request:

1. on an upload route (``POST /api/studies``, ``/api/studies/batch``,
   ``/upload``), checks the caller's token (bearer or session cookie) and role
   first: an anonymous or non-clinical caller gets its 401/403 (the web form a
   redirect to the login page) without one byte of the body being read;
2. refuses a ``Content-Length`` above the route's limit with 413 at once;
3. counts the body as the app reads it and answers 413 the moment the count
   passes the limit (chunked uploads with no ``Content-Length`` included); the
   connection is then closed, so the rest is never read.

Limits: an upload route takes ``max_upload_mb`` plus :data:`FORM_OVERHEAD`
per file; a batch route (``/api/studies/batch``, the web form, which may carry
several files) takes :data:`BATCH_FACTOR` times that; any other route
``max_upload_mb``. The per-file limit is enforced again while each file is
copied (:func:`meddx.service.uploads.receive`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SINGLE_UPLOAD_PATHS = frozenset({"/api/studies"})
BATCH_UPLOAD_PATHS = frozenset({"/api/studies/batch", "/upload"})
UPLOAD_PATHS = SINGLE_UPLOAD_PATHS | BATCH_UPLOAD_PATHS
UPLOAD_ROLES = frozenset({"clinician", "admin"})
FORM_OVERHEAD = 1 << 20
"""Bytes allowed beyond the file itself: multipart framing and the other form fields."""
BATCH_FACTOR = 4
"""A request that may carry several files takes this many times the one-file limit."""
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyTooLarge(Exception):
    """Raised into the app when the request body passes its limit (the app's own answer is dropped)."""


def body_limit(settings: Any, path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    one_file = int(settings.max_upload_mb) << 20
    if path in SINGLE_UPLOAD_PATHS:
        return one_file + FORM_OVERHEAD
    if path in BATCH_UPLOAD_PATHS:
        return BATCH_FACTOR * (one_file + FORM_OVERHEAD)
    return one_file


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _token(scope: Scope) -> str | None:
    """The bearer token, else the session cookie, of the request."""
    from http.cookies import CookieError, SimpleCookie

    authorization = _header(scope, b"authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(_header(scope, b"cookie") or "")
    except CookieError:
        return None
    morsel = cookies.get(_session_cookie())
    return morsel.value if morsel is not None and morsel.value else None


def _session_cookie() -> str:
    try:
        from meddx.service.sessions import SESSION_COOKIE
    except ImportError:  # pragma: no cover - the service before login sessions
        return "meddx_session"
    return SESSION_COOKIE


def caller_refusal(ctx: Any, scope: Scope) -> tuple[int, str] | None:
    """(status, reason) if the request may not upload: no live session (401) or not a clinical role (403)."""
    raw = _token(scope)
    if not raw:
        return 401, "not authenticated: log in for a token"
    try:
        from meddx.service.sessions import identify
    except ImportError:  # pragma: no cover - the service before login sessions
        from meddx.service.security import read_token

        data, why = read_token(ctx.token_secret, raw), "unauthenticated"
    else:
        data, why = identify(ctx, raw)
    if data is None:
        if why == "one-time":
            return 403, "this account still has its one-time password: set your own first"
        return 401, "not authenticated (or the session has ended): log in again"
    if data.role not in UPLOAD_ROLES:
        return 403, f"uploading studies needs the role {' or '.join(sorted(UPLOAD_ROLES))}"
    return None


async def _answer(send: Send, status: int, detail: str, *, location: str | None = None) -> None:
    """A JSON answer that also closes the connection, so an unread body is never received."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if location is not None:
        headers.append((b"location", location.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadLimits:
    """ASGI middleware: authentication before an upload's body, and body limits while it arrives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in _BODYLESS:
            await self.app(scope, receive, send)
            return
        import anyio

        ctx = scope["app"].state.ctx
        path = scope.get("path", "")
        limit = body_limit(ctx.settings, path)
        if path in UPLOAD_PATHS:
            refusal = await anyio.to_thread.run_sync(caller_refusal, ctx, scope)
            if refusal is not None:
                status, reason = refusal
                if not path.startswith("/api/"):  # the web form: to the login page, as the route would
                    await _answer(send, 303, reason, location="/login")
                else:
                    await _answer(send, status, reason)
                return
        too_large = f"the request body is larger than the {limit >> 20} MiB limit for {path}"
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await _answer(send, 413, too_large)
                return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(too_large)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(too_large)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the aborted body (a 400 parse error, say) is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _answer(send, 413, too_large)


__all__ = ["BATCH_UPLOAD_PATHS", "SINGLE_UPLOAD_PATHS", "UPLOAD_PATHS", "BodyTooLarge", "UploadLimits",
           "body_limit", "caller_refusal"]
