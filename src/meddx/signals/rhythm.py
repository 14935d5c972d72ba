"""Single-lead ECG rhythm classification (PhysioNet/CinC Challenge 2017: N / A / O / ~).

Two models and their average:

* a **feature baseline**: R peaks from wfdb's ``XQRS`` (via
  :func:`meddx.signals.beats.detect_r_peaks`), RR-interval features (mean, SD,
  RMSSD, pNN50, CV, sample entropy / COSEn, Poincare SD1/SD2, local RR
  irregularity), a median-beat template, Welch band powers and spectral entropy
  of the signal, and signal-quality features (flat line, saturation, noise),
  classified by ``HistGradientBoostingClassifier(class_weight="balanced")``;
* a small **residual 1-D CNN** (PyTorch) over the signal resampled to 100 Hz in
  fixed 30-s windows (random crop/pad + amplitude/noise/shift augmentation in
  training, several crops averaged at test), class-weighted cross-entropy;
* an **ensemble** that averages the two models' class probabilities.

The challenge metric is the mean F1 of N, A and O (the noisy class ``~`` is
scored only through the others); :func:`challenge_score` also gives per-class
F1, one-vs-rest AUC and bootstrap 95% CIs over records.
:func:`cross_validate` runs stratified k-fold by record (each record is tested
once; one record is one patient recording).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DataFileNotFoundError, InvalidValueError

__all__ = [
    "CLASSES",
    "CNNConfig",
    "RESNET_SE",
    "challenge_score",
    "cnn_logits",
    "cross_validate",
    "fit_cnn",
    "load_cinc",
    "make_feature_classifier",
    "make_rhythm_cnn",
    "predict_cnn",
    "prepare_cnn_batch",
    "rhythm_feature_names",
    "rhythm_features",
    "rr_features",
    "stratified_folds",
]

CLASSES = ("N", "A", "O", "~")
SCORED = ("N", "A", "O")
FS = 300.0


# --------------------------------------------------------------------------- data
def load_cinc(folder: str | Path | None = None, *, limit: int | None = None,
              records: Sequence[str] | None = None) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Read the ``ecg-cinc2017-af`` subset: (signals in mV, labels, record names).

    Args:
        folder: the data set folder; by default ``fetch("ecg-cinc2017-af")``.
        limit: keep only the first ``limit`` records of the reference file.
        records: keep only these record names.

    Returns:
        A list of 1-D float arrays (300 Hz), a string array of labels in
        :data:`CLASSES`, and the record names.
    """
    import pandas as pd
    import wfdb

    if folder is None:
        from meddx.data.catalogue import fetch

        folder = fetch("ecg-cinc2017-af")
    base = Path(folder)
    ref_path = base / "REFERENCE-v3-subset.csv"
    if not ref_path.is_file():
        raise DataFileNotFoundError("reference file not found", path=ref_path, hint="check the data set folder")
    ref = pd.read_csv(ref_path)
    if records is not None:
        wanted = set(records)
        ref = ref[ref["record"].isin(wanted)]
    if limit is not None:
        ref = ref.iloc[: int(limit)]
    signals, labels, names = [], [], []
    for rec, lab in zip(ref["record"], ref["label"], strict=True):
        path = base / "records" / str(rec)
        if not path.with_suffix(".hea").is_file():
            raise DataFileNotFoundError(f"record {rec} not found", path=path.with_suffix(".hea"))
        r = wfdb.rdrecord(str(path))
        if float(r.fs) != FS:
            raise InvalidValueError(f"record {rec} has fs={r.fs}, expected 300", field="fs")
        signals.append(np.nan_to_num(np.asarray(r.p_signal[:, 0], dtype=float)))
        labels.append(str(lab))
        names.append(str(rec))
    return signals, np.asarray(labels), names


# --------------------------------------------------------------------------- RR features
def _sampen(x: np.ndarray, m: int = 2, tol: float = 0.2) -> float:
    """Sample entropy with absolute tolerance ``tol`` (smoothed: no infinities)."""
    n = x.size
    if n < m + 3:
        return float("nan")

    def count(mm: int) -> float:
        emb = np.lib.stride_tricks.sliding_window_view(x, mm)[: n - m]
        d = np.max(np.abs(emb[:, None, :] - emb[None, :, :]), axis=2)
        return (np.sum(d <= tol) - emb.shape[0]) / 2.0

    b, a = count(m), count(m + 1)
    return float(-np.log((a + 1.0) / (b + 1.0)))


_RR_NAMES = [
    "n_beats", "hr_mean", "rr_mean", "rr_median", "rr_sd", "rr_min", "rr_max", "rr_cv", "rmssd", "nrmssd",
    "pnn50", "pnn20", "frac_drr_gt50ms", "mad_drr_norm", "sampen", "cosen", "sd1", "sd2", "sd1_sd2",
    "local_cv_med", "local_cv_p90", "local_irr_med", "local_irr_min", "frac_irregular", "tpr",
    "rr_hist_entropy", "drr_hist_entropy", "frac_rr_out_range",
]


def rr_features(rr: Any) -> np.ndarray:
    """RR-interval features (seconds in); NaN where too few intervals.

    Includes the irregularity measures used in AF detection: RMSSD, pNN50,
    sample entropy and COSEn (SampEn at a 30 ms tolerance + ln(2r) - ln(mean RR)),
    Poincare SD1/SD2, and local irregularity over sliding 8-interval windows
    (median / 90th-percentile CV, median and minimum fraction of successive
    differences > 50 ms), turning-point ratio and histogram entropies.
    """
    rr = np.asarray(rr, dtype=float).ravel()
    out = np.full(len(_RR_NAMES), np.nan)
    out[0] = rr.size + 1 if rr.size else 0
    out[-1] = float(np.mean((rr < 0.25) | (rr > 2.0))) if rr.size else np.nan
    rr = rr[(rr >= 0.2) & (rr <= 3.0)]
    if rr.size < 3:
        return out
    d = np.diff(rr)
    mean = rr.mean()
    sd = rr.std(ddof=1)
    rmssd = float(np.sqrt(np.mean(d**2)))
    sd1 = float(np.std(d, ddof=1) / np.sqrt(2)) if d.size > 1 else np.nan
    sd2_sq = 2 * sd**2 - sd1**2 if np.isfinite(sd1) else np.nan
    sd2 = float(np.sqrt(max(sd2_sq, 0.0))) if np.isfinite(sd2_sq) else np.nan
    tol_rel = 0.2 * sd if sd > 0 else 1e-3
    se_fixed = _sampen(rr, 1, 0.03)
    cosen = se_fixed + np.log(2 * 0.03) - np.log(mean) if np.isfinite(se_fixed) else np.nan
    w = 8
    if rr.size >= w:
        win = np.lib.stride_tricks.sliding_window_view(rr, w)
        lcv = win.std(axis=1) / win.mean(axis=1)
        dw = np.abs(np.diff(win, axis=1)) > 0.05
        lirr = dw.mean(axis=1)
        local = [np.median(lcv), np.percentile(lcv, 90), np.median(lirr), lirr.min()]
    else:
        local = [sd / mean, sd / mean, float(np.mean(np.abs(d) > 0.05)), float(np.mean(np.abs(d) > 0.05))]
    irregular = float(np.mean(np.abs(d) / rr[:-1] > 0.1))
    tp = float(np.mean((rr[1:-1] - rr[:-2]) * (rr[1:-1] - rr[2:]) > 0)) if rr.size > 2 else np.nan

    def hist_entropy(v: np.ndarray, width: float) -> float:
        bins = np.floor(v / width).astype(int)
        _, counts = np.unique(bins, return_counts=True)
        p = counts / counts.sum()
        return float(-np.sum(p * np.log(p)))

    vals = [
        60.0 / mean, mean, np.median(rr), sd, rr.min(), rr.max(), sd / mean, rmssd, rmssd / mean,
        float(np.mean(np.abs(d) > 0.05)), float(np.mean(np.abs(d) > 0.02)), float(np.mean(np.abs(d) > 0.05)),
        float(np.median(np.abs(d)) / np.median(rr)), _sampen(rr, 2, tol_rel), cosen, sd1, sd2,
        sd1 / sd2 if sd2 and np.isfinite(sd2) and sd2 > 0 else np.nan, *local, irregular, tp,
        hist_entropy(rr, 0.05), hist_entropy(d, 0.05),
    ]
    out[1:1 + len(vals)] = vals
    return out


# --------------------------------------------------------------------------- signal features
_BANDS = ((0.0, 0.5), (0.5, 4.0), (4.0, 9.0), (9.0, 15.0), (15.0, 40.0), (40.0, 150.0))
_N_TEMPLATE = 24
_TEMPLATE_WIN = (0.25, 0.45)


def rhythm_feature_names() -> list[str]:
    spec = [f"relpow_{lo:g}_{hi:g}hz" for lo, hi in _BANDS] + ["spectral_entropy", "dominant_freq"]
    quality = ["duration_s", "flat_frac", "flat_run_max_s", "saturation_frac", "hf_noise_ratio", "amp_range",
               "amp_sd", "kurtosis", "skewness", "r_amp_median", "r_amp_cv", "template_corr_mean",
               "template_corr_min_p10", "noise_to_r"]
    template = [f"template_{i}" for i in range(_N_TEMPLATE)]
    return list(_RR_NAMES) + spec + quality + template


def _bandpass(x: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(3, [low, high], btype="band", fs=fs, output="sos")
    return sosfiltfilt(sos, x) if x.size > 30 else x - x.mean()


def _detect_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    from meddx.signals.beats import detect_r_peaks

    if x.size < fs or np.ptp(x) == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        return detect_r_peaks(x, fs)
    except Exception:  # noqa: BLE001 - a detector failure on a noisy record means "no beats"
        return np.zeros(0, dtype=np.int64)


def rhythm_features(signal: Any, fs: float = FS) -> np.ndarray:
    """The feature vector of one record (see :func:`rhythm_feature_names`); NaN marks 'not computable'."""
    from scipy.signal import welch
    from scipy.stats import kurtosis, skew

    x = np.asarray(signal, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise InvalidValueError("signal must be a non-empty finite 1-D array", field="signal")
    fs = float(fs)
    peaks = _detect_peaks(x, fs)
    rr = np.diff(peaks) / fs
    f_rr = rr_features(rr)

    # spectrum of the raw (mean-removed) signal
    f, p = welch(x - x.mean(), fs=fs, nperseg=min(x.size, int(4 * fs)))
    total = p.sum() + 1e-12
    rel = [p[(f >= lo) & (f < hi)].sum() / total for lo, hi in _BANDS]
    pn = p / total
    sent = float(-np.sum(pn[pn > 0] * np.log(pn[pn > 0])) / np.log(max(pn.size, 2)))
    dom = float(f[np.argmax(p * (f >= 0.5))])
    f_spec = np.asarray([*rel, sent, dom])

    # signal quality
    y = _bandpass(x, fs)
    dx = np.abs(np.diff(x))
    flat = dx < 1e-6
    run_max = 0
    if flat.any():
        edges = np.diff(np.concatenate([[0], flat.astype(int), [0]]))
        run_max = int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))
    amax = np.max(np.abs(x))
    sat = float(np.mean(np.abs(x) >= 0.99 * amax)) if amax > 0 else 1.0
    hf = p[f >= 40].sum() / total
    r_amp = np.abs(y[peaks]) if peaks.size else np.zeros(0)
    r_med = float(np.median(r_amp)) if r_amp.size else np.nan
    r_cv = float(r_amp.std() / (r_amp.mean() + 1e-9)) if r_amp.size > 1 else np.nan

    # median beat template
    b, a = int(_TEMPLATE_WIN[0] * fs), int(_TEMPLATE_WIN[1] * fs)
    good = peaks[(peaks - b >= 0) & (peaks + a < y.size)]
    template = np.full(_N_TEMPLATE, np.nan)
    corr_mean = corr_p10 = noise_to_r = np.nan
    if good.size >= 2:
        beats = np.stack([y[k - b:k + a] for k in good])
        med = np.median(beats, axis=0)
        scale = np.max(np.abs(med)) + 1e-9
        template = np.interp(np.linspace(0, med.size - 1, _N_TEMPLATE), np.arange(med.size), med / scale)
        bc = beats - beats.mean(axis=1, keepdims=True)
        mc = med - med.mean()
        corr = bc @ mc / (np.linalg.norm(bc, axis=1) * np.linalg.norm(mc) + 1e-12)
        corr_mean, corr_p10 = float(corr.mean()), float(np.percentile(corr, 10))
        noise_to_r = float(np.median(np.std(beats - med, axis=1)) / scale)
    f_q = np.asarray([
        x.size / fs, float(flat.mean()) if flat.size else 1.0, run_max / fs, sat, hf, float(np.ptp(x)),
        float(y.std()), float(kurtosis(y)) if y.std() > 0 else np.nan, float(skew(y)) if y.std() > 0 else np.nan,
        r_med, r_cv, corr_mean, corr_p10, noise_to_r,
    ])
    return np.concatenate([f_rr, f_spec, f_q, template]).astype(float)


def feature_matrix(signals: Sequence[Any], fs: float = FS) -> np.ndarray:
    return np.stack([rhythm_features(s, fs) for s in signals])


def make_feature_classifier(seed: int = 0) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(class_weight="balanced", max_iter=300, learning_rate=0.05,
                                          max_leaf_nodes=15, l2_regularization=1.0, random_state=seed)


# --------------------------------------------------------------------------- CNN
@dataclass(frozen=True)
class CNNConfig:
    """Settings of the rhythm CNN.

    ``arch``: ``"small"`` (stem + 3 residual blocks, the original model) or ``"resnet-se"``
    (stem + 4 stages of 2 residual blocks with squeeze-and-excitation, average+max pooling).
    ``min_window_s``: when set, each training batch takes a random crop length between it and
    ``window_s`` (a model that must also read short windows, e.g. 10-s streaming windows).
    ``onset_mix``: the share of training crops whose first part (up to ``onset_max_frac`` of the
    crop) is replaced by a stretch of a Normal-rhythm record, label unchanged. A streaming window
    just after an arrhythmia starts looks like that; a model that has seen such windows calls the
    rhythm once it fills most of the window instead of waiting for a window full of it.
    """

    fs: float = 100.0
    window_s: float = 30.0
    channels: tuple[int, ...] = (16, 24, 32, 64)
    kernel: int = 7
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-3
    test_crops: int = 3
    dropout: float = 0.2
    arch: str = "small"
    min_window_s: float | None = None
    label_smoothing: float = 0.0
    blocks_per_stage: int = 2
    onset_mix: float = 0.0
    onset_max_frac: float = 0.5


RESNET_SE = CNNConfig(fs=150.0, window_s=30.0, channels=(32, 64, 128, 128), kernel=9, epochs=60, batch_size=64,
                      lr=3e-3, weight_decay=1e-2, test_crops=5, dropout=0.3, arch="resnet-se",
                      label_smoothing=0.05)
"""The deeper CNN (ResNet-1D with squeeze-and-excitation) used by the signal package and the benchmark."""


def make_rhythm_cnn(n_classes: int = len(CLASSES), config: CNNConfig | None = None) -> Any:
    """The rhythm CNN of ``config.arch``: ``small`` (stem conv + 3 residual blocks, 7 convs, global
    average pooling) or ``resnet-se`` (see :class:`CNNConfig`)."""
    import torch
    from torch import nn

    cfg = config or CNNConfig()
    if len(cfg.channels) != 4:
        raise ConfigError("channels must have 4 entries (stem + 3 blocks)", field="channels")
    if cfg.arch == "resnet-se":
        return _make_resnet_se(n_classes, cfg)
    if cfg.arch != "small":
        raise ConfigError(f"unknown CNN architecture {cfg.arch!r}", field="arch", hint="small | resnet-se")

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, pool: int) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(cin, cout, k, padding=k // 2, bias=False)
            self.b1 = nn.BatchNorm1d(cout)
            self.c2 = nn.Conv1d(cout, cout, k, padding=k // 2, bias=False)
            self.b2 = nn.BatchNorm1d(cout)
            self.skip = nn.Conv1d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
            self.pool = nn.MaxPool1d(pool)
            self.drop = nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(self.drop(y)))
            return self.pool(torch.relu(y + self.skip(x)))

    c = cfg.channels
    k = cfg.kernel
    return nn.Sequential(
        nn.Conv1d(1, c[0], 15, stride=2, padding=7, bias=False), nn.BatchNorm1d(c[0]), nn.ReLU(), nn.MaxPool1d(4),
        Block(c[0], c[1], k, 4), Block(c[1], c[2], k, 4), Block(c[2], c[3], k, 2),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c[3], n_classes),
    )


def _make_resnet_se(n_classes: int, cfg: CNNConfig) -> Any:
    import torch
    from torch import nn

    class SEBlock(nn.Module):
        """Pre-activation-free basic residual block with squeeze-and-excitation."""

        def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
            self.b1 = nn.BatchNorm1d(cout)
            self.c2 = nn.Conv1d(cout, cout, k, padding=k // 2, bias=False)
            self.b2 = nn.BatchNorm1d(cout)
            hidden = max(4, cout // 8)
            self.se = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Conv1d(cout, hidden, 1), nn.ReLU(),
                                    nn.Conv1d(hidden, cout, 1), nn.Sigmoid())
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(
                    nn.AvgPool1d(stride, ceil_mode=True) if stride > 1 else nn.Identity(),
                    nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))
            self.drop = nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(self.drop(y)))
            y = y * self.se(y)
            s = self.skip(x)
            if s.shape[-1] != y.shape[-1]:
                s = s[..., : y.shape[-1]]
            return torch.relu(y + s)

    class ResNetSE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c, k = cfg.channels, cfg.kernel
            self.stem = nn.Sequential(nn.Conv1d(1, c[0], 15, stride=2, padding=7, bias=False),
                                      nn.BatchNorm1d(c[0]), nn.ReLU(), nn.MaxPool1d(2))
            layers: list[nn.Module] = []
            cin = c[0]
            for i, cout in enumerate(c):
                for j in range(max(1, cfg.blocks_per_stage)):
                    layers.append(SEBlock(cin, cout, k, 2 if (j == 0 and i > 0) else 1))
                    cin = cout
            self.body = nn.Sequential(*layers)
            self.drop = nn.Dropout(cfg.dropout)
            self.head = nn.Linear(2 * c[-1], n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(self.stem(x))
            pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)
            return self.head(self.drop(pooled))

    return ResNetSE()


def _resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (1-D or 2-D)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    fr = Fraction(float(fs_out) / float(fs_in)).limit_denominator(100)
    return resample_poly(x, fr.numerator, fr.denominator, axis=-1) if fr != 1 else np.array(x, dtype=float)


def prepare_cnn_batch(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Vectorised :func:`_prepare_cnn_signal` of ``(n, samples)`` windows of one length: resample,
    band-pass 0.5-45 Hz, robust (median / MAD) standardisation per row; float32."""
    from scipy.signal import butter, sosfiltfilt

    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = _resample(x, fs_in, fs_out)
    if y.shape[-1] > 30:
        sos = butter(3, [0.5, min(45.0, fs_out / 2 - 1)], btype="band", fs=fs_out, output="sos")
        y = sosfiltfilt(sos, y, axis=-1)
    else:
        y = y - y.mean(axis=-1, keepdims=True)
    med = np.median(y, axis=-1, keepdims=True)
    scale = np.median(np.abs(y - med), axis=-1, keepdims=True) * 1.4826
    return ((y - med) / (scale + 1e-6)).astype(np.float32)


def _prepare_cnn_signal(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    y = _resample(x, fs_in, fs_out)
    y = _bandpass(y, fs_out, 0.5, min(45.0, fs_out / 2 - 1))
    scale = np.median(np.abs(y - np.median(y))) * 1.4826
    return ((y - np.median(y)) / (scale + 1e-6)).astype(np.float32)


def _crop(x: np.ndarray, n: int, start: int) -> np.ndarray:
    if x.size >= n:
        return x[start:start + n]
    out = np.zeros(n, dtype=np.float32)
    out[start:start + x.size] = x
    return out


def _test_batch(x: np.ndarray, n: int, crops: int) -> np.ndarray:
    if x.size <= n:
        return _crop(x, n, (n - x.size) // 2)[None]
    starts = np.unique(np.linspace(0, x.size - n, max(1, crops)).astype(int))
    return np.stack([_crop(x, n, s) for s in starts])


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def fit_cnn(signals: Sequence[np.ndarray], y: np.ndarray, *, fs: float = FS, config: CNNConfig | None = None,
            seed: int = 0, log: Callable[[str], None] | None = None, device: str | None = "cpu") -> Any:
    """Train :func:`make_rhythm_cnn` on integer labels ``y`` (indices into :data:`CLASSES`).

    The records are resampled and standardised once and packed into one padded tensor on
    ``device`` ("cpu", "cuda" or "auto"); each batch is cut from it there (random crop,
    amplitude scaling with a rare sign flip, Gaussian noise), so a GPU is never starved.
    bf16 autocast on CUDA. The returned model is on the CPU, in eval mode.
    """
    import torch

    cfg = config or CNNConfig()
    dev = torch.device(_pick_device(device))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    xs = [_prepare_cnn_signal(s, fs, cfg.fs) for s in signals]
    y = np.asarray(y, dtype=np.int64)
    n_max = int(round(cfg.window_s * cfg.fs))
    n_min = int(round((cfg.min_window_s or cfg.window_s) * cfg.fs))
    lens = torch.tensor([x.size for x in xs], dtype=torch.long, device=dev)
    big = np.zeros((len(xs), max(int(lens.max()), n_max)), dtype=np.float32)
    for i, x in enumerate(xs):
        big[i, :x.size] = x
    data = torch.from_numpy(big).to(dev)
    labels = torch.from_numpy(y).to(dev)
    counts = np.bincount(y, minlength=len(CLASSES)).astype(float)
    normal_idx = torch.from_numpy(np.flatnonzero(y == CLASSES.index("N"))).to(dev)
    if cfg.onset_mix > 0 and normal_idx.numel() == 0:
        raise InvalidValueError("onset_mix needs Normal-rhythm (N) training records", field="onset_mix")
    weights = torch.tensor(counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    model = make_rhythm_cnn(len(CLASSES), cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * int(np.ceil(len(xs) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.2)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    use_amp = dev.type == "cuda"
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xs))).to(dev)
        total = torch.zeros((), device=dev)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            n = n_max if n_min >= n_max else int(rng.integers(n_min, n_max + 1))
            length = lens[idx]
            span = length - n
            u = torch.rand(idx.numel(), generator=gen, device=dev)
            # records longer than the window: random start; shorter ones: random position of the record
            start = torch.where(span >= 0, torch.floor(u * (span + 1)), -torch.floor(u * (1 - span))).long()
            pos = start[:, None] + torch.arange(n, device=dev)[None, :]
            valid = (pos >= 0) & (pos < length[:, None])
            seg = data[idx[:, None], pos.clamp(0, data.shape[1] - 1)] * valid
            if cfg.onset_mix > 0:
                seg = _onset_mix(seg, data, lens, normal_idx, cfg, gen)
            amp = torch.empty(idx.numel(), 1, device=dev).uniform_(0.7, 1.3, generator=gen)
            flip = torch.where(torch.rand(idx.numel(), 1, generator=gen, device=dev) < 0.1, -1.0, 1.0)
            sd = torch.rand(idx.numel(), 1, generator=gen, device=dev) * 0.1
            seg = seg * amp * flip + torch.randn(seg.shape, generator=gen, device=dev) * sd
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(seg[:, None, :])
            loss = loss_fn(out.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * idx.numel()
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {float(total) / len(xs):.4f}")
    model = model.cpu().eval()
    model.meddx_config = cfg
    return model


def _onset_mix(seg: Any, data: Any, lens: Any, normal_idx: Any, cfg: CNNConfig, gen: Any) -> Any:
    """Replace the first part of a random ``cfg.onset_mix`` share of the crops by Normal rhythm."""
    import torch

    b, n = seg.shape
    dev = seg.device
    mix = torch.rand(b, generator=gen, device=dev) < cfg.onset_mix
    k = torch.floor(torch.rand(b, generator=gen, device=dev) * cfg.onset_max_frac * n).long()
    donor = normal_idx[torch.randint(normal_idx.numel(), (b,), generator=gen, device=dev)]
    dspan = (lens[donor] - k).clamp(min=0)
    dstart = torch.floor(torch.rand(b, generator=gen, device=dev) * (dspan + 1)).long()
    dpos = dstart[:, None] + torch.arange(n, device=dev)[None, :]
    dseg = data[donor[:, None], dpos.clamp(0, data.shape[1] - 1)] * (dpos < lens[donor][:, None])
    head = mix[:, None] & (torch.arange(n, device=dev)[None, :] < k[:, None])
    return torch.where(head, dseg, seg)


def cnn_logits(model: Any, batch: np.ndarray, *, device: str | None = "cpu", chunk: int = 256) -> np.ndarray:
    """Logits of prepared windows ``(n, samples)`` (float32, already at the model's rate)."""
    import torch

    dev = torch.device(_pick_device(device))
    if next(model.parameters()).device != dev:
        model.to(dev)
    model.eval()
    out = []
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for i in range(0, len(batch), chunk):
            xb = torch.from_numpy(np.ascontiguousarray(batch[i:i + chunk])).to(dev)[:, None, :]
            out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(CLASSES)))


def predict_cnn(model: Any, signals: Sequence[np.ndarray], *, fs: float = FS, device: str | None = "cpu",
                logits: bool = False) -> np.ndarray:
    """Class probabilities (or, with ``logits=True``, logits), averaged over ``test_crops`` crops per record.

    All crops of all records run as one batched pass (in chunks); probabilities are averaged
    over crops, logits too (their mean is what a temperature is fitted on).
    """
    import torch

    cfg: CNNConfig = getattr(model, "meddx_config", CNNConfig())
    n = int(round(cfg.window_s * cfg.fs))
    crops = [_test_batch(_prepare_cnn_signal(s, fs, cfg.fs), n, cfg.test_crops) for s in signals]
    if not crops:
        return np.zeros((0, len(CLASSES)))
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(crops)])
    z = cnn_logits(model, np.concatenate(crops), device=device)
    if not logits:
        z = torch.softmax(torch.from_numpy(z), dim=1).numpy()
    out = np.zeros((len(crops), z.shape[1]))
    np.add.at(out, owner, z)
    out /= np.bincount(owner, minlength=len(crops))[:, None]
    model.cpu()
    return out.astype(float)


# --------------------------------------------------------------------------- metric
def _f1(t: np.ndarray, p: np.ndarray, c: int) -> float:
    denom = np.sum(t == c) + np.sum(p == c)
    return float(2 * np.sum((t == c) & (p == c)) / denom) if denom else float("nan")


def _to_index(y: Any) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= len(CLASSES)):
            raise InvalidValueError("integer labels must index CLASSES", field="y")
        return arr.astype(int)
    lookup = {c: i for i, c in enumerate(CLASSES)}
    try:
        return np.asarray([lookup[str(v)] for v in arr], dtype=int)
    except KeyError as exc:
        raise InvalidValueError(f"unknown label {exc.args[0]!r}; expected one of {CLASSES}", field="y") from None


def _scores(t: np.ndarray, p: np.ndarray, proba: np.ndarray | None) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {f"f1_{c}": _f1(t, p, i) for i, c in enumerate(CLASSES)}
    out["score"] = float(np.nanmean([out[f"f1_{c}"] for c in SCORED]))
    out["accuracy"] = float(np.mean(t == p))
    if proba is not None:
        for i, c in enumerate(CLASSES):
            pos = t == i
            out[f"auc_{c}"] = float(roc_auc_score(pos, proba[:, i])) if 0 < pos.sum() < pos.size else float("nan")
    return out


def challenge_score(y_true: Any, y_pred: Any, proba: Any = None, *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """The CinC 2017 score (mean F1 of N, A, O), per-class F1, one-vs-rest AUC, bootstrap 95% CIs.

    Args:
        y_true, y_pred: labels (strings in :data:`CLASSES` or their indices).
        proba: optional ``(n, 4)`` class probabilities, for the AUCs.
        n_boot: bootstrap resamples over records (0: no CIs).

    Returns:
        ``{"score", "f1_N", ..., "auc_N", ..., "accuracy", "n", "ci": {key: [lo, hi]}}``.
    """
    t, p = _to_index(y_true), _to_index(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise InvalidValueError("y_true and y_pred must be non-empty 1-D arrays of one length", field="y_pred")
    pr = None
    if proba is not None:
        pr = np.asarray(proba, dtype=float)
        if pr.shape != (t.size, len(CLASSES)):
            raise InvalidValueError(f"proba must have shape ({t.size}, {len(CLASSES)})", field="proba")
    point: dict[str, Any] = _scores(t, p, pr)
    point["n"] = int(t.size)
    if n_boot > 0:
        import warnings

        rng = np.random.default_rng(seed)
        boots: dict[str, list[float]] = {k: [] for k in point if k != "n"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _ in range(n_boot):
                idx = rng.integers(0, t.size, t.size)
                s = _scores(t[idx], p[idx], None if pr is None else pr[idx])
                for k in boots:
                    boots[k].append(s[k])
            point["ci"] = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
                           if np.any(np.isfinite(v)) else [float("nan")] * 2 for k, v in boots.items()}
    return point


# --------------------------------------------------------------------------- cross-validation
def stratified_folds(labels: Any, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each record, stratified by label; each record is in exactly one test fold."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    if folds < 2:
        raise ConfigError("folds must be >= 2", field="folds")
    out = np.full(y.size, -1, dtype=int)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(y.size), y)):
        out[test] = k
    return out


def cross_validate(signals: Sequence[np.ndarray], labels: Any, *, fs: float = FS, folds: int = 5, seed: int = 0,
                   models: Sequence[str] = ("features", "cnn"), cnn_config: CNNConfig | None = None,
                   n_boot: int = 1000, log: Callable[[str], None] | None = None,
                   features: np.ndarray | None = None, device: str | None = "cpu") -> dict[str, Any]:
    """Stratified k-fold CV by record of the feature model, the CNN and (with both) their ensemble.

    ``features``: a precomputed :func:`feature_matrix` of ``signals`` (else computed here);
    ``device``: where the CNN trains ("cpu", "cuda", "auto").

    Returns ``{"fold": fold ids, "proba": {model: (n, 4)}, "wall_s": {model: s}, "metrics": {model: score}}``;
    ``ensemble`` averages the feature and CNN probabilities.
    """
    unknown = set(models) - {"features", "cnn"}
    if unknown:
        raise ConfigError(f"unknown models {sorted(unknown)}", field="models")
    y = _to_index(labels)
    if len(signals) != y.size:
        raise InvalidValueError("signals and labels differ in length", field="labels")
    fold = stratified_folds(y, folds, seed)
    proba: dict[str, np.ndarray] = {}
    wall: dict[str, float] = {}
    say = log or (lambda _m: None)
    if "features" in models:
        t0 = time.perf_counter()
        feats = feature_matrix(signals, fs) if features is None else np.asarray(features, dtype=float)
        say(f"features: {feats.shape} in {time.perf_counter() - t0:.1f} s")
        pf = np.zeros((y.size, len(CLASSES)))
        for k in range(folds):
            tr, te = fold != k, fold == k
            clf = make_feature_classifier(seed + k).fit(feats[tr], y[tr])
            pf[np.ix_(te, clf.classes_)] = clf.predict_proba(feats[te])
        proba["features"] = pf
        wall["features"] = time.perf_counter() - t0
    if "cnn" in models:
        t0 = time.perf_counter()
        pc = np.zeros((y.size, len(CLASSES)))
        for k in range(folds):
            tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            model = fit_cnn([signals[i] for i in tr], y[tr], fs=fs, config=cnn_config, seed=seed + k, device=device)
            pc[te] = predict_cnn(model, [signals[i] for i in te], fs=fs, device=device)
            say(f"cnn fold {k + 1}/{folds} done at {time.perf_counter() - t0:.1f} s")
        proba["cnn"] = pc
        wall["cnn"] = time.perf_counter() - t0
    if "features" in proba and "cnn" in proba:
        proba["ensemble"] = (proba["features"] + proba["cnn"]) / 2
        wall["ensemble"] = wall["features"] + wall["cnn"]
    metrics = {m: challenge_score(y, pr.argmax(axis=1), pr, n_boot=n_boot, seed=seed) for m, pr in proba.items()}
    return {"fold": fold, "proba": proba, "wall_s": wall, "metrics": metrics}
