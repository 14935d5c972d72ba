"""Out-of-distribution detection for signal models: is this ECG like the ones the model learned from?

The shared gate (:mod:`meddx.trust.ood`) is fitted on **windows** (:data:`WINDOW_S` seconds, cut
without overlap from each record), so one detector serves both paths:

* a live window (:mod:`meddx.stream.runner`) is scored on its own, against the window threshold
  (validation windows' ``1 - flag_rate`` quantile);
* a record (``meddx predict``/``evaluate``) is scored as the mean of its windows' scores, against
  the record threshold (the same quantile of validation records' mean scores).

Each window's feature vector is what the model itself reads: the rhythm features
(:func:`meddx.signals.rhythm.rhythm_features`, with the count of not-computable ones, imputed
and robustly standardised on the training windows; the window's duration is left out) for
packages with a feature model, and the CNN's pooled penultimate features for packages with one.
The logits are the log of the model's window probabilities (so ``msp`` works; ``energy`` is
constant on log-probabilities and is not fitted).

Besides the gate, :func:`record_quality` runs the stream's signal-quality policy
(:class:`meddx.stream.quality.QualityPolicy`: flat line, saturation, high-frequency noise) on a
record's windows: a record most of whose windows fail is referred for poor signal quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.trust.ood import DEFAULT_FLAG_RATE, OODGate, fit_ood, load_gate, threshold_for
from meddx.trust.drift import ks_statistic

WINDOW_S = 7.0
"""Gate window (s): the stream runner's default live window, so stream windows are scored as fitted."""
METHODS = ("mahalanobis", "knn", "msp")
METHOD = "mahalanobis"
"""The method predictions use (declared before measuring; ``bench/ood_signals.py`` reports all three)."""
CLIP = 50.0
"""Standardised features are clipped to +-CLIP: far enough to flag, finite enough for the covariance."""


def cut_windows(x: np.ndarray, fs: float, window_s: float = WINDOW_S) -> list[np.ndarray]:
    """Non-overlapping ``window_s`` windows of ``x`` (the tail shorter than a window is dropped);
    a record shorter than one window is its own single window."""
    n = int(round(window_s * fs))
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size <= n:
        return [x]
    return [x[i:i + n] for i in range(0, x.size - n + 1, n)]


@dataclass
class FeatureScaler:
    """Median imputation and robust standardisation (median / 1.4826 MAD) of raw window features."""

    median: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, raw: np.ndarray) -> FeatureScaler:
        x = np.asarray(raw, dtype=np.float64)
        med = np.nanmedian(x, axis=0)
        med = np.where(np.isfinite(med), med, 0.0)
        filled = np.where(np.isfinite(x), x, med)
        mad = 1.4826 * np.median(np.abs(filled - med), axis=0)
        sd = filled.std(axis=0)
        scale = np.where(mad > 1e-9, mad, np.where(sd > 1e-9, sd, 1.0))
        return cls(med, scale)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float64)
        missing = (~np.isfinite(x)).sum(axis=1, keepdims=True).astype(np.float64)
        filled = np.where(np.isfinite(x), x, self.median)
        return np.concatenate([np.clip((filled - self.median) / self.scale, -CLIP, CLIP), missing], axis=1)

    def to_dict(self) -> dict[str, list[float]]:
        return {"median": [float(v) for v in self.median], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, block: dict[str, Any]) -> FeatureScaler:
        return cls(np.asarray(block["median"], dtype=np.float64), np.asarray(block["scale"], dtype=np.float64))


@dataclass
class SignalGate:
    """A signal package's OOD gate: one fitted :class:`OODGate`, window and record thresholds."""

    gate: OODGate
    """Its ``thresholds`` are the record thresholds (the mean window score of a record)."""
    window_thresholds: dict[str, float]
    scaler: FeatureScaler
    window_s: float = WINDOW_S

    @property
    def method(self) -> str:
        return self.gate.method

    @property
    def flag_rate(self) -> float:
        return self.gate.flag_rate

    def window_scores(self, raw_features: np.ndarray, proba: np.ndarray, method: str | None = None) -> np.ndarray:
        """OOD scores of windows from their raw features and the model's probabilities."""
        logits = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-6, 1.0))
        return self.gate.scores(self.scaler.transform(raw_features), logits, method)

    def assess_windows(self, raw_features: np.ndarray, proba: np.ndarray, method: str | None = None
                       ) -> list[dict[str, Any]]:
        """One verdict per window (``method``, ``score``, ``threshold``, ``flagged``, ``flag_rate``)."""
        name = method or self.method
        scores = self.window_scores(raw_features, proba, name)
        t = float(self.window_thresholds[name])
        return [{"method": name, "score": float(s), "threshold": t, "flagged": bool(s > t),
                 "flag_rate": self.flag_rate} for s in scores]

    def record_scores(self, raw_features: np.ndarray, proba: np.ndarray, owner: np.ndarray, n: int,
                      method: str | None = None) -> np.ndarray:
        """Mean window score per record (``owner``: the record index of each window)."""
        s = self.window_scores(raw_features, proba, method)
        return np.bincount(owner, weights=s, minlength=n) / np.maximum(np.bincount(owner, minlength=n), 1)

    def assess_records(self, raw_features: np.ndarray, proba: np.ndarray, owner: np.ndarray, n: int,
                       method: str | None = None) -> list[dict[str, Any]]:
        """One verdict per record (the mean of its windows' scores against the record threshold)."""
        name = method or self.method
        scores = self.record_scores(raw_features, proba, owner, n, name)
        t = float(self.gate.thresholds[name])
        return [{"method": name, "score": float(s), "threshold": t, "flagged": bool(s > t),
                 "flag_rate": self.flag_rate} for s in scores]

    @property
    def reference(self) -> dict[str, list[float]]:
        """Validation scores of the gate's method: ``records`` and ``windows`` (for KS tests and drift)."""
        return dict(self.gate.info.get("reference") or {})

    def drift_monitor(self, *, horizon: int = 1000, false_alarm: float = 0.05, draws: int = 400,
                      seed: int = 0) -> Any:
        """A fresh :class:`~meddx.trust.drift.DriftMonitor` for a device's live windows.

        :meth:`DriftMonitor.create <meddx.trust.drift.DriftMonitor.create>` sets its thresholds for
        independent studies; a device's consecutive windows are not (a record that looks unusual
        gives several flagged windows in a row), and those thresholds false-alarmed on 26% of
        simulated in-distribution streams of 1,000 windows (``bench/results/ood_signals.md``). Here
        both thresholds come from replays of the validation records' own window scores, record by
        record in random order, so the stated false-alarm rate holds for streams like those.
        """
        from meddx.trust.drift import DriftMonitor

        ref = self.reference
        scores = np.asarray(ref.get("windows") or [], dtype=np.float64)
        owner = np.asarray(ref.get("window_record") or [], dtype=np.int64)
        if scores.size < 20 or owner.size != scores.size:  # a gate fitted before record blocks were stored
            return DriftMonitor.create(self.flag_rate, scores if scores.size else None, horizon=horizon,
                                       false_alarm=false_alarm)
        monitor = DriftMonitor.create(self.flag_rate, None, horizon=horizon, false_alarm=false_alarm)
        monitor.reference = [float(v) for v in scores]
        threshold = float(self.window_thresholds[self.method])
        blocks = [scores[owner == r] for r in np.unique(owner)]
        up, down = math.log(monitor.p1 / monitor.p0), math.log((1 - monitor.p1) / (1 - monitor.p0))
        ref_sorted = np.sort(scores)
        rng = np.random.default_rng(seed)
        cusum_peaks, ks_peaks = np.empty(draws), np.empty(draws)
        for d in range(draws):
            seq: list[np.ndarray] = []
            total = 0
            while total < horizon:
                block = blocks[int(rng.integers(len(blocks)))]
                seq.append(block)
                total += block.size
            stream = np.concatenate(seq)[:horizon]
            c = peak = 0.0
            for step in np.where(stream > threshold, up, down):
                c = max(0.0, c + step)
                peak = max(peak, c)
            cusum_peaks[d] = peak
            ks_peaks[d] = max(ks_statistic(ref_sorted, stream[end - monitor.window:end])
                              for end in range(monitor.window, horizon + 1, monitor.step))
        monitor.h = float(np.quantile(cusum_peaks, 1 - false_alarm / 2)) + 1e-9
        monitor.ks_limit = float(np.quantile(ks_peaks, 1 - false_alarm / 2)) + 1e-9
        return monitor

    def to_package(self, folder: str | Path) -> dict[str, Any]:
        """Write ``ood.npz``; return the ``package.json["ood"]`` block."""
        block = self.gate.to_package(folder)
        for name, t in self.window_thresholds.items():
            block["methods"][name]["window_threshold"] = float(t)
        return {**block, "unit": "record (mean of its window scores)", "window_s": self.window_s,
                "scaler": self.scaler.to_dict()}

    @classmethod
    def from_package(cls, folder: str | Path, package: dict[str, Any]) -> SignalGate | None:
        """The package's gate, or None for a package trained before signal OOD detection."""
        block = package.get("ood")
        if not block:
            return None
        if "scaler" not in block:
            raise ModelError("the package's OOD block has no feature scaler (not a signal gate)",
                             path=folder, field="ood.scaler", hint="Refit it: meddx.signals.ood.refit_ood(MODEL)")
        gate = load_gate(folder, package)
        assert gate is not None
        windows = {n: float(block["methods"][n].get("window_threshold", gate.thresholds[n])) for n in gate.detectors}
        for key in ("unit", "window_s", "scaler"):
            gate.info.pop(key, None)
        return cls(gate, windows, FeatureScaler.from_dict(block["scaler"]), float(block.get("window_s", WINDOW_S)))


def windows_of(signals: Sequence[np.ndarray], fs: float, window_s: float = WINDOW_S
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Every record's windows, flattened, and the record index (owner) of each."""
    wins: list[np.ndarray] = []
    owner: list[int] = []
    for i, x in enumerate(signals):
        cut = cut_windows(x, fs, window_s)
        wins += cut
        owner += [i] * len(cut)
    return wins, np.asarray(owner, dtype=np.int64)


def fit_signal_gate(model: Any, train: Sequence[np.ndarray], y_train: np.ndarray, val: Sequence[np.ndarray],
                    fs: float, *, window_s: float = WINDOW_S, flag_rate: float = DEFAULT_FLAG_RATE,
                    methods: tuple[str, ...] = METHODS, method: str = METHOD) -> SignalGate:
    """Fit the gate on the training records' windows; threshold it on the validation records'.

    ``model`` is a :class:`~meddx.signals.package.SignalModel` (its ``window_outputs`` gives each
    window's probabilities and raw features).
    """
    if len(val) < 2:
        raise ConfigError(f"the OOD gate needs validation records to set its threshold, got {len(val)}",
                          field="val", hint="Train on at least ~20 labelled records")
    tr_w, tr_owner = windows_of(train, fs, window_s)
    va_w, va_owner = windows_of(val, fs, window_s)
    p_tr, f_tr = model.window_outputs(tr_w, fs)
    p_va, f_va = model.window_outputs(va_w, fs)
    return gate_from_window_outputs((p_tr, f_tr, tr_owner), np.asarray(y_train), (p_va, f_va, va_owner), len(val),
                                    window_s=window_s, flag_rate=flag_rate, methods=methods, method=method,
                                    features=_describe(model), n_train=len(train))


def gate_from_window_outputs(train: tuple[np.ndarray, np.ndarray, np.ndarray], y_train: np.ndarray,
                             val: tuple[np.ndarray, np.ndarray, np.ndarray], n_val: int, *,
                             window_s: float = WINDOW_S, flag_rate: float = DEFAULT_FLAG_RATE,
                             methods: tuple[str, ...] = METHODS, method: str = METHOD,
                             features: str = "window features", n_train: int | None = None) -> SignalGate:
    """:func:`fit_signal_gate` from window outputs already computed: ``(probabilities, raw features,
    record index of each window)`` of the training and validation windows; ``y_train`` per training record."""
    p_tr, f_tr, tr_owner = train
    p_va, f_va, va_owner = val
    n_train = int(tr_owner.max()) + 1 if n_train is None else n_train
    scaler = FeatureScaler.fit(f_tr)
    log_tr, log_va = (np.log(np.clip(p, 1e-6, 1.0)) for p in (p_tr, p_va))
    gate = fit_ood(scaler.transform(f_tr), log_tr, y_train[tr_owner], scaler.transform(f_va), log_va,
                   methods=methods, method=method, flag_rate=flag_rate, features=features,
                   fitted_on=f"{window_s:g}-s windows of the training records ({n_train} records)",
                   threshold_on=f"{window_s:g}-s windows of the validation records ({n_val} records)")
    window_thresholds = dict(gate.thresholds)
    signal_gate = SignalGate(gate, window_thresholds, scaler, window_s)
    record_thresholds: dict[str, float] = {}
    reference: dict[str, list[float]] = {}
    for name in gate.detectors:
        rec = signal_gate.record_scores(f_va, p_va, va_owner, n_val, name)
        record_thresholds[name] = threshold_for(rec, flag_rate)
        gate.info["methods"][name]["val_record_flag_rate"] = float(np.mean(rec > record_thresholds[name]))
        if name == gate.method:
            win = signal_gate.window_scores(f_va, p_va, name)
            reference = {"records": [round(float(v), 6) for v in rec], "windows": [round(float(v), 6) for v in win],
                         "window_record": [int(o) for o in va_owner]}
    gate.thresholds = record_thresholds
    gate.info["reference"] = reference
    gate.info["n_threshold_records"] = n_val
    if n_val < 100:
        gate.info["warning"] = (f"the record threshold was chosen on {n_val} validation records: the "
                                f"in-distribution flag rate may differ from {flag_rate:.0%} by several points")
    return signal_gate


def _describe(model: Any) -> str:
    parts = []
    if getattr(model, "features_model", None) is not None:
        parts.append("rhythm features (robustly standardised, + count of not-computable ones)")
    if getattr(model, "cnn", None) is not None:
        parts.append("CNN pooled penultimate features")
    return " + ".join(parts) or "window features"


def record_quality(x: np.ndarray, fs: float, window_s: float = WINDOW_S, policy: Any = None) -> dict[str, Any]:
    """The stream's quality policy on a record's windows: ``{"windows", "failed", "reasons", "poor"}``.

    ``poor`` when more than half of the windows fail (a single artefact does not condemn a record).
    """
    from meddx.stream.quality import OK, QualityPolicy

    policy = policy or QualityPolicy()
    wins = cut_windows(x, fs, window_s)
    n = min(w.size for w in wins)
    verdicts = policy.check(np.stack([w[:n] for w in wins]), fs)
    failed = [v for v in verdicts if v != OK]
    reasons = sorted(set(failed), key=failed.count, reverse=True)
    return {"windows": len(verdicts), "failed": len(failed), "reasons": reasons,
            "poor": len(failed) * 2 > len(verdicts)}


def quality_decision(quality: dict[str, Any]) -> dict[str, str]:
    """The trust decision a poor-quality record gets instead of the model's: refer, with the reason."""
    return {"decision": "refer",
            "reason": f"poor signal quality: {quality['failed']} of {quality['windows']} {WINDOW_S:g}-s windows "
                      f"fail the quality check ({', '.join(quality['reasons'])}); record again"}


def refit_ood(model: str | Path, *, flag_rate: float = DEFAULT_FLAG_RATE, window_s: float = WINDOW_S,
              progress: bool = False) -> dict[str, Any]:
    """(Re)fit a signal package's OOD gate and intended input on its own training and validation records.

    For packages trained before signal OOD detection existed, or to change the flag rate.
    Returns the new ``package.json["ood"]`` block.
    """
    import time

    from meddx.packaging.card import write_card
    from meddx.packaging.registry import read_package, resolve, write_package
    from meddx.signals import package as SP
    from meddx.signals import rhythm as R

    folder = resolve(model)
    sm = SP.SignalModel.load(folder)
    package = read_package(folder)
    splits = package.get("splits") or {}
    if not splits.get("train") or not splits.get("val"):
        raise ConfigError("the package records no train/val split to fit the OOD gate on", path=folder,
                          field="splits", hint="Retrain it with `meddx train` (which fits the gate)")
    source = (package.get("data") or {}).get("dataset") or (package.get("data") or {}).get("source")
    signals, labels, names = SP._load_data(str(source))[:3]
    index = {n: i for i, n in enumerate(names)}
    tr = [index[n] for n in splits["train"]]
    va = [index[n] for n in splits["val"]]
    y = R._to_index(labels)
    t0 = time.perf_counter()
    gate = fit_signal_gate(sm, [signals[i] for i in tr], y[tr], [signals[i] for i in va], SP.FEATURE_FS,
                           window_s=window_s, flag_rate=flag_rate)
    block = gate.to_package(folder)
    block["seconds"] = round(time.perf_counter() - t0, 1)
    if progress:
        print(f"OOD gate fitted in {block['seconds']} s", flush=True)
    package["ood"] = block
    package["intended_input"] = SP.intended_input_of([signals[i] for i in tr])
    package["extra_files"] = sorted({*package.get("extra_files", []), block["file"]})
    if "files" in package:  # a registered package lists every file's sha256
        package["files"] = {**package["files"], block["file"]: block["sha256"]}
    write_package(folder, package)
    try:
        write_card(folder, package)
    except Exception:  # noqa: BLE001 - the card is a convenience
        pass
    return block


# ------------------------------------------------------------------------------- evaluation
def wilson(k: int, n: int, z: float = 1.959964) -> dict[str, float | None]:
    """The share ``k / n`` with its Wilson score 95% interval (None when ``n`` is 0)."""
    if n == 0:
        return {"value": None, "low": None, "high": None}
    from meddx.trust.drift import wilson_interval

    low, high = wilson_interval(k / n, n, z)
    return {"value": k / n, "low": low, "high": high}


def ece_noise_floor(proba: Any, *, draws: int = 500, seed: int = 0, n_bins: int = 15) -> dict[str, float]:
    """The top-label ECE a *perfectly calibrated* model with these probabilities shows at this n.

    Labels are drawn from the model's own probabilities, so the true calibration error is 0 and
    every bit of measured ECE is sampling noise: ``p95`` is the floor a measured ECE must pass to
    be evidence of miscalibration at this n.
    """
    from meddx.calibration.metrics import ece

    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=1)
    values = np.array([ece(p, (rng.random(len(p))[:, None] > cumulative).sum(axis=1).clip(max=p.shape[1] - 1),
                           n_bins=n_bins) for _ in range(draws)])
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)), "draws": draws, "n": int(len(p))}


def shift_report(proba: np.ndarray, y: np.ndarray, class_names: Sequence[str], gate: SignalGate | None,
                 ood: list[dict[str, Any]] | None, *, seed: int = 0) -> dict[str, Any]:
    """Is this data set like the package's validation data, and are the probabilities right on it?

    The share of records the OOD gate flags (Wilson 95% CI, one-sided binomial test against the
    gate's flag rate), a two-sample KS test of their OOD scores against the validation records',
    calibration-in-the-large per class (mean probability minus observed frequency), the top-label
    ECE with its noise floor at this n, and :func:`meddx.trust.drift.recommend`'s plain advice.
    """
    from meddx.calibration.metrics import ece
    from meddx.trust.drift import binomial_p_greater, ks_two_sample, recommend

    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n = int(len(y))
    out: dict[str, Any] = {"n": n}
    share = 0.0
    flag_rate = gate.flag_rate if gate is not None else DEFAULT_FLAG_RATE
    if ood and gate is not None:
        k = int(sum(bool(r["flagged"]) for r in ood))
        share = k / n if n else 0.0
        scores = [float(r["score"]) for r in ood]
        reference = gate.reference.get("records") or []
        out["ood"] = {"method": gate.method, "expected_flag_rate": flag_rate, "flagged": k,
                      "share_flagged": wilson(k, n), "binomial_p_greater": binomial_p_greater(k, n, flag_rate),
                      "ks_vs_validation": ({**ks_two_sample(scores, reference), "n_reference": len(reference)}
                                           if reference and n else None)}
    else:
        out["ood"] = None
    if n:
        observed = np.bincount(y, minlength=proba.shape[1]) / n
        citl = proba.mean(axis=0) - observed
        worst = int(np.argmax(np.abs(citl)))
        value = float(ece(proba, y))
        floor = ece_noise_floor(proba, seed=seed)
        out["calibration"] = {
            "calibration_in_the_large": {c: float(v) for c, v in zip(class_names, citl, strict=True)},
            "calibration_in_the_large_worst": {"class": class_names[worst], "value": float(citl[worst])},
            "ece": value, "ece_noise_floor": floor,
            "ece_above_floor": bool(value > floor["p95"]),
        }
        out["recommendation"] = recommend(share, flag_rate, n, ece=value, ece_floor=floor["p95"],
                                          calibration_in_the_large=float(citl[worst]))
    return out


__all__ = ["METHODS", "WINDOW_S", "FeatureScaler", "SignalGate", "cut_windows", "ece_noise_floor",
           "fit_signal_gate", "gate_from_window_outputs", "quality_decision", "record_quality", "refit_ood",
           "shift_report", "wilson", "windows_of"]
