"""Chunk payloads: both forms round-trip, and every malformed input names its field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meddx.stream.messages import Chunk, MessageError, decode, parse_device_topic


def _chunk(**kw) -> Chunk:
    base = dict(device_id="bed-7", signal="ecg", seq=41, start_time=1_700_000_000.5, fs=300.0, units="mV",
                samples=np.linspace(-1, 1, 300).astype(np.float32), sent_at=1_700_000_001.0)
    base.update(kw)
    return Chunk(**base)


@pytest.mark.parametrize("form", ["json", "binary"])
def test_round_trip(form: str) -> None:
    c = _chunk()
    back = decode(c.encode(form), topic="meddx/devices/bed-7/ecg")
    assert (back.device_id, back.signal, back.seq, back.fs, back.units) == ("bed-7", "ecg", 41, 300.0, "mV")
    assert back.start_time == pytest.approx(c.start_time)
    assert back.sent_at == pytest.approx(c.sent_at)
    np.testing.assert_allclose(back.samples, c.samples, atol=1e-5)


def test_binary_is_compact() -> None:
    c = _chunk()
    assert len(c.to_binary()) * 2 < len(c.to_json())


@pytest.mark.parametrize(("payload", "field"), [
    (b"\x00\x01garbage", "payload"),
    (b"[1, 2]", "payload"),
    (json.dumps({"device_id": "a", "signal": "ecg", "seq": 1}).encode(), "start_time"),
    (json.dumps({"device_id": "a b", "signal": "ecg", "seq": 1, "start_time": 0, "fs": 300, "units": "mV",
                 "samples": [1.0]}).encode(), "device_id"),
    (json.dumps({"device_id": "a", "signal": "ecg", "seq": -1, "start_time": 0, "fs": 300, "units": "mV",
                 "samples": [1.0]}).encode(), "seq"),
    (json.dumps({"device_id": "a", "signal": "ecg", "seq": 1, "start_time": 0, "fs": 0, "units": "mV",
                 "samples": [1.0]}).encode(), "fs"),
    (json.dumps({"device_id": "a", "signal": "ecg", "seq": 1, "start_time": 0, "fs": 300, "units": "mV",
                 "samples": []}).encode(), "samples"),
    (json.dumps({"device_id": "a", "signal": "ecg", "seq": 1, "start_time": 0, "fs": 300, "units": "mV",
                 "samples": [1, "x"]}).encode(), "samples"),
])
def test_malformed_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(MessageError) as err:
        decode(payload)
    assert err.value.field == field


def test_nan_samples_and_truncated_binary_are_refused() -> None:
    with pytest.raises(MessageError, match="NaN"):
        decode(_chunk(samples=np.array([1.0, np.nan], np.float32)).to_binary())
    with pytest.raises(MessageError, match="header announces"):
        decode(_chunk().to_binary()[:-4])


def test_topic_must_match_payload() -> None:
    with pytest.raises(MessageError, match="does not match"):
        decode(_chunk().to_binary(), topic="meddx/devices/bed-8/ecg")
    assert parse_device_topic("meddx/devices/bed-7/ecg") == ("bed-7", "ecg")
    with pytest.raises(MessageError):
        parse_device_topic("meddx/devices/bed-7")
