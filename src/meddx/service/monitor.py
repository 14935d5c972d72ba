"""The live monitor: stream predictions and alerts in the API, over a WebSocket and on a web page.

``meddx stream run`` writes to its SQLite store (WAL); the service reads the same
file (``MEDDX_STREAM_STORE``, default ``$MEDDX_HOME/stream/stream.db``), so the
runner and the web service scale and restart independently. The page opens
``/ws/monitor`` (session cookie of a live login session, clinician or admin, from
this site only) and receives a snapshot - latest window per device, open and
recent alerts - once a second, until the session ends; a nurse acknowledges an
alert with one button (CSRF-checked form, audited). No answer names a server path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meddx.service import api, sessions

router = APIRouter()
PUSH_EVERY_S = 1.0
RECHECK_EVERY = 10  # pushes between checks that the socket's login session is still live


def store_path(request_or_ws: Any) -> Path:
    return api.ctx_of(request_or_ws).settings.stream_store


def snapshot(path: Path, *, devices: int = 200, alerts: int = 50) -> dict[str, Any]:
    """Latest window per device stream, open alerts and the most recent alerts (no store yet: empty).

    ``store`` says whether the runner's store exists ("connected" or "not started"), never where it is.
    """
    if not path.is_file():
        return {"devices": [], "open_alerts": [], "alerts": [], "counts": {}, "store": "not started"}
    from meddx.stream.store import StreamStore

    store = StreamStore(path)
    try:
        return {"devices": store.latest(devices), "open_alerts": store.alerts(state="open", limit=alerts),
                "alerts": store.alerts(limit=alerts), "counts": store.counts(), "store": "connected"}
    finally:
        store.close()


def acknowledge(path: Path, alert_id: int, by: str) -> bool:
    from meddx.stream.store import StreamStore

    if not path.is_file():
        return False
    store = StreamStore(path)
    try:
        with store.transaction():
            return store.acknowledge(alert_id, by)
    finally:
        store.close()


@router.get("/api/stream/monitor", tags=["stream"])
def monitor(request: Request, user: api.Clinical) -> dict[str, Any]:
    """Latest prediction per device and the alerts (what the live page shows)."""
    return snapshot(store_path(request))


@router.post("/api/stream/alerts/{alert_id}/ack", status_code=204, tags=["stream"])
def ack(alert_id: int, request: Request, user: api.Clinical) -> Response:
    """Acknowledge an alert (404 when it does not exist or was already acknowledged)."""
    if not 0 < alert_id < 2**62 or not acknowledge(store_path(request), alert_id, user.username):
        raise HTTPException(404, f"no unacknowledged alert {alert_id}")
    api.audit(api.ctx_of(request), user.username, "stream.alert_ack", summary=f"alert {alert_id}")
    return Response(status_code=204)


def _live(ctx: Any, raw: str | None) -> bool:
    """The cookie's token names a live session of an active clinician or admin with their own password."""
    data, _ = sessions.identify(ctx, raw)
    return data is not None and data.role in ("clinician", "admin")


@router.websocket("/ws/monitor")
async def monitor_socket(websocket: WebSocket) -> None:
    """Push a snapshot every second to a logged-in clinician (session cookie; this site's pages only).

    A foreign ``Origin`` is refused (4403: another site's page must not read the
    monitor with the user's cookie), a missing or ended session too (4401); the
    session is checked again every :data:`RECHECK_EVERY` pushes, so logout closes the socket.
    """
    ctx = api.ctx_of(websocket)
    if not sessions.from_this_site(websocket):
        await websocket.close(code=4403)
        return
    raw = websocket.cookies.get(api.COOKIE)
    if not await asyncio.to_thread(_live, ctx, raw):
        await websocket.close(code=4401)
        return
    await websocket.accept()
    path = store_path(websocket)
    try:
        pushes = 0
        while True:
            if pushes and pushes % RECHECK_EVERY == 0 and not await asyncio.to_thread(_live, ctx, raw):
                await websocket.close(code=4401)
                return
            body = await asyncio.to_thread(snapshot, path)
            await websocket.send_text(json.dumps(body))
            pushes += 1
            await asyncio.sleep(PUSH_EVERY_S)
    except (WebSocketDisconnect, RuntimeError):
        return


@router.get("/monitor", response_class=HTMLResponse, include_in_schema=False)
def monitor_page(request: Request) -> Response:
    from meddx.service import web

    user = web._clinical(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    return web.render(request, "monitor.html", user=user, data=snapshot(store_path(request)))


@router.post("/monitor/ack", include_in_schema=False)
def monitor_ack(request: Request, alert_id: Annotated[int, Form()], csrf: Annotated[str | None, Form()] = None
                ) -> Response:
    from meddx.service import web

    web._check_csrf(request, csrf)
    user = web._clinical(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if acknowledge(store_path(request), alert_id, user.username):
        api.audit(api.ctx_of(request), user.username, "stream.alert_ack", summary=f"alert {alert_id}")
    return RedirectResponse("/monitor", status_code=303)
