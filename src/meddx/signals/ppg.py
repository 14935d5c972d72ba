"""Heart rate from a photoplethysmogram (PPG).

Pipeline: band-pass 0.5-8 Hz (Butterworth, zero-phase ``filtfilt``) ->
systolic peaks with :func:`scipy.signal.find_peaks` (refractory distance of one
beat at 220 bpm, prominence relative to the amplitude in a moving window) ->
inter-beat intervals outside 30-220 bpm, or far from the local median, are
rejected -> heart rate per window (``60 / mean valid interval``).

Reference heart rates: the HeartPy example files (``ppg-heartpy``) hold **no
reference heart rate**. ``data.csv`` is raw PPG at 100 Hz; in ``data2.csv`` and
``data3.csv`` the column named ``hr`` is *also raw PPG* (ADC counts around 500,
sampled at ~117 Hz and ~100 Hz), timed by ``timer`` (ms) and ``datetime``.
:func:`evaluate_against_spectral` therefore compares the peak-based heart rate
with an *independently derived* one (the dominant frequency of the Welch
spectrum in the same window), which measures agreement of two methods, not
accuracy against ground truth; accuracy is checked on synthetic PPG with a known
rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DataFileNotFoundError, EmptyDataError, InvalidValueError, MissingFieldError

__all__ = [
    "PPGRecording",
    "bandpass",
    "bootstrap_mae",
    "clean_intervals",
    "detect_ppg_peaks",
    "evaluate_against_spectral",
    "heart_rate",
    "load_heartpy",
    "spectral_heart_rate",
    "synthetic_ppg",
]

BPM_RANGE = (30.0, 220.0)


def _check(ppg: Any, fs: Any, *, min_seconds: float = 2.0) -> tuple[np.ndarray, float]:
    try:
        fs_value = float(fs)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"sampling rate must be a number, got {fs!r}", field="fs") from exc
    if not np.isfinite(fs_value) or fs_value <= 16:
        raise InvalidValueError(f"sampling rate must be finite and above 16 Hz (8 Hz band edge), got {fs!r}",
                                field="fs")
    x = np.asarray(ppg, dtype=float)
    if x.ndim != 1:
        raise InvalidValueError(f"ppg must be one-dimensional, got shape {x.shape}", field="ppg")
    if x.size < min_seconds * fs_value:
        raise InvalidValueError(f"ppg is shorter than {min_seconds:g} s ({x.size} samples)", field="ppg")
    if not np.all(np.isfinite(x)):
        raise InvalidValueError("ppg holds NaN or inf values", field="ppg", hint="interpolate the gaps first")
    return x, fs_value


def bandpass(ppg: Any, fs: float, low: float = 0.5, high: float = 8.0, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``scipy.signal.butter`` + ``filtfilt``)."""
    from scipy.signal import butter, filtfilt

    x, fs_value = _check(ppg, fs)
    if not 0 < low < high < fs_value / 2:
        raise ConfigError(f"need 0 < low < high < fs/2, got low={low}, high={high}, fs={fs_value}", field="high")
    b, a = butter(order, [low, high], btype="bandpass", fs=fs_value)
    return filtfilt(b, a, x)


def detect_ppg_peaks(ppg: Any, fs: float, *, max_bpm: float = BPM_RANGE[1], window_s: float = 3.0,
                     rel_prominence: float = 0.55, filtered: bool = False) -> np.ndarray:
    """Systolic peak indices of a PPG.

    Peaks must be at least ``60 / max_bpm`` s apart (refractory distance) and
    have a prominence of at least ``rel_prominence`` times the peak-to-peak
    amplitude of the band-passed signal in a centred moving window of
    ``window_s`` seconds, so the threshold follows slow amplitude changes (the
    window amplitude is floored at 20 % of its median over the recording, so
    flat drop-out stretches yield no peaks). The default 0.55 rejects dicrotic
    waves, whose prominence is typically 0.2-0.45 of the pulse amplitude.
    ``filtered=True`` skips the band-pass (the input is already filtered).
    """
    from scipy.ndimage import maximum_filter1d, minimum_filter1d
    from scipy.signal import find_peaks

    x, fs_value = _check(ppg, fs)
    if not 0 < rel_prominence < 1:
        raise ConfigError("rel_prominence must lie in (0, 1)", field="rel_prominence")
    if window_s <= 0 or max_bpm <= 0:
        raise ConfigError("window_s and max_bpm must be positive", field="window_s")
    y = x if filtered else bandpass(x, fs_value)
    w = max(3, int(round(window_s * fs_value)))
    span = maximum_filter1d(y, w, mode="nearest") - minimum_filter1d(y, w, mode="nearest")
    span = np.maximum(span, 0.2 * float(np.median(span)))
    distance = max(1, int(np.floor(60.0 / max_bpm * fs_value)))
    peaks, _ = find_peaks(y, distance=distance, prominence=rel_prominence * span)
    return peaks.astype(np.int64)


def clean_intervals(peaks: Any, fs: float, *, bpm_range: tuple[float, float] = BPM_RANGE,
                    max_rel_dev: float = 0.3, median_beats: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inter-beat intervals with implausible ones rejected.

    Returns ``(t_end_s, ibi_s, valid)``: the time of the later peak of each
    interval, the interval, and a mask that is False where the interval lies
    outside ``bpm_range`` or differs by more than ``max_rel_dev`` from the
    running median of the ``median_beats`` surrounding plausible intervals.
    """
    from scipy.ndimage import median_filter

    p = np.asarray(peaks, dtype=np.int64)
    if p.ndim != 1:
        raise InvalidValueError("peaks must be 1-D", field="peaks")
    if p.size < 2:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    ibi = np.diff(p) / float(fs)
    lo, hi = 60.0 / bpm_range[1], 60.0 / bpm_range[0]
    plausible = (ibi >= lo) & (ibi <= hi)
    valid = plausible.copy()
    if plausible.sum() >= 3:
        ref = ibi.copy()
        ref[~plausible] = np.median(ibi[plausible])
        med = median_filter(ref, size=max(3, median_beats), mode="nearest")
        valid &= np.abs(ibi - med) <= max_rel_dev * med
    return p[1:] / float(fs), ibi, valid


def heart_rate(ppg: Any, fs: float, window_s: float = 10.0, step_s: float | None = None,
               *, min_beats: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Heart rate (bpm) per window: ``(times_s, bpm)``.

    Windows of ``window_s`` seconds every ``step_s`` (default ``window_s``, i.e.
    non-overlapping); ``times_s`` are the window centres. bpm is ``60 / mean``
    of the valid intervals ending in the window, NaN where fewer than
    ``min_beats`` valid intervals are found.
    """
    x, fs_value = _check(ppg, fs)
    step = window_s if step_s is None else step_s
    if window_s <= 0 or step <= 0:
        raise ConfigError("window_s and step_s must be positive", field="window_s")
    duration = x.size / fs_value
    if duration < window_s:
        raise InvalidValueError(f"ppg ({duration:.1f} s) is shorter than one window ({window_s:g} s)", field="ppg")
    peaks = detect_ppg_peaks(x, fs_value)
    t_end, ibi, valid = clean_intervals(peaks, fs_value)
    t_end, ibi = t_end[valid], ibi[valid]
    starts = np.arange(0.0, duration - window_s + 1e-9, step)
    bpm = np.full(starts.size, np.nan)
    for i, s in enumerate(starts):
        sel = (t_end >= s) & (t_end < s + window_s)
        if sel.sum() >= min_beats:
            bpm[i] = 60.0 / ibi[sel].mean()
    return starts + window_s / 2, bpm


def spectral_heart_rate(ppg: Any, fs: float, window_s: float = 10.0, step_s: float | None = None,
                        *, bpm_range: tuple[float, float] = (40.0, 200.0),
                        n_harmonics: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Heart rate per window from the dominant Welch spectral peak (an independent method, no peaks).

    Same windows as :func:`heart_rate`. The frequency within ``bpm_range``
    is chosen with a harmonic product spectrum (sum of log power at f, 2f, ...,
    ``n_harmonics`` f): PPG spectra carry strong harmonics (dicrotic wave), so
    the plain spectral maximum often sits at 2x or 3x the heart rate.
    """
    from scipy.signal import welch

    x, fs_value = _check(ppg, fs)
    step = window_s if step_s is None else step_s
    y = bandpass(x, fs_value)
    n = int(round(window_s * fs_value))
    duration = x.size / fs_value
    starts = np.arange(0.0, duration - window_s + 1e-9, step)
    bpm = np.full(starts.size, np.nan)
    nfft = max(4096, 1 << int(np.ceil(np.log2(n))))
    for i, s in enumerate(starts):
        a = int(round(s * fs_value))
        seg = y[a:a + n]
        f, pxx = welch(seg, fs=fs_value, nperseg=min(n, seg.size), nfft=nfft)
        cand = (f >= bpm_range[0] / 60) & (f <= bpm_range[1] / 60)
        if not cand.any() or pxx.max() <= 0:
            continue
        logp = np.log(pxx + 1e-12 * pxx.max())
        fc = f[cand]
        score = sum(np.interp(h * fc, f, logp) for h in range(1, n_harmonics + 1))
        bpm[i] = 60 * fc[np.argmax(score)]
    return starts + window_s / 2, bpm


def bootstrap_mae(estimate: Any, reference: Any, *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Any]:
    """MAE (bpm) between two aligned series with a percentile bootstrap CI over windows.

    Pairs where either value is NaN are dropped (their count is returned).
    """
    a = np.asarray(estimate, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise InvalidValueError(f"estimate {a.shape} and reference {b.shape} must be aligned 1-D series",
                                field="reference")
    ok = np.isfinite(a) & np.isfinite(b)
    err = np.abs(a[ok] - b[ok])
    if err.size == 0:
        raise EmptyDataError("no window has both an estimate and a reference", field="reference")
    rng = np.random.default_rng(seed)
    boots = err[rng.integers(0, err.size, size=(n_boot, err.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return {"mae_bpm": float(err.mean()), "ci_low": float(np.quantile(boots, alpha)),
            "ci_high": float(np.quantile(boots, 1 - alpha)), "n_windows": int(err.size),
            "n_dropped": int((~ok).sum())}


@dataclass
class PPGRecording:
    """A raw PPG stream with its sampling rate and where both came from."""

    name: str
    ppg: np.ndarray
    fs: float
    note: str


def _fix_dropouts(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero readings are sensor drop-outs: interpolate linearly across them."""
    bad = x <= 0
    if bad.all():
        raise EmptyDataError("PPG holds only zero readings", field="hr")
    if bad.any():
        good = np.nonzero(~bad)[0]
        x = x.copy()
        x[bad] = np.interp(np.nonzero(bad)[0], good, x[good])
    return x, int(bad.sum())


def load_heartpy(folder: str | Path | None = None) -> list[PPGRecording]:
    """The three HeartPy example streams (``ppg-heartpy``), as raw PPG with their sampling rates.

    ``data.csv``: 100 Hz per the HeartPy docs. ``data2.csv``: rate from the
    ``timer`` column (ms). ``data3.csv``: rate from the ``datetime`` span
    (timestamps have 1 ms resolution and repeat, so the mean rate is used);
    zero readings are interpolated over. In every file the signal column is raw
    PPG; none holds a reference heart rate.
    """
    import pandas as pd

    if folder is None:
        from meddx.data.catalogue import fetch

        folder = fetch("ppg-heartpy")
    base = Path(folder)
    for name in ("data.csv", "data2.csv", "data3.csv"):
        if not (base / name).is_file():
            raise DataFileNotFoundError(f"{name} not found", path=base / name)
    out = []
    d1 = pd.read_csv(base / "data.csv", header=None)
    out.append(PPGRecording("data.csv", d1.iloc[:, 0].to_numpy(float), 100.0,
                            "raw PPG, 100 Hz per HeartPy docs; no reference HR in the file"))
    d2 = pd.read_csv(base / "data2.csv")
    for col in ("timer", "hr"):
        if col not in d2:
            raise MissingFieldError(f"column {col!r} missing", path=base / "data2.csv", field=col)
    timer = d2["timer"].to_numpy(float)
    fs2 = 1000.0 / float(np.median(np.diff(timer)))
    x2, n2 = _fix_dropouts(d2["hr"].to_numpy(float))
    out.append(PPGRecording("data2.csv", x2, fs2,
                            f"column 'hr' is raw PPG (not heart rate); fs {fs2:.2f} Hz from 'timer' (ms); "
                            f"{n2} zero readings interpolated"))
    d3 = pd.read_csv(base / "data3.csv")
    for col in ("datetime", "hr"):
        if col not in d3:
            raise MissingFieldError(f"column {col!r} missing", path=base / "data3.csv", field=col)
    t = pd.to_datetime(d3["datetime"], format="ISO8601")
    span = (t.iloc[-1] - t.iloc[0]).total_seconds()
    fs3 = (len(d3) - 1) / span
    x3, n3 = _fix_dropouts(d3["hr"].to_numpy(float))
    out.append(PPGRecording("data3.csv", x3, fs3,
                            f"column 'hr' is raw PPG (not heart rate); fs {fs3:.2f} Hz from the 'datetime' span; "
                            f"{n3} zero readings (drop-outs) interpolated"))
    return out


def evaluate_against_spectral(recording: PPGRecording, window_s: float = 10.0, *, n_boot: int = 2000,
                              seed: int = 0) -> dict[str, Any]:
    """Peak-based heart rate vs the spectral heart rate in the same non-overlapping windows.

    The spectral estimate is an independently derived reference, not ground
    truth: the MAE measures agreement between two methods.
    """
    t, hr = heart_rate(recording.ppg, recording.fs, window_s)
    t_ref, ref = spectral_heart_rate(recording.ppg, recording.fs, window_s)
    if not np.allclose(t, t_ref):
        raise InvalidValueError("windows of the two estimates are not aligned", field="window_s")
    stats = bootstrap_mae(hr, ref, n_boot=n_boot, seed=seed)
    return {"file": recording.name, "fs_hz": round(recording.fs, 3),
            "duration_s": round(recording.ppg.size / recording.fs, 1), "window_s": window_s,
            "reference": "spectral (Welch peak) HR from the same PPG -- agreement, not ground truth",
            "note": recording.note, "median_bpm": float(np.nanmedian(hr)) if np.isfinite(hr).any() else None,
            **stats}


def synthetic_ppg(fs: float, duration_s: float, bpm: Any, *, noise: float = 0.05, seed: int = 0,
                  dicrotic: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic PPG with known beats: ``(ppg, beat_times_s)``.

    Each pulse is a Gaussian systolic wave plus a smaller, later dicrotic wave;
    ``bpm`` is a number or a function of time (s) -> bpm. Adds white noise
    (``noise`` x pulse amplitude) and a slow baseline wander. For tests and
    benchmarks with a true heart rate.
    """
    rng = np.random.default_rng(seed)
    rate = bpm if callable(bpm) else (lambda _t, v=float(bpm): v)
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    beats = []
    tb = 0.3
    while tb < duration_s:
        beats.append(tb)
        tb += 60.0 / float(rate(tb))
    beats_arr = np.asarray(beats)
    x = np.zeros(n)
    for b in beats_arr:
        lo, hi = int(max(0, (b - 0.3) * fs)), int(min(n, (b + 0.8) * fs))
        tt = t[lo:hi] - b
        x[lo:hi] += np.exp(-0.5 * (tt / 0.07) ** 2) + dicrotic * np.exp(-0.5 * ((tt - 0.3) / 0.06) ** 2)
    x += 0.2 * np.sin(2 * np.pi * 0.1 * t) + noise * rng.standard_normal(n)
    return x, beats_arr
