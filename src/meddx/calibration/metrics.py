"""Calibration metrics: ECE (uniform and adaptive bins), Brier, NLL, reliability curves.

A model is *calibrated* when, among the cases it gives 80% confidence, 80% are
right. These metrics measure how far a model is from that, so that a clinic can
check it before trusting the probabilities (and again after re-calibration).

All functions take ``probs`` ``(N, C)`` (rows sum to 1) and integer ``labels``
``(N,)``. The bootstrap resamples *groups* (patients) when ``groups`` is given,
as :func:`meddx.evaluation.metrics.bootstrap_metrics` does.

The small ``_check_*`` helpers here validate inputs for the whole
:mod:`meddx.calibration` package, so every module raises the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from meddx.exceptions import InvalidValueError

T = TypeVar("T")

# --------------------------------------------------------------------------- input checks (package-wide)


def _lookup(registry: Mapping[str, T], name: object, kind: str, field: str) -> T:
    """``registry[name]``, or an :class:`InvalidValueError` that lists the known names."""
    if not isinstance(name, str) or name not in registry:
        raise InvalidValueError(
            f"unknown {kind} {name!r}", field=field, hint=f"Use one of: {', '.join(sorted(registry))}"
        )
    return registry[name]


def _as_class_matrix(values: Any, field: str, n_classes: int | None, shape_hint: str, classes_hint: str,
                     mismatch_hint: str | None = None) -> np.ndarray:
    """``values`` as a finite float64 ``(N, C)`` array with N >= 1 and C >= 2 (and C == ``n_classes``)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"cannot read {field} as numbers ({exc})", field=field) from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InvalidValueError(f"{field} must have shape (N, C) with C >= 2, got {arr.shape}", field=field,
                                hint=shape_hint)
    if arr.shape[0] == 0:
        raise InvalidValueError(f"{field} is empty", field=field)
    if n_classes is not None and arr.shape[1] != n_classes:
        raise InvalidValueError(f"{field} has {arr.shape[1]} classes, {classes_hint} {n_classes}", field=field,
                                hint=mismatch_hint)
    if not np.all(np.isfinite(arr)):
        raise InvalidValueError(f"{field} holds NaN or inf", field=field)
    return arr


def _check_probs(probs: Any, field: str = "probs", *, n_classes: int | None = None, atol: float = 1e-3) -> np.ndarray:
    """``probs`` as float64 ``(N, C)``, finite, in [0, 1], rows summing to 1 (within ``atol``)."""
    arr = _as_class_matrix(
        probs, field, n_classes, "Pass one row of class probabilities per case; for a binary score p use "
        "np.stack([1 - p, p], 1)", "expected", "Use probabilities of the model this object was fitted for")
    if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise InvalidValueError(
            f"{field} must lie in [0, 1], got values in [{arr.min():.3g}, {arr.max():.3g}]", field=field,
            hint="Pass probabilities, not logits (apply a softmax or a calibrator first)",
        )
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad.size:
        raise InvalidValueError(
            f"{field} rows must sum to 1; row {int(bad[0])} sums to {sums[bad[0]]:.4g} ({bad.size} bad rows)",
            field=field, hint="Pass softmax probabilities over all classes",
        )
    return np.clip(arr, 0.0, 1.0)


def _check_logits(logits: Any, field: str = "logits", *, n_classes: int | None = None) -> np.ndarray:
    """``logits`` as float64 ``(N, C)`` with C >= 2, finite."""
    return _as_class_matrix(logits, field, n_classes, "For one binary logit z pass np.stack([np.zeros_like(z), z], 1)",
                            "the calibrator was fitted on")


def _check_labels(labels: Any, n: int, n_classes: int, field: str = "labels") -> np.ndarray:
    """``labels`` as int64 ``(n,)`` with values in ``[0, n_classes)``."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidValueError(f"{field} must have shape ({n},), got {arr.shape}", field=field,
                                hint="Pass one integer class index per row")
    if arr.dtype.kind not in "biuf":
        raise InvalidValueError(f"{field} must be integer class indices, got dtype {arr.dtype}", field=field,
                                hint="Map class names to indices first")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InvalidValueError(f"{field} must be integer class indices", field=field)
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= n_classes):
        raise InvalidValueError(
            f"{field} must lie in [0, {n_classes - 1}], got values in [{out.min()}, {out.max()}]", field=field,
        )
    return out


def _check_open_unit(value: Any, field: str) -> float:
    """A float strictly between 0 and 1 (e.g. ``alpha``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{field} must be a number in (0, 1), got {value!r}", field=field) from None
    if not 0.0 < v < 1.0:
        raise InvalidValueError(f"{field} must be in (0, 1), got {v}", field=field)
    return v


def _check_int(value: Any, field: str, minimum: int = 1) -> int:
    """An integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidValueError(f"{field} must be an integer >= {minimum}, got {value!r}", field=field)
    return int(value)


# --------------------------------------------------------------------------- binning strategies

BINNINGS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {}


def register_binning(name: str) -> Callable[[Callable[[np.ndarray, int], np.ndarray]], Callable]:
    """Register ``fn(scores, n_bins) -> bin index (N,)`` under ``name`` (the ``strategy`` argument)."""

    def deco(fn: Callable[[np.ndarray, int], np.ndarray]) -> Callable:
        BINNINGS[name] = fn
        return fn

    return deco


@register_binning("uniform")
def _uniform_bins(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins ``(k/B, (k+1)/B]`` on [0, 1] (the first bin also holds 0)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges[1:-1], scores, side="left"), 0, n_bins - 1)


@register_binning("quantile")
def _quantile_bins(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass (adaptive) bins: the sorted scores cut into ``n_bins`` runs of (nearly) equal size.

    Tied scores always share a bin (that of the first of them), so the result
    does not depend on the order of the cases.
    """
    _, first, inverse = np.unique(scores, return_index=True, return_inverse=True)
    order = np.argsort(scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(len(scores))
    first_rank = rank[first][inverse]  # rank of the first case of each tie group
    return (first_rank * n_bins) // max(len(scores), 1)


def _binned(scores: np.ndarray, targets: np.ndarray, n_bins: int, strategy: str):
    """Per-bin count, mean score and mean target (NaN for empty bins), plus the bin ids."""
    ids = _lookup(BINNINGS, strategy, "binning strategy", "strategy")(scores, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(ids, weights=scores, minlength=n_bins) / count
        acc = np.bincount(ids, weights=targets, minlength=n_bins) / count
    return count, conf, acc, ids


def _gap(scores: np.ndarray, targets: np.ndarray, n_bins: int, strategy: str) -> float:
    count, conf, acc, _ = _binned(scores, targets, n_bins, strategy)
    keep = count > 0
    return float(np.sum(count[keep] * np.abs(acc[keep] - conf[keep])) / len(scores))


# --------------------------------------------------------------------------- metrics


def _ece_raw(probs: np.ndarray, labels: np.ndarray, n_bins: int, strategy: str) -> float:
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    return _gap(conf, correct, n_bins, strategy)


def ece(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label expected calibration error: ``sum_b n_b/N |accuracy_b - confidence_b|``.

    Args:
        probs: ``(N, C)`` class probabilities.
        labels: ``(N,)`` integer labels.
        n_bins: number of confidence bins.
        strategy: ``"uniform"`` (equal-width bins, Guo et al. 2017) or ``"quantile"``
            (equal-mass, "adaptive" bins, which are less biased when confidences pile up near 1).
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    n_bins = _check_int(n_bins, "n_bins")
    return _ece_raw(probs, labels, n_bins, strategy)


def classwise_ece(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Class-wise ECE: the mean over classes of the ECE of ``p_k`` against ``1[y = k]``.

    Unlike the top-label ECE it also sees miscalibration of the non-predicted
    classes (e.g. the probability of a rare disease when "normal" is predicted).
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    n_bins = _check_int(n_bins, "n_bins")
    return float(np.mean([
        _gap(probs[:, k], (labels == k).astype(np.float64), n_bins, strategy) for k in range(probs.shape[1])
    ]))


def _brier_raw(probs: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _nll_raw(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))))


def brier(probs: Any, labels: Any) -> float:
    """Multi-class Brier score: mean over cases of ``sum_k (p_k - 1[y = k])^2`` (0 best, 2 worst)."""
    probs = _check_probs(probs)
    return _brier_raw(probs, _check_labels(labels, len(probs), probs.shape[1]))


def nll(probs: Any, labels: Any, eps: float = 1e-12) -> float:
    """Negative log-likelihood ``-mean log p_y`` in nats (probabilities clipped at ``eps``)."""
    probs = _check_probs(probs)
    return _nll_raw(probs, _check_labels(labels, len(probs), probs.shape[1]), eps)


def reliability_curve(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> dict[str, Any]:
    """Per-bin mean confidence, accuracy and count of the top-label prediction.

    Returns:
        ``{"confidence", "accuracy", "count", "lower", "upper", "strategy", "ece"}``; the
        first five are ``(n_bins,)`` arrays (NaN confidence/accuracy in empty bins);
        ``lower``/``upper`` are the bin edges (for ``"quantile"``: the smallest and
        largest confidence in the bin).
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    n_bins = _check_int(n_bins, "n_bins")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    count, mean_conf, acc, ids = _binned(conf, correct, n_bins, strategy)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1].copy(), edges[1:].copy()
    else:
        lower = np.full(n_bins, np.inf)
        upper = np.full(n_bins, -np.inf)
        np.minimum.at(lower, ids, conf)
        np.maximum.at(upper, ids, conf)
        lower[count == 0] = np.nan
        upper[count == 0] = np.nan
    keep = count > 0
    gap = float(np.sum(count[keep] * np.abs(acc[keep] - mean_conf[keep])) / len(conf))
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "lower": lower, "upper": upper,
            "strategy": strategy, "ece": gap}


def _metrics_raw(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> dict[str, float]:
    return {
        "ece": _ece_raw(probs, labels, n_bins, "uniform"),
        "ece_adaptive": _ece_raw(probs, labels, n_bins, "quantile"),
        "brier": _brier_raw(probs, labels),
        "nll": _nll_raw(probs, labels),
    }


def calibration_metrics(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, float]:
    """``{"ece", "ece_adaptive", "brier", "nll"}`` for one set of predictions (lower is better for all)."""
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    return _metrics_raw(probs, labels, _check_int(n_bins, "n_bins"))


def _group_members(groups: Any, n: int) -> list[np.ndarray]:
    """Row indices of each group (one array per distinct group value)."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidValueError(f"groups must have shape ({n},), got {arr.shape}", field="groups",
                                hint="Pass one group (patient) id per case")
    _, inverse = np.unique(arr, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def bootstrap_calibration(
    probs: Any,
    labels: Any,
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[object] | np.ndarray | None = None,
    n_bins: int = 15,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """:func:`calibration_metrics` with percentile bootstrap CIs: ``{name: {value, low, high}}``.

    ``value`` is the estimate on all cases; ``low``/``high`` the ``alpha/2`` and
    ``1 - alpha/2`` percentiles over ``n_boot`` resamples. With ``groups`` whole
    groups (patients) are resampled, so the images of one patient move together.
    Note that binned ECE is biased upwards on resamples of well-calibrated data,
    so its interval can sit above a very small point estimate.
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    n_bins = _check_int(n_bins, "n_bins")
    n_boot = _check_int(n_boot, "n_boot")
    alpha = _check_open_unit(alpha, "alpha")
    point = _metrics_raw(probs, labels, n_bins)
    rng = np.random.default_rng(seed)
    members = None if groups is None else _group_members(groups, len(labels))
    samples = {name: np.empty(n_boot) for name in point}
    for b in range(n_boot):
        if members is None:
            index = rng.integers(0, len(labels), len(labels))
        else:
            index = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        for name, value in _metrics_raw(probs[index], labels[index], n_bins).items():
            samples[name][b] = value
    out = {}
    for name, value in point.items():
        low, high = np.quantile(samples[name], [alpha / 2, 1 - alpha / 2])
        out[name] = {"value": float(value), "low": float(low), "high": float(high)}
    return out


def plot_reliability(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    n_bins: int = 15,
    title: str = "Reliability diagram",
    strategy: str = "uniform",
) -> Path:
    """Write one PNG: a reliability diagram and a confidence histogram per entry of ``curves``.

    Args:
        curves: ``{panel title: (probs, labels)}``, e.g. ``{"before": ..., "after": ...}``.
        path: the PNG file to write (parent folders are created).
        n_bins: number of confidence bins.
        title: the figure title.
        strategy: binning strategy (see :func:`ece`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # switching under a live pyplot would close its figures
        matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI, nothing left open

    if not curves:
        raise InvalidValueError("curves is empty", field="curves",
                                hint="Pass {'name': (probs, labels)} with at least one entry")
    n_bins = _check_int(n_bins, "n_bins")
    data = {}
    for name, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidValueError(f"curves[{name!r}] must be a (probs, labels) pair", field="curves")
        p = _check_probs(pair[0], field=f"curves[{name!r}] probs")
        y = _check_labels(pair[1], len(p), p.shape[1], field=f"curves[{name!r}] labels")
        data[name] = (p, y, reliability_curve(p, y, n_bins=n_bins, strategy=strategy))

    n = len(data)
    fig = Figure(figsize=(4.2 * n, 5.6))
    grid = fig.add_gridspec(2, n, height_ratios=(3, 1), hspace=0.08, wspace=0.25)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for j, (name, (p, y, curve)) in enumerate(data.items()):
        top = fig.add_subplot(grid[0, j])
        bottom = fig.add_subplot(grid[1, j], sharex=top)
        keep = curve["count"] > 0
        left = np.nan_to_num(curve["lower"][keep], nan=0.0)
        width = np.nan_to_num(curve["upper"][keep], nan=0.0) - left
        width = np.maximum(width, 0.005)
        acc, conf = curve["accuracy"][keep], curve["confidence"][keep]
        top.bar(left, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
        top.bar(left, conf - acc, bottom=acc, width=width, align="edge", color="#dd8452", alpha=0.45,
                edgecolor="#dd8452", hatch="//", label="gap to confidence")
        top.plot([0, 1], [0, 1], "--", color="0.3", lw=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{name}  (ECE {curve['ece']:.3f}, n={len(y)})", fontsize=10)
        top.tick_params(labelbottom=False)
        if j == 0:
            top.set_ylabel("accuracy")
            top.legend(loc="upper left", fontsize=8)
        conf_all = p.max(axis=1)
        bottom.hist(conf_all, bins=edges, color="0.55", edgecolor="white")
        bottom.axvline(float(conf_all.mean()), color="#dd8452", lw=1.5, label="mean confidence")
        bottom.axvline(float(np.mean(p.argmax(axis=1) == y)), color="#4c72b0", lw=1.5, ls="--", label="accuracy")
        bottom.set_xlabel("confidence (top-label probability)")
        if j == 0:
            bottom.set_ylabel("cases")
            bottom.legend(loc="upper left", fontsize=7)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


__all__ = [
    "BINNINGS",
    "bootstrap_calibration",
    "brier",
    "calibration_metrics",
    "classwise_ece",
    "ece",
    "nll",
    "plot_reliability",
    "register_binning",
    "reliability_curve",
]


def ece_noise_floor(probs: Any, draws: int = 2000, bar: float = 0.03, seed: int = 0) -> dict[str, float]:
    """ECE a *perfectly calibrated* model with these confidences shows on a sample of this size.

    Labels are drawn from the model's own calibrated probabilities, so the true
    calibration error is 0 and every bit of measured ECE is sampling noise: a measured
    ECE within ``p95`` is indistinguishable from perfect calibration at this n.
    """
    p = _check_probs(probs)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=1)
    values = np.array([ece(p, (rng.random(len(p))[:, None] > cumulative).sum(axis=1).clip(max=p.shape[1] - 1))
                       for _ in range(draws)])
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95)),
            "share_at_or_below_bar": float(np.mean(values <= bar)), "bar": bar, "draws": draws, "n": int(len(p))}
