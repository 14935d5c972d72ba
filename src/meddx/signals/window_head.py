"""A window head for live monitoring: the rhythm model's probabilities plus RR irregularity, refitted on short windows.

A rhythm package is fitted and calibrated on whole records (30 s). A monitor reads 7-s windows
every second, and there the CNN alone is less sure: some AF windows it leaves at 0.3-0.6, so an
alert waits for more AF to arrive. Monitors have long detected AF from the irregularity of RR
intervals. The head adds that evidence cheaply:

* :func:`rr_window_features`: six RR-interval features per window from a vectorised QRS
  envelope (5-20 Hz band-pass, squared derivative, 120-ms moving average, peaks at least 250 ms
  apart). This takes about 0.4 ms per 7-s window on one core, so it keeps up with hundreds of
  devices. The XQRS detector of the feature model takes about 80 ms;
* a multinomial logistic regression on the model's log-probabilities and those features,
  fitted on windows cut from the package's **validation** records (never its training or test
  records), so that its probabilities are also calibrated for windows. A class with no validation
  window (``classes_absent`` in the entry) gets probability 0 from the head.

``meddx stream fit-head MODEL`` adds ``window_head.joblib`` to the package (listed in
``extra_files`` and sha256-checked on load); the stream runner then classifies windows with
:meth:`meddx.signals.package.SignalModel.predict_window_proba`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError

HEAD_FILE = "window_head.joblib"
RR_WINDOW_FEATURES = ("heart_rate_bpm", "median_abs_drr_over_rr", "rmssd_over_rr", "frac_drr_over_50ms", "rr_cv",
                      "frac_rr_off_median_15pct")


def rr_window_features(windows: Any, fs: float) -> np.ndarray:
    """RR-interval features ``(n, 6)`` of ``windows`` ``(n, samples)`` sampled at ``fs`` Hz (see module doc).

    Windows with fewer than four detected beats get zero irregularity and a full off-median share.
    """
    from scipy.signal import butter, find_peaks, sosfiltfilt

    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidValueError(f"windows must be (n, samples), got shape {x.shape}", field="windows")
    if not np.isfinite(fs) or fs < 50:
        raise InvalidValueError(f"fs must be at least 50 Hz for QRS detection, got {fs}", field="fs")
    out = np.zeros((len(x), len(RR_WINDOW_FEATURES)))
    if x.size == 0:
        return out
    sos = butter(2, [5.0, min(20.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    energy = np.diff(sosfiltfilt(sos, x, axis=1), axis=1) ** 2
    k = max(1, int(round(0.12 * fs)))
    csum = np.cumsum(np.pad(energy, ((0, 0), (1, 0))), axis=1)
    env = (csum[:, k:] - csum[:, :-k]) / k
    seconds = x.shape[1] / fs
    for i, row in enumerate(env):
        peaks, _ = find_peaks(row, height=0.3 * np.quantile(row, 0.98), distance=max(1, int(0.25 * fs)))
        rr = np.diff(peaks) / fs
        if rr.size < 3:
            out[i] = [60.0 * peaks.size / seconds, 0.0, 0.0, 0.0, 0.0, 1.0]
            continue
        d = np.abs(np.diff(rr))
        med = float(np.median(rr))
        out[i] = [60.0 / med, np.median(d) / med, np.sqrt(np.mean(d ** 2)) / rr.mean(), np.mean(d > 0.05),
                  rr.std() / rr.mean(), np.mean(np.abs(rr - med) > 0.15 * med)]
    return out


def head_proba(head: Any, proba: np.ndarray, windows: Any, fs: float) -> np.ndarray:
    """The head's class probabilities ``(n, n_classes)``, columns in the package's class order."""
    p = head.predict_proba(head_inputs(proba, windows, fs))
    out = np.zeros_like(proba, dtype=np.float64)
    out[:, np.asarray(head.classes_, dtype=int)] = p
    return out


def head_inputs(proba: np.ndarray, windows: Any, fs: float) -> np.ndarray:
    """What the head reads: the model's log-probabilities next to :func:`rr_window_features`."""
    return np.column_stack([np.log(np.clip(proba, 1e-6, 1.0)), rr_window_features(windows, fs)])


def cut_windows(signals: list[np.ndarray], labels: np.ndarray, fs: float, window_s: float,
                hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Every ``window_s`` window, every ``hop_s``, of each signal (labelled with its record's label)."""
    win, hop = int(round(window_s * fs)), int(round(hop_s * fs))
    xs, ys = [], []
    for x, y in zip(signals, labels, strict=True):
        x = np.asarray(x, dtype=np.float32)
        for start in range(0, x.size - win + 1, hop):
            xs.append(x[start:start + win])
            ys.append(y)
    if not xs:
        raise InvalidValueError(f"no record is {window_s:g} s long", field="window_s")
    return np.stack(xs), np.asarray(ys)


def fit_window_head(folder: str | Path, *, window_s: float = 7.0, hop_s: float = 2.0, c: float = 1.0,
                    data: str | None = None) -> dict[str, Any]:
    """Fit the head on windows of the package's validation records and add it to the package.

    ``data``: where the records are (default: the package's training source). Returns the
    ``window_head`` entry written into ``package.json``.
    """
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meddx.packaging.registry import read_package, resolve, sha256_file, write_package
    from meddx.signals import package as SP
    from meddx.signals import rhythm as R

    folder = resolve(folder)
    package = read_package(folder)
    val_names = (package.get("splits") or {}).get("val")
    if not val_names:
        raise ConfigError(f"{folder} lists no validation records", field="splits",
                          hint="Train the package with `meddx train` (it records its splits)")
    if window_s < SP.MIN_SECONDS:
        raise ConfigError(f"window_s must be at least {SP.MIN_SECONDS:g} s", field="window_s")
    source = data or package.get("data", {}).get("source") or SP.DATASET
    signals, labels, names, _ = SP._load_data(source)
    pick = {n: i for i, n in enumerate(names)}
    missing = [n for n in val_names if n not in pick]
    if missing:
        raise ConfigError(f"{len(missing)} validation records are not in {source} (e.g. {missing[0]})",
                          field="data", hint="Pass the data the package was trained on with --data")
    model = SP.SignalModel.load(folder)
    idx = [pick[n] for n in val_names]
    fs = SP.FEATURE_FS
    windows, y = cut_windows([SP._to_fs(signals[i], SP.FEATURE_FS) for i in idx],
                             R._to_index(np.asarray(labels)[idx]), fs, window_s, hop_s)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    head.fit(head_inputs(model.predict_proba(windows, fs), windows, fs), y)
    joblib.dump(head, folder / HEAD_FILE)
    absent = [model.class_names[k] for k in range(len(model.class_names)) if k not in set(head.classes_.tolist())]
    entry = {"file": HEAD_FILE, "window_s": window_s, "hop_s": hop_s, "features": list(RR_WINDOW_FEATURES),
             "inputs": "log class probabilities of the package + RR-window features",
             "fitted_on": f"{len(y)} windows of the validation split ({len(idx)} records)", "C": c,
             "classes_absent": absent}
    package["window_head"] = entry
    package["extra_files"] = sorted({*package.get("extra_files", []), HEAD_FILE})
    if "files" in package:  # a registered package: record the new file's hash like the others
        package["files"][HEAD_FILE] = sha256_file(folder / HEAD_FILE)
    write_package(folder, package)
    return entry


__all__ = ["HEAD_FILE", "RR_WINDOW_FEATURES", "cut_windows", "fit_window_head", "head_inputs", "head_proba",
           "rr_window_features"]
