"""Segmentation metrics inside the field of view, per image and pooled, with bootstrap CIs over images.

Every image is reduced to its confusion counts at the operating threshold and to two
histograms of its vessel probabilities (one for vessel pixels, one for background, 4096
bins), so the pooled figures and each bootstrap replicate (images drawn with replacement)
cost a few array sums: pooled F1 (= Dice), sensitivity, specificity and accuracy from the
summed counts, pooled ROC-AUC from the summed histograms (exact up to ties inside a bin
of width 1/4096; per-image AUCs are exact, from scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 4096
METRICS = ("f1", "auc", "sensitivity", "specificity", "acc")


@dataclass
class ImageScore:
    """What one image contributes to the metrics."""

    name: str
    counts: np.ndarray               # tp, fp, fn, tn
    pos_hist: np.ndarray | None      # histogram of vessel probabilities of vessel pixels
    neg_hist: np.ndarray | None
    auc: float | None


def score_image(name: str, prob: np.ndarray, ref: np.ndarray, fov: np.ndarray, threshold: float = 0.5,
                *, binary: bool = False) -> ImageScore:
    """Counts and histograms of one image's probability map (or a binary mask with ``binary``) in the FOV."""
    p = np.asarray(prob, dtype=np.float64)[fov]
    y = np.asarray(ref, dtype=bool)[fov]
    pred = p > 0.5 if binary else p >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    counts = np.array([tp, fp, fn, tn], dtype=np.int64)
    if binary:
        return ImageScore(name, counts, None, None, None)
    from sklearn.metrics import roc_auc_score

    bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
    pos = np.bincount(bins[y], minlength=BINS)
    neg = np.bincount(bins[~y], minlength=BINS)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else None
    return ImageScore(name, counts, pos, neg, auc)


def from_counts(counts: np.ndarray) -> dict[str, float]:
    """F1, sensitivity, specificity, accuracy of ``[tp, fp, fn, tn]`` (NaN when undefined)."""
    tp, fp, fn, tn = (float(v) for v in counts)
    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")
    return {"f1": ratio(2 * tp, 2 * tp + fp + fn), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "acc": ratio(tp + tn, tp + fp + fn + tn)}


def auc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC from score histograms (ties inside a bin count one half)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if not n_pos or not n_neg:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * below).sum() + 0.5 * (pos * neg).sum()) / float(n_pos * n_neg)


def pooled(scores: list[ImageScore]) -> dict[str, float]:
    """Metrics over all FOV pixels of ``scores`` taken together."""
    out = from_counts(sum(s.counts for s in scores))
    if all(s.pos_hist is not None for s in scores):
        out["auc"] = auc_from_hist(sum(s.pos_hist for s in scores), sum(s.neg_hist for s in scores))
    return out


def per_image(score: ImageScore) -> dict[str, Any]:
    row: dict[str, Any] = {"image": score.name, **from_counts(score.counts)}
    if score.auc is not None:
        row["auc"] = score.auc
    row["vessel_fraction"] = float((score.counts[0] + score.counts[2]) / score.counts.sum())
    return row


def spread(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sd, min and max over images of each metric."""
    out = {}
    for name in METRICS:
        values = np.array([r[name] for r in rows if name in r], dtype=float)
        if len(values):
            out[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "min": float(values.min()), "max": float(values.max())}
    return out


def bootstrap(scores: list[ImageScore], *, n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "low", "high"}}``: pooled value and percentile CI over images drawn with replacement."""
    value = pooled(scores)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in value}
    n = len(scores)
    for _ in range(n_boot if n > 1 else 0):
        pick = [scores[i] for i in rng.integers(n, size=n)]
        for k, v in pooled(pick).items():
            draws[k].append(v)
    alpha = (1 - level) / 2
    out = {}
    for k, v in value.items():
        d = np.array([x for x in draws[k] if np.isfinite(x)])
        low, high = (float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))) if len(d) else (v, v)
        out[k] = {"value": float(v), "low": low, "high": high}
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the binary NLL of ``sigmoid(logits / T)`` (held-out pixels)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, s) - y * s))

    result = minimize_scalar(nll, bounds=(-3, 3), method="bounded")
    return float(np.exp(result.x))


def ece(prob: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the vessel probability (equal-width bins, pixel weighted)."""
    p = np.asarray(prob, np.float64)
    y = np.asarray(labels, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y, minlength=bins)
    nz = count > 0
    return float(np.sum(np.abs(conf[nz] - acc[nz])) / len(p))


def best_threshold(prob: np.ndarray, labels: np.ndarray) -> float:
    """Threshold on the (calibrated) probability that maximises pooled F1 (training/validation pixels only)."""
    p = np.asarray(prob, np.float64)
    y = np.asarray(labels, bool)
    bins = np.minimum((p * 1000).astype(int), 999)
    pos = np.bincount(bins[y], minlength=1000)
    neg = np.bincount(bins[~y], minlength=1000)
    tp = np.cumsum(pos[::-1])[::-1]   # predicted positive when bin >= t
    fp = np.cumsum(neg[::-1])[::-1]
    f1 = 2 * tp / np.maximum(2 * tp + fp + (pos.sum() - tp), 1)
    return float(np.argmax(f1) / 1000)
