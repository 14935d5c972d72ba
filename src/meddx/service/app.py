"""The clinician service: ``create_app()`` builds the FastAPI app, ``meddx serve`` runs it.

Routes: the REST API under ``/api`` (OpenAPI document at ``/api/openapi.json``,
interactive docs at ``/api/docs``) and the web page at ``/``. Defaults fit one
machine (SQLite in ``$MEDDX_HOME``, blobs on local disk, encrypted); set
``MEDDX_DATABASE_URL=postgresql://...`` for a shared database server.

Every answer, errors and 500s included, carries the security headers and, unless
a route says otherwise, ``Cache-Control: no-store`` (results and patient lists
must not stay in a browser or proxy cache); the server sends no ``server`` banner.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meddx.service.context import ServiceContext, Settings

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: under no-referrer browsers send "Origin: null" with the page's own form
    # posts, which the CSRF origin check must refuse (meddx.service.sessions); other sites still get nothing
    "Referrer-Policy": "same-origin",
}
DEFAULT_CACHE_CONTROL = "no-store"


class SecurityHeaders:
    """ASGI middleware: the security headers and a default ``Cache-Control`` on every HTTP answer.

    An exception that escapes the app before it answered becomes a plain 500
    carrying the same headers (Starlette's own 500 page, added outside every
    middleware, would carry none); the exception is logged, never shown.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in {**SECURITY_HEADERS, "Cache-Control": DEFAULT_CACHE_CONTROL}.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logging.getLogger(__name__).exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"detail": "internal error: the service logged it"}, status_code=500)
            await response(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment)."""
    from meddx import __version__
    from meddx.exceptions import MeddxError
    from meddx.service import api, drift, monitor, web
    from meddx.service.limits import UploadLimits

    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for batcher in app.state.ctx.batchers.values():
            await batcher.close()
        app.state.ctx.engine.dispose()

    app = FastAPI(title="meddx", version=__version__, lifespan=lifespan, openapi_url="/api/openapi.json",
                  docs_url="/api/docs", redoc_url=None,
                  description="Calibrated, explained diagnoses with uncertainty and referral. "
                              "Decision support for qualified staff; not for primary diagnosis.")
    app.state.ctx = ServiceContext.build(settings)
    if settings.indexes:  # loaded once, checked against the served models: a mismatch stops the start-up
        from meddx.service.similar import load_indexes

        load_indexes(app.state.ctx)
    app.include_router(api.router)
    app.include_router(web.router)
    app.include_router(monitor.router)
    app.include_router(drift.router)
    # auth before an upload's body is read, 413 as soon as a body passes its limit (inside the
    # security-headers middleware, so these answers carry the headers too)
    app.add_middleware(UploadLimits)

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(MeddxError)
    async def meddx_error(request: Request, exc: MeddxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secure_cookies(host: str, settings: Settings) -> Settings:
    """``settings`` with ``cookie_secure`` on when serving beyond this machine, unless the operator set
    ``MEDDX_COOKIE_SECURE`` themselves (``0`` for plain HTTP on a trusted network: not recommended)."""
    if settings.cookie_secure or is_loopback(host) or os.environ.get("MEDDX_COOKIE_SECURE", "").strip():
        return settings
    return replace(settings, cookie_secure=True)


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the service with uvicorn (no ``server`` banner; secure cookies outside loopback)."""
    import uvicorn

    settings = secure_cookies(host, settings or Settings.from_env())
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", proxy_headers=False,
                server_header=False)
