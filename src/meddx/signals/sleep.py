"""Actigraphy sleep/wake scoring: Cole-Kripke, Sadeh, and a hybrid LSTM-SVM.

All scorers return one label per epoch, **1 = sleep, 0 = wake**.

* :func:`cole_kripke` — Cole, Kripke, Gruen, Mullaney & Gillin (1992), *Sleep* 15(5):461-469,
  the 1-minute-epoch equation, with the optional Webster rescoring rules (:func:`webster_rescore`).
* :func:`sadeh` — Sadeh, Sharkey & Carskadon (1994), *Sleep* 17(3):201-207.
* :class:`LstmSvm` — a small PyTorch LSTM trained on windows of activity around each
  epoch; its last hidden state is the feature vector of a class-weighted scikit-learn SVC,
  which makes the final call.
* :func:`agreement` — accuracy, Cohen's kappa, sleep sensitivity and wake specificity with
  block-bootstrap confidence intervals (epochs are autocorrelated, so epochs are resampled in
  blocks, 1 hour by default, not one by one).
* :func:`time_blocked_split` — train on the first days, test on the later ones, with a gap of
  one window half-width so that no test window shares epochs with a training window.
* :func:`read_actiware_csv` — the epoch table of a Philips Actiware CSV export.

**What the figures mean.** The only reference labels in the data mirror are the
``Sleep/Wake`` column of the Actiware export, which is scored by the *device software's own
algorithm* (Actiware's weighted-count threshold), not by polysomnography. Every figure that
compares a scorer here with those labels is *agreement with another algorithm*, not
accuracy against PSG; a scorer that copied Actiware's rule would score 100 % and still be
no better at detecting sleep.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    InvalidValueError,
    MissingFieldError,
)

# Cole et al. 1992, 1-minute epochs (zero-crossing mode): weights of A(t-4) … A(t+2).
COLE_KRIPKE_WEIGHTS: tuple[float, ...] = (404.0, 598.0, 326.0, 441.0, 1408.0, 508.0, 350.0)
COLE_KRIPKE_LAGS: tuple[int, ...] = (-4, -3, -2, -1, 0, 1, 2)
COLE_KRIPKE_SCALE = 0.00001
"""P in D = P · Σ W_k A(t+k); the epoch is scored wake when D ≥ 1 (:data:`COLE_KRIPKE_THRESHOLD`)."""
COLE_KRIPKE_THRESHOLD = 1.0

# Sadeh et al. 1994: PS = 7.601 − 0.065·MEAN − 1.08·NAT − 0.056·SD − 0.703·LG; sleep when PS ≥ 0.
SADEH_INTERCEPT = 7.601
SADEH_COEF_MEAN = 0.065
SADEH_COEF_NAT = 1.08
SADEH_COEF_SD = 0.056
SADEH_COEF_LG = 0.703
SADEH_THRESHOLD = 0.0
SADEH_CAP = 300.0
SADEH_NAT_RANGE = (50.0, 100.0)


# --------------------------------------------------------------------------- helpers


def _epochs_per_minute(epoch_s: float) -> int:
    if not epoch_s or epoch_s <= 0:
        raise ConfigError(f"epoch_s must be positive, got {epoch_s!r}", field="epoch_s")
    m = 60.0 / float(epoch_s)
    if abs(m - round(m)) > 1e-9 or round(m) < 1:
        raise ConfigError(
            f"epoch_s={epoch_s} does not divide one minute",
            field="epoch_s",
            hint="Cole-Kripke and Sadeh are defined on 1-minute counts; use 10, 15, 20, 30 or 60 s epochs",
        )
    return int(round(m))


def _as_activity(activity: Any) -> np.ndarray:
    a = np.asarray(activity, dtype=float).ravel()
    if a.size == 0:
        raise InvalidValueError("activity is empty", field="activity")
    if np.any(a[np.isfinite(a)] < 0):
        raise InvalidValueError("activity counts must be >= 0", field="activity")
    return np.where(np.isfinite(a), a, 0.0)


def minute_counts(activity: Any, epoch_s: float) -> np.ndarray:
    """Counts per minute at every epoch: the sum of the ``60/epoch_s`` epochs starting at it.

    This is the rescaling that Cole-Kripke and Sadeh need (both were fitted on 1-minute
    counts). For 30-s epochs it adds each epoch to the next one (scale factor 60/30 = 2
    epochs per minute); at every minute boundary it equals the 1-minute count, and the lags
    of the algorithms are then taken in whole minutes (``k · 60/epoch_s`` epochs), so a
    30-s series scored here agrees with the 1-minute algorithm at each minute and gives a
    label to each half minute too. Missing (NaN) counts count as 0; the end is zero-padded.
    """
    a = _as_activity(activity)
    m = _epochs_per_minute(epoch_s)
    if m == 1:
        return a
    padded = np.concatenate([a, np.zeros(m - 1)])
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    return csum[m:m + a.size] - csum[:a.size]


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x[t + lag], zero outside the recording."""
    out = np.zeros_like(x)
    n = x.size
    if lag >= 0:
        if lag < n:
            out[: n - lag] = x[lag:]
    else:
        if -lag < n:
            out[-lag:] = x[: n + lag]
    return out


# --------------------------------------------------------------------------- Cole-Kripke


def cole_kripke_index(activity: Any, epoch_s: float = 60.0, *, scale: float = COLE_KRIPKE_SCALE) -> np.ndarray:
    """Cole-Kripke's D per epoch: ``D = P · (404 A₋₄ + 598 A₋₃ + 326 A₋₂ + 441 A₋₁ + 1408 A₀ + 508 A₊₁ + 350 A₊₂)``.

    ``A`` are counts per minute (:func:`minute_counts`; epochs shorter than a minute are
    summed to a minute, e.g. two 30-s epochs) at lags of whole minutes, and ``P =
    0.00001`` (the 1-minute, zero-crossing-mode coefficients of Cole et al. 1992).
    Minutes outside the recording count as 0.
    """
    a = minute_counts(activity, epoch_s)
    m = _epochs_per_minute(epoch_s)
    d = np.zeros_like(a)
    for w, lag in zip(COLE_KRIPKE_WEIGHTS, COLE_KRIPKE_LAGS):
        d += w * _lagged(a, lag * m)
    return scale * d


def cole_kripke(
    activity: Any,
    epoch_s: float = 60.0,
    *,
    rescore: bool = False,
    scale: float = COLE_KRIPKE_SCALE,
    threshold: float = COLE_KRIPKE_THRESHOLD,
) -> np.ndarray:
    """Score sleep (1) / wake (0) with Cole-Kripke (1992).

    An epoch is **wake when D ≥ threshold (1.0)**, sleep otherwise, with D from
    :func:`cole_kripke_index` (scale factor P = 0.00001 on counts per minute; 30-s
    epochs are summed in pairs to counts per minute first). ``rescore=True`` applies
    Webster's rescoring rules (:func:`webster_rescore`), as Cole et al. recommend.

    The coefficients were fitted on AMA-32 counts against PSG; on other devices (e.g.
    Actiwatch) the count scale differs, which ``scale`` lets one adjust. Labels compared
    with device software output measure agreement with that algorithm, not with PSG.
    """
    d = cole_kripke_index(activity, epoch_s, scale=scale)
    sleep = (d < threshold).astype(np.int8)
    return webster_rescore(sleep, epoch_s) if rescore else sleep


def _runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, length and value of each run of equal values."""
    change = np.flatnonzero(np.diff(x)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [x.size]])
    return starts, ends - starts, x[starts]


def webster_rescore(sleep: Any, epoch_s: float = 60.0) -> np.ndarray:
    """Webster et al. (1982) rescoring rules, as used by Cole et al. (1992); 1 = sleep.

    a) after ≥ 4 min of wake, the next 1 min scored sleep becomes wake;
    b) after ≥ 10 min of wake, the next 3 min scored sleep become wake;
    c) after ≥ 15 min of wake, the next 4 min scored sleep become wake;
    d) ≤ 6 min of sleep with ≥ 10 min of wake on both sides becomes wake;
    e) ≤ 10 min of sleep with ≥ 20 min of wake on both sides becomes wake.

    Minutes are converted to epochs with ``60/epoch_s``. All rules read the input
    scoring (they do not cascade); an epoch is wake if any rule makes it wake.
    """
    s = np.asarray(sleep).astype(np.int8).ravel()
    m = _epochs_per_minute(epoch_s)
    out = s.copy()
    if s.size == 0:
        return out
    starts, lengths, values = _runs(s)
    for i, (st, ln, v) in enumerate(zip(starts, lengths, values)):
        if v == 0:
            # rules a-c: the sleep run right after this wake run
            n = 4 * m if ln >= 15 * m else 3 * m if ln >= 10 * m else 1 * m if ln >= 4 * m else 0
            if n and i + 1 < len(starts):
                nxt = starts[i + 1]
                out[nxt:nxt + min(n, lengths[i + 1])] = 0
        elif 0 < i < len(starts) - 1:
            before, after = lengths[i - 1], lengths[i + 1]
            if (ln <= 6 * m and before >= 10 * m and after >= 10 * m) or (
                ln <= 10 * m and before >= 20 * m and after >= 20 * m
            ):
                out[st:st + ln] = 0
    return out


# --------------------------------------------------------------------------- Sadeh


def sadeh_index(activity: Any, epoch_s: float = 60.0, *, cap: float = SADEH_CAP) -> np.ndarray:
    """Sadeh's PS per epoch: ``PS = 7.601 − 0.065·MEAN − 1.08·NAT − 0.056·SD − 0.703·LG``.

    On counts per minute (:func:`minute_counts`), capped at ``cap`` = 300 as in the paper:

    * MEAN — mean count over the 11-minute window centred on the epoch (±5 min);
    * NAT — number of minutes in that window with 50 ≤ count < 100 ("active" epochs);
    * SD — standard deviation (n − 1) of the count over the current and 5 previous minutes;
    * LG — natural log of (the epoch's count + 1).

    Minutes outside the recording count as 0.
    """
    a = np.minimum(minute_counts(activity, epoch_s), cap)
    m = _epochs_per_minute(epoch_s)
    window = np.stack([_lagged(a, k * m) for k in range(-5, 6)])
    mean = window.mean(axis=0)
    lo, hi = SADEH_NAT_RANGE
    nat = ((window >= lo) & (window < hi)).sum(axis=0)
    past = np.stack([_lagged(a, -k * m) for k in range(0, 6)])
    sd = past.std(axis=0, ddof=1)
    lg = np.log(a + 1.0)
    return SADEH_INTERCEPT - SADEH_COEF_MEAN * mean - SADEH_COEF_NAT * nat - SADEH_COEF_SD * sd - SADEH_COEF_LG * lg


def sadeh(
    activity: Any,
    epoch_s: float = 60.0,
    *,
    rescore: bool = False,
    cap: float = SADEH_CAP,
    threshold: float = SADEH_THRESHOLD,
) -> np.ndarray:
    """Score sleep (1) / wake (0) with Sadeh (1994): **sleep when PS ≥ 0** (:func:`sadeh_index`).

    Counts are per minute (30-s epochs summed in pairs) and capped at 300. ``rescore=True``
    applies Webster's rules (:func:`webster_rescore`) afterwards; Sadeh did not use them.
    Against device-scored labels the result is agreement with another algorithm, not PSG accuracy.
    """
    sleep = (sadeh_index(activity, epoch_s, cap=cap) >= threshold).astype(np.int8)
    return webster_rescore(sleep, epoch_s) if rescore else sleep


# --------------------------------------------------------------------------- windows and splits


def make_windows(activity: Any, width: int) -> np.ndarray:
    """One window of ``width`` (odd) epochs centred on every epoch, zero-padded at the ends: (n, width)."""
    if width < 1 or width % 2 == 0:
        raise ConfigError(f"window width must be a positive odd number, got {width}", field="width")
    a = _as_activity(activity)
    half = width // 2
    padded = np.concatenate([np.zeros(half), a, np.zeros(half)])
    return np.lib.stride_tricks.sliding_window_view(padded, width).copy()


@dataclass(frozen=True)
class TimeSplit:
    """Epoch indices of a time-blocked split (train strictly before test, with a gap)."""

    train: np.ndarray
    test: np.ndarray
    train_days: int
    test_days: int
    gap: int


def time_blocked_split(n_epochs: int, epoch_s: float, *, train_fraction: float = 0.6, gap: int = 0) -> TimeSplit:
    """Train on the first ``round(train_fraction · days)`` whole days, test on the rest.

    Epochs are autocorrelated, so a random split leaks; here every test epoch comes after
    every training epoch. ``gap`` epochs after the boundary are dropped from the test set
    (use the window half-width so no test window overlaps a training epoch).
    """
    if not 0 < train_fraction < 1:
        raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}", field="train_fraction")
    per_day = int(round(86400 / float(epoch_s)))
    n_days = max(1, math.ceil(n_epochs / per_day))
    if n_days < 2:
        raise ConfigError(f"{n_epochs} epochs of {epoch_s} s is less than 2 days: cannot split by day",
                          field="n_epochs")
    train_days = min(n_days - 1, max(1, int(round(train_fraction * n_days))))
    boundary = min(n_epochs, train_days * per_day)
    train = np.arange(0, boundary)
    test = np.arange(min(n_epochs, boundary + gap), n_epochs)
    return TimeSplit(train=train, test=test, train_days=train_days, test_days=n_days - train_days, gap=gap)


# --------------------------------------------------------------------------- LSTM-SVM


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _make_lstm(hidden: int) -> Any:
    import torch
    from torch import nn

    class _Lstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(x.unsqueeze(-1))
            return h[-1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x)).squeeze(-1)

    return _Lstm()


@dataclass
class LstmSvm:
    """Hybrid LSTM-SVM sleep/wake classifier (1 = sleep, 0 = wake).

    ``fit(windows, labels)``: windows are (n, width) activity counts around each epoch
    (:func:`make_windows`), labels 0/1 for the centre epoch. The counts are transformed
    with ``log1p`` and standardised; a one-layer LSTM (``hidden`` units) is trained
    with a linear head and class-weighted BCE; its last hidden state is then the
    feature vector of an RBF :class:`sklearn.svm.SVC` with ``class_weight="balanced"``
    (fitted on at most ``max_svm_samples`` evenly spaced training windows), which makes
    the final call. Runs on one torch thread.

    Trained on device-scored labels, the model learns to imitate that device algorithm;
    its scores are agreement with it, not accuracy against polysomnography.
    """

    hidden: int = 16
    epochs: int = 6
    batch_size: int = 256
    lr: float = 0.01
    C: float = 1.0
    max_svm_samples: int = 4000
    seed: int = 0
    threads: int = 1
    _net: Any = field(default=None, init=False, repr=False)
    _svm: Any = field(default=None, init=False, repr=False)
    _mu: float = field(default=0.0, init=False, repr=False)
    _sd: float = field(default=1.0, init=False, repr=False)
    width: int | None = field(default=None, init=False)

    def _prep(self, windows: Any) -> np.ndarray:
        x = np.asarray(windows, dtype=float)
        if x.ndim != 2:
            raise InvalidValueError(f"windows must be 2-D (n, width), got shape {x.shape}", field="windows")
        if self.width is not None and x.shape[1] != self.width:
            raise InvalidValueError(f"windows have width {x.shape[1]}, the model was fitted on {self.width}",
                                    field="windows")
        x = np.log1p(np.clip(np.nan_to_num(x, nan=0.0), 0, None))
        return ((x - self._mu) / self._sd).astype(np.float32)

    def _features(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._net.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 2048):
                out.append(self._net.features(torch.from_numpy(x[i:i + 2048])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.hidden), np.float32)

    def fit(self, windows: Any, labels: Any) -> LstmSvm:
        import torch
        from sklearn.preprocessing import StandardScaler
        from sklearn.pipeline import make_pipeline
        from sklearn.svm import SVC

        y = np.asarray(labels, dtype=float).ravel()
        raw = np.asarray(windows, dtype=float)
        if raw.ndim != 2 or len(raw) != len(y):
            raise InvalidValueError(f"windows {raw.shape} and labels {y.shape} do not match", field="labels")
        keep = np.isfinite(y)
        raw, y = raw[keep], y[keep].astype(int)
        if len(np.unique(y)) < 2:
            raise InvalidValueError("labels hold one class only: cannot train sleep/wake", field="labels")
        self.width = None
        lx = np.log1p(np.clip(np.nan_to_num(raw, nan=0.0), 0, None))
        self._mu, self._sd = float(lx.mean()), float(lx.std() or 1.0)
        x = self._prep(raw)
        self.width = x.shape[1]
        with _torch_threads(self.threads):
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            self._net = _make_lstm(self.hidden)
            pos = float(y.mean())
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos))
            opt = torch.optim.Adam(self._net.parameters(), lr=self.lr)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
            self._net.train()
            for _ in range(self.epochs):
                order = torch.from_numpy(rng.permutation(len(x)))
                for i in range(0, len(x), self.batch_size):
                    idx = order[i:i + self.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(self._net(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
            step = max(1, math.ceil(len(x) / self.max_svm_samples))
            sub = np.arange(0, len(x), step)
            feats = self._features(x[sub])
        self._svm = make_pipeline(StandardScaler(), SVC(C=self.C, kernel="rbf", class_weight="balanced",
                                                        random_state=self.seed))
        self._svm.fit(feats, y[sub])
        return self

    def predict(self, windows: Any) -> np.ndarray:
        if self._svm is None:
            raise ConfigError("LstmSvm is not fitted: call fit(windows, labels) first")
        x = self._prep(windows)
        with _torch_threads(self.threads):
            feats = self._features(x)
        return self._svm.predict(feats).astype(np.int8)


# --------------------------------------------------------------------------- agreement


def _metrics_from_counts(tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    n = tp + fn + fp + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        kappa = np.where(pe < 1, (acc - pe) / (1 - pe), np.nan)
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
    return {"accuracy": acc, "kappa": kappa, "sensitivity": sens, "specificity": spec}


def agreement(
    pred: Any,
    reference: Any,
    *,
    epoch_s: float = 30.0,
    block_s: float = 3600.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Agreement of a sleep/wake scoring (1 = sleep) with a reference scoring.

    Returns ``accuracy``, ``kappa`` (:func:`sklearn.metrics.cohen_kappa_score`),
    ``sensitivity`` (sleep epochs of the reference scored sleep) and ``specificity``
    (wake epochs scored wake), each with ``<name>_ci`` = (low, high): a percentile
    block bootstrap over consecutive blocks of ``block_s`` seconds (1 hour), resampled
    with replacement, since neighbouring epochs are not independent. Epochs whose
    reference is missing (NaN) are left out. ``n`` counts the epochs used.

    When the reference is device-scored (e.g. Actiware's ``Sleep/Wake``), these are
    agreement figures with another algorithm, not accuracy against polysomnography.
    """
    from sklearn.metrics import cohen_kappa_score

    p = np.asarray(pred, dtype=float).ravel()
    r = np.asarray(reference, dtype=float).ravel()
    if p.shape != r.shape:
        raise InvalidValueError(f"pred has {p.size} epochs, reference {r.size}", field="pred")
    keep = np.isfinite(r) & np.isfinite(p)
    if not keep.any():
        raise InvalidValueError("no epoch has both a prediction and a reference", field="reference")
    block = max(1, int(round(block_s / float(epoch_s))))
    block_id = np.arange(p.size) // block
    p, r, block_id = p[keep].astype(int), r[keep].astype(int), block_id[keep]
    if not set(np.unique(p)) <= {0, 1} or not set(np.unique(r)) <= {0, 1}:
        raise InvalidValueError("labels must be 0 (wake) or 1 (sleep)", field="pred")

    cells = np.stack([(p == 1) & (r == 1), (p == 0) & (r == 1), (p == 1) & (r == 0), (p == 0) & (r == 0)])
    _, inverse = np.unique(block_id, return_inverse=True)
    n_blocks = int(inverse.max()) + 1
    per_block = np.zeros((4, n_blocks))
    for k in range(4):
        per_block[k] = np.bincount(inverse, weights=cells[k], minlength=n_blocks)
    total = per_block.sum(axis=1)
    point = _metrics_from_counts(*total)
    point["kappa"] = np.asarray(cohen_kappa_score(r, p, labels=[0, 1])) if len(np.unique(np.r_[p, r])) > 1 \
        else np.asarray(np.nan)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks))
    boot_counts = per_block[:, draws].sum(axis=2)  # (4, n_boot)
    boot = _metrics_from_counts(*boot_counts)
    alpha = (1 - ci) / 2
    out: dict[str, Any] = {"n": int(p.size), "n_blocks": n_blocks, "block_s": float(block_s), "ci": ci}
    for name, value in point.items():
        out[name] = float(value)
        b = boot[name][np.isfinite(boot[name])]
        out[f"{name}_ci"] = (float(np.quantile(b, alpha)), float(np.quantile(b, 1 - alpha))) if b.size else \
            (float("nan"), float("nan"))
    return out


# --------------------------------------------------------------------------- Actiware CSV


@dataclass(frozen=True)
class ActiwareRecording:
    """The epoch table of an Actiware export.

    ``sleep`` is the device's ``Sleep/Wake`` score turned into this module's convention,
    1 = sleep / 0 = wake / NaN = not scored; the file itself codes **0 = Sleep, 1 = Wake**
    (kept unchanged in ``sleep_wake_raw``). These labels come from Actiware's own
    algorithm, not from polysomnography.
    """

    path: Path
    epoch_s: float
    time: np.ndarray
    activity: np.ndarray
    sleep: np.ndarray
    sleep_wake_raw: np.ndarray
    interval: np.ndarray

    def __len__(self) -> int:
        return int(self.activity.size)


_REQUIRED = ("Line", "Date", "Time", "Activity", "Sleep/Wake")


def read_actiware_csv(path: str | Path) -> ActiwareRecording:
    """Read a Philips Actiware CSV export (epoch-by-epoch table).

    The export starts with a long header block (subject, device, statistics, marker
    list); the epoch table is found by content — the first line whose fields include
    ``Line``, ``Date``, ``Time``, ``Activity`` and ``Sleep/Wake`` — not by line number.
    The epoch length comes from the ``Epoch Length:`` header line, else from the time
    stamps. Raises :class:`~meddx.exceptions.CorruptFileError` naming the file when the
    table header or its rows are missing.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError("no such file", path=path, hint="Check the path to the Actiware CSV export")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    header_row = None
    epoch_s = None
    for i, line in enumerate(lines):
        if epoch_s is None and line.lstrip('"').startswith("Epoch Length"):
            match = re.search(r"([0-9]+(?:\.[0-9]+)?)", line)
            if match:
                epoch_s = float(match.group(1))
        if line.startswith('"Line"') or line.startswith("Line,"):
            fields = [f.strip() for f in next(csv.reader([line]))]
            if all(name in fields for name in _REQUIRED):
                header_row = i
                break
    if header_row is None:
        raise CorruptFileError(
            "no epoch-by-epoch table: no header line with columns " + ", ".join(_REQUIRED),
            path=path,
            hint="Is this an Actiware CSV export with activity and Sleep/Wake columns?",
        )
    frame = pd.read_csv(io.StringIO("\n".join(lines[header_row:])), skip_blank_lines=True)
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed")]]
    if frame.empty:
        raise CorruptFileError("the epoch table has a header but no rows", path=path, field="Activity")
    for name in ("Activity", "Sleep/Wake"):
        if name not in frame:
            raise MissingFieldError(f"column {name!r} is missing from the epoch table", path=path, field=name)
    when = pd.to_datetime(frame["Date"].astype(str) + " " + frame["Time"].astype(str), format="%d/%m/%Y %H:%M:%S",
                          errors="coerce")
    if epoch_s is None:
        steps = np.diff(when.to_numpy().astype("datetime64[s]").astype(np.int64))
        if steps.size == 0:
            raise CorruptFileError("cannot tell the epoch length", path=path, field="Epoch Length")
        epoch_s = float(np.median(steps))
    activity = pd.to_numeric(frame["Activity"], errors="coerce").to_numpy(dtype=float)
    raw = pd.to_numeric(frame["Sleep/Wake"], errors="coerce").to_numpy(dtype=float)
    sleep = np.where(np.isfinite(raw), 1.0 - raw, np.nan)
    interval = frame["Interval Status"].astype(str).to_numpy() if "Interval Status" in frame else \
        np.full(len(frame), "", dtype=object)
    return ActiwareRecording(path=path, epoch_s=epoch_s, time=when.to_numpy(), activity=activity, sleep=sleep,
                             sleep_wake_raw=raw, interval=interval)


__all__: Sequence[str] = (
    "ActiwareRecording",
    "LstmSvm",
    "TimeSplit",
    "agreement",
    "cole_kripke",
    "cole_kripke_index",
    "make_windows",
    "minute_counts",
    "read_actiware_csv",
    "sadeh",
    "sadeh_index",
    "time_blocked_split",
    "webster_rescore",
)
