"""Out-of-distribution detection: "I was not made for this input" as a first-class answer.

A classifier's softmax says how sure it is *among its classes*; on an input from
elsewhere (a CT slice given to a chest X-ray model, an adult film given to a paediatric
one) it can still be confidently wrong. An :class:`OODGate` scores how far an input's
features lie from the training data and flags it when the score passes a threshold
chosen on validation data for a stated in-distribution flag rate (5% by default).

Detectors (:data:`DETECTORS`, higher score = more out-of-distribution):

* ``mahalanobis-layers``: the same in every stage of the network (channel means and standard
  deviations of each stage, plus the penultimate layer), standardised and summed;
* ``mahalanobis``: squared Mahalanobis distance of the penultimate features to the nearest
  class mean under a shared, Ledoit-Wolf-shrunk covariance (Lee et al., NeurIPS 2018);
* ``knn``: distance to the k-th nearest training feature after L2 normalisation
  ("deep kNN", Sun et al., ICML 2022), by scikit-learn's exact neighbour search;
* ``energy``: the negative log-sum-exp of the logits (Liu et al., NeurIPS 2020);
* ``msp``: one minus the largest softmax probability (Hendrycks & Gimpel, 2017), the baseline.

Every modality uses the same gate on its own feature vector: an image model's penultimate
layer, a signal model's window features, a record model's standardised inputs. The fitted
detectors are saved in the package (``ood.npz`` plus a JSON block in ``package.json``),
every compared method with its own threshold, so a benchmark or a user can switch method
without refitting. The default method was chosen by measurement (``python -m bench.ood``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, ModelError

OOD_FILE = "ood.npz"
DEFAULT_FLAG_RATE = 0.05
DEFAULT_METHOD = "mahalanobis-layers"
"""Chosen by ``python -m bench.ood`` (see ``bench/results/ood.md``)."""
METHODS = ("mahalanobis-layers", "mahalanobis", "knn", "energy", "msp")
RULE_OUT_RATE = 0.10
"""A negative answer reassures, so on an atypical input it is the costliest error: the gate's threshold
for negative answers flags this share of the validation cases the model calls negative (twice the
default flag rate). Measured in ``bench/results/ood.md``."""
MIN_RULE_OUT_CASES = 20
"""Fewer validation cases called negative than this: no separate rule-out threshold."""
SMALL_VALIDATION = 100
"""Below this many validation cases the threshold's flag rate is itself noisy; the package says so."""


Groups = list[tuple[str, int, int]]
"""Named column ranges of a feature vector: ``[("penultimate", 0, 128), ("stage1", 128, 192), ...]``."""


class Detector:
    """A fitted OOD scorer: ``score(features, logits)`` is higher for inputs farther from training."""

    name = ""

    def fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray, groups: Groups | None = None) -> Detector:
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Detector:
        return cls()


DETECTORS: dict[str, type[Detector]] = {}


def register_detector(name: str) -> Callable[[type[Detector]], type[Detector]]:
    """Register a :class:`Detector` subclass under ``name``."""

    def deco(cls: type[Detector]) -> type[Detector]:
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return deco


def _as_features(features: Any, what: str = "features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidValueError(f"{what} must have shape (N, D) with N >= 1, got {x.shape}", field=what)
    if not np.all(np.isfinite(x)):
        raise InvalidValueError(f"{what} hold NaN or inf", field=what)
    return x


@register_detector("mahalanobis")
class Mahalanobis(Detector):
    """Minimum squared Mahalanobis distance to a class mean (shared shrunk covariance)."""

    def __init__(self, means: np.ndarray | None = None, precision: np.ndarray | None = None,
                 columns: tuple[int, int] | None = None) -> None:
        self.means, self.precision, self.columns = means, precision, columns

    def fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
            groups: Groups | None = None) -> Mahalanobis:
        from sklearn.covariance import LedoitWolf

        if groups:
            self.columns = (groups[0][1], groups[0][2])
        x = _columns(_as_features(features), self.columns)
        y = np.asarray(labels).reshape(-1)
        classes = np.unique(y)
        self.means = np.stack([x[y == c].mean(axis=0) for c in classes])
        centred = np.concatenate([x[y == c] - m for c, m in zip(classes, self.means, strict=True)])
        self.precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = _columns(_as_features(features), self.columns)
        distances = []
        for mean in self.means:
            d = x - mean
            distances.append(np.einsum("nd,de,ne->n", d, self.precision, d))
        return np.min(np.stack(distances), axis=0)

    def state(self) -> dict[str, np.ndarray]:
        out = {"means": self.means.astype(np.float64), "precision": self.precision.astype(np.float64)}
        if self.columns is not None:
            out["columns"] = np.asarray(self.columns)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Mahalanobis:
        columns = tuple(int(v) for v in state["columns"]) if "columns" in state else None
        return cls(state["means"], state["precision"], columns)


def _columns(x: np.ndarray, columns: tuple[int, int] | None) -> np.ndarray:
    return x if columns is None else x[:, columns[0]:columns[1]]


@register_detector("mahalanobis-layers")
class LayerMahalanobis(Detector):
    """Mahalanobis distance in every feature group (penultimate layer and each stage's channel
    statistics), each standardised on the training data (log scale), then combined.

    Far-away inputs (another modality, a colour photograph) differ first in low-level
    statistics that the penultimate layer of a classifier may have learnt to ignore; summing
    the stages' evidence is the "feature ensemble" of Lee et al. (2018). No OOD data are
    available to fit weights on, so the weights follow the evidence's two sources: what the
    network sees (the mean over its groups) and the image itself (the ``input`` group, the
    only one training cannot teach to ignore anything) count equally. Without an ``input``
    group every group counts once. Measured in ``bench/results/ood.md``: the plain sum let a
    few atypical in-distribution films outscore blood smears (AUROC 0.983); equal sources 0.994.
    """

    def __init__(self, parts: list[Mahalanobis] | None = None, centre: np.ndarray | None = None,
                 scale: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        self.parts, self.centre, self.scale = parts or [], centre, scale
        self.weights = weights if weights is not None else (None if scale is None else np.ones(len(scale)))

    @staticmethod
    def weights_for(groups: Groups) -> np.ndarray:
        """Equal weight to the network's groups together and to the ``input`` group (ones without one)."""
        is_input = np.array([name == "input" for name, _, _ in groups])
        if not is_input.any() or is_input.all():
            return np.ones(len(groups))
        return np.where(is_input, 1.0 / is_input.sum(), 1.0 / (~is_input).sum())

    def fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
            groups: Groups | None = None) -> LayerMahalanobis:
        x = _as_features(features)
        groups = groups or [("all", 0, x.shape[1])]
        self.parts = [Mahalanobis(columns=(start, end)).fit(x, logits, labels) for _, start, end in groups]
        raw = np.log1p(np.stack([p.score(x, logits) for p in self.parts], axis=1))
        self.centre, self.scale = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-6)
        self.weights = self.weights_for(groups)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = _as_features(features)
        raw = np.log1p(np.stack([p.score(x, logits) for p in self.parts], axis=1))
        return ((raw - self.centre) / self.scale) @ self.weights

    def state(self) -> dict[str, np.ndarray]:
        out = {"centre": self.centre, "scale": self.scale, "weights": self.weights}
        for k, part in enumerate(self.parts):
            out.update({f"{k}.{key}": value for key, value in part.state().items()})
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> LayerMahalanobis:
        count = len(state["centre"])
        parts = [Mahalanobis.from_state({key.split(".", 1)[1]: v for key, v in state.items()
                                         if key.startswith(f"{k}.")}) for k in range(count)]
        return cls(parts, state["centre"], state["scale"], state.get("weights"))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@register_detector("knn")
class DeepKNN(Detector):
    """Distance to the k-th nearest (L2-normalised) training feature."""

    MAX_BANK = 20000

    def __init__(self, bank: np.ndarray | None = None, k: int = 10, columns: tuple[int, int] | None = None) -> None:
        self.bank, self.k, self.columns = bank, int(k), columns
        self._index: Any = None

    def fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
            groups: Groups | None = None) -> DeepKNN:
        if groups:
            self.columns = (groups[0][1], groups[0][2])
        x = _normalise(_columns(_as_features(features), self.columns))
        if len(x) > self.MAX_BANK:  # a fixed random subset keeps the package and the search small
            x = x[np.random.default_rng(0).choice(len(x), self.MAX_BANK, replace=False)]
        self.bank = x.astype(np.float32)
        self.k = max(1, min(self.k, len(self.bank)))
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self._index is None:
            from sklearn.neighbors import NearestNeighbors

            self._index = NearestNeighbors(n_neighbors=self.k, algorithm="brute").fit(self.bank)
        x = _normalise(_columns(_as_features(features), self.columns)).astype(np.float32)
        distances, _ = self._index.kneighbors(x, n_neighbors=self.k)
        return distances[:, -1].astype(np.float64)

    def state(self) -> dict[str, np.ndarray]:
        out = {"bank": self.bank, "k": np.asarray(self.k)}
        if self.columns is not None:
            out["columns"] = np.asarray(self.columns)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> DeepKNN:
        columns = tuple(int(v) for v in state["columns"]) if "columns" in state else None
        return cls(np.asarray(state["bank"], dtype=np.float32), int(state["k"]), columns)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


@register_detector("energy")
class Energy(Detector):
    """Negative log-sum-exp of the logits (free energy at temperature 1)."""

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return -_logsumexp(logits)


@register_detector("msp")
class MaxSoftmax(Detector):
    """One minus the largest softmax probability (the usual baseline)."""

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        return 1.0 - np.exp(z.max(axis=1) - _logsumexp(z))


@dataclass
class OODResult:
    """One input's verdict, as the prediction schema carries it."""

    method: str
    score: float
    threshold: float
    flagged: bool
    rule_out_threshold: float | None = None
    """A negative answer above this score is referred (see :data:`RULE_OUT_RATE`); None: no such threshold."""

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "score": self.score, "threshold": self.threshold, "flagged": self.flagged}
        if self.rule_out_threshold is not None:
            out["rule_out_threshold"] = self.rule_out_threshold
        return out


@dataclass
class OODGate:
    """Fitted detectors with thresholds; ``method`` is the one predictions use."""

    method: str
    detectors: dict[str, Detector]
    thresholds: dict[str, float]
    flag_rate: float = DEFAULT_FLAG_RATE
    info: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    """Validation scores of each method (``val_scores/<method>``): the in-distribution reference that
    batch shift tests compare a new site's scores with."""

    def scores(self, features: Any, logits: Any, method: str | None = None) -> np.ndarray:
        """OOD scores ``(N,)`` of ``method`` (default: the gate's own)."""
        name = method or self.method
        if name not in self.detectors:
            raise ConfigError(f"no fitted OOD detector {name!r} in this package", field="ood.method",
                              hint=f"Fitted: {sorted(self.detectors)}")
        logits = np.asarray(logits, dtype=np.float64)
        features = np.asarray(features, dtype=np.float64) if features is not None else np.zeros((len(logits), 1))
        expected = self.info.get("n_features")
        if expected is not None and features.ndim == 2 and features.shape[1] != expected:
            raise ModelError(f"the network gives {features.shape[1]} features, the OOD gate was fitted on {expected}",
                             field="ood", hint="Re-export and refit: `meddx models export MODEL` then "
                             "`meddx models fit-ood MODEL`")
        return self.detectors[name].score(features, logits)

    def rule_out_threshold(self, negative_class: int | None, method: str | None = None,
                           rate: float = RULE_OUT_RATE) -> float | None:
        """The stricter threshold for negative answers: the ``1 - rate`` quantile of the validation scores
        of the cases the model called ``negative_class`` (None without that reference or class)."""
        name = method or self.method
        scores, called = self.reference.get(f"val_scores/{name}"), self.reference.get("val_argmax")
        if negative_class is None or scores is None or called is None or len(called) != len(scores):
            return None
        negatives = np.asarray(scores)[np.asarray(called) == negative_class]
        if len(negatives) < MIN_RULE_OUT_CASES:
            return None
        return min(threshold_for(negatives, rate), self.thresholds[name])

    def assess(self, features: Any, logits: Any, method: str | None = None,
               negative_class: int | None = None) -> list[OODResult]:
        """One :class:`OODResult` per row: score, threshold, whether it is flagged and, for a binary model
        whose ``negative_class`` is given, the stricter threshold a negative answer must stay under."""
        name = method or self.method
        scores = self.scores(features, logits, name)
        threshold = self.thresholds[name]
        rule_out = self.rule_out_threshold(negative_class, name)
        return [OODResult(name, float(s), float(threshold), bool(s > threshold), rule_out) for s in scores]

    def to_package(self, folder: str | Path) -> dict[str, Any]:
        """Write ``ood.npz`` into ``folder``; return the JSON block for ``package.json["ood"]``."""
        arrays = {f"{name}/{key}": value for name, det in self.detectors.items() for key, value in det.state().items()}
        arrays.update({f"reference/{key}": value for key, value in self.reference.items()})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        path = Path(folder) / OOD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return {**self.info, "file": OOD_FILE, "sha256": hashlib.sha256(data).hexdigest(), "method": self.method,
                "flag_rate": self.flag_rate,
                "methods": {name: {"threshold": float(self.thresholds[name]), **self.info.get("methods", {}).get(name, {})}
                            for name in self.detectors}}

    @classmethod
    def from_package(cls, folder: str | Path, block: dict[str, Any]) -> OODGate:
        """The gate saved by :meth:`to_package` (checks the file's sha256)."""
        path = Path(folder) / str(block.get("file", OOD_FILE))
        if not path.is_file():
            raise ModelError("the package's OOD detector file is missing", path=path, field="ood.file",
                             hint="Refit it with `meddx models fit-ood MODEL`")
        data = path.read_bytes()
        if block.get("sha256") and hashlib.sha256(data).hexdigest() != block["sha256"]:
            raise ModelError("the OOD detector file does not match the sha256 in package.json", path=path,
                             field="ood.sha256", hint="Refit it with `meddx models fit-ood MODEL`")
        with np.load(io.BytesIO(data)) as npz:
            arrays = {key: npz[key] for key in npz.files}
        detectors: dict[str, Detector] = {}
        for name in block.get("methods", {}):
            if name not in DETECTORS:
                continue  # a detector this version does not know; the others still work
            state = {key.split("/", 1)[1]: value for key, value in arrays.items() if key.startswith(f"{name}/")}
            detectors[name] = DETECTORS[name].from_state(state)
        thresholds = {name: float(block["methods"][name]["threshold"]) for name in detectors}
        method = str(block.get("method", DEFAULT_METHOD))
        if method not in detectors:
            raise ModelError(f"the package's OOD method {method!r} is not available", path=path, field="ood.method",
                             hint=f"Available: {sorted(detectors)}")
        info = {k: v for k, v in block.items() if k not in ("file", "sha256", "method", "flag_rate", "methods")}
        info["methods"] = {n: {k: v for k, v in block["methods"][n].items() if k != "threshold"} for n in detectors}
        reference = {key.split("/", 1)[1]: value for key, value in arrays.items() if key.startswith("reference/")}
        return cls(method, detectors, thresholds, float(block.get("flag_rate", DEFAULT_FLAG_RATE)), info, reference)


def threshold_for(scores: np.ndarray, flag_rate: float) -> float:
    """The smallest threshold that flags at most ``flag_rate`` of ``scores`` (in-distribution)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    keep = int(np.ceil((1.0 - flag_rate) * len(s)))  # cases at or below the threshold
    return float(s[min(max(keep, 1), len(s)) - 1])


def fit_ood(train_features: Any, train_logits: Any, train_labels: Any, val_features: Any, val_logits: Any, *,
            methods: tuple[str, ...] = METHODS, method: str = DEFAULT_METHOD, flag_rate: float = DEFAULT_FLAG_RATE,
            features: str = "penultimate layer", fitted_on: str = "training split",
            threshold_on: str = "validation split", groups: Groups | None = None) -> OODGate:
    """Fit every detector in ``methods`` on training features, threshold each on validation features.

    The threshold is the validation scores' ``1 - flag_rate`` quantile, so about
    ``flag_rate`` of in-distribution inputs are flagged (and referred). ``groups`` names the
    column ranges of the features (the first is the penultimate layer, which ``mahalanobis``
    and ``knn`` use; ``mahalanobis-layers`` uses every group); without it all columns are one group.
    """
    if not 0 < flag_rate < 0.5:
        raise ConfigError(f"the OOD flag rate must be in (0, 0.5), got {flag_rate}", field="flag_rate",
                          hint="0.05 flags about 5% of in-distribution inputs")
    if method not in methods:
        raise ConfigError(f"OOD method {method!r} is not among those fitted {methods}", field="ood.method")
    unknown = [m for m in methods if m not in DETECTORS]
    if unknown:
        raise ConfigError(f"unknown OOD detector(s) {unknown}", field="ood.method", hint=f"Known: {sorted(DETECTORS)}")
    train_features, val_features = _as_features(train_features), _as_features(val_features, "val_features")
    train_logits, val_logits = np.asarray(train_logits, np.float64), np.asarray(val_logits, np.float64)
    detectors: dict[str, Detector] = {}
    thresholds: dict[str, float] = {}
    per_method: dict[str, dict[str, Any]] = {}
    reference: dict[str, np.ndarray] = {}
    for name in methods:
        detector = DETECTORS[name]().fit(train_features, train_logits, np.asarray(train_labels).reshape(-1), groups)
        val_scores = detector.score(val_features, val_logits)
        thresholds[name] = threshold_for(val_scores, flag_rate)
        detectors[name] = detector
        reference[f"val_scores/{name}"] = np.asarray(val_scores, dtype=np.float64)
        reference["val_argmax"] = np.asarray(val_logits.argmax(axis=1), dtype=np.int64)
        per_method[name] = {"val_flag_rate": float(np.mean(val_scores > thresholds[name]))}
    n_val = int(len(val_features))
    info: dict[str, Any] = {"features": f"{features} ({train_features.shape[1]} values)",
                            "fitted_on": f"{fitted_on} (n={len(train_features)})",
                            "threshold_on": f"{threshold_on} (n={n_val})", "n_fit": int(len(train_features)),
                            "n_threshold": n_val, "methods": per_method, "n_features": int(train_features.shape[1]),
                            "groups": [list(g) for g in groups] if groups else None}
    if n_val < SMALL_VALIDATION:
        info["warning"] = (f"the OOD threshold was chosen on {n_val} validation cases: the in-distribution flag "
                           f"rate may differ from {flag_rate:.0%} by several points")
    return OODGate(method, detectors, thresholds, flag_rate, info, reference)


def load_gate(folder: str | Path, package: dict[str, Any]) -> OODGate | None:
    """The package's gate, or ``None`` when it was trained before OOD detection existed."""
    block = package.get("ood")
    if not block:
        return None
    return OODGate.from_package(folder, block)
