"""Login sessions of the service: every token names one, every request checks it, logout ends it.

A login (``POST /api/auth/token`` or the web form) opens a
:class:`~meddx.storage.models.LoginSession` and issues a token carrying its id.
Each request then needs a valid signature *and* a live session of an active
account with the token's role, so:

- logout (``POST /logout``, ``POST /api/auth/logout``) ends that session: the
  cookie and the same token sent as a bearer stop working at once, on every
  worker (the check is in the database, not in memory);
- a password change ends every other session of the account, a reset or a
  disabled account all of them (:mod:`meddx.storage.users`).

CSRF: a state-changing ``/api`` call authenticated by the session cookie alone
must send ``X-CSRF-Token`` with the session's token (:func:`~meddx.service.security.csrf_token`,
the value of the page's ``csrf`` form fields) and no foreign ``Origin``; bearer
calls need neither (a browser never adds a bearer header on its own). Web forms
carry the same session-bound token; only the login form, which has no session
yet, uses a double-submit cookie, and the login rotates to a new session token.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, Request, status

from meddx.service.security import (
    TokenData,
    csrf_ok,
    csrf_token,
    issue_token,
    new_csrf_token,
    read_token,
    same_origin,
)

SESSION_COOKIE = "meddx_session"
PRE_LOGIN_CSRF_COOKIE = "meddx_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Why a token is refused, as :func:`identify` reports it, and what the caller is told.
_REFUSALS: dict[str, tuple[int, str]] = {
    "unauthenticated": (status.HTTP_401_UNAUTHORIZED, "not authenticated: log in for a token"),
    "account": (status.HTTP_401_UNAUTHORIZED, "the account is disabled or changed: log in again"),
    "ended": (status.HTTP_401_UNAUTHORIZED, "this session has ended (logged out, password changed or expired): "
                                            "log in again"),
    "one-time": (status.HTTP_403_FORBIDDEN, "this account still has its one-time password: set your own first "
                                            "(POST /api/me/password, or log in on the web page)"),
}


def start(ctx: Any, db: Any, user: Any) -> str:
    """Open a login session for ``user`` (a row of the open database session ``db``, committed here) and
    return its token."""
    from meddx.storage.users import open_login_session

    minutes = ctx.settings.token_minutes
    session_id = open_login_session(db, user, timedelta(minutes=minutes))
    db.commit()
    return issue_token(ctx.token_secret, user.username, user.role, minutes, session_id=session_id)


def identify(ctx: Any, raw: str | None, *, one_time_ok: bool = False) -> tuple[TokenData | None, str]:
    """(the caller, "") for a token of a live session of an active account; else (None, why) with ``why``
    one of ``unauthenticated``, ``account``, ``ended`` or ``one-time``."""
    from meddx.storage.models import User
    from meddx.storage.users import login_session_active

    data = read_token(ctx.token_secret, raw) if raw else None
    if data is None:
        return None, "unauthenticated"
    with ctx.sessions() as db:
        user = db.query(User).filter_by(username=data.username).one_or_none()
        if user is None or not user.active or user.role != data.role:
            return None, "account"
        if not login_session_active(db, data.session_id, user):
            return None, "ended"
        if user.must_change_password and not one_time_ok:
            return None, "one-time"
    return data, ""


def authenticate(ctx: Any, request: Request, raw: str | None, *, from_cookie: bool,
                 one_time_ok: bool = False) -> TokenData:
    """The caller of ``request`` from its token ``raw``; 401/403 otherwise.

    ``from_cookie``: the token came from the session cookie alone, so a
    state-changing call must also pass :func:`check_api_csrf`.
    """
    data, why = identify(ctx, raw, one_time_ok=one_time_ok)
    if data is None:
        code, detail = _REFUSALS[why]
        headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
        raise HTTPException(code, detail, headers=headers)
    if from_cookie and request.method not in SAFE_METHODS:
        check_api_csrf(ctx, request, data.session_id)
    return data


def from_this_site(request: Any) -> bool:
    """False when the browser says the request comes from another site (``Origin``, else ``Referer``)."""
    origin = request.headers.get("origin")
    if origin is None:
        origin = request.headers.get("referer")
    return same_origin(origin, request.headers.get("host"))


def check_api_csrf(ctx: Any, request: Request, session_id: str) -> None:
    """403 unless a cookie-authenticated ``/api`` call comes from this site with the session's CSRF token."""
    if not from_this_site(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused: the Origin is not this "
                                                       "service")
    if not csrf_ok(csrf_token(ctx.token_secret, session_id), request.headers.get(CSRF_HEADER)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header: a call made with "
                            "the session cookie must send the page's CSRF token in it (or use a bearer token)")


def cookie_session_id(ctx: Any, request: Any) -> str:
    """The session id in the request's session cookie (signature checked, expiry not), or ""."""
    raw = request.cookies.get(SESSION_COOKIE)
    data = read_token(ctx.token_secret, raw, verify_exp=False) if raw else None
    return data.session_id if data is not None else ""


def form_token(ctx: Any, request: Request) -> tuple[str, bool]:
    """(the CSRF token a page's forms carry, True when it is a pre-login token to set as a cookie).

    With a session cookie it is the session's token; without one (the login
    page) a double-submit cookie's value, new when there is none.
    """
    session_id = cookie_session_id(ctx, request)
    if session_id:
        return csrf_token(ctx.token_secret, session_id), False
    return request.cookies.get(PRE_LOGIN_CSRF_COOKIE) or new_csrf_token(), True


def check_form(ctx: Any, request: Request, value: str | None) -> None:
    """403 unless a posted form comes from this site and carries the token :func:`form_token` gave its page."""
    session_id = cookie_session_id(ctx, request)
    expected = csrf_token(ctx.token_secret, session_id) if session_id else request.cookies.get(PRE_LOGIN_CSRF_COOKIE)
    if not from_this_site(request) or not csrf_ok(expected, value):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form expired or came from another site: reload the page")


def end(ctx: Any, session_id: str) -> bool:
    """End one login session (logout); False when it had already ended or never existed."""
    from meddx.storage.users import end_login_session

    if not session_id:
        return False
    with ctx.sessions() as db:
        ended = end_login_session(db, session_id)
        db.commit()
    return ended


def failed_login_name(ctx: Any, db: Any, typed: str) -> str:
    """What the audit log records for a failed login: the account's name when one matches, else a keyed
    hash of the typed name (``unknown:<16 hex>``), so a password typed into the name field is never kept
    while repeated attempts on one name still show as one."""
    from meddx.storage.users import get_user

    account = get_user(db, typed) if isinstance(typed, str) else None
    if account is not None:
        return str(account.username)
    name = (typed if isinstance(typed, str) else "").strip().casefold()
    digest = hmac.new(ctx.token_secret, b"meddx-login-name|" + name.encode("utf-8", "replace"), hashlib.sha256)
    return f"unknown:{digest.hexdigest()[:16]}"
