"""Diagnostic metrics with 95% bootstrap confidence intervals.

For binary tasks the positive class is index 1 unless ``positive`` says
otherwise; sensitivity, specificity, PPV and NPV refer to it. For multi-class
tasks AUC is macro one-vs-rest and the threshold metrics are macro averages.
The bootstrap resamples *groups* (patients) when ``groups`` is given, so images
of one patient move together, as they would in a new cohort.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("acc", "auc", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_acc")


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, *, positive: int = 1, threshold: float = 0.5) -> dict[str, float]:
    """Every metric in :data:`METRICS` for one set of predictions.

    Args:
        y_true: ``(N,)`` integer labels.
        proba: ``(N, C)`` class probabilities.
        positive: the positive class for binary tasks.
        threshold: decision threshold on the positive-class probability (binary only).
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = proba.shape[1]
    out: dict[str, float] = {}
    if n_classes == 2:
        score = proba[:, positive]
        pred_pos = score >= threshold
        true_pos = y_true == positive
        tp = float(np.sum(pred_pos & true_pos))
        tn = float(np.sum(~pred_pos & ~true_pos))
        fp = float(np.sum(pred_pos & ~true_pos))
        fn = float(np.sum(~pred_pos & true_pos))
        out["acc"] = _safe_div(tp + tn, len(y_true))
        out["auc"] = float(roc_auc_score(true_pos, score)) if 0 < true_pos.sum() < len(y_true) else float("nan")
        out["sensitivity"] = _safe_div(tp, tp + fn)
        out["specificity"] = _safe_div(tn, tn + fp)
        out["ppv"] = _safe_div(tp, tp + fp)
        out["npv"] = _safe_div(tn, tn + fn)
        out["f1"] = _safe_div(2 * tp, 2 * tp + fp + fn)
        out["balanced_acc"] = (out["sensitivity"] + out["specificity"]) / 2
        return out
    pred = proba.argmax(axis=1)
    out["acc"] = float(np.mean(pred == y_true))
    present = np.unique(y_true)
    try:
        out["auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(n_classes))))
    except ValueError:
        out["auc"] = float("nan")
    sens, spec, ppv, npv, f1 = [], [], [], [], []
    for c in present:
        tp = np.sum((pred == c) & (y_true == c))
        tn = np.sum((pred != c) & (y_true != c))
        fp = np.sum((pred == c) & (y_true != c))
        fn = np.sum((pred != c) & (y_true == c))
        sens.append(_safe_div(tp, tp + fn))
        spec.append(_safe_div(tn, tn + fp))
        ppv.append(_safe_div(tp, tp + fp))
        npv.append(_safe_div(tn, tn + fn))
        f1.append(_safe_div(2 * tp, 2 * tp + fp + fn))
    for name, values in (("sensitivity", sens), ("specificity", spec), ("ppv", ppv), ("npv", npv), ("f1", f1)):
        out[name] = float(np.nanmean(values)) if values else float("nan")
    out["balanced_acc"] = out["sensitivity"]
    return out


def bootstrap_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    **kwargs: object,
) -> dict[str, dict[str, float]]:
    """Point estimates with percentile bootstrap CIs: ``{metric: {value, low, high}}``."""
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    point = compute_metrics(y_true, proba, **kwargs)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y_true))]
    else:
        groups = np.asarray(groups)
        _, inverse = np.unique(groups, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, bounds)
    samples: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(n_boot):
        picks = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[i] for i in picks])
        values = compute_metrics(y_true[index], proba[index], **kwargs)
        for m, v in values.items():
            samples[m].append(v)
    out = {}
    for m, v in point.items():
        arr = np.asarray(samples[m], dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        low, high = (np.quantile(arr, [alpha / 2, 1 - alpha / 2]) if arr.size else (np.nan, np.nan))
        out[m] = {"value": v, "low": float(low), "high": float(high)}
    return out


def _cell(value: float | None) -> str:
    """A table cell: three decimals, "n/a" for NaN or None (undefined, e.g. no positives)."""
    return "n/a" if value is None or value != value else f"{value:.3f}"


def format_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    """A Markdown table of metrics with 95% CIs (JSON-loaded results with null values work too)."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value | 95% CI |", "|---|---|---|"]
    # the standard metrics first, in their usual order, then any others a modality adds (e.g. the
    # CinC challenge score and per-class F1/AUC of a rhythm model)
    names = [n for n in METRICS if n in results] + [n for n in results if n not in METRICS]
    for name in names:
        r = results[name]
        if isinstance(r, dict) and "value" in r:
            lines.append(f"| {name} | {_cell(r.get('value'))} | {_cell(r.get('low'))} – {_cell(r.get('high'))} |")
    return "\n".join(lines)
