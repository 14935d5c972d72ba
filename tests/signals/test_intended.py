"""The signal intended-input check: wrong channel kind, unit, rate, length and amplitude are rejected."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.data.sample import SignalSample
from meddx.signals.intended import (
    channel_kind,
    check_signal,
    mv_factor,
    pick_channel,
    signal_intended_input,
    to_model_units,
)
from meddx.trust.intended import IntendedInput, check_sample


def _ecg(seconds: float = 20.0, fs: float = 300.0, amp: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return amp * np.exp(-0.5 * (((t % 0.8) - 0.4) / 0.015) ** 2) + 0.02 * np.sin(2 * np.pi * 0.3 * t)


@pytest.fixture(scope="module")
def intended() -> dict:
    rng = np.random.default_rng(0)
    signals = [_ecg(float(rng.uniform(10, 60)), amp=float(rng.uniform(0.5, 2.0))) for _ in range(30)]
    return signal_intended_input(signals, 300.0, min_seconds=5.0)


def _sample(x: np.ndarray, fs: float, name: str = "ECG", unit: str = "mV") -> SignalSample:
    return SignalSample(path=None, format="wfdb", data=np.asarray(x, float)[:, None], fs=fs, channel_names=[name],
                        units=[unit])


def test_declaration_records_what_the_model_reads(intended: dict) -> None:
    extra = intended["extra"]
    assert intended["kind"] == "signal" and extra["signal_type"] == "ECG" and extra["units"] == "mV"
    assert extra["fs"] == 300.0 and extra["leads"] == 1 and extra["min_seconds"] == 5.0
    assert 50 <= extra["max_seconds"] <= 61
    lo, hi = extra["amplitude_mv"]
    assert 0 < lo < 0.5 and 2.0 < hi < 10


def test_an_ecg_passes_in_mv_and_in_uv(intended: dict) -> None:
    assert check_sample(_sample(_ecg(), 300.0), intended) == []
    assert check_sample(_sample(_ecg(fs=250.0) * 1000, 250.0, "MLII", "uV"), intended) == []


@pytest.mark.parametrize(("name", "unit", "fs", "expected"), [
    ("PLETH", "NU", 100.0, "PPG channel ('PLETH') at 100 Hz"),
    ("activity", "counts", 1 / 60, "activity (actigraphy) channel"),
    ("EEG Fpz-Cz", "uV", 100.0, "EEG channel"),
])
def test_a_non_ecg_channel_is_rejected_with_what_it_is(intended: dict, name: str, unit: str, fs: float,
                                                      expected: str) -> None:
    reasons = check_sample(_sample(np.random.default_rng(0).normal(size=int(max(20 * fs, 400))), fs, name, unit),
                           intended)
    assert reasons and reasons[0].startswith("this model reads single-lead ECG in mV at 300 Hz; this record is")
    assert expected in reasons[0]


def test_unit_rate_length_and_amplitude_reasons(intended: dict) -> None:
    assert any("not a voltage" in r for r in check_sample(_sample(_ecg(), 300.0, "ECG", "bpm"), intended))
    low = check_sample(_sample(_ecg(fs=50.0), 50.0), intended)
    assert any("accepts 100-2000 Hz" in r and "50 Hz" in r for r in low)
    assert any("at least 5 s" in r for r in check_sample(_sample(_ecg(3.0), 300.0), intended))
    assert any("at most" in r and "cut it into windows" in r
               for r in check_sample(_sample(_ecg(600.0), 300.0), intended))
    adc = check_sample(_sample(_ecg() * 500 + 300, 300.0, "ECG", "mV"), intended)  # ADC counts labelled mV
    assert any("amplitude" in r and "check the channel and its units" in r for r in adc)
    flat = check_sample(_sample(np.zeros(6000), 300.0), intended)
    assert any("amplitude" in r for r in flat)


def test_an_unnamed_channel_is_left_to_the_ood_gate(intended: dict) -> None:
    assert check_sample(_sample(_ecg(), 300.0, "ch1", ""), intended) == []


def test_an_image_is_not_a_signal(intended: dict) -> None:
    from meddx.data.sample import ImageSample

    reasons = check_sample(ImageSample(path=None, format="image", array=np.zeros((8, 8))), intended)
    assert reasons == ["this model reads signals; the file holds a image"]


def test_helpers() -> None:
    assert channel_kind("Pleth") == "PPG" and channel_kind("II") == "ECG" and channel_kind("x") is None
    assert pick_channel(["PLETH", "ECG"]) == 1 and pick_channel(["a", "b"]) == 0
    assert mv_factor("uV") == 1e-3 and mv_factor("µV") == 1e-3 and mv_factor("") == 1.0 and mv_factor("NU") is None
    np.testing.assert_allclose(to_model_units(np.ones(3), "V"), 1000.0)
    assert check_signal(_sample(np.zeros(0), 300.0), IntendedInput(kind="signal")) == ["the record holds no samples"]
