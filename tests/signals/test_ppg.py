"""PPG heart rate (meddx.signals.ppg): synthetic PPG with a known rate, plus the HeartPy files."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.signals.ppg import (
    bandpass,
    bootstrap_mae,
    clean_intervals,
    detect_ppg_peaks,
    evaluate_against_spectral,
    heart_rate,
    load_heartpy,
    spectral_heart_rate,
    synthetic_ppg,
)

FS = 100.0


def _truth(beats: np.ndarray, centres: np.ndarray, window_s: float) -> np.ndarray:
    ibi = np.diff(beats)
    return np.array([60.0 / ibi[(beats[1:] >= c - window_s / 2) & (beats[1:] < c + window_s / 2)].mean()
                     for c in centres])


@pytest.mark.parametrize("bpm", [48.0, 72.0, 130.0, 180.0])
def test_heart_rate_within_2_bpm_of_truth(bpm):
    ppg, beats = synthetic_ppg(FS, 60.0, bpm, noise=0.1, seed=3)
    t, hr = heart_rate(ppg, FS, window_s=10.0)
    assert t.size == 6 and np.all(np.isfinite(hr))
    assert np.max(np.abs(hr - bpm)) < 2.0


def test_heart_rate_follows_a_ramp():
    ppg, beats = synthetic_ppg(FS, 120.0, lambda s: 60.0 + 0.75 * s, noise=0.05)
    t, hr = heart_rate(ppg, FS, window_s=10.0, step_s=5.0)
    assert t.size == 23
    assert np.max(np.abs(hr - _truth(beats, t, 10.0))) < 2.0


def test_peaks_skip_dicrotic_wave():
    ppg, beats = synthetic_ppg(FS, 30.0, 60.0, dicrotic=0.5, noise=0.02)
    peaks = detect_ppg_peaks(ppg, FS)
    assert peaks.size == beats.size
    assert np.max(np.abs(peaks / FS - beats)) < 0.05


def test_clean_intervals_rejects_implausible():
    peaks = np.array([0, 100, 200, 230, 300, 400, 500, 600, 1000, 1100])  # 230: extra peak; 600->1000: gap
    t_end, ibi, valid = clean_intervals(peaks, FS)
    assert ibi.size == 9
    assert not valid[2] and not valid[3]  # 0.3 s and 0.7 s: off the 1 s median
    assert not valid[7]  # 4 s = 15 bpm < 30 bpm
    assert valid[[0, 1, 4, 5, 6, 8]].all()


def test_spectral_reference_is_independent_and_close():
    ppg, _ = synthetic_ppg(FS, 60.0, 66.0, dicrotic=0.5, noise=0.1)
    _, ref = spectral_heart_rate(ppg, FS, window_s=10.0)
    assert np.max(np.abs(ref - 66.0)) < 3.0  # not fooled by the harmonics


def test_bootstrap_mae():
    est = np.array([60.0, 62.0, np.nan, 70.0])
    ref = np.array([61.0, 60.0, 65.0, 70.0])
    out = bootstrap_mae(est, ref, n_boot=500)
    assert out["mae_bpm"] == pytest.approx(1.0)
    assert out["ci_low"] <= out["mae_bpm"] <= out["ci_high"]
    assert (out["n_windows"], out["n_dropped"]) == (3, 1)
    with pytest.raises(InvalidValueError) as err:
        bootstrap_mae(est, ref[:2])
    assert err.value.field == "reference"


def test_errors_name_the_field():
    with pytest.raises(InvalidValueError) as err:
        heart_rate(np.zeros(1000), 10.0)
    assert err.value.field == "fs"
    with pytest.raises(InvalidValueError) as err:
        heart_rate(np.full(3000, np.nan), FS)
    assert err.value.field == "ppg"
    with pytest.raises(ConfigError) as err:
        bandpass(np.zeros(3000), FS, low=0.5, high=60.0)
    assert err.value.field == "high"
    with pytest.raises(InvalidValueError) as err:
        heart_rate(np.zeros(500), FS, window_s=10.0)
    assert err.value.field == "ppg"


@pytest.mark.mirror
def test_heartpy_files(mirror):
    recs = {r.name: r for r in load_heartpy()}
    assert set(recs) == {"data.csv", "data2.csv", "data3.csv"}
    assert recs["data.csv"].fs == 100.0 and recs["data.csv"].ppg.size == 2483
    assert recs["data2.csv"].fs == pytest.approx(117.0, abs=0.5)
    assert recs["data3.csv"].fs == pytest.approx(100.4, abs=0.5)
    out = evaluate_against_spectral(recs["data.csv"])
    assert 50 < out["median_bpm"] < 75
    assert out["mae_bpm"] < 5.0
