"""The runner end to end on the embedded broker: storage, windows, batching, alerts, dead letters, gaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paho.mqtt.publish as publish
import pytest

from meddx.stream.broker import EmbeddedBroker, free_port
from meddx.stream.messages import Chunk
from meddx.stream.runner import RunnerConfig, StreamRunner
from meddx.stream.simulate import Simulator
from tests.stream._fakes import AmplitudeModel, synthetic_devices, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker(port=free_port()) as b:
        yield b


@pytest.fixture
def runner(broker, tmp_path: Path):
    model = AmplitudeModel()
    r = StreamRunner(RunnerConfig(broker=broker.address, store=tmp_path / "s.db", window_s=4, hop_s=1,
                                  client_id=f"runner-{tmp_path.name}"), model).start()
    assert r.connected.wait(10)
    model.calls = model.windows = 0  # forget the warm-up pass
    yield r
    r.stop()


def test_every_acknowledged_chunk_is_stored_and_windows_are_batched(broker, runner) -> None:
    devices = synthetic_devices(6, seconds=20, af_from_s=10)
    result = Simulator(devices, broker.address, speed=20, client_id="sim-a").run(20)
    assert result.acknowledged == result.published == 6 * 20
    wait_until(lambda: runner.stats["predictions"] >= 6 * 17)
    counts = runner.store.counts()
    assert counts["chunks"] == 120 and counts["dead_letters"] == 0 and counts["gaps"] == 0
    assert counts["predictions"] == 6 * 17  # (20 s - 4 s) / 1 s + 1 windows per device
    assert runner.model.windows == 6 * 17
    assert runner.model.calls < 6 * 17  # several devices per model call
    alerts = runner.store.alerts()
    assert len(alerts) == 6 and {a["rule"] for a in alerts} == {"atrial-fibrillation"}
    # raised by the second window wholly inside the 'AF' stretch, i.e. 10 + 4 + 1 s into the stream
    start = min(a["onset_time"] for a in alerts) - 10  # the first positive window starts 10 s in
    assert all(a["raised_window_end"] - start == pytest.approx(15.0) for a in alerts)
    wait_until(lambda: runner.stats["published"] == 6 * 17)
    latest = runner.store.latest()  # the live view's table: the newest window of each device
    last_end = runner.store.conn.execute("SELECT MAX(window_end) FROM predictions").fetchone()[0]
    assert len(latest) == 6 and all(r["window_end"] == last_end and r["label"] == "A" for r in latest)


def _publisher(broker, client_id: str):
    """One connection that publishes in order (separate connections could be delivered in any order)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.address.host, broker.address.port)
    client.loop_start()

    def publish_one(topic: str, payload) -> None:
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    return client, publish_one


def test_bad_messages_go_to_dead_letters_and_gaps_are_reported(broker, runner) -> None:
    fs = 100.0
    client, publish_one = _publisher(broker, "bad-messages")

    def send(seq: int, samples=None, topic=None) -> None:
        x = np.sin(np.arange(100) / 5).astype(np.float32) if samples is None else samples
        c = Chunk("bed-1", "ecg", seq, 1000.0 + seq, fs, "mV", x)
        publish_one(topic or c.topic, c.to_binary())

    for seq in range(0, 5):
        send(seq)
    publish_one("meddx/devices/bed-1/ecg", b"{not json")
    publish_one("meddx/devices/bed-1/ecg", json.dumps({"device_id": "bed-1"}))
    send(5, topic="meddx/devices/bed-2/ecg")  # payload for another device
    send(8)  # seq 5-7 missing: a gap
    send(6)  # arrives after the gap was declared: out of order
    send(8)  # redelivery: stored once
    for seq in range(9, 14):
        send(seq)
    wait_until(lambda: runner.stats["chunks"] >= 11 and runner.stats["dead_letters"] >= 4,
               what=lambda: (dict(runner.stats), runner.store.dead_letters()))
    wait_until(lambda: runner.stats["duplicates"] >= 1)
    reasons = [d["reason"] for d in runner.store.dead_letters()]
    assert sum("malformed" in r for r in reasons) == 3
    assert sum("out of order" in r for r in reasons) == 1
    assert runner.store.gaps()[0] | {"detected_at": 0} == {
        "device_id": "bed-1", "signal": "ecg", "first_missing": 5, "last_missing": 7, "detected_at": 0}
    assert runner.store.counts()["chunks"] == 11
    # windows never straddle the gap: segment 0 (5 s) gives 2 windows, segment 8 (6 s) gives 3
    wait_until(lambda: runner.store.counts()["predictions"] == 5, what=lambda: runner.store.conn.execute("SELECT device_id, segment, window, window_start FROM predictions").fetchall())
    segs = runner.store.conn.execute("SELECT segment, COUNT(*) FROM predictions GROUP BY segment").fetchall()
    assert dict(segs) == {0: 2, 8: 3}
    client.loop_stop()
    client.disconnect()


def test_acknowledging_an_alert_over_mqtt(broker, runner) -> None:
    devices = synthetic_devices(1, seconds=12, af_from_s=0)
    Simulator(devices, broker.address, speed=20, client_id="sim-b").run(12)
    wait_until(lambda: len(runner.store.alerts()) == 1)
    alert = runner.store.alerts()[0]
    publish.single("meddx/alerts/dev-000/ack", json.dumps({"alert_id": alert["id"], "by": "nurse-a"}), qos=1,
                   hostname=broker.address.host, port=broker.address.port)
    publish.single("meddx/alerts/dev-000/ack", "nonsense", qos=1, hostname=broker.address.host,
                   port=broker.address.port)
    wait_until(lambda: runner.store.alerts()[0]["acknowledged_by"] == "nurse-a")
    wait_until(lambda: any("acknowledgement" in d["reason"] for d in runner.store.dead_letters()))
