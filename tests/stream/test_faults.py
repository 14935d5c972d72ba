"""Fault tests on a real Mosquitto: broker restart, runner ``kill -9``, nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meddx.stream.broker import Mosquitto, mosquitto_binary
from meddx.stream.runner import RunnerConfig, StreamRunner
from meddx.stream.simulate import Simulator
from meddx.stream.store import StreamStore
from tests.stream._fakes import AmplitudeModel, synthetic_devices, wait_until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed (make system-deps)"),
]
ROOT = Path(__file__).resolve().parents[2]


def stored_seqs(store: Path) -> dict[str, set[int]]:
    s = StreamStore(store)
    out: dict[str, set[int]] = {}
    for device, seq in s.conn.execute("SELECT device_id, seq FROM chunks"):
        out.setdefault(device, set()).add(seq)
    s.close()
    return out


def assert_nothing_acknowledged_is_lost(acked: dict[str, list[int]], store: Path) -> None:
    stored = stored_seqs(store)
    lost = {d: sorted(set(seqs) - stored.get(d, set())) for d, seqs in acked.items()}
    assert not any(lost.values()), f"acknowledged but not stored: {lost}"


def test_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    runner = StreamRunner(RunnerConfig(broker=broker.address, store=tmp_path / "s.db", window_s=4, hop_s=1,
                                       client_id="restart-runner"), AmplitudeModel()).start()
    try:
        assert runner.connected.wait(10)
        sim = Simulator(synthetic_devices(5, seconds=40), broker.address, speed=4, client_id="restart-sim")
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", sim.run(40, drain_s=60)))
        thread.start()
        time.sleep(3)
        broker.restart(down_s=2.0)  # the broker is gone for 2 s mid-stream
        thread.join(120)
        result = box["r"]
        assert result.acknowledged == result.published == 200
        wait_until(lambda: runner.store.counts()["chunks"] == 200, what=lambda: (runner.store.counts(), runner.stats))
        assert runner.stats["disconnects"] >= 1 and runner.stats["connects"] >= 2
        assert_nothing_acknowledged_is_lost(result.acked_seq, tmp_path / "s.db")
        wait_until(lambda: runner.store.counts()["predictions"] == 5 * 37,
                   what=lambda: (runner.store.counts(), runner.stats))
        assert runner.store.counts()["gaps"] == 0
    finally:
        runner.stop()
        broker.stop()


def test_runner_kill_9_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    store = tmp_path / "s.db"
    cmd = [sys.executable, "-m", "tests.stream._runner_main", str(broker.address.port), str(store)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    received: list[str] = []
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher", clean_session=False)
    watcher.on_message = lambda c, u, m: received.append(m.payload.decode())
    watcher.on_connect = lambda c, u, f, r, p: c.subscribe("meddx/predictions/#", qos=1)
    watcher.connect(broker.address.host, broker.address.port)
    watcher.loop_start()
    try:
        wait_until(lambda: store.exists())
        sim = Simulator(synthetic_devices(4, seconds=40), broker.address, speed=4, client_id="crash-sim")
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", sim.run(40, drain_s=60)))
        thread.start()
        time.sleep(4)
        proc.send_signal(signal.SIGKILL)  # kill -9 mid-stream
        proc.wait(10)
        time.sleep(2)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        thread.join(120)
        result = box["r"]
        assert result.acknowledged == result.published == 160
        wait_until(lambda: sum(len(v) for v in stored_seqs(store).values()) == 160)
        assert_nothing_acknowledged_is_lost(result.acked_seq, store)

        def predictions() -> tuple[int, int]:
            s = StreamStore(store)
            total, unpublished = s.conn.execute(
                "SELECT COUNT(*), SUM(published_at IS NULL) FROM predictions").fetchone()
            s.close()
            return total, unpublished or 0

        wait_until(lambda: predictions() == (4 * 37, 0), timeout=60)  # every window, each published
        import json

        seen = {(b["device_id"], b["segment"], b["window"]) for b in map(json.loads, received)}
        assert len(seen) == 4 * 37  # the watcher got every prediction at least once
    finally:
        watcher.loop_stop()
        proc.kill()
        proc.wait()
        broker.stop()


def test_a_failed_commit_is_redelivered_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from meddx.stream.store import StreamStore as Store

    real = Store.add_chunk
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):  # the 30th insert fails as a full disk would
        calls["n"] += 1
        if calls["n"] == 30:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "add_chunk", flaky)
    broker = Mosquitto(tmp_path / "broker").start()
    runner = StreamRunner(RunnerConfig(broker=broker.address, store=tmp_path / "s.db", window_s=4, hop_s=1,
                                       client_id="flaky-runner"), AmplitudeModel()).start()
    try:
        assert runner.connected.wait(10)
        result = Simulator(synthetic_devices(3, seconds=30), broker.address, speed=6, client_id="flaky-sim").run(30)
        assert result.acknowledged == result.published == 90
        wait_until(lambda: runner.store.counts()["chunks"] == 90, what=lambda: (runner.store.counts(), runner.stats))
        assert runner.stats["worker_errors"] == 1
        assert_nothing_acknowledged_is_lost(result.acked_seq, tmp_path / "s.db")
        assert runner.store.counts()["gaps"] == 0
        wait_until(lambda: runner.store.counts()["predictions"] == 3 * 27)
    finally:
        runner.stop()
        broker.stop()
