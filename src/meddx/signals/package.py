"""The ``signal`` modality: ``meddx train/evaluate/predict`` for single-lead ECG rhythm models.

:mod:`meddx.modalities` routes here for the catalogue set ``ecg-cinc2017-af`` and for any
folder of WFDB records with a ``labels.csv`` (``record,label``; labels ``N``, ``A``, ``O``,
``~`` or their long names ``normal``, ``af``, ``other``, ``noisy``).

A run folder holds a model package like an image one:

* ``package.json`` (``"modality": "signal"``): architecture, class names, the input rate the
  models work at (``fs``), the CNN window (``window_s``), preprocessing, the record IDs of the
  train / validation / test splits, test metrics with 95% CIs, and the trust layer
  (temperature scaling, conformal sets and an abstention policy fitted on the validation split);
* ``model.safetensors``: the CNN's weights (a one-value placeholder for ``--model features``);
* ``features_model.joblib`` (listed in ``extra_files``): the fitted gradient-boosting model of
  the RR/spectral/quality features; its sha256 is checked on load once the package is registered.

:class:`SignalModel` is the in-process API: ``SignalModel.load(folder).predict_proba(windows, fs)``
takes a batch of windows (any length from about 5 s, any sampling rate) and returns calibrated
class probabilities.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import (
    ConfigError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MeddxError,
    ModelError,
)
from meddx.signals import rhythm as R

DATASET = "ecg-cinc2017-af"
MODELS = ("ensemble", "features", "cnn", "cnn-stream")
"""``ensemble`` (features + ``cnn``), ``features``, ``cnn`` (reads records and windows of 6 s or more) and
``cnn-stream`` (the same network for live 6-12-s windows, see :data:`CNN_PRESETS`)."""
FEATURES_FILE = "features_model.joblib"
WEIGHTS_FILE = "model.safetensors"
FEATURE_FS = R.FS
"""Every input is resampled to this rate (Hz) before the features are computed."""
MIN_SECONDS = 5.0
SHORT_WARNING_S = 9.0
CLASS_LONG_NAMES = {"N": "normal sinus rhythm", "A": "atrial fibrillation", "O": "other rhythm", "~": "too noisy"}
_ALIASES = {"n": "N", "normal": "N", "a": "A", "af": "A", "afib": "A", "atrial fibrillation": "A", "o": "O",
            "other": "O", "~": "~", "noisy": "~", "noise": "~"}
_EPS = 1e-6
_DURATION_COLUMN = R.rhythm_feature_names().index("duration_s")
"""Left out of the OOD gate's features: a record's length says nothing about what it is."""


CNN_PRESETS: dict[str, R.CNNConfig] = {
    # random 6-30 s crops: reads 30-s records and 7-s live windows alike. On the test split it scored as the
    # 9-30 s crops did (challenge score 0.839 vs 0.838, AF F1 0.907 vs 0.887) and alerted sooner on streams
    "cnn": dataclasses.replace(R.RESNET_SE, min_window_s=6.0),
    # random 6-12 s crops, 30% of them opened by 0-50% Normal rhythm: live windows (7 s every 1 s) just
    # after an arrhythmia starts; 30-s records are read as five 12-s crops
    "cnn-stream": dataclasses.replace(R.RESNET_SE, window_s=12.0, min_window_s=6.0, onset_mix=0.3),
}
"""The CNN of each model kind (``ensemble`` uses ``cnn``; ``features`` has none)."""


def _cnn_config(epochs: int | None, kind: str = "cnn") -> R.CNNConfig:
    """The package's CNN settings for ``kind`` (:data:`CNN_PRESETS`), with ``epochs`` if given."""
    cfg = CNN_PRESETS.get(kind, CNN_PRESETS["cnn"])
    return dataclasses.replace(cfg, epochs=int(epochs)) if epochs else cfg


# --------------------------------------------------------------------------- data
def _label(value: Any, where: Path, row: int) -> str:
    key = str(value).strip()
    found = _ALIASES.get(key.lower(), key if key in R.CLASSES else None)
    if found is None:
        raise InvalidValueError(f"row {row}: unknown label {key!r}", path=where, field="label",
                                hint=f"Use one of {list(R.CLASSES)} (or normal / af / other / noisy)")
    return found


def _signal_of(sample: Any, path: Path) -> tuple[np.ndarray, float]:
    """The ECG channel of a SignalSample (a channel named ECG/EKG, else the first) and its rate."""
    data = np.asarray(sample.data, dtype=float)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise EmptyDataError("the record holds no samples", path=path)
    from meddx.signals.intended import pick_channel

    col = pick_channel([str(n) for n in (sample.channel_names or [])])
    if not sample.fs or sample.fs <= 0:
        raise InvalidValueError("the record has no sampling rate", path=path, field="fs")
    return data[:, col], float(sample.fs)


def _record_path(value: str | Path) -> Path:
    """A WFDB record given by its header, a signal file or its stem; any other file as is."""
    path = Path(value)
    if not path.exists() and path.with_name(path.name + ".hea").is_file():
        return path.with_name(path.name + ".hea")
    return path


def read_signal(path: str | Path) -> tuple[np.ndarray, float]:
    """One ECG from a WFDB record (``.hea``, ``.dat``/``.mat`` or the stem) or an EDF file, via
    :func:`meddx.data.read`; errors name the file."""
    from meddx.data import read

    p = _record_path(path)
    sample = read(p)
    if getattr(sample, "kind", None) != "signal":
        raise InvalidValueError(f"not a signal file (read as {sample.format})", path=p, field="input",
                                hint="Pass a WFDB record (.hea/.dat or its stem) or an EDF file")
    return _signal_of(sample, p)


def _to_fs(x: np.ndarray, fs: float, target: float = FEATURE_FS) -> np.ndarray:
    return R._resample(np.asarray(x, dtype=float), fs, target) if abs(fs - target) > 1e-9 else np.asarray(x, float)


def load_folder(folder: str | Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """A folder of WFDB records with ``labels.csv`` (``record,label``): signals resampled to
    :data:`FEATURE_FS`, labels in :data:`~meddx.signals.rhythm.CLASSES`, record names."""
    import csv

    base = Path(folder)
    table = base / "labels.csv"
    if not table.is_file():
        raise DataFileNotFoundError("labels.csv not found", path=table, hint="Write one row per record: record,label")
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise EmptyDataError("labels.csv has no rows", path=table)
    missing = {"record", "label"} - set(rows[0])
    if missing:
        raise ConfigError(f"labels.csv lacks column(s) {sorted(missing)}", path=table, field=sorted(missing)[0],
                          hint="Columns: record,label")
    signals, labels, names = [], [], []
    for i, row in enumerate(rows, start=2):
        rec = str(row["record"]).strip()
        x, fs = read_signal(base / Path(rec).with_suffix("").name if rec.endswith(".hea") else base / rec)
        signals.append(np.nan_to_num(_to_fs(x, fs)))
        labels.append(_label(row["label"], table, i))
        names.append(Path(rec).stem if rec.endswith(".hea") else rec)
    return signals, np.asarray(labels), names


def _load_data(data: str) -> tuple[list[np.ndarray], np.ndarray, list[str], dict[str, Any]]:
    if data == DATASET:
        signals, labels, names = R.load_cinc()
        return signals, labels, names, {"dataset": DATASET, "source": DATASET}
    path = Path(data)
    if not path.is_dir():
        raise ConfigError(f"unknown signal data {data!r}", field="data",
                          hint=f"Pass {DATASET!r} or a folder of WFDB records with labels.csv (record,label)")
    signals, labels, names = load_folder(path)
    return signals, labels, names, {"dataset": None, "source": str(path.resolve())}


def split_records(labels: np.ndarray, seed: int = 0, test: float = 0.2, val: float = 0.15) -> np.ndarray:
    """``"train"`` / ``"val"`` / ``"test"`` per record, stratified by label where every class allows it."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    idx = np.arange(y.size)
    if y.size < 6:
        raise InvalidValueError(f"need at least 6 labelled records, got {y.size}", field="data")

    def cut(ix: np.ndarray, share: float, s: int) -> tuple[np.ndarray, np.ndarray]:
        strat = y[ix] if np.min(np.unique(y[ix], return_counts=True)[1]) >= 2 else None
        n_out = max(1, int(round(share * ix.size)))
        if strat is not None and n_out < np.unique(strat).size:
            strat = None
        return train_test_split(ix, test_size=n_out, random_state=s, stratify=strat)

    rest, te = cut(idx, test, seed)
    tr, va = cut(rest, val / (1 - test), seed + 1)
    out = np.empty(y.size, dtype=object)
    out[tr], out[va], out[te] = "train", "val", "test"
    return out.astype(str)


# --------------------------------------------------------------------------- the model
def _feature_proba(clf: Any, feats: np.ndarray) -> np.ndarray:
    out = np.zeros((feats.shape[0], len(R.CLASSES)))
    out[:, clf.classes_] = clf.predict_proba(feats)
    return out


class SignalModel:
    """A loaded signal package: ``SignalModel.load(folder).predict_proba(windows, fs)``.

    ``kind`` is ``ensemble`` (feature model and CNN averaged), ``features`` or ``cnn``.
    Probabilities are calibrated by the package's trust layer (temperature scaling fitted on
    the validation split); :meth:`predict_raw` gives them before calibration.
    """

    def __init__(self, package: dict[str, Any], features_model: Any | None, cnn: Any | None,
                 folder: Path | None = None) -> None:
        self.package = package
        self.folder = folder
        self.kind = str(package.get("model", "ensemble"))
        self.class_names = list(package["class_names"])
        self.features_model = features_model
        self.cnn = cnn
        self.window_head: Any | None = None
        """Optional head for live windows (:mod:`meddx.signals.window_head`)."""
        self._trust: Any | None = None
        self._gate: Any | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder: str | Path) -> SignalModel:
        """Load a run folder or registered package (path or ``name[:version]``); checks the files'
        sha256 when the package records them."""
        from meddx.packaging.registry import read_package, resolve

        folder = resolve(folder)
        package = read_package(folder)
        if package.get("modality") != "signal":
            raise ModelError(f"not a signal model (modality {package.get('modality', 'image')!r})", path=folder,
                             field="modality")
        from meddx.packaging.registry import load_joblib, verify_files

        verify_files(folder, package)
        kind = str(package.get("model", "ensemble"))
        feats = cnn = None
        if kind in ("ensemble", "features"):
            feats = load_joblib(folder, package, FEATURES_FILE)
        if kind in ("ensemble", *CNN_PRESETS):
            from safetensors.torch import load_file

            cfg = R.CNNConfig(**{**package["cnn"]["config"], "channels": tuple(package["cnn"]["config"]["channels"])})
            cnn = R.make_rhythm_cnn(len(R.CLASSES), cfg)
            try:
                cnn.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot load the CNN weights: {exc}", path=folder / WEIGHTS_FILE) from exc
            cnn.eval()
            cnn.meddx_config = cfg
        if kind not in MODELS:
            raise ModelError(f"unknown signal model {kind!r}", path=folder, field="model")
        model = cls(package, feats, cnn, folder)
        if package.get("window_head"):
            from meddx.signals.window_head import HEAD_FILE

            model.window_head = load_joblib(folder, package, HEAD_FILE)
        return model

    @property
    def live_window_s(self) -> float | None:
        """Window length (s) the live-window head was fitted for; ``None`` without a head."""
        entry = self.package.get("window_head") or {}
        return float(entry["window_s"]) if self.window_head is not None and "window_s" in entry else None

    @property
    def trust(self) -> Any:
        if self._trust is None:
            from meddx.inference.trust import TrustLayer

            self._trust = TrustLayer.from_package(self.package)
        return self._trust

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _windows(windows: Any) -> list[np.ndarray]:
        if isinstance(windows, np.ndarray):
            arr = windows.astype(float, copy=False)
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2:
                raise InvalidValueError(f"windows must be (n, samples), got shape {arr.shape}", field="windows")
            return list(arr)
        return [np.asarray(w, dtype=float).ravel() for w in windows]

    def _cnn_proba(self, xs: list[np.ndarray], fs: float, *, with_features: bool = False) -> Any:
        """CNN probabilities: windows of one length run as one vectorised batch (prepared together).

        ``with_features`` also returns each input's pooled penultimate features (the head's input,
        averaged over its crops), which the OOD gate reads.
        """
        import torch

        from meddx._threads import one_thread_below

        captured: list[np.ndarray] = []
        hook = None
        if with_features:
            head = [m for m in self.cnn.modules() if isinstance(m, torch.nn.Linear)][-1]
            hook = head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach().float().numpy()))

        cfg: R.CNNConfig = self.cnn.meddx_config
        n_max = int(round(cfg.window_s * cfg.fs))
        n_min = int(round((cfg.min_window_s or cfg.window_s) * cfg.fs))
        crops: list[np.ndarray] = []
        owner: list[int] = []
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(xs):
            by_len.setdefault(x.size, []).append(i)
        for _, members in by_len.items():
            prepared = R.prepare_cnn_batch(np.stack([xs[i] for i in members]), fs, cfg.fs)
            m = prepared.shape[1]
            if m > n_max:
                starts = np.unique(np.linspace(0, m - n_max, max(1, cfg.test_crops)).astype(int))
                for row, i in zip(prepared, members, strict=True):
                    crops += [row[s:s + n_max] for s in starts]
                    owner += [i] * starts.size
            else:
                width = max(m, n_min)
                for row, i in zip(prepared, members, strict=True):
                    crops.append(R._crop(row, width, (width - m) // 2))
                    owner.append(i)
        # crops of different widths go through the network separately
        probs = np.zeros((len(xs), len(R.CLASSES)))
        feats: np.ndarray | None = None
        owner_arr = np.asarray(owner)
        widths = np.asarray([c.size for c in crops])
        total = int(widths.sum())
        try:
            with one_thread_below(total, 200_000):
                for w in np.unique(widths):
                    sel = np.flatnonzero(widths == w)
                    captured.clear()
                    z = R.cnn_logits(self.cnn, np.stack([crops[j] for j in sel]), device="cpu")
                    np.add.at(probs, owner_arr[sel], torch.softmax(torch.from_numpy(z), dim=1).numpy())
                    if with_features:
                        f = np.concatenate(captured)
                        feats = np.zeros((len(xs), f.shape[1])) if feats is None else feats
                        np.add.at(feats, owner_arr[sel], f)
        finally:
            if hook is not None:
                hook.remove()
        counts = np.bincount(owner_arr, minlength=len(xs))[:, None]
        if with_features:
            return probs / counts, (feats if feats is not None else np.zeros((len(xs), 0))) / counts
        return probs / counts

    @staticmethod
    def _check_windows(xs: list[np.ndarray], fs: float) -> None:
        if not np.isfinite(fs) or fs <= 0:
            raise InvalidValueError(f"fs must be a positive rate in Hz, got {fs}", field="fs")
        for i, x in enumerate(xs):
            if x.size < MIN_SECONDS * fs:
                raise InvalidValueError(f"window {i} lasts {x.size / fs:.1f} s; at least {MIN_SECONDS:g} s needed",
                                        field="windows")
            if not np.all(np.isfinite(x)):
                raise InvalidValueError(f"window {i} holds NaN or infinite samples", field="windows")

    def predict_raw(self, windows: Any, fs: float, *, features: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated class probabilities ``(n, n_classes)`` of windows sampled at ``fs`` Hz
        (``features``: their :func:`~meddx.signals.rhythm.feature_matrix` at 300 Hz, when already computed)."""
        xs = self._windows(windows)
        if not xs:
            return np.zeros((0, len(self.class_names)))
        fs = float(fs)
        self._check_windows(xs, fs)
        parts = []
        if self.features_model is not None:
            feats = features if features is not None else np.stack(
                [R.rhythm_features(_to_fs(x, fs), FEATURE_FS) for x in xs])
            parts.append(_feature_proba(self.features_model, feats))
        if self.cnn is not None:
            parts.append(self._cnn_proba(xs, fs))
        return np.mean(parts, axis=0)

    def window_outputs(self, windows: Any, fs: float) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated probabilities ``(n, n_classes)`` and the raw features the OOD gate reads
        ``(n, d)`` of ``windows`` at ``fs`` Hz: the rhythm features (NaN kept, duration left out) and
        the CNN's pooled penultimate features, one pass for both (see :mod:`meddx.signals.ood`)."""
        xs = self._windows(windows)
        self._check_windows(xs, float(fs))
        parts, feats = [], []
        if self.features_model is not None:
            rhythm = np.stack([R.rhythm_features(_to_fs(x, fs), FEATURE_FS) for x in xs])
            parts.append(_feature_proba(self.features_model, rhythm))
            feats.append(np.delete(rhythm, _DURATION_COLUMN, axis=1))
        if self.cnn is not None:
            proba, pen = self._cnn_proba(xs, float(fs), with_features=True)
            parts.append(proba)
            feats.append(pen)
        return np.mean(parts, axis=0), np.concatenate(feats, axis=1)

    @property
    def ood_gate(self) -> Any:
        """The package's :class:`~meddx.signals.ood.SignalGate`, or None (trained before signal OOD)."""
        if self._gate is None and self.package.get("ood") and self.folder is not None:
            from meddx.signals.ood import SignalGate

            self._gate = SignalGate.from_package(self.folder, self.package)
        return self._gate

    def assess_ood(self, records: Any, fs: float) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """Uncalibrated probabilities of whole records and one OOD verdict per record (None without a gate).

        Records are scored by the mean OOD score of their windows (:data:`meddx.signals.ood.WINDOW_S`)."""
        xs = self._windows(records)
        raw = self.predict_raw(xs, fs)
        gate = self.ood_gate
        if gate is None or not xs:
            return raw, None
        from meddx.signals.ood import windows_of

        wins, owner = windows_of(xs, float(fs), gate.window_s)
        proba_w, feats_w = self.window_outputs(wins, fs)
        return raw, gate.assess_records(feats_w, proba_w, owner, len(xs))

    def predict_window_proba_ood(self, windows: Any, fs: float) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """Live windows: :meth:`predict_window_proba`'s probabilities and one OOD verdict per window
        (None without a gate), the features computed once for both."""
        gate = self.ood_gate
        if gate is None:
            return self.predict_window_proba(windows, fs), None
        raw, feats = self.window_outputs(windows, fs)
        proba = self._calibrate(raw)
        if self.window_head is not None and proba.shape[0]:
            from meddx.signals.window_head import head_proba

            proba = head_proba(self.window_head, proba, np.asarray(windows, dtype=float), float(fs))
        return proba, gate.assess_windows(feats, raw)

    @staticmethod
    def logits_of(proba: np.ndarray) -> np.ndarray:
        """The 'logits' the trust layer calibrates: log of the (averaged) probabilities."""
        return np.log(np.clip(proba, _EPS, 1.0))

    def predict_proba(self, windows: Any, fs: float, *, features: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(n, n_classes)`` for ``windows`` sampled at ``fs`` Hz.

        ``windows``: an ``(n, samples)`` array or a list of 1-D arrays (any length of at least
        5 s; resampled internally). Columns follow ``class_names``.
        """
        return self._calibrate(self.predict_raw(windows, fs, features=features))

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        if raw.shape[0] == 0:
            return raw
        if "calibration" not in (self.package.get("trust") or {}):  # a package without a trust layer
            return raw / raw.sum(axis=1, keepdims=True)
        return self.trust.calibrator.transform(self.logits_of(raw))

    def predict_window_proba(self, windows: Any, fs: float) -> np.ndarray:
        """Class probabilities for live windows: :meth:`predict_proba`, refined by the package's window
        head when it has one (``meddx stream fit-head``). ``windows``: ``(n, samples)`` at ``fs`` Hz."""
        proba = self.predict_proba(windows, fs)
        if self.window_head is None or proba.shape[0] == 0:
            return proba
        from meddx.signals.window_head import head_proba

        return head_proba(self.window_head, proba, np.asarray(windows, dtype=float), float(fs))


# --------------------------------------------------------------------------- train
def refit_ood(model: str | Path, *, flag_rate: float = 0.05) -> dict[str, Any]:
    """``meddx models fit-ood`` for a signal package (see :func:`meddx.signals.ood.refit_ood`)."""
    from meddx.signals.ood import refit_ood as refit

    return refit(model, flag_rate=flag_rate)


def intended_input_of(train_signals: list[np.ndarray]) -> dict[str, Any]:
    """The package's ``intended_input`` (see :mod:`meddx.signals.intended`) from its training records."""
    from meddx.signals.intended import signal_intended_input

    return signal_intended_input(train_signals, FEATURE_FS, min_seconds=MIN_SECONDS,
                                 population={"recordings": "single-lead ECG recordings (AliveCor-like handheld "
                                                           "device for ecg-cinc2017-af)"})


def _fit_models(kind: str, signals: list[np.ndarray], y: np.ndarray, feats: np.ndarray | None, *, seed: int,
                epochs: int | None, progress: bool) -> tuple[Any, Any, dict[str, Any]]:
    clf = cnn = None
    info: dict[str, Any] = {}
    if kind in ("ensemble", "features"):
        t0 = time.perf_counter()
        clf = R.make_feature_classifier(seed)
        if len(y) < 400:  # small local sets: the default 20-record leaves would allow no split at all
            clf.set_params(min_samples_leaf=max(2, len(y) // 20))
        clf.fit(feats, y)
        info["features_seconds"] = round(time.perf_counter() - t0, 2)
    if kind in ("ensemble", *CNN_PRESETS):
        t0 = time.perf_counter()
        cfg = _cnn_config(epochs, kind)
        log = (lambda m: print(f"[cnn] {m}", flush=True)) if progress else None
        cnn = R.fit_cnn(signals, y, fs=FEATURE_FS, config=cfg, seed=seed, log=log, device="auto")
        info["cnn_seconds"] = round(time.perf_counter() - t0, 2)
        info["cnn_device"] = R._pick_device("auto")
    return clf, cnn, info


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None,
          out: Path | None = None, progress: bool = True) -> Path:
    """Train a rhythm model on ``data`` (``ecg-cinc2017-af`` or a WFDB folder with labels.csv);
    return the run folder (a model package).

    Records are split train / validation / test (stratified, by record); the models learn on
    train, the trust layer (temperature scaling + conformal + abstention) is fitted on validation,
    and the test metrics (with bootstrap CIs over records) go into ``package.json``.
    """
    import joblib
    import torch
    from safetensors.torch import save_file

    from meddx import __version__
    from meddx.config import home_dir
    from meddx.inference.trust import fit_trust
    from meddx.packaging.registry import write_package

    kind = model or "ensemble"
    if kind not in MODELS:
        raise ConfigError(f"unknown signal model {kind!r}", field="model", hint=f"Choose one of {list(MODELS)}")
    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    t_start = time.perf_counter()
    signals, labels, names, meta = _load_data(data)
    y = R._to_index(labels)
    split = split_records(labels, seed)
    tr, va, te = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    say(f"{len(signals)} records: train {tr.size}, val {va.size}, test {te.size}")
    feats = None
    if kind in ("ensemble", "features"):
        t0 = time.perf_counter()
        feats = R.feature_matrix(signals, FEATURE_FS)
        say(f"features {feats.shape} in {time.perf_counter() - t0:.1f} s")
    clf, cnn, info = _fit_models(kind, [signals[i] for i in tr], y[tr], None if feats is None else feats[tr],
                                 seed=seed, epochs=epochs, progress=progress)
    cfg = _cnn_config(epochs, kind)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", meta["dataset"] or Path(data).name).strip("-") or "signals"
    run = Path(out) if out else home_dir() / "runs" / f"{stem}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    if cnn is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in cnn.state_dict().items()}
    else:
        state = {"placeholder": torch.zeros(1)}
    save_file(state, str(run / WEIGHTS_FILE))
    extra = []
    if clf is not None:
        joblib.dump(clf, run / FEATURES_FILE)
        extra.append(FEATURES_FILE)
    arch = {"ensemble": f"rhythm-ensemble(gbm-features+{cfg.arch})", "features": "rhythm-gbm-features",
            "cnn": f"rhythm-{cfg.arch}", "cnn-stream": f"rhythm-{cfg.arch}-stream"}[kind]
    package: dict[str, Any] = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": f"{stem}-{kind}",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "modality": "signal",
        "model": kind,
        "architecture": arch,
        "num_classes": len(R.CLASSES),
        "class_names": list(R.CLASSES),
        "class_descriptions": CLASS_LONG_NAMES,
        "positive_class": None,
        "task": "single-lead ECG rhythm classification (multi-class)",
        "fs": FEATURE_FS,
        "window_s": cfg.window_s,
        "min_window_s": MIN_SECONDS,
        "preprocess": {
            "channel": "first channel named ECG/EKG, else the first channel",
            "resample_hz": FEATURE_FS,
            "features": "XQRS R peaks; RR irregularity, Welch band powers, signal quality, median beat "
                        f"({len(R.rhythm_feature_names())} features)",
            "cnn": f"resample to {cfg.fs:g} Hz, band-pass 0.5-45 Hz, median/MAD standardisation; "
                   f"{cfg.window_s:g}-s crops ({cfg.test_crops} averaged on longer inputs; shorter inputs "
                   f"as they are, zero-padded below {cfg.min_window_s or cfg.window_s:g} s)",
        },
        "cnn": {"config": dataclasses.asdict(cfg)} if cnn is not None else None,
        "extra_files": extra,
        "data": {"source": meta["source"], "dataset": meta["dataset"], "train": int(tr.size), "val": int(va.size),
                 "test": int(te.size), "split": "stratified by label, by record (seed %d)" % seed,
                 "counts": {c: int(np.sum(labels == c)) for c in R.CLASSES}},
        "splits": {s: [names[i] for i in ix] for s, ix in (("train", tr), ("val", va), ("test", te))},
        "training": {**info, "seed": seed, "epochs": cfg.epochs if cnn is not None else None},
        "intended_use": "Research and clinical decision support by qualified staff; not for primary diagnosis.",
    }
    sm = SignalModel(package, clf, cnn, run)
    if cnn is not None:
        cnn.meddx_config = cfg
    t0 = time.perf_counter()
    p_val = sm.predict_raw([signals[i] for i in va], FEATURE_FS, features=None if feats is None else feats[va])
    package["trust"] = fit_trust(sm.logits_of(p_val), y[va], calibration="temperature",
                                 fitted_on=f"validation split (n={va.size})")
    sm.package = package
    say(f"calibration fitted in {time.perf_counter() - t0:.1f} s "
        f"(T = {package['trust']['calibration'].get('state', {}).get('temperature')})")
    package["intended_input"] = intended_input_of([signals[i] for i in tr])
    t0 = time.perf_counter()
    from meddx.signals.ood import fit_signal_gate

    gate = fit_signal_gate(sm, [signals[i] for i in tr], y[tr], [signals[i] for i in va], FEATURE_FS)
    package["ood"] = {**gate.to_package(run), "seconds": round(time.perf_counter() - t0, 1)}
    extra.append(package["ood"]["file"])
    sm._gate = gate
    say(f"OOD gate ({gate.method}) fitted in {package['ood']['seconds']} s")
    p_test = sm.predict_proba([signals[i] for i in te], FEATURE_FS, features=None if feats is None else feats[te])
    result = _result(package, y[te], p_test, split="test", data=data, n_boot=1000, seed=seed)
    package["metrics"] = {"data": data, "split": "test", "n": result["n"], "n_boot": 1000,
                          "resampling": "records", "values": result["metrics"]}
    package["training"]["seconds"] = round(time.perf_counter() - t_start, 1)
    write_package(run, package)
    (run / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False, default=_jsonable),
                                      encoding="utf-8")
    try:
        from meddx.packaging.card import write_card

        write_card(run, package)
    except Exception:  # noqa: BLE001 - the card is a convenience; the package is what matters
        pass
    m = result["metrics"]
    say(f"test: challenge score {m['challenge_score']['value']:.3f}, AF F1 {m['f1_A']['value']:.3f}, "
        f"accuracy {m['acc']['value']:.3f}")
    return run


# --------------------------------------------------------------------------- evaluate
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _finite(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _result(package: dict[str, Any], y: np.ndarray, proba: np.ndarray, *, split: str, data: str, n_boot: int,
            seed: int) -> dict[str, Any]:
    """``{"model", "split", "n", "n_groups", "metrics": {name: {"value","low","high"}}}``: the CinC
    challenge score, per-class F1 and AUC, accuracy, macro AUC / F1 / recall, bootstrap CIs over records."""
    from sklearn.metrics import roc_auc_score

    pred = proba.argmax(axis=1)
    cs = R.challenge_score(y, pred, proba, n_boot=n_boot, seed=seed)
    ci = cs.get("ci", {})

    def entry(key: str, value: float) -> dict[str, float | None]:
        lo, hi = ci.get(key, [None, None])
        return {"value": _finite(value), "low": _finite(lo), "high": _finite(hi)}

    metrics: dict[str, dict[str, float | None]] = {"challenge_score": entry("score", cs["score"])}
    metrics["acc"] = entry("accuracy", cs["accuracy"])
    # macro summaries (named as in image evaluation, so `meddx evaluate` tables show them)
    rng = np.random.default_rng(seed)
    present = [i for i in range(len(R.CLASSES)) if 0 < np.sum(y == i) < y.size]

    def macro(t: np.ndarray, p: np.ndarray, pr: np.ndarray) -> tuple[float, float, float]:
        f1 = np.nanmean([R._f1(t, p, c) for c in range(len(R.CLASSES)) if np.any(t == c) or np.any(p == c)])
        rec = np.mean([np.mean(p[t == c] == c) for c in range(len(R.CLASSES)) if np.any(t == c)])
        aucs = [roc_auc_score(t == c, pr[:, c]) for c in range(len(R.CLASSES)) if 0 < np.sum(t == c) < t.size]
        return float(f1), float(rec), float(np.mean(aucs)) if aucs else float("nan")

    point = macro(y, pred, proba)
    boots = []
    if n_boot > 0:
        for _ in range(n_boot):
            idx = rng.integers(0, y.size, y.size)
            boots.append(macro(y[idx], pred[idx], proba[idx]))
    b = np.asarray(boots) if boots else np.full((1, 3), np.nan)
    for j, name in enumerate(("f1", "balanced_acc", "auc")):
        finite = b[:, j][np.isfinite(b[:, j])]
        lo, hi = (np.percentile(finite, [2.5, 97.5]) if finite.size else (np.nan, np.nan))
        metrics[name] = {"value": _finite(point[j]), "low": _finite(lo), "high": _finite(hi)}
    for c in R.CLASSES:
        metrics[f"f1_{c}"] = entry(f"f1_{c}", cs[f"f1_{c}"])
        metrics[f"auc_{c}"] = entry(f"auc_{c}", cs.get(f"auc_{c}", float("nan")))
    counts = {c: int(np.sum(y == i)) for i, c in enumerate(R.CLASSES)}
    return {
        "model": package.get("name"), "version": package.get("version"), "data": data, "split": split,
        "n": int(y.size), "n_groups": int(y.size), "resampling": "records", "n_boot": int(n_boot),
        "class_names": list(R.CLASSES), "class_counts": counts, "classes_present": [R.CLASSES[i] for i in present],
        "metrics": metrics,
        "confusion": _confusion(y, pred),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _confusion(y: np.ndarray, pred: np.ndarray) -> list[list[int]]:
    k = len(R.CLASSES)
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y, pred), 1)
    return m.tolist()


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """Evaluate a signal package on ``ecg-cinc2017-af`` (its own recorded test split by default) or on
    a WFDB folder with labels.csv (all records, or the split named in an optional ``split`` column)."""
    if positive is not None:
        raise ConfigError("--positive applies to binary models; rhythm models have 4 classes", field="positive")
    sm = SignalModel.load(folder)
    if data == DATASET:
        chosen = split or "test"
        ids = (package.get("splits") or {}).get(chosen)
        if chosen == "all":
            ids = None
        elif ids is None:
            raise ConfigError(f"the package records no {chosen!r} split", field="split",
                              hint="Choose test, val, train or all")
        if (package.get("data") or {}).get("dataset") not in (None, DATASET):
            raise ConfigError(f"the package was not trained on {DATASET}; its splits do not apply", field="split")
        signals, labels, _ = R.load_cinc(records=ids)
    else:
        path = Path(data)
        if not path.is_dir():
            raise ConfigError(f"unknown signal data {data!r}", field="data",
                              hint=f"Pass {DATASET!r} or a folder of WFDB records with labels.csv")
        signals, labels, names = load_folder(path)
        chosen = split or "all"
        if split is not None:
            splits = _folder_splits(path)
            if splits is None:
                raise ConfigError("labels.csv has no split column", path=path / "labels.csv", field="split",
                                  hint="Drop --split to evaluate every record")
            keep = [i for i, n in enumerate(names) if splits.get(n) == split]
            if not keep:
                raise ConfigError(f"no record in split {split!r}", path=path / "labels.csv", field="split")
            signals, labels = [signals[i] for i in keep], labels[keep]
    y = R._to_index(labels)
    raw, ood = sm.assess_ood(signals, FEATURE_FS)
    proba = sm._calibrate(raw)
    result = _result(package, y, proba, split=chosen, data=data, n_boot=n_boot, seed=seed)
    from meddx.signals.ood import shift_report

    result["shift"] = shift_report(proba, y, sm.class_names, sm.ood_gate, ood, seed=seed)
    calibration = result["shift"].get("calibration") or {}
    if "ece" in calibration:  # top-level, as in image and record JSON: the ECE beside its noise floor at this n
        result["ece"] = calibration["ece"]
        result["ece_noise_floor"] = calibration["ece_noise_floor"]["p95"]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_jsonable), encoding="utf-8")
    return result


def _folder_splits(path: Path) -> dict[str, str] | None:
    import csv

    with open(path / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "split" not in rows[0]:
        return None
    return {str(r["record"]).strip().removesuffix(".hea"): str(r["split"]).strip() for r in rows}


# --------------------------------------------------------------------------- validate
LOSO_NOTE = "the catalogue records no source or site per record for {set}: leave-one-source-out does not apply"
_SOURCES_NOTE = {DATASET: " (the CinC 2017 records all come from one device, AliveCor, and carry no site)"}


def _boot_ci(stat: Any, n: int, groups: np.ndarray | None, *, n_boot: int, seed: int) -> dict[str, float | None]:
    """``stat(indices)`` on all cases with a bootstrap 95% CI that resamples groups (cases when None)."""
    import warnings

    value = stat(np.arange(n))
    rng = np.random.default_rng(seed)
    members = None
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1)] if n else []
        if len(members) < 2:  # one record: resampling it says nothing about other patients
            n_boot = 0
    boots = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(n_boot if n else 0):
            if members is None:
                idx = rng.integers(0, n, n)
            else:
                idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            boots.append(stat(idx))
    finite = np.asarray([b for b in boots if b is not None and np.isfinite(b)], dtype=float)
    if value is None or not np.isfinite(value):
        return {"value": None, "low": None, "high": None}
    if not finite.size:
        return {"value": float(value), "low": None, "high": None}
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"value": float(value), "low": float(low), "high": float(high)}


def validation_row(kind: str, source: str, labels: Any, proba: np.ndarray, *, groups: Any = None,
                   n_boot: int = 1000, seed: int = 0, note: str = "", **extra: Any) -> dict[str, Any]:
    """One ``meddx validate`` row of a rhythm model (:func:`meddx.evaluation.validate.block`) with the
    rhythm figures beside it: the CinC challenge score (mean F1 of N, A, O), the AF-vs-rest AUC (the
    clinically key one), the share of non-AF cases called AF and of AF cases found, each class's recall
    and the confusion matrix (rows: reference, columns: prediction, in :data:`~meddx.signals.rhythm.CLASSES`);
    CIs resample ``groups`` (records / patients) when given, and are left out with fewer than two groups."""
    from meddx.evaluation.validate import auc_ci, block

    y = R._to_index(labels)
    proba = np.asarray(proba, dtype=float)
    pred = proba.argmax(axis=1)
    g = None if groups is None else np.asarray(groups)
    a = R.CLASSES.index("A")

    def score(idx: np.ndarray) -> float:
        return float(R._scores(y[idx], pred[idx], None)["score"]) if idx.size else float("nan")

    def share(mask_of: Any) -> Any:
        def stat(idx: np.ndarray) -> float:
            mask = mask_of(y[idx])
            return float(np.mean(pred[idx][mask] == a)) if mask.any() else float("nan")
        return stat

    return block(
        kind, source, y, proba, n_boot=n_boot, seed=seed, groups=g, note=note,
        n_groups=int(len(np.unique(g))) if g is not None else int(y.size),
        class_counts={c: int(np.sum(y == i)) for i, c in enumerate(R.CLASSES)},
        challenge_score=_boot_ci(score, y.size, g, n_boot=n_boot, seed=seed),
        auc_af=auc_ci((y == a).astype(int), proba[:, a], seed=seed, groups=g,
                      n_boot=n_boot if g is None or len(np.unique(g)) > 1 else 0),
        af_called_when_not_af=_boot_ci(share(lambda t: t != a), y.size, g, n_boot=n_boot, seed=seed),
        af_found_when_af=_boot_ci(share(lambda t: t == a), y.size, g, n_boot=n_boot, seed=seed),
        recall={c: float(np.mean(pred[y == i] == i)) for i, c in enumerate(R.CLASSES) if np.any(y == i)},
        confusion=_confusion(y, pred),
        **extra,
    )


def _internal_split(package: dict[str, Any], folder: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The package's own test records (signals at :data:`FEATURE_FS`, labels)."""
    data = package.get("data") or {}
    ids = (package.get("splits") or {}).get("test")
    if not ids:
        raise ConfigError("the package records no test split", path=folder / "package.json", field="splits.test",
                          hint="Retrain with `meddx train`, which records the split")
    if data.get("dataset") == DATASET:
        signals, labels, _ = R.load_cinc(records=ids)
        return signals, labels
    source = Path(str(data.get("source") or ""))
    if not source.is_dir():
        raise DataFileNotFoundError("the package's training folder is not here", path=source,
                                    hint="Validate where the training folder is, or pass folders only")
    signals, labels, names = load_folder(source)
    keep = [i for i, n in enumerate(names) if n in set(ids)]
    return [signals[i] for i in keep], labels[keep]


def _score(sm: SignalModel, signals: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
    """Calibrated probabilities of records at :data:`FEATURE_FS` and the share the OOD gate flags
    (None for a package without a gate), the features computed once for both."""
    raw, ood = sm.assess_ood(signals, FEATURE_FS)
    share = float(np.mean([bool(v["flagged"]) for v in ood])) if ood else None
    return sm._calibrate(raw), share


def _folder_groups(path: Path, names: list[str]) -> np.ndarray:
    """Group of each record of a folder: its ``patient`` column in labels.csv, else the record itself."""
    import csv

    with open(path / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "patient" in rows[0]:
        by = {str(r["record"]).strip().removesuffix(".hea"): str(r["patient"]).strip() for r in rows}
        return np.asarray([by.get(n, n) for n in names], dtype=str)
    return np.asarray(names, dtype=str)


def validate(folder: Path, package: dict[str, Any], *, folders: list[str] | tuple[str, ...] = (), n_boot: int = 1000,
             seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """``meddx validate`` for rhythm models: the package's own test split (internal) beside every
    external check its data allow (see :mod:`meddx.evaluation.validate`).

    External rows: each collection registered for the training set
    (:func:`meddx.signals.external.collections_for`; MIT-BIH Arrhythmia for ``ecg-cinc2017-af``),
    then each folder in ``folders``: WFDB records + labels.csv (optional ``patient`` column for the
    CI groups), or, without labels.csv, WFDB records with rhythm annotations (``.atr``), cut into
    30-s segments and labelled as MIT-BIH is (:mod:`meddx.signals.external`). Records of the model's
    own training folder that it learnt from are left out.
    """
    from meddx.signals.external import SEGMENT_S, annotated_records, collections_for, segment_wfdb_records

    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    sm = SignalModel.load(folder)
    data = package.get("data") or {}
    dataset = data.get("dataset")
    set_name = dataset or Path(str(data.get("source") or "")).name or "?"
    t0 = time.perf_counter()
    signals, labels = _internal_split(package, Path(folder))
    proba, flagged = _score(sm, signals)
    internal = validation_row("internal", f"{set_name} test split", labels, proba, n_boot=n_boot, seed=seed,
                              note="the package's own held-out test records", ood_flagged=flagged,
                              seconds=round(time.perf_counter() - t0, 1))
    say(f"internal: {internal['n']} records in {internal['seconds']} s")
    external = []
    for collection in collections_for(dataset):
        t0 = time.perf_counter()
        ext = collection.load()
        proba, flagged = _score(sm, ext.signals)
        row = validation_row("other collection", collection.name, ext.labels, proba, groups=ext.groups,
                             n_boot=n_boot, seed=seed, note=ext.note, collection=ext.summary(), ood_flagged=flagged,
                             seconds=round(time.perf_counter() - t0, 1))
        external.append(row)
        say(f"{collection.name}: {row['n']} segments of {row['n_groups']} records in {row['seconds']} s")
    seen = set((package.get("splits") or {}).get("train", [])) | set((package.get("splits") or {}).get("val", []))
    source = Path(str(data.get("source") or "")).resolve() if data.get("source") and not dataset else None
    for item in folders:
        t0 = time.perf_counter()
        path = Path(item)
        annotated = annotated_records(path) if path.is_dir() and not (path / "labels.csv").is_file() else []
        if annotated:  # WFDB records with rhythm annotations: cut and labelled like MIT-BIH
            ext = segment_wfdb_records(annotated, source=path.name)
            if not ext.signals:
                raise EmptyDataError("no segment with a rhythm label", path=path,
                                     hint=f"Skipped: {ext.skipped}; left out: {ext.excluded}")
            proba, flagged = _score(sm, ext.signals)
            external.append(validation_row(
                "folder", path.name, ext.labels, proba, groups=ext.groups, n_boot=n_boot, seed=seed,
                note=f"WFDB records with rhythm annotations, {SEGMENT_S:g}-s segments labelled from them",
                collection=ext.summary(), ood_flagged=flagged, seconds=round(time.perf_counter() - t0, 1)))
            say(f"folder {path.name}: {len(ext.signals)} segments in {external[-1]['seconds']} s")
            continue
        sigs, labs, names = load_folder(path)
        note = "user folder, scored as it is"
        if source is not None and path.resolve() == source:
            keep = [i for i, n in enumerate(names) if n not in seen]
            note = f"the model's own training folder: {len(names) - len(keep)} records it learnt from left out"
            sigs, labs, names = [sigs[i] for i in keep], labs[keep], [names[i] for i in keep]
        if not sigs:
            raise EmptyDataError("no record left to validate on", path=path / "labels.csv")
        proba, flagged = _score(sm, sigs)
        row = validation_row("folder", path.name, labs, proba, groups=_folder_groups(path, names), n_boot=n_boot,
                             seed=seed, note=note, ood_flagged=flagged, seconds=round(time.perf_counter() - t0, 1))
        external.append(row)
        say(f"folder {path.name}: {row['n']} records in {row['seconds']} s")
    return {"model": package.get("name"), "version": package.get("version"), "kind": package.get("model"),
            "set": set_name, "modality": "signal", "internal": internal, "external": external,
            "leave_one_source_out": {"applicable": False, "why": LOSO_NOTE.format(set=set_name) + _SOURCES_NOTE.get(set_name, "")}}


# --------------------------------------------------------------------------- predict
def _quality_warnings(x: np.ndarray, fs: float) -> list[str]:
    out = []
    dur = x.size / fs
    if dur < SHORT_WARNING_S:
        out.append(f"signal shorter than {SHORT_WARNING_S:g} s ({dur:.1f} s): rhythm estimates are less reliable")
    dx = np.abs(np.diff(x))
    if x.size < 2 or np.ptp(x) < 1e-6:
        out.append("flat line: the signal does not change")
    else:
        flat = dx < 1e-9
        run = 0
        if flat.any():
            edges = np.diff(np.concatenate([[0], flat.astype(int), [0]]))
            run = int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))
        if run / fs >= 2.0:
            out.append(f"flat line: {run / fs:.1f} s without change (lead off?)")
        amax = np.max(np.abs(x))
        if amax > 0 and np.mean(np.abs(x) >= 0.999 * amax) > 0.05:
            out.append("saturated: more than 5% of samples at the extreme value")
    return out


@dataclasses.dataclass
class Screened:
    """One input after reading and the intended-input check: the signal the model takes (at
    :data:`FEATURE_FS`, in mV) or the reasons it was rejected."""

    input: str
    x: np.ndarray | None
    fs: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)


def screen_sample(sample: Any, input: str, intended: dict[str, Any] | None) -> Screened:
    """Check a read :class:`~meddx.data.sample.SignalSample` against ``intended`` and turn it into the
    model's input (its ECG channel in mV, resampled to :data:`FEATURE_FS`); a rejection never raises."""
    import meddx.signals.intended as SI  # registers the "signal" check
    from meddx.trust.intended import check_sample

    reasons = check_sample(sample, intended) if intended else []
    if not reasons and getattr(sample, "kind", None) != "signal":
        reasons = [f"not a signal file (read as {getattr(sample, 'format', '?')}); pass a WFDB record "
                   "(.hea/.dat or its stem) or an EDF file"]
    if reasons:
        return Screened(input, None, float(getattr(sample, "fs", 0.0) or 0.0), reasons=reasons)
    try:
        x, fs = _signal_of(sample, Path(input))
    except MeddxError as exc:
        return Screened(input, None, reasons=[str(exc)])
    col = SI.pick_channel([str(n) for n in (sample.channel_names or [])]) if sample.channel_names else 0
    units = list(sample.units or [])
    unit = units[col] if col < len(units) else ""
    warns = []
    factor = SI.mv_factor(unit)
    if factor not in (None, 1.0):
        x = SI.to_model_units(x, unit)
        warns.append(f"channel in {unit}, converted to mV")
    if x.size < MIN_SECONDS * fs:
        return Screened(input, None, fs, reasons=[f"the record lasts {x.size / fs:.1f} s; this model needs at "
                                                  f"least {MIN_SECONDS:g} s"])
    if not np.all(np.isfinite(x)):
        warns.append(f"{int(np.sum(~np.isfinite(x)))} missing samples set to 0")
        x = np.nan_to_num(x)
    warns += _quality_warnings(x, fs)
    if abs(fs - FEATURE_FS) > 1e-9:
        warns.append(f"input sampled at {fs:g} Hz, resampled to {FEATURE_FS:g} Hz")
    return Screened(input, _to_fs(x, fs), fs, warns)


def screen_file(item: str | Path, intended: dict[str, Any] | None) -> Screened:
    """Read one WFDB record / EDF file and screen it; an unreadable file is a rejection naming it."""
    from meddx.data import read

    path = _record_path(item)
    try:
        sample = read(path)
    except MeddxError as exc:
        return Screened(str(item), None, reasons=[str(exc)])
    except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong, and go on with the batch
        return Screened(str(item), None, reasons=[f"{path}: cannot read the signal: {type(exc).__name__}: {exc}"])
    return screen_sample(sample, str(item), intended)


def predict_screened(sm: SignalModel, screened: list[Screened], *, extra_warnings: tuple[str, ...] = ()
                     ) -> list[Any]:
    """The full :class:`~meddx.inference.schema.Prediction` of each screened input, in order: rejected
    inputs get ``Prediction.rejected``; the others carry the OOD verdict and the quality check, and
    their decision comes from :func:`meddx.trust.decide.decide` (rejected > OOD refer > poor quality
    refer > the trust layer's decision)."""
    from meddx.calibration.abstention import predictive_entropy
    from meddx.inference.schema import OOD, Decision, InputCheck, Prediction, Uncertainty
    from meddx.signals.ood import quality_decision, record_quality
    from meddx.trust.decide import decide

    package = sm.package
    names = sm.class_names
    base = {"modality": "signal", "model": str(package.get("name")), "model_version": str(package.get("version")),
            "class_names": names, "intended_use": package.get("intended_use")}
    ok = [s for s in screened if s.x is not None]
    raw, ood = sm.assess_ood([s.x for s in ok], FEATURE_FS) if ok else (np.zeros((0, len(names))), None)
    trusted = sm.trust.apply(sm.logits_of(raw), names, None) if ok else []
    alpha = sm.trust.alpha
    checked = InputCheck(passed=True) if package.get("intended_input") else None
    done: dict[int, Any] = {}
    for j, (s, p_raw, t) in enumerate(zip(ok, raw, trusted, strict=True)):
        cal = np.asarray(t["calibrated"], dtype=float)
        h = float(predictive_entropy(cal[None])[0])
        quality = record_quality(s.x, FEATURE_FS)
        trust_decision = quality_decision(quality) if quality["poor"] else t["decision"]
        verdict = ood[j] if ood else None
        warns = list(s.warnings) + ([f"signal quality: {quality['failed']} of {quality['windows']} windows fail "
                                     f"({', '.join(quality['reasons'])})"] if quality["failed"] else [])
        done[id(s)] = Prediction(
            input=s.input, **base,
            probabilities={c: float(v) for c, v in zip(names, p_raw, strict=True)},
            calibrated_probabilities={c: float(v) for c, v in zip(names, cal, strict=True)},
            calibration=str((package.get("trust") or {}).get("calibration", {}).get("name", "identity")),
            prediction=names[int(np.argmax(cal))],
            uncertainty=Uncertainty(method="none", samples=1, predictive_entropy=h, expected_entropy=h,
                                    mutual_information=0.0, max_probability=float(cal.max())),
            prediction_set=t["set"], coverage=(1 - alpha) if alpha is not None else None,
            decision=Decision(**decide(trust_decision, ood=verdict)),
            ood=OOD(**verdict) if verdict else None, input_check=checked,
            warnings=[*warns, *extra_warnings],
        )
    return [done[id(s)] if s.x is not None else Prediction.rejected(input=s.input, reasons=s.reasons, **base)
            for s in screened]


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One :class:`~meddx.inference.schema.Prediction` dict per WFDB record / EDF file in ``inputs``.

    A file that cannot be read, or that is not what the model was made for (the package's
    ``intended_input``: an ECG channel in a voltage unit, a rate, a length, an amplitude), gets a
    ``rejected`` prediction with the reason; the batch goes on. Options from ``meddx predict``
    (uncertainty, samples, explain) are accepted; signal models report ``uncertainty.method == "none"``
    and no explanation (a warning says so when one is asked).
    """
    if not inputs:
        raise ConfigError("no input files", field="files", hint="Pass WFDB records (.hea/.dat) or EDF files")
    sm = SignalModel.load(folder)
    extra = []
    if options.get("uncertainty") not in (None, "auto", "none"):
        extra.append(f"uncertainty {options['uncertainty']!r} is not available for signal models; method none")
    if options.get("explain"):
        extra.append("explanations are not available for signal models")
    screened = [screen_file(item, package.get("intended_input")) for item in inputs]
    return [p.to_json_dict() for p in predict_screened(sm, screened, extra_warnings=tuple(extra))]


__all__ = ["DATASET", "MODELS", "Screened", "SignalModel", "evaluate", "load_folder", "predict",
           "predict_screened", "read_signal", "screen_file", "screen_sample", "split_records", "train", "validate",
           "validation_row"]


def report(folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
           split: str | None = None) -> Path:
    """``meddx report`` for rhythm models: the evaluation (default: the package's own test records) as
    one HTML page with the per-class metrics and the confusion matrix."""
    from meddx.report.summary import write_summary_report

    data = data or (package.get("data") or {}).get("dataset") or DATASET
    result = evaluate(folder, package, data, split=split, n_boot=n_boot, out=None)
    names = list(result.get("class_names") or package["class_names"])
    confusion = result.get("confusion") or []
    tables = [("Confusion matrix (rows: reference, columns: prediction)", ["reference", *names],
               [[names[i], *row] for i, row in enumerate(confusion)])] if confusion else []
    return write_summary_report(package, result, out, tables=tables)
