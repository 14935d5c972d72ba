"""ECG beats: R-peak detection, beat features, PVC classification, leave-one-record-out.

The R-peak detector is a maintained one, wfdb-python's ``XQRS`` (a Pan-Tompkins
style detector with learned thresholds), followed by
:func:`wfdb.processing.correct_peaks`, which moves each detection to the local
extremum of the signal.

Evaluation follows the ANSI/AAMI EC57 convention:

* a detection matches a reference beat when it lies within ``tolerance_s``
  (150 ms) of it, one-to-one;
* sensitivity ``Se = TP / (TP + FN)`` and positive predictivity
  ``+P = TP / (TP + FP)``;
* results are reported per record and as **gross** statistics, i.e. TP/FP/FN
  pooled over all beats of all records before the ratio is taken (so records
  with many beats weigh more), not the average of per-record ratios.

Beat classification is evaluated on the *detected* beats: a detected beat
matched to a reference beat inherits its label; a reference PVC that no
detection matched counts as a missed PVC (FN); an unmatched detection that the
classifier calls PVC counts as a false PVC (FP). Records are never split between
training and testing (MIT-BIH records are patients).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DataFileNotFoundError, InvalidValueError, MissingFieldError

__all__ = [
    "MITBIH_RECORDS",
    "BeatRecord",
    "PeakMatch",
    "beat_feature_names",
    "beat_features",
    "choose_threshold",
    "detect_r_peaks",
    "leave_one_record_out",
    "load_mitbih_records",
    "loro_splits",
    "make_pvc_classifier",
    "match_peaks",
]

MITBIH_RECORDS = ("100", "102", "104", "105", "106", "108", "114", "116", "119", "121", "123", "200")

# beat window around the R peak (seconds before, after) and its downsampled length
_WIN_BEFORE_S = 0.25
_WIN_AFTER_S = 0.45
_N_WINDOW = 28
_LOCAL_RR_BEATS = 10


# --------------------------------------------------------------------------- validation
def _check_signal(signal: Any, fs: Any, name: str = "signal") -> tuple[np.ndarray, float]:
    try:
        fs_value = float(fs)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"sampling rate must be a number, got {fs!r}", field="fs") from exc
    if not np.isfinite(fs_value) or fs_value <= 0:
        raise InvalidValueError(f"sampling rate must be positive and finite, got {fs!r}", field="fs")
    x = np.asarray(signal, dtype=float)
    if x.ndim != 1:
        raise InvalidValueError(f"{name} must be one-dimensional, got shape {x.shape}", field=name,
                                hint="pass one lead")
    if x.size < int(2 * fs_value):
        raise InvalidValueError(f"{name} is shorter than 2 s ({x.size} samples at {fs_value:g} Hz)", field=name)
    if not np.all(np.isfinite(x)):
        raise InvalidValueError(f"{name} holds NaN or inf values", field=name,
                                hint="interpolate or cut the gaps first")
    return x, fs_value


def _check_indices(values: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidValueError(f"{name} must be a 1-D array of sample indices, got shape {arr.shape}", field=name)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidValueError(f"{name} must hold whole sample indices", field=name)
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InvalidValueError(f"{name} holds negative sample indices", field=name)
    if n is not None and arr.size and arr.max() >= n:
        raise InvalidValueError(f"{name} holds indices beyond the signal ({arr.max()} >= {n})", field=name)
    if arr.size > 1 and np.any(np.diff(arr) < 0):
        raise InvalidValueError(f"{name} must be sorted in time", field=name)
    return arr


# --------------------------------------------------------------------------- detection
def _merge_refractory(peaks: np.ndarray, x: np.ndarray, min_gap: int) -> np.ndarray:
    """Keep one peak per refractory period: of two peaks closer than ``min_gap`` the larger |x| wins."""
    p = np.unique(peaks)
    if p.size < 2:
        return p
    keep: list[int] = [int(p[0])]
    for v in p[1:]:
        if v - keep[-1] < min_gap:
            if abs(x[v]) > abs(x[keep[-1]]):
                keep[-1] = int(v)
        else:
            keep.append(int(v))
    return np.asarray(keep, dtype=np.int64)


def _search_back(primary: np.ndarray, secondary: np.ndarray, fs: float, *, gap_factor: float = 1.5,
                 min_sep_s: float = 0.25, n_local: int = 8) -> np.ndarray:
    """Add ``secondary`` detections that fall in RR gaps longer than ``gap_factor`` x the local median RR.

    Only candidates at least ``min_sep_s`` away from both ends of the gap are added.
    """
    p = np.unique(primary)
    if p.size < 2 or secondary.size == 0:
        return np.unique(np.concatenate([p, secondary])) if p.size < 2 else p
    rr = np.diff(p)
    med = np.array([np.median(rr[max(0, i - n_local): i + n_local + 1]) for i in range(rr.size)])
    sep = min_sep_s * fs
    added = [secondary[(secondary > p[i] + sep) & (secondary < p[i + 1] - sep)]
             for i in np.nonzero(rr > gap_factor * med)[0]]
    if not added:
        return p
    return np.unique(np.concatenate([p, *added]))


def detect_r_peaks(signal: Any, fs: float, *, search_radius_s: float = 0.05,
                   refractory_s: float = 0.2) -> np.ndarray:
    """R-peak sample indices of a single-lead ECG.

    Two maintained detectors of wfdb-python are combined:

    1. :func:`wfdb.processing.gqrs_detect` (the PhysioNet ``gqrs`` detector) is
       the primary detector;
    2. search-back: inside RR gaps longer than 1.5x the local median RR (a beat
       was probably missed), the detections of :class:`wfdb.processing.XQRS`
       that lie at least 250 ms from both gap ends are added;

    then :func:`wfdb.processing.correct_peaks` (``peak_dir="compare"``: the
    larger of the upward and downward extrema, so inverted PVCs are located too)
    moves each detection to the local extremum within ``search_radius_s``, and
    peaks closer than ``refractory_s`` are merged (the larger |amplitude| wins).

    Args:
        signal: one ECG lead (mV), 1-D, finite.
        fs: sampling rate in Hz.
        search_radius_s: half-width of the window where the peak is corrected.
        refractory_s: minimum distance between two beats.

    Returns:
        Sorted, unique int64 sample indices.
    """
    import wfdb.processing as wp

    x, fs_value = _check_signal(signal, fs)
    if search_radius_s <= 0:
        raise ConfigError("search_radius_s must be positive", field="search_radius_s")
    if refractory_s <= 0:
        raise ConfigError("refractory_s must be positive", field="refractory_s")
    radius = max(1, int(round(search_radius_s * fs_value)))
    smooth = max(3, int(round(0.15 * fs_value)))

    def _correct(raw: np.ndarray) -> np.ndarray:
        if raw.size == 0:
            return raw
        c = np.asarray(wp.correct_peaks(x, raw, search_radius=radius, smooth_window_size=smooth,
                                        peak_dir="compare"), dtype=np.int64)
        return np.unique(c[(c >= 0) & (c < x.size)])

    gqrs = _correct(np.unique(np.asarray(wp.gqrs_detect(sig=x, fs=fs_value), dtype=np.int64)))
    xqrs = wp.XQRS(sig=x, fs=fs_value)
    xqrs.detect(verbose=False)
    xq = _correct(np.asarray(xqrs.qrs_inds, dtype=np.int64))
    peaks = _search_back(gqrs, xq, fs_value)
    if peaks.size == 0:
        return peaks
    return _merge_refractory(peaks, x, max(1, int(round(refractory_s * fs_value))))


@dataclass(frozen=True)
class PeakMatch:
    """One-to-one matching of detected to reference beats (AAMI EC57, 150 ms by default).

    ``pairs`` is an ``(n_tp, 2)`` array of (detected index, reference index)
    positions into the two input arrays.
    """

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray = field(repr=False)

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "sensitivity": _num(self.sensitivity), "ppv": _num(self.ppv)}


def match_peaks(detected: Any, reference: Any, fs: float, tolerance_s: float = 0.15) -> PeakMatch:
    """Match detections to reference beats one-to-one within ``tolerance_s``.

    Closest pairs are matched first (greedy on distance), so each reference beat
    takes at most one detection and vice versa. Returns TP, FP (unmatched
    detections), FN (unmatched reference beats), Se and +P (EC57).
    """
    det = _check_indices(detected, "detected")
    ref = _check_indices(reference, "reference")
    try:
        fs_value = float(fs)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"sampling rate must be a number, got {fs!r}", field="fs") from exc
    if not fs_value > 0:
        raise InvalidValueError("sampling rate must be positive", field="fs")
    if not tolerance_s > 0:
        raise ConfigError("tolerance_s must be positive", field="tolerance_s")
    tol = tolerance_s * fs_value
    if det.size == 0 or ref.size == 0:
        return PeakMatch(0, int(det.size), int(ref.size), np.zeros((0, 2), dtype=np.int64))
    # candidate pairs: each reference with its nearest detections on either side (two each)
    pos = np.searchsorted(det, ref)
    cand_d, cand_r = [], []
    for offset in (-2, -1, 0, 1):
        j = pos + offset
        ok = (j >= 0) & (j < det.size)
        cand_d.append(j[ok])
        cand_r.append(np.nonzero(ok)[0])
    d_idx = np.concatenate(cand_d)
    r_idx = np.concatenate(cand_r)
    dist = np.abs(det[d_idx] - ref[r_idx]).astype(float)
    keep = dist <= tol
    d_idx, r_idx, dist = d_idx[keep], r_idx[keep], dist[keep]
    order = np.lexsort((r_idx, dist))
    used_d = np.zeros(det.size, dtype=bool)
    used_r = np.zeros(ref.size, dtype=bool)
    pairs = []
    for k in order:
        a, b = d_idx[k], r_idx[k]
        if not used_d[a] and not used_r[b]:
            used_d[a] = used_r[b] = True
            pairs.append((a, b))
    pair_arr = np.asarray(sorted(pairs, key=lambda p: p[1]), dtype=np.int64).reshape(-1, 2)
    tp = len(pairs)
    return PeakMatch(tp, int(det.size - tp), int(ref.size - tp), pair_arr)


# --------------------------------------------------------------------------- features
def beat_feature_names(n_window: int = _N_WINDOW) -> list[str]:
    """Column names of :func:`beat_features`."""
    names = ["rr_pre_s", "rr_post_s", "rr_local_s", "rr_pre_ratio", "rr_post_ratio", "rr_post_pre_ratio",
             "qrs_width_s", "r_amp", "win_max", "win_min", "peak_to_peak", "qrs_energy", "template_corr",
             "template_dist", "rr_pre_med_ratio", "rr_post_med_ratio", "comp_pause", "qrs_width_bp_s",
             "qrs_corr", "prev_corr", "t_mean", "qrs_width_z", "qrs_corr_z", "energy_z", "ptp_z",
             "noise_ratio", "noise_local"]
    return names + [f"win_{i:02d}" for i in range(n_window)]


def _bandpass(x: np.ndarray, fs: float, low: float, high: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    high = min(high, 0.45 * fs)
    sos = butter(2, [low, high], btype="bandpass", fs=fs, output="sos")
    return sosfiltfilt(sos, x)


def beat_features(signal: Any, fs: float, peaks: Any, *, n_window: int = _N_WINDOW) -> np.ndarray:
    """Per-beat features around each R peak, shape ``(len(peaks), 27 + n_window)``.

    * RR interval before and after (s), the local mean RR (centred mean of the
      ~10 surrounding intervals) and the ratios pre/local, post/local, post/pre
      (a premature beat has a short pre-RR and a compensatory pause);
    * QRS width proxy: the span where the absolute derivative of the
      band-passed (0.5-40 Hz) ECG exceeds 30 % of its maximum within +-150 ms;
    * amplitudes (R amplitude, window max/min, peak-to-peak, QRS energy), divided
      by the record's median peak-to-peak amplitude;
    * a beat window (-250 ms .. +450 ms) averaged down to ``n_window`` points,
      normalised per record (divided by the median peak-to-peak amplitude), and
      its correlation with / distance from the record's median beat template;
    * RR before/after relative to the local *median* RR (11 beats) and a
      compensatory-pause index ``(RR_pre + RR_post) / (2 median RR)``;
    * QRS width on the 5-25 Hz band-passed ECG, correlation of the +-100 ms QRS
      with the record's median QRS and with the previous beat's QRS, a T-wave
      polarity proxy (mean 200-400 ms after R), and record-wise robust z-scores
      (median/MAD) of QRS width, QRS correlation, energy and peak-to-peak;
    * a noise index: mean |5-25 Hz ECG| outside the QRS over inside it, per
      beat and as the median over the 11 surrounding beats.

    See :func:`beat_feature_names` for the column order. The first and last
    beats take the neighbouring RR for the missing one.
    """
    x, fs_value = _check_signal(signal, fs)
    p = _check_indices(peaks, "peaks", n=x.size)
    if n_window < 4:
        raise ConfigError("n_window must be at least 4", field="n_window")
    n_feat = len(beat_feature_names(n_window))
    if p.size == 0:
        return np.zeros((0, n_feat))
    filt = _bandpass(x, fs_value, 0.5, 40.0)

    # RR features
    if p.size > 1:
        rr = np.diff(p) / fs_value
        rr_pre = np.concatenate([[rr[0]], rr])
        rr_post = np.concatenate([rr, [rr[-1]]])
    else:
        rr_pre = rr_post = np.ones(1)
    k = _LOCAL_RR_BEATS
    kernel = np.ones(k) / k
    padded = np.pad(rr_pre, (k // 2, k - 1 - k // 2), mode="edge")
    rr_local = np.convolve(padded, kernel, mode="valid")
    eps = 1e-9

    # beat windows
    before = int(round(_WIN_BEFORE_S * fs_value))
    after = int(round(_WIN_AFTER_S * fs_value))
    padded_sig = np.pad(filt, (before, after), mode="edge")
    idx = p[:, None] + np.arange(before + after)[None, :]  # into padded signal: p + before - before
    windows = padded_sig[idx]
    edges = np.linspace(0, windows.shape[1], n_window + 1).astype(int)
    small = np.stack([windows[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], axis=1)

    # QRS region +-150 ms
    q = int(round(0.15 * fs_value))
    qrs = windows[:, max(0, before - q): before + q]
    deriv = np.abs(np.diff(qrs, axis=1))
    thr = 0.3 * deriv.max(axis=1, keepdims=True) + eps
    above = deriv > thr
    first = above.argmax(axis=1)
    last = above.shape[1] - 1 - above[:, ::-1].argmax(axis=1)
    qrs_width = (last - first + 1) / fs_value

    r_amp = filt[p]
    wmax = qrs.max(axis=1)
    wmin = qrs.min(axis=1)
    ptp = wmax - wmin
    scale = float(np.median(ptp)) + eps
    energy = (qrs ** 2).mean(axis=1) / scale ** 2

    small_n = small / scale
    template = np.median(small_n, axis=0)
    centred = small_n - small_n.mean(axis=1, keepdims=True)
    tc = template - template.mean()
    corr = (centred @ tc) / (np.linalg.norm(centred, axis=1) * np.linalg.norm(tc) + eps)
    dist = np.linalg.norm(small_n - template, axis=1) / np.sqrt(n_window)

    # RR prematurity against the local *median* RR (robust to the PVCs themselves) and compensatory pause
    m = 2 * (_LOCAL_RR_BEATS // 2) + 1
    padded_m = np.pad(rr_pre, (m // 2, m // 2), mode="edge")
    rr_med = np.median(np.lib.stride_tricks.sliding_window_view(padded_m, m), axis=1)
    comp = (rr_pre + rr_post) / (2 * rr_med + eps)

    # QRS width on the 5-25 Hz band (QRS energy band): span where |bp| exceeds 30 % of its max within +-150 ms
    bp = _bandpass(x, fs_value, 5.0, 25.0)
    bp_win = np.pad(bp, (q, q), mode="edge")[p[:, None] + np.arange(2 * q)[None, :]]
    above_bp = np.abs(bp_win) > 0.3 * np.abs(bp_win).max(axis=1, keepdims=True) + eps
    first_bp = above_bp.argmax(axis=1)
    last_bp = above_bp.shape[1] - 1 - above_bp[:, ::-1].argmax(axis=1)
    width_bp = (last_bp - first_bp + 1) / fs_value

    # full-resolution QRS (+-100 ms) correlation with the record's median beat and with the previous beat
    h = int(round(0.1 * fs_value))
    qwin = windows[:, before - h: before + h]
    qc = qwin - qwin.mean(axis=1, keepdims=True)
    qc = qc / (np.linalg.norm(qc, axis=1, keepdims=True) + eps)
    qt = np.median(qwin, axis=0)
    qt = qt - qt.mean()
    qt = qt / (np.linalg.norm(qt) + eps)
    qrs_corr = qc @ qt
    prev_corr = np.concatenate([[1.0], np.sum(qc[1:] * qc[:-1], axis=1)]) if p.size > 1 else np.ones(1)

    # T-wave polarity proxy: mean of 200-400 ms after R, relative to the R deflection's sign
    t_a, t_b = before + int(round(0.2 * fs_value)), before + int(round(0.4 * fs_value))
    t_mean = windows[:, t_a:t_b].mean(axis=1) / scale

    # signal quality: 5-25 Hz activity outside the QRS (+-100 ms) relative to inside, and its local median
    full_bp = np.pad(bp, (before, after), mode="edge")[idx]
    inside = np.abs(full_bp[:, before - h: before + h]).mean(axis=1)
    outside = (np.abs(full_bp[:, : before - h]).sum(axis=1) + np.abs(full_bp[:, before + h:]).sum(axis=1)) / (
        full_bp.shape[1] - 2 * h)
    noise_ratio = outside / (inside + eps)
    nb = 5
    noise_local = np.median(np.lib.stride_tricks.sliding_window_view(
        np.pad(noise_ratio, (nb, nb), mode="edge"), 2 * nb + 1), axis=1)

    def _z(v: np.ndarray) -> np.ndarray:  # record-wise robust z-score
        med = np.median(v)
        mad = np.median(np.abs(v - med)) * 1.4826
        return (v - med) / (mad + 1e-6 + 1e-3 * abs(med))

    feats = np.column_stack([
        rr_pre, rr_post, rr_local, rr_pre / (rr_local + eps), rr_post / (rr_local + eps),
        rr_post / (rr_pre + eps), qrs_width, r_amp / scale, wmax / scale, wmin / scale, ptp / scale,
        energy, corr, dist, rr_pre / (rr_med + eps), rr_post / (rr_med + eps), comp, width_bp, qrs_corr,
        prev_corr, t_mean, _z(width_bp), _z(qrs_corr), _z(energy), _z(ptp / scale), noise_ratio, noise_local, small_n,
    ])
    return feats


# --------------------------------------------------------------------------- records
@dataclass
class BeatRecord:
    """One ECG record with its reference beats (sample index) and PVC labels."""

    name: str
    signal: np.ndarray
    fs: float
    r_peaks: np.ndarray
    is_pvc: np.ndarray

    def __post_init__(self) -> None:
        self.signal, self.fs = _check_signal(self.signal, self.fs)
        self.r_peaks = _check_indices(self.r_peaks, "r_peaks", n=self.signal.size)
        pvc = np.asarray(self.is_pvc)
        if pvc.shape != self.r_peaks.shape:
            raise InvalidValueError(f"is_pvc has shape {pvc.shape}, r_peaks {self.r_peaks.shape}",
                                    field="is_pvc", path=self.name)
        self.is_pvc = pvc.astype(bool)


def load_mitbih_records(folder: str | Path | None = None, records: Sequence[str] | None = None,
                        *, max_seconds: float | None = None) -> list[BeatRecord]:
    """Read the MIT-BIH subset (``tpcp_subset/<rec>.npz``) from the catalogue.

    Args:
        folder: the data set folder; by default ``fetch("ecg-mitbih-arrhythmia")``.
        records: record names (default: all 12).
        max_seconds: keep only the first ``max_seconds`` of each record.
    """
    if folder is None:
        from meddx.data.catalogue import fetch

        folder = fetch("ecg-mitbih-arrhythmia")
    base = Path(folder) / "tpcp_subset"
    out = []
    for rec in records or MITBIH_RECORDS:
        path = base / f"{rec}.npz"
        if not path.is_file():
            raise DataFileNotFoundError(f"record {rec} not found", path=path, hint="check the record name")
        with np.load(path, allow_pickle=False) as data:
            for key in ("ecg_mlii_mv", "fs", "r_peaks", "is_pvc"):
                if key not in data:
                    raise MissingFieldError(f"npz lacks key {key!r}", path=path, field=key)
            sig = np.asarray(data["ecg_mlii_mv"], dtype=float)
            fs = float(data["fs"])
            peaks = np.asarray(data["r_peaks"], dtype=np.int64)
            pvc = np.asarray(data["is_pvc"]).astype(bool)
        if max_seconds is not None:
            n = int(max_seconds * fs)
            sig = sig[:n]
            keep = peaks < n
            peaks, pvc = peaks[keep], pvc[keep]
        out.append(BeatRecord(rec, sig, fs, peaks, pvc))
    return out


# --------------------------------------------------------------------------- classifier + LORO
PVC_CLASSIFIERS: dict[str, dict[str, Any]] = {
    "gbm": {"class_weight": None},
    "gbm-balanced": {"class_weight": "balanced"},
}
"""Candidate PVC classifiers (options of ``HistGradientBoostingClassifier``). Leave-one-record-out
picks one per fold by inner cross-validation on the training records: class weighting is a
modelling choice the held-out record must not make."""


def make_pvc_classifier(seed: int = 0, name: str = "gbm") -> Any:
    """Gradient boosting (scikit-learn ``HistGradientBoostingClassifier``) of :data:`PVC_CLASSIFIERS` ``name``.

    ``gbm`` fits the beats as they come; ``gbm-balanced`` weights PVCs up to the size of the
    other beats (its probabilities then run high and its thresholds crowd the top of the grid).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    if name not in PVC_CLASSIFIERS:
        raise ConfigError(f"unknown PVC classifier {name!r}", field="classifier",
                          hint=f"Choose one of {sorted(PVC_CLASSIFIERS)}")
    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15,
                                          l2_regularization=1.0, random_state=seed, **PVC_CLASSIFIERS[name])


def loro_splits(groups: Sequence[Any]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """Leave-one-record-out: yield ``(held_out_group, train_idx, test_idx)``.

    Every index of a group lies on one side only, so beats of one record are
    never split between training and testing.
    """
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise InvalidValueError("groups must be a non-empty 1-D sequence", field="groups")
    uniq = list(dict.fromkeys(g.tolist()))
    if len(uniq) < 2:
        raise InvalidValueError("leave-one-record-out needs at least two records", field="groups")
    for u in uniq:
        test = np.nonzero(g == u)[0]
        train = np.nonzero(g != u)[0]
        yield u, train, test


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _se_ppv(tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn),
            "sensitivity": _num(tp / (tp + fn)) if tp + fn else None,
            "ppv": _num(tp / (tp + fp)) if tp + fp else None}


def _prepare(record: BeatRecord, tolerance_s: float) -> dict[str, Any]:
    det = detect_r_peaks(record.signal, record.fs)
    m = match_peaks(det, record.r_peaks, record.fs, tolerance_s)
    feats = beat_features(record.signal, record.fs, det)
    label = np.full(det.size, -1, dtype=np.int64)  # -1: unmatched detection
    label[m.pairs[:, 0]] = record.is_pvc[m.pairs[:, 1]].astype(np.int64)
    matched_ref = np.zeros(record.r_peaks.size, dtype=bool)
    matched_ref[m.pairs[:, 1]] = True
    missed_pvc = int(np.sum(record.is_pvc & ~matched_ref))
    return {"detected": det, "match": m, "features": feats, "label": label, "missed_pvc": missed_pvc}


def _threshold_grid() -> np.ndarray:
    return np.round(np.arange(0.05, 0.951, 0.025), 3)


def _inner_scores(X: np.ndarray, y: np.ndarray, groups: np.ndarray, missed: dict[Any, int] | None,
                  factory: Callable[[], Any], n_inner: int,
                  threshold: float | None = None) -> tuple[float, tuple[float, float]] | None:
    """Grouped inner CV of one classifier: (best threshold, its (min(Se, +P), F1)); None if untrainable.

    With ``threshold`` given, that threshold and its score are returned instead of the best.
    """
    from threadpoolctl import threadpool_limits

    g = np.asarray(groups)
    uniq = list(dict.fromkeys(g.tolist()))
    if len(uniq) < 2:
        return None
    k = min(n_inner, len(uniq))
    fold_of = {u: i % k for i, u in enumerate(uniq)}
    fold = np.array([fold_of[v] for v in g.tolist()])
    prob = np.full(y.size, np.nan)
    for f in range(k):
        tr = np.nonzero((fold != f) & (y >= 0))[0]
        te = np.nonzero(fold == f)[0]
        if np.unique(y[tr]).size < 2:
            continue
        with threadpool_limits(1):
            clf = factory()
            clf.fit(X[tr], y[tr])
            prob[te] = clf.predict_proba(X[te])[:, 1]
    ok = np.isfinite(prob)
    if not ok.any():
        return None
    extra_fn = sum(int((missed or {}).get(u, 0)) for u in set(g[ok].tolist()))
    best, best_key = 0.5, (-1.0, -1.0)
    grid = _threshold_grid() if threshold is None else np.array([threshold])
    for t in grid:
        pred = prob[ok] >= t
        lab = y[ok]
        tp = int(np.sum(pred & (lab == 1)))
        fp = int(np.sum(pred & (lab != 1)))
        fn = int(np.sum(~pred & (lab == 1))) + extra_fn
        se = tp / (tp + fn) if tp + fn else 0.0
        ppv = tp / (tp + fp) if tp + fp else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        key = (min(se, ppv), f1)
        if key > best_key:
            best, best_key = float(t), key
    return best, best_key


def choose_threshold(X: np.ndarray, y: np.ndarray, groups: np.ndarray, missed: dict[Any, int] | None = None,
                     *, classifier_factory: Callable[[], Any] | None = None, n_inner: int = 4) -> float:
    """Decision threshold chosen by grouped inner cross-validation on *training records only*.

    The training records are dealt round-robin into ``min(n_inner, n_records)``
    folds (a record is never split); out-of-fold PVC probabilities are pooled and
    the threshold on a 0.05..0.95 grid that maximises ``min(Se, +P)`` (ties:
    F1) is returned, with the EC57 counting of :func:`leave_one_record_out`
    (``y == -1``: unmatched detection, a false PVC if called PVC; ``missed``:
    reference PVCs per record the detector missed, counted as FN). Falls back
    to 0.5 when no inner fold can be trained.
    """
    scored = _inner_scores(X, y, groups, missed, classifier_factory or make_pvc_classifier, n_inner)
    return 0.5 if scored is None else scored[0]


def choose_classifier(X: np.ndarray, y: np.ndarray, groups: np.ndarray, missed: dict[Any, int] | None = None,
                      *, candidates: dict[str, Callable[[], Any]], n_inner: int = 4,
                      threshold: float | None = None) -> tuple[str, float, dict[str, list[float]]]:
    """The candidate classifier and threshold with the best inner-CV ``(min(Se, +P), F1)``.

    Same grouped inner folds as :func:`choose_threshold`, on training records only. Returns
    ``(name, threshold, {name: [threshold, min(Se, +P), F1]})``; the first candidate wins ties and
    stands in (threshold 0.5) when no inner fold can be trained.
    """
    if not candidates:
        raise ConfigError("no candidate classifier", field="candidates")
    scores: dict[str, list[float]] = {}
    best_name, best_thr, best_key = next(iter(candidates)), 0.5 if threshold is None else threshold, (-2.0, -2.0)
    for name, factory in candidates.items():
        scored = _inner_scores(X, y, groups, missed, factory, n_inner, threshold)
        if scored is None:
            continue
        thr, key = scored
        scores[name] = [thr, round(key[0], 4), round(key[1], 4)]
        if key > best_key:
            best_name, best_thr, best_key = name, thr, key
    return best_name, best_thr, scores


def leave_one_record_out(records: Sequence[BeatRecord], *, tolerance_s: float = 0.15,
                         classifier_factory: Callable[[], Any] | None = None,
                         threshold: float | None = None, n_inner: int = 4,
                         classifiers: Sequence[str] | None = None) -> dict[str, Any]:
    """PVC detection evaluated leave-one-record-out on detected beats.

    For each record: R peaks are detected, matched to the reference (EC57,
    ``tolerance_s``), and features computed on the detected beats. A classifier
    trained on the matched beats of all *other* records labels the held-out
    record's detected beats. The classifier (``classifier_factory`` if given,
    else the best of ``classifiers``, default every :data:`PVC_CLASSIFIERS`) and
    the decision threshold (``threshold`` if given) are chosen per fold by
    :func:`choose_classifier` — a grouped inner cross-validation over the
    training records only (the held-out record's beats and labels are never
    passed to it). Counting (AAMI EC57):

    * TP: matched beat, reference PVC, predicted PVC;
    * FN: reference PVC predicted non-PVC, or not detected at all;
    * FP: predicted PVC where the matched reference is not a PVC, or where the
      detection matched no reference beat.

    Returns a dict with ``per_record`` (list of dicts: detection and PVC
    Se/+P per record, and the fold's threshold), ``gross`` (PVC TP/FP/FN pooled
    over every test beat) and ``detection`` (R-peak TP/FP/FN pooled over every
    record).
    """
    from threadpoolctl import threadpool_limits

    recs = list(records)
    if len(recs) < 2:
        raise InvalidValueError("leave-one-record-out needs at least two records", field="records")
    names = [r.name for r in recs]
    if len(set(names)) != len(names):
        raise InvalidValueError("record names must be unique", field="records")
    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError("threshold must lie in (0, 1)", field="threshold")
    if classifier_factory is not None:
        candidates: dict[str, Callable[[], Any]] = {"custom": classifier_factory}
    else:
        names = list(classifiers) if classifiers is not None else list(PVC_CLASSIFIERS)
        for name in names:
            if name not in PVC_CLASSIFIERS:
                raise ConfigError(f"unknown PVC classifier {name!r}", field="classifiers",
                                  hint=f"Choose from {sorted(PVC_CLASSIFIERS)}")
        candidates = {name: functools.partial(make_pvc_classifier, name=name) for name in names}
    prepared = [_prepare(r, tolerance_s) for r in recs]
    groups = np.concatenate([np.full(p["label"].size, i) for i, p in enumerate(prepared)])
    X = np.concatenate([p["features"] for p in prepared])
    y = np.concatenate([p["label"] for p in prepared])
    missed = {i: p["missed_pvc"] for i, p in enumerate(prepared)}

    per_record = []
    g_tp = g_fp = g_fn = 0
    d_tp = d_fp = d_fn = 0
    for i, train_all, test in loro_splits(groups):
        rec, prep = recs[i], prepared[i]
        train = train_all[y[train_all] >= 0]  # train on matched beats only
        if np.unique(y[train]).size < 2:
            raise InvalidValueError("training records hold no PVC (or only PVCs)", field="is_pvc")
        if len(candidates) == 1 and threshold is not None:
            chosen, thr, inner = next(iter(candidates)), float(threshold), {}
        else:
            chosen, thr, inner = choose_classifier(X[train_all], y[train_all], groups[train_all],
                                                   {j: v for j, v in missed.items() if j != i},
                                                   candidates=candidates, n_inner=n_inner, threshold=threshold)
        with threadpool_limits(1):
            clf = candidates[chosen]()
            clf.fit(X[train], y[train])
            prob = clf.predict_proba(X[test])[:, 1]
        pred = prob >= thr
        lab = y[test]
        tp = int(np.sum(pred & (lab == 1)))
        fp = int(np.sum(pred & (lab != 1)))
        fn = int(np.sum(~pred & (lab == 1))) + prep["missed_pvc"]
        m: PeakMatch = prep["match"]
        per_record.append({
            "record": rec.name, "beats": int(rec.r_peaks.size), "pvc": int(rec.is_pvc.sum()),
            "detected": int(prep["detected"].size), "detection": m.as_dict(), "threshold": thr,
            "classifier": chosen, "inner_cv": inner,
            "pvc_missed_by_detector": prep["missed_pvc"], **{f"pvc_{k}": v for k, v in _se_ppv(tp, fp, fn).items()},
        })
        g_tp, g_fp, g_fn = g_tp + tp, g_fp + fp, g_fn + fn
        d_tp, d_fp, d_fn = d_tp + m.tp, d_fp + m.fp, d_fn + m.fn
    return {
        "convention": "AAMI EC57: 150 ms match window; gross = counts pooled over records",
        "tolerance_s": tolerance_s,
        "threshold": "inner grouped CV per fold (max min(Se, +P))" if threshold is None else threshold,
        "classifier": "custom" if classifier_factory is not None else
        f"per fold, the best of {list(candidates)} by the same inner CV",
        "per_record": per_record,
        "gross": _se_ppv(g_tp, g_fp, g_fn),
        "detection": _se_ppv(d_tp, d_fp, d_fn),
    }
