"""The live monitor: API snapshot, acknowledgement (audited), WebSocket push and the page."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from meddx.stream.alerts import AlertEvent
from meddx.stream.messages import Chunk
from meddx.stream.store import StreamStore


@pytest.fixture
def stream_store(service):
    path = service.ctx.settings.stream_store
    path.unlink(missing_ok=True)
    store = StreamStore(path)
    with store.transaction():
        store.add_chunk(Chunk("bed-3", "ecg", 0, 100.0, 300.0, "mV", np.zeros(300, np.float32)), 0, 0, 100.5)
        store.add_predictions([("bed-3", "ecg", 0, 0, 90.0, 100.0, "A", {"A": 0.9, "N": 0.1}, "ok", "m", 100.2)])
        alert_id = store.raise_alert(AlertEvent("raised", "bed-3", "ecg", "atrial-fibrillation", "high", 90.0, 100.0,
                                                0.9))
    store.close()
    yield alert_id
    path.unlink(missing_ok=True)


def test_snapshot_needs_a_clinician(service, stream_store) -> None:
    c = service.client
    assert c.get("/api/stream/monitor").status_code == 401
    assert c.get("/api/stream/monitor", headers=service.headers("engineer")).status_code == 403
    body = c.get("/api/stream/monitor", headers=service.headers("clinician")).json()
    assert body["devices"][0]["device_id"] == "bed-3" and body["devices"][0]["label"] == "A"
    assert [a["id"] for a in body["open_alerts"]] == [stream_store]


def test_acknowledge_once_and_audited(service, stream_store) -> None:
    c = service.client
    url = f"/api/stream/alerts/{stream_store}/ack"
    assert c.post(url, headers=service.headers("clinician")).status_code == 204
    assert c.post(url, headers=service.headers("clinician")).status_code == 404
    assert c.post("/api/stream/alerts/999/ack", headers=service.headers("clinician")).status_code == 404
    alert = c.get("/api/stream/monitor", headers=service.headers("clinician")).json()["open_alerts"][0]
    assert alert["acknowledged_by"] == "clinician"
    audit = c.get("/api/admin/audit", headers=service.headers("admin")).json()
    assert any(e["action"] == "stream.alert_ack" for e in audit)


def test_websocket_pushes_snapshots_to_logged_in_clinicians(service, stream_store) -> None:
    c = service.client
    c.cookies.clear()
    with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws/monitor") as ws:
        ws.receive_text()
    c.cookies.set("meddx_session", service.tokens["clinician"])
    try:
        with c.websocket_connect("/ws/monitor") as ws:
            first = ws.receive_json()
            assert first["open_alerts"][0]["device_id"] == "bed-3"
        page = c.get("/monitor")
        assert page.status_code == 200 and "bed-3" in page.text and "Acknowledge" in page.text
    finally:
        c.cookies.clear()
