"""The clinician service: ``create_app()`` builds the FastAPI app, ``meddx serve`` runs it.

Routes: the REST API under ``/api`` (OpenAPI document at ``/api/openapi.json``,
interactive docs at ``/api/docs``) and the web page at ``/``. Defaults fit one
machine (SQLite in ``$MEDDX_HOME``, blobs on local disk, encrypted); set
``MEDDX_DATABASE_URL=postgresql://...`` for a shared database server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from meddx.service.context import ServiceContext, Settings

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment)."""
    from meddx import __version__
    from meddx.exceptions import MeddxError
    from meddx.service import api, drift, monitor, web

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
    app.include_router(api.router)
    app.include_router(web.router)
    app.include_router(monitor.router)
    app.include_router(drift.router)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(MeddxError)
    async def meddx_error(request: Request, exc: MeddxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", proxy_headers=False)
