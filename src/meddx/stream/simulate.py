"""Virtual devices that replay real recordings over MQTT, at real time or faster.

Sources (from the data catalogue, so the mirror is used when set):

- ``cinc``: CinC 2017 single-lead ECG, 300 Hz (labels N, A, O, ~);
- ``mitbih``: MIT-BIH Arrhythmia, lead MLII, 360 Hz;
- ``ppg``: HeartPy finger PPG, 100 Hz;
- ``af-onset``: for alert timing: each device plays CinC Normal records, then an
  AF record; the manifest records when (signal time) the first AF sample was sent.

Each device publishes one chunk of ``chunk_s`` seconds per tick with QoS 1;
devices are staggered over the tick so the broker sees a steady load. The
simulator counts the chunks the broker acknowledged (PUBACK): those are the
messages that must never be lost downstream.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.stream.broker import BrokerAddress
from meddx.stream.messages import Chunk


@dataclass
class Recording:
    name: str
    label: str
    fs: float
    samples: np.ndarray
    units: str = "mV"


def _cinc(limit: int | None = None, labels: tuple[str, ...] | None = None) -> list[Recording]:
    from meddx.signals.rhythm import load_cinc

    loaded = load_cinc(limit=limit)
    signals, y = loaded[0], loaded[1]
    names = loaded[2] if len(loaded) > 2 else [f"cinc-{i}" for i in range(len(signals))]
    return [Recording(str(n), str(lab), 300.0, np.asarray(s, np.float32))
            for s, lab, n in zip(signals, y, names, strict=False) if labels is None or lab in labels]


def _mitbih(limit: int | None = None) -> list[Recording]:
    from meddx.signals.beats import load_mitbih_records

    records = load_mitbih_records()
    out = [Recording(r.name, "holter", float(r.fs), np.asarray(r.signal, np.float32)) for r in records]
    return out[:limit] if limit else out


def _ppg(limit: int | None = None) -> list[Recording]:
    from meddx.signals.ppg import load_heartpy

    out = [Recording(r.name, "ppg", float(r.fs), np.asarray(r.ppg, np.float32), units="a.u.") for r in load_heartpy()]
    return out[:limit] if limit else out


SOURCES = {"cinc": _cinc, "mitbih": _mitbih, "ppg": _ppg}


def load_source(name: str, limit: int | None = None) -> list[Recording]:
    if name not in SOURCES:
        raise ConfigError(f"unknown source {name!r}", field="source", hint=f"One of {sorted(SOURCES)} or af-onset")
    return SOURCES[name](limit)


@dataclass
class Device:
    """One virtual device: a sample stream cut into chunks."""

    device_id: str
    fs: float
    stream: np.ndarray
    units: str = "mV"
    signal: str = "ecg"
    onset_s: float | None = None
    """For af-onset scenarios: signal time (s from the start) of the first AF sample."""
    records: tuple[str, ...] = ()
    """Names of the records the stream plays, in order (which record a missed alert came from)."""
    seq: int = 0
    pos: int = 0

    def next_chunk(self, t0: float, chunk_s: float) -> Chunk:
        n = round(chunk_s * self.fs)
        idx = (self.pos + np.arange(n)) % self.stream.size
        chunk = Chunk(self.device_id, self.signal, self.seq, t0 + self.pos / self.fs, self.fs, self.units,
                      self.stream[idx])
        self.pos += n
        self.seq += 1
        return chunk


def lead_in(records: list[Recording], rng: np.random.Generator, seconds: float) -> tuple[list[Recording], float]:
    """Records drawn at random from ``records`` until they last at least ``seconds``; and how long they last."""
    lead, total = [], 0.0
    while total < seconds:
        rec = records[int(rng.integers(len(records)))]
        lead.append(rec)
        total += rec.samples.size / rec.fs
    return lead, total


def make_devices(n: int, source: str = "cinc", *, seed: int = 0, lead_in_s: float = 30.0,
                 exclude: Collection[str] = ()) -> list[Device]:
    """``n`` devices replaying ``source`` (records assigned round-robin, each device its own order).

    ``exclude``: record names never replayed, e.g. a model's training and validation records
    (:func:`records_seen_by`), so that a benchmark scores the model on records it never saw.
    """
    rng = np.random.default_rng(seed)
    skip = set(exclude)
    if source == "af-onset":
        normals = [r for r in _cinc(labels=("N",)) if r.name not in skip]
        afs = [r for r in _cinc(labels=("A",)) if r.name not in skip]
        if not normals or not afs:
            raise ConfigError("no Normal or no AF record is left after the exclusions", field="exclude")
        devices = []
        for i in range(n):
            lead, total = lead_in(normals, rng, lead_in_s)
            af = afs[int(rng.integers(len(afs)))]
            stream = np.concatenate([*(r.samples for r in lead), af.samples, af.samples])
            devices.append(Device(f"sim-{i:04d}", 300.0, stream.astype(np.float32), onset_s=total,
                                  records=(*(r.name for r in lead), af.name)))
        return devices
    records = [r for r in load_source(source) if r.name not in skip]
    if not records:
        raise ConfigError(f"source {source!r} has no records" + (" left after the exclusions" if skip else ""),
                          field="source")
    devices = []
    for i in range(n):
        order = rng.permutation(len(records))[:8]
        fs = records[order[0]].fs
        used = [records[j] for j in order if records[j].fs == fs]
        devices.append(Device(f"sim-{i:04d}", fs, np.concatenate([r.samples for r in used]).astype(np.float32),
                              units=records[order[0]].units, signal="ppg" if source == "ppg" else "ecg",
                              records=tuple(r.name for r in used)))
    return devices


def records_seen_by(model: str | Path) -> set[str]:
    """Names of the records a signal model package was trained or validated on (its ``splits``)."""
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(str(model))
    splits = read_package(folder).get("splits") or {}
    if not isinstance(splits, dict) or not splits.get("train"):
        raise ConfigError(f"{folder} lists no training records", field="splits",
                          hint="Only packages that record their splits can exclude what they saw")
    return {str(r) for part in ("train", "val") for r in splits.get(part) or []}


@dataclass
class SimulationResult:
    devices: int
    published: int = 0
    acknowledged: int = 0
    samples: int = 0
    seconds: float = 0.0
    acked_seq: dict[str, list[int]] = field(default_factory=dict)
    onsets: dict[str, float] = field(default_factory=dict)
    """Device id -> UNIX time at which its first AF sample was (virtually) recorded."""
    records: dict[str, list[str]] = field(default_factory=dict)
    """Device id -> the records it replays, in order."""

    def to_json(self) -> dict[str, Any]:
        return {"devices": self.devices, "published": self.published, "acknowledged": self.acknowledged,
                "samples": self.samples, "seconds": round(self.seconds, 3),
                "messages_per_s": round(self.published / self.seconds, 2) if self.seconds else None,
                "onsets": self.onsets, "records": self.records}


class Simulator:
    """Publishes chunks from ``devices`` to a broker, ``speed`` times faster than real time."""

    def __init__(self, devices: list[Device], broker: BrokerAddress, *, speed: float = 1.0, chunk_s: float = 1.0,
                 form: str = "binary", client_id: str = "meddx-simulator") -> None:
        if speed <= 0 or chunk_s <= 0:
            raise ConfigError("speed and chunk_s must be positive", field="speed")
        self.devices, self.broker, self.speed, self.chunk_s, self.form = devices, broker, speed, chunk_s, form
        self.client_id = client_id
        self._acks: deque[int] = deque()
        self._mids: dict[int, tuple[str, int]] = {}
        self._early: set[int] = set()
        self.acked: dict[str, list[int]] = {}

    def _client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(5000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=8)

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            self._acks.append(mid)  # resolved in the publishing thread (no lock shared with paho's)

        client.on_publish = on_publish
        return client

    def _resolve(self) -> int:
        """Turn PUBACKed message ids into (device, seq); returns how many chunks are acknowledged so far."""
        while self._acks:
            mid = self._acks.popleft()
            if mid in self._mids:
                device_id, seq = self._mids.pop(mid)
                self.acked.setdefault(device_id, []).append(seq)
            else:  # acknowledged before publish() returned its id
                self._early.add(mid)
        for mid in [m for m in self._early if m in self._mids]:
            self._early.discard(mid)
            device_id, seq = self._mids.pop(mid)
            self.acked.setdefault(device_id, []).append(seq)
        return sum(len(v) for v in self.acked.values())

    def ticks(self, duration_s: float) -> Iterator[int]:
        n = max(1, round(duration_s / self.chunk_s))
        yield from range(n)

    def run(self, duration_s: float, *, drain_s: float = 30.0, t0: float | None = None) -> SimulationResult:
        """Replay ``duration_s`` seconds of signal; wait up to ``drain_s`` for the last acknowledgements."""
        client = self._client()
        client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        client.loop_start()
        result = SimulationResult(len(self.devices))
        t0 = time.time() if t0 is None else t0
        for d in self.devices:
            if d.onset_s is not None:
                result.onsets[d.device_id] = t0 + d.onset_s
            result.records[d.device_id] = list(d.records)
        period = self.chunk_s / self.speed
        start = time.monotonic()
        n_dev = len(self.devices)
        for tick in self.ticks(duration_s):
            self._resolve()
            for i, device in enumerate(self.devices):
                due = start + (tick + 1) * period + period * i / n_dev
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                chunk = device.next_chunk(t0, self.chunk_s)
                chunk.sent_at = time.time()
                info = client.publish(chunk.topic, chunk.encode(self.form), qos=1)
                self._mids[info.mid] = (device.device_id, chunk.seq)
                result.published += 1
                result.samples += chunk.n
        result.seconds = time.monotonic() - start
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and self._resolve() < result.published:
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()
        self._resolve()
        result.acked_seq = {k: sorted(v) for k, v in self.acked.items()}
        result.acknowledged = sum(len(v) for v in result.acked_seq.values())
        return result


def write_manifest(result: SimulationResult, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps({**result.to_json(), "acked_seq": result.acked_seq}, indent=1))
    return path
