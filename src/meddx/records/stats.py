"""Statistics for comparing models on repeated cross-validation and single test sets."""

from __future__ import annotations

from typing import Any

import numpy as np


def corrected_ci(values: Any, n_train: int, n_test: int, alpha: float = 0.05) -> dict[str, float]:
    """Mean of per-fold scores with the Nadeau–Bengio corrected 95% CI.

    Folds of repeated CV share training rows, so the naive variance of their mean is too
    small; the correction multiplies it by ``1/J + n_test/n_train`` instead of ``1/J``.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    J = len(v)
    mean = float(v.mean())
    if J < 2:
        return {"value": mean, "low": float("nan"), "high": float("nan"), "sd": float("nan")}
    var = float(v.var(ddof=1))
    se = np.sqrt((1 / J + n_test / n_train) * var)
    t = stats.t.ppf(1 - alpha / 2, J - 1)
    return {"value": mean, "low": float(mean - t * se), "high": float(mean + t * se), "sd": float(np.sqrt(var))}


def corrected_ttest(a: Any, b: Any, n_train: int, n_test: int) -> dict[str, float]:
    """Paired Nadeau–Bengio corrected resampled t-test of per-fold scores ``a - b``."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    J = len(d)
    ci = corrected_ci(d, n_train, n_test)
    var = float(d.var(ddof=1))
    se = np.sqrt((1 / J + n_test / n_train) * var)
    tstat = float(d.mean() / se) if se > 0 else 0.0
    p = float(2 * stats.t.sf(abs(tstat), J - 1)) if se > 0 else 1.0
    return {"diff": ci["value"], "low": ci["low"], "high": ci["high"], "t": tstat, "p": p}


def ece(p: Any, y: Any, n_bins: int = 10) -> float:
    """Expected calibration error of binary probabilities (equal-width bins over p(positive))."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return float(total)


def bootstrap(fn: Any, y: Any, p: Any, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """``fn(y, p)`` with a percentile bootstrap 95% CI (resamples with one class only are skipped)."""
    y = np.asarray(y)
    p = np.asarray(p)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) < 2:
            continue
        vals.append(fn(y[i], p[i]))
    low, high = np.quantile(vals, [0.025, 0.975]) if vals else (np.nan, np.nan)
    return {"value": float(fn(y, p)), "low": float(low), "high": float(high)}


__all__ = ["bootstrap", "corrected_ci", "corrected_ttest", "ece"]
