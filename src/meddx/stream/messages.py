"""Device messages: the topic layout and the chunk payload, in JSON and a compact binary form.

Topics (``{device}`` and ``{signal}`` are ``[A-Za-z0-9_.-]{1,64}``)::

    meddx/devices/{device}/{signal}      chunks of samples from a device (QoS 1)
    meddx/predictions/{device}/{signal}  one message per classified window (QoS 1)
    meddx/alerts/{device}                alerts raised and cleared (QoS 1)
    meddx/alerts/{device}/ack            acknowledgements sent by a nurse station

A chunk carries ``device_id``, ``signal`` (e.g. ``ecg``), ``seq`` (per device and
signal, +1 per chunk), ``start_time`` (UNIX seconds of the first sample), ``fs``
(Hz), ``units`` (e.g. ``mV``) and ``samples``; optionally ``sent_at`` (UNIX seconds,
set by the publisher, used for latency). JSON is the readable form; the binary
form (``MDX1`` magic, little-endian header, float32 samples) is half the size of
JSON for 300-Hz ECG and needs no number parsing. Both are validated on arrival: a payload that fails raises
:class:`MessageError` with the reason, which the runner stores as a dead letter.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError

DEVICE_TOPIC = "meddx/devices/{device}/{signal}"
PREDICTION_TOPIC = "meddx/predictions/{device}/{signal}"
ALERT_TOPIC = "meddx/alerts/{device}"
ACK_TOPIC = "meddx/alerts/{device}/ack"
DEVICE_SUBSCRIPTION = "meddx/devices/+/+"
ACK_SUBSCRIPTION = "meddx/alerts/+/ack"

MAX_SAMPLES = 65_536
"""Largest chunk accepted (about 3.6 minutes at 300 Hz): bigger payloads are refused, not buffered."""
MAX_FS = 10_000.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAGIC = b"MDX1"
_HEADER = struct.Struct("<4sBBBQddfI")
"""magic, len(device), len(signal), len(units), seq, start_time, sent_at (NaN: unset), fs, n samples."""
_REQUIRED = ("device_id", "signal", "seq", "start_time", "fs", "units", "samples")


class MessageError(InvalidValueError):
    """A device message that cannot be accepted (malformed, inconsistent or out of range)."""


@dataclass
class Chunk:
    """A run of consecutive samples from one device signal."""

    device_id: str
    signal: str
    seq: int
    start_time: float
    fs: float
    units: str
    samples: np.ndarray
    sent_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_time(self) -> float:
        """Time just after the last sample."""
        return self.start_time + self.n / self.fs

    @property
    def topic(self) -> str:
        return DEVICE_TOPIC.format(device=self.device_id, signal=self.signal)

    def validate(self) -> Chunk:
        """Check every field; raise MessageError naming the first bad one."""
        for name in ("device_id", "signal"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise MessageError(f"{name} {value!r} is not 1-64 characters of [A-Za-z0-9_.-]", field=name)
        if not isinstance(self.units, str) or not 0 < len(self.units) <= 16:
            raise MessageError(f"units {self.units!r} must be a short text such as 'mV'", field="units")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not 0 <= self.seq < 2**63:
            raise MessageError(f"seq {self.seq!r} must be a non-negative integer", field="seq")
        for name in ("start_time", "fs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MessageError(f"{name} {value!r} must be a finite number", field=name)
        if not 0 < self.fs <= MAX_FS:
            raise MessageError(f"fs {self.fs} Hz is outside (0, {MAX_FS:g}]", field="fs")
        if self.sent_at is not None and not math.isfinite(self.sent_at):
            raise MessageError("sent_at must be a finite number when given", field="sent_at")
        s = self.samples
        if s.ndim != 1 or s.shape[0] == 0:
            raise MessageError("samples must be a non-empty list of numbers", field="samples")
        if s.shape[0] > MAX_SAMPLES:
            raise MessageError(f"{s.shape[0]} samples in one chunk; at most {MAX_SAMPLES}", field="samples",
                               hint="Send shorter chunks (1-5 s each)")
        if not np.isfinite(s).all():
            raise MessageError("samples hold NaN or infinite values", field="samples",
                               hint="Send a gap (skip the chunk) instead of NaN")
        return self

    # -- JSON ------------------------------------------------------------
    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "device_id": self.device_id, "signal": self.signal, "seq": self.seq, "start_time": self.start_time,
            "fs": self.fs, "units": self.units, "samples": [round(float(v), 5) for v in self.samples],
        }
        if self.sent_at is not None:
            body["sent_at"] = self.sent_at
        return json.dumps(body, separators=(",", ":")).encode()

    # -- binary ----------------------------------------------------------
    def to_binary(self) -> bytes:
        device, signal, units = (v.encode() for v in (self.device_id, self.signal, self.units))
        sent = math.nan if self.sent_at is None else float(self.sent_at)
        head = _HEADER.pack(_MAGIC, len(device), len(signal), len(units), self.seq, float(self.start_time), sent,
                            float(self.fs), self.n)
        return head + device + signal + units + np.asarray(self.samples, dtype="<f4").tobytes()

    def encode(self, form: str = "binary") -> bytes:
        """``binary`` (compact) or ``json``."""
        if form not in ENCODERS:
            raise MessageError(f"unknown payload form {form!r}", field="form", hint=f"One of {sorted(ENCODERS)}")
        return ENCODERS[form](self)


ENCODERS = {"json": Chunk.to_json, "binary": Chunk.to_binary}


def _from_json(payload: bytes) -> Chunk:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"payload is neither binary MDX1 nor JSON: {exc}", field="payload") from None
    if not isinstance(body, dict):
        raise MessageError("JSON payload must be an object", field="payload")
    missing = [k for k in _REQUIRED if k not in body]
    if missing:
        raise MessageError(f"JSON payload lacks {missing}", field=missing[0],
                           hint=f"A chunk needs {list(_REQUIRED)}")
    raw = body["samples"]
    if not isinstance(raw, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        raise MessageError("samples must be a list of numbers", field="samples")
    seq = body["seq"]
    extra = {k: v for k, v in body.items() if k not in (*_REQUIRED, "sent_at")}
    return Chunk(
        device_id=body["device_id"], signal=body["signal"], seq=seq, start_time=body["start_time"], fs=body["fs"],
        units=body["units"], samples=np.asarray(raw, dtype=np.float32), sent_at=body.get("sent_at"), extra=extra,
    )


def _from_binary(payload: bytes) -> Chunk:
    if len(payload) < _HEADER.size:
        raise MessageError(f"binary payload of {len(payload)} bytes is shorter than its header", field="payload")
    _, n_dev, n_sig, n_units, seq, start, sent, fs, n = _HEADER.unpack_from(payload)
    offset = _HEADER.size
    expected = offset + n_dev + n_sig + n_units + 4 * n
    if len(payload) != expected:
        raise MessageError(f"binary payload is {len(payload)} bytes; its header announces {expected}",
                           field="payload", hint="The message was truncated or its header is wrong")
    try:
        device = payload[offset:offset + n_dev].decode()
        signal = payload[offset + n_dev:offset + n_dev + n_sig].decode()
        units = payload[offset + n_dev + n_sig:offset + n_dev + n_sig + n_units].decode()
    except UnicodeDecodeError:
        raise MessageError("device, signal or units is not UTF-8", field="payload") from None
    samples = np.frombuffer(payload, dtype="<f4", count=n, offset=offset + n_dev + n_sig + n_units)
    return Chunk(device, signal, seq, start, fs, units, samples.astype(np.float32),
                 None if math.isnan(sent) else sent)


def decode(payload: bytes, topic: str | None = None) -> Chunk:
    """Parse and validate a chunk; with ``topic``, also check it matches the payload's device and signal."""
    chunk = _from_binary(payload) if payload[:4] == _MAGIC else _from_json(payload)
    chunk.validate()
    if topic is not None:
        expected = chunk.topic
        if topic != expected:
            raise MessageError(f"topic {topic!r} does not match the payload (expected {expected!r})", field="topic",
                               hint="Publish each device's chunks on meddx/devices/{device_id}/{signal}")
    return chunk


def parse_device_topic(topic: str) -> tuple[str, str]:
    """``(device, signal)`` of a ``meddx/devices/{device}/{signal}`` topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["meddx", "devices"] or not all(_NAME.match(p) for p in parts[2:]):
        raise MessageError(f"topic {topic!r} is not meddx/devices/{{device}}/{{signal}}", field="topic")
    return parts[2], parts[3]
