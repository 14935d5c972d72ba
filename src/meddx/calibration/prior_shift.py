"""Label-shift adaptation: re-weight probabilities for a site with other class frequencies.

A model trained where 74% of cases are positive is miscalibrated at a clinic
where half are, even if the images look the same (*label* or *prior shift*:
``p(x | y)`` is unchanged, ``p(y)`` is not). Bayes' rule fixes the posteriors
given the new priors (:func:`adjust_to_priors`), and the EM algorithm of
Saerens, Latinne & Decaestecker (2002) estimates those priors from the model's
predictions on the new site alone, without any labels (:func:`em_priors`).

Both assume the input probabilities are calibrated on the training
distribution (calibrate first, see :mod:`meddx.calibration.scaling`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.calibration.metrics import _check_int, _check_labels, _check_probs
from meddx.exceptions import InvalidValueError


def _check_priors(priors: Any, n_classes: int, field: str, *, strictly_positive: bool) -> np.ndarray:
    """``priors`` as float64 ``(C,)``, non-negative (or positive), summing to 1."""
    try:
        arr = np.asarray(priors, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{field} must be numbers", field=field) from None
    if arr.shape != (n_classes,):
        raise InvalidValueError(f"{field} must have shape ({n_classes},), got {arr.shape}", field=field,
                                hint="Pass one prior probability per class")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or (strictly_positive and arr.min() <= 0):
        bound = "> 0" if strictly_positive else ">= 0"
        raise InvalidValueError(f"{field} must be finite and {bound}, got {arr.tolist()}", field=field)
    if abs(arr.sum() - 1.0) > 1e-6:
        raise InvalidValueError(f"{field} must sum to 1, got {arr.sum():.6g}", field=field,
                                hint="Divide the class counts by their total")
    return arr


def class_priors(labels: Any, n_classes: int) -> np.ndarray:
    """Class frequencies ``(C,)`` of integer ``labels`` (e.g. the training priors)."""
    labels = np.asarray(labels)
    y = _check_labels(labels, len(labels), _check_int(n_classes, "n_classes", 2))
    if len(y) == 0:
        raise InvalidValueError("labels is empty", field="labels")
    return np.bincount(y, minlength=n_classes) / len(y)


def _reweight(probs: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    w = probs * ratio
    total = w.sum(axis=1, keepdims=True)
    # a row whose every class got weight 0 keeps its original probabilities
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), probs)


def adjust_to_priors(probs: Any, train_priors: Any, new_priors: Any) -> np.ndarray:
    """Bayes' rule for a change of class priors: ``p'_k ∝ p_k * new_k / train_k``, renormalised.

    Args:
        probs: ``(N, C)`` probabilities, calibrated for the training priors.
        train_priors: ``(C,)`` class priors the model was trained (calibrated) with; all > 0.
        new_priors: ``(C,)`` class priors of the new site.
    """
    probs = _check_probs(probs)
    c = probs.shape[1]
    train = _check_priors(train_priors, c, "train_priors", strictly_positive=True)
    new = _check_priors(new_priors, c, "new_priors", strictly_positive=False)
    return _reweight(probs, new / train)


def em_priors(probs: Any, train_priors: Any, max_iter: int = 1000, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the new site's priors from unlabelled predictions (Saerens et al. 2002).

    EM alternates between re-weighting the posteriors with the current prior
    estimate (E step, :func:`adjust_to_priors`) and setting the priors to the
    mean adjusted posterior (M step), starting from ``train_priors``, until the
    priors move less than ``tol`` (max-norm) or after ``max_iter`` rounds.

    Returns:
        ``(adjusted_probs (N, C), estimated_priors (C,))``.
    """
    probs = _check_probs(probs)
    train = _check_priors(train_priors, probs.shape[1], "train_priors", strictly_positive=True)
    max_iter = _check_int(max_iter, "max_iter")
    if not tol > 0:
        raise InvalidValueError(f"tol must be > 0, got {tol}", field="tol")
    priors = train.copy()
    adjusted = probs
    for _ in range(max_iter):
        adjusted = _reweight(probs, priors / train)
        new = adjusted.mean(axis=0)
        done = float(np.max(np.abs(new - priors))) < tol
        priors = new
        if done:
            break
    adjusted = _reweight(probs, priors / train)
    return adjusted, priors


__all__ = ["adjust_to_priors", "class_priors", "em_priors"]
