"""Split conformal prediction sets with a coverage guarantee.

Instead of one class, a conformal predictor returns a *set* of classes that
contains the true one with probability at least ``1 - alpha`` (e.g. 90%), for
any model, provided the calibration cases and the new cases are exchangeable
(same site, same population). A set of one class is a confident diagnosis; a
set of two or more says which diagnoses remain plausible, which is when a
clinician should look.

Fitting takes held-out calibration probabilities and labels, computes a
non-conformity score of the true class for each case, and keeps the
``ceil((n + 1)(1 - alpha)) / n`` empirical quantile ``qhat`` of those scores.
A new case's set holds every class whose score is ``<= qhat``.

==========  ======================================================  =======================
method      score of class k                                        reference
==========  ======================================================  =======================
lac         ``1 - p_k``                                             Sadinle et al. 2019
aps         mass of the classes ranked above k, plus ``u * p_k``    Romano et al. 2020
raps        aps + ``lam * max(0, rank_k - k_reg)``                  Angelopoulos et al. 2021
==========  ======================================================  =======================

``u ~ U(0, 1)`` when ``randomized`` (exact coverage), else ``u = 1``
(conservative). The uniforms come from a numpy Generator seeded from ``seed``
(a fresh one per call), so sets are reproducible. For one-case-at-a-time
serving use ``randomized=False`` or pass your own ``rng`` to :meth:`SplitConformal.predict_sets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from meddx.calibration.metrics import _check_int, _check_labels, _check_open_unit, _check_probs, _lookup
from meddx.exceptions import ConfigError, InvalidValueError

ScoreFn = Callable[..., np.ndarray]
CONFORMAL_SCORES: dict[str, ScoreFn] = {}


def register_conformal_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Register ``fn(probs, u, *, k_reg, lam) -> scores (N, C)`` (score of every candidate class)."""

    def deco(fn: ScoreFn) -> ScoreFn:
        CONFORMAL_SCORES[name] = fn
        return fn

    return deco


@register_conformal_score("lac")
def _lac_scores(probs: np.ndarray, u: np.ndarray, *, k_reg: int = 1, lam: float = 0.0) -> np.ndarray:
    """Least ambiguous set-valued classifier: ``1 - p_k`` (smallest sets, uneven coverage across cases)."""
    return 1.0 - probs


def _ranked_mass(probs: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """APS score of every class and its 1-based rank (classes sorted by decreasing probability)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=1)
    before = np.cumsum(sorted_p, axis=1) - sorted_p
    sorted_scores = before + u[:, None] * sorted_p
    scores = np.empty_like(probs)
    np.put_along_axis(scores, order, sorted_scores, axis=1)
    ranks = np.empty(probs.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, probs.shape[1] + 1), probs.shape), axis=1)
    return scores, ranks


@register_conformal_score("aps")
def _aps_scores(probs: np.ndarray, u: np.ndarray, *, k_reg: int = 1, lam: float = 0.0) -> np.ndarray:
    """Adaptive prediction sets: cumulative mass up to class k (sets grow when the model is unsure)."""
    return _ranked_mass(probs, u)[0]


@register_conformal_score("raps")
def _raps_scores(probs: np.ndarray, u: np.ndarray, *, k_reg: int = 1, lam: float = 0.0) -> np.ndarray:
    """Regularised APS: penalises classes ranked below ``k_reg`` by ``lam`` each (smaller sets)."""
    scores, ranks = _ranked_mass(probs, u)
    return scores + lam * np.maximum(ranks - k_reg, 0)


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of ``scores`` (``inf`` when n is too small)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        return math.inf
    return float(np.sort(scores)[k - 1])


class SplitConformal:
    """Split conformal prediction sets at level ``1 - alpha``.

    Args:
        method: non-conformity score, one of :data:`CONFORMAL_SCORES` (``lac``, ``aps``, ``raps``).
        alpha: miscoverage level in (0, 1); sets hold the true class with probability >= ``1 - alpha``.
        randomized: randomise the APS/RAPS score of the last class (exact rather than conservative coverage).
        k_reg: RAPS: number of top classes that are not penalised.
        lam: RAPS: penalty per class beyond ``k_reg`` (0 gives APS).
        seed: seed of the numpy Generator that draws the uniforms.
        allow_empty: keep empty sets (possible with randomisation or LAC); when False the top class is
            always in the set, which only raises coverage.
    """

    def __init__(self, method: str = "aps", alpha: float = 0.1, randomized: bool = True, k_reg: int = 1,
                 lam: float = 0.0, seed: int = 0, allow_empty: bool = False) -> None:
        _lookup(CONFORMAL_SCORES, method, "conformal method", "method")
        self.method = method
        self.alpha = _check_open_unit(alpha, "alpha")
        self.randomized = bool(randomized)
        self.k_reg = _check_int(k_reg, "k_reg", 0)
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise InvalidValueError(f"lam must be a finite number >= 0, got {lam!r}", field="lam")
        self.lam = float(lam)
        self.seed = int(seed)
        self.allow_empty = bool(allow_empty)
        self.qhat_: float | None = None
        self.n_cal_: int | None = None
        self.n_classes_: int | None = None

    def _uniforms(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random(n) if self.randomized else np.ones(n)

    def _scores(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        return CONFORMAL_SCORES[self.method](probs, u, k_reg=self.k_reg, lam=self.lam)

    def fit(self, probs_cal: Any, labels_cal: Any) -> SplitConformal:
        """Compute ``qhat`` from calibration probabilities ``(n, C)`` and labels ``(n,)``; returns ``self``."""
        probs = _check_probs(probs_cal, "probs_cal")
        labels = _check_labels(labels_cal, len(probs), probs.shape[1], "labels_cal")
        u = self._uniforms(len(probs), np.random.default_rng([self.seed, 0]))
        true_scores = self._scores(probs, u)[np.arange(len(labels)), labels]
        self.qhat_ = conformal_quantile(true_scores, self.alpha)
        self.n_cal_ = int(len(labels))
        self.n_classes_ = int(probs.shape[1])
        return self

    def predict_sets(self, probs: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        """Prediction sets as a boolean array ``(N, C)`` (``True`` = class in the set).

        ``rng`` defaults to a fresh Generator seeded from ``seed``, so the same
        input always gives the same sets.
        """
        if self.qhat_ is None:
            raise ConfigError("SplitConformal is not fitted", field="conformal",
                              hint="Call fit(probs_cal, labels_cal) on held-out calibration data first")
        probs = _check_probs(probs, n_classes=self.n_classes_)
        rng = np.random.default_rng([self.seed, 1]) if rng is None else rng
        sets = self._scores(probs, self._uniforms(len(probs), rng)) <= self.qhat_
        if not self.allow_empty:
            sets[np.arange(len(probs)), probs.argmax(axis=1)] = True
        return sets

    def to_dict(self) -> dict[str, Any]:
        """Settings and ``qhat`` in plain JSON types (an infinite ``qhat`` is written as None)."""
        qhat = self.qhat_
        return {
            "method": self.method, "alpha": self.alpha, "randomized": self.randomized, "k_reg": self.k_reg,
            "lam": self.lam, "seed": self.seed, "allow_empty": self.allow_empty,
            "fitted": qhat is not None,
            "qhat": None if qhat is None or math.isinf(qhat) else float(qhat),
            "n_cal": self.n_cal_, "n_classes": self.n_classes_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitConformal:
        """Rebuild from :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise InvalidValueError("expected a dict from SplitConformal.to_dict()", field="conformal")
        keys = ("method", "alpha", "randomized", "k_reg", "lam", "seed", "allow_empty")
        obj = cls(**{k: d[k] for k in keys if k in d})
        if d.get("fitted"):
            qhat = d.get("qhat")
            obj.qhat_ = math.inf if qhat is None else float(qhat)
            obj.n_cal_ = d.get("n_cal")
            obj.n_classes_ = d.get("n_classes")
            if not isinstance(obj.n_classes_, int) or obj.n_classes_ < 2:
                raise InvalidValueError(f"n_classes must be an integer >= 2, got {obj.n_classes_!r}",
                                        field="n_classes")
        return obj

    def __repr__(self) -> str:
        return (f"SplitConformal(method={self.method!r}, alpha={self.alpha}, randomized={self.randomized}, "
                f"k_reg={self.k_reg}, lam={self.lam}, seed={self.seed}, qhat={self.qhat_})")


def from_dict(d: dict[str, Any]) -> SplitConformal:
    """Module-level alias of :meth:`SplitConformal.from_dict`."""
    return SplitConformal.from_dict(d)


def _check_sets(sets: Any, field: str = "sets") -> np.ndarray:
    arr = np.asarray(sets)
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise InvalidValueError(f"{field} must be a boolean array (N, C), got {arr.dtype} {arr.shape}", field=field,
                                hint="Pass the output of SplitConformal.predict_sets")
    return arr.astype(bool)


def coverage(sets: Any, labels: Any) -> float:
    """Fraction of cases whose set holds the true label."""
    sets = _check_sets(sets)
    labels = _check_labels(labels, len(sets), sets.shape[1])
    return float(np.mean(sets[np.arange(len(labels)), labels]))


def classwise_coverage(sets: Any, labels: Any) -> np.ndarray:
    """Coverage per true class ``(C,)`` (NaN for absent classes): the guarantee is only marginal."""
    sets = _check_sets(sets)
    labels = _check_labels(labels, len(sets), sets.shape[1])
    hit = sets[np.arange(len(labels)), labels].astype(np.float64)
    counts = np.bincount(labels, minlength=sets.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(labels, weights=hit, minlength=sets.shape[1]) / counts


def mean_set_size(sets: Any) -> float:
    """Mean number of classes per set."""
    return float(np.mean(_check_sets(sets).sum(axis=1)))


def evaluate_resplits(probs: Any, labels: Any, alpha: float = 0.1, method: str = "aps", n_splits: int = 20,
                      cal_fraction: float = 0.5, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Coverage and set size over random calibration/test re-splits of one labelled set.

    Each split fits :class:`SplitConformal` (``kwargs`` go to it) on a random
    ``cal_fraction`` of the cases and measures the rest, which shows how much
    coverage varies with the calibration sample.

    Returns:
        ``{"coverage_mean", "coverage_sd", "size_mean", "size_sd", "coverages", "sizes",
        "method", "alpha", "n_splits", "n_cal", "n_test"}``.
    """
    probs = _check_probs(probs)
    labels = _check_labels(labels, len(probs), probs.shape[1])
    n_splits = _check_int(n_splits, "n_splits")
    cal_fraction = _check_open_unit(cal_fraction, "cal_fraction")
    n = len(labels)
    n_cal = int(round(cal_fraction * n))
    if n_cal < 1 or n_cal >= n:
        raise InvalidValueError(f"cal_fraction {cal_fraction} leaves an empty calibration or test part of {n} cases",
                                field="cal_fraction")
    rng = np.random.default_rng(seed)
    coverages, sizes = [], []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        cal, test = perm[:n_cal], perm[n_cal:]
        model = SplitConformal(method=method, alpha=alpha, seed=int(rng.integers(2**31)), **kwargs)
        sets = model.fit(probs[cal], labels[cal]).predict_sets(probs[test])
        coverages.append(float(np.mean(sets[np.arange(len(test)), labels[test]])))
        sizes.append(float(np.mean(sets.sum(axis=1))))
    ddof = 1 if n_splits > 1 else 0
    return {
        "coverage_mean": float(np.mean(coverages)), "coverage_sd": float(np.std(coverages, ddof=ddof)),
        "size_mean": float(np.mean(sizes)), "size_sd": float(np.std(sizes, ddof=ddof)),
        "coverages": coverages, "sizes": sizes, "method": method, "alpha": float(alpha),
        "n_splits": n_splits, "n_cal": n_cal, "n_test": n - n_cal,
    }


__all__ = [
    "CONFORMAL_SCORES",
    "SplitConformal",
    "classwise_coverage",
    "conformal_quantile",
    "coverage",
    "evaluate_resplits",
    "from_dict",
    "mean_set_size",
    "register_conformal_score",
]
