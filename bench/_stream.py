"""Shared pieces of the streaming benchmarks: Mosquitto, a runner process, a simulator process, a watcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.stream.broker import BrokerAddress, Mosquitto
from meddx.stream.store import StreamStore

def _meddx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from meddx.cli import main; sys.exit(main(sys.argv[1:]))", *args]


@dataclass
class Watcher:
    """Subscribes to predictions and alerts; timestamps every arrival."""

    broker: BrokerAddress
    topics: tuple[str, ...] = ("meddx/predictions/#", "meddx/alerts/#")
    messages: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def start(self) -> Watcher:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-watcher-{os.getpid()}")
        lock = threading.Lock()

        def on_message(c: Any, u: Any, m: Any) -> None:
            now = time.time()
            try:
                body = json.loads(m.payload)
            except ValueError:
                return
            with lock:
                self.messages.append((now, m.topic, body))

        self.client.on_message = on_message
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        time.sleep(0.5)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def predictions(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, b) for t, topic, b in self.messages if topic.startswith("meddx/predictions/")]

    def alerts(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, b) for t, topic, b in self.messages if topic.startswith("meddx/alerts/")]


class RunnerProcess:
    """``meddx stream run`` against a broker, in its own process (as deployed)."""

    def __init__(self, model: str, broker: BrokerAddress, store: Path, *, window_s: float = 7.0,
                 hop_s: float = 1.0, log: Path | None = None, af_threshold: float = 0.5, af_windows: int = 2) -> None:
        self.store = store
        self.cmd = _meddx_cmd("stream", "run", "--model", model, "--broker", broker.url, "--store", str(store),
                              "--window-s", str(window_s), "--hop-s", str(hop_s),
                              "--af-threshold", str(af_threshold), "--af-windows", str(af_windows))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> RunnerProcess:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log and b"connected to" in self.log.read_bytes():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the runner exited with {self.proc.returncode}; see {self.log}")
            time.sleep(0.2)
        raise RuntimeError("the runner did not connect in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def simulate(broker: BrokerAddress, devices: int, duration: float, manifest: Path, *, source: str = "cinc",
             speed: float = 1.0, seed: int = 0, unseen_by: str | None = None) -> subprocess.Popen[bytes]:
    cmd = _meddx_cmd("stream", "simulate", "--devices", str(devices), "--duration", str(duration), "--source", source,
                     "--broker", broker.url, "--manifest", str(manifest), "--speed", str(speed), "--seed", str(seed))
    if unseen_by:
        cmd += ["--unseen-by", unseen_by]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def cpu_seconds(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except psutil.NoSuchProcess:
        return float("nan")


def lost_messages(manifest: Path, store: Path) -> tuple[int, int]:
    """(acknowledged by the broker, acknowledged but not stored)."""
    acked = json.loads(manifest.read_text())["acked_seq"]
    s = StreamStore(store)
    stored: dict[str, set[int]] = {}
    for device, seq in s.conn.execute("SELECT device_id, seq FROM chunks"):
        stored.setdefault(device, set()).add(seq)
    s.close()
    n = sum(len(v) for v in acked.values())
    lost = sum(len(set(v) - stored.get(d, set())) for d, v in acked.items())
    return n, lost


def stored_chunks(store: Path) -> int:
    s = StreamStore(store)
    n = s.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    s.close()
    return int(n)


__all__ = ["Mosquitto", "RunnerProcess", "Watcher", "cpu_seconds", "lost_messages", "simulate",
           "stored_chunks"]
