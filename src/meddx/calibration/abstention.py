"""Abstention: refer uncertain cases to a clinician instead of guessing.

A diagnostic model is safer when it says "I don't know" on the cases it is
likely to get wrong. This module scores uncertainty from probabilities, measures
the trade-off between how many cases the model keeps (*coverage*) and its error
rate on them (*selective risk*), and chooses a referral threshold on validation
data (:class:`AbstentionPolicy`).

Uncertainty scores (:data:`SCORES`), **higher = more uncertain** for all:

* ``max_probability``: ``1 - max_k p_k`` (least confidence), in ``[0, 1 - 1/C]``;
* ``predictive_entropy``: ``-sum_k p_k log p_k`` in nats, in ``[0, log C]``;
* ``margin``: ``1 - (p_(1) - p_(2))``, one minus the gap between the two top classes, in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from meddx.calibration.metrics import _check_open_unit, _check_probs, _lookup
from meddx.exceptions import ConfigError, InvalidValueError

ScoreFn = Callable[[np.ndarray], np.ndarray]
SCORES: dict[str, ScoreFn] = {}


def register_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Register ``fn(probs (N, C)) -> uncertainty (N,)`` (higher = more uncertain) under ``name``."""

    def deco(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        return fn

    return deco


@register_score("max_probability")
def max_probability(probs: Any) -> np.ndarray:
    """``1 - max_k p_k``: one minus the top-class probability (higher = more uncertain)."""
    return 1.0 - _check_probs(probs).max(axis=1)


@register_score("predictive_entropy")
def predictive_entropy(probs: Any) -> np.ndarray:
    """``-sum_k p_k log p_k`` in nats (higher = more uncertain; 0 for a one-hot prediction)."""
    p = _check_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return np.maximum(-terms.sum(axis=1), 0.0)


@register_score("margin")
def margin(probs: Any) -> np.ndarray:
    """``1 - (p_(1) - p_(2))``: one minus the top-two gap (higher = more uncertain)."""
    p = np.sort(_check_probs(probs), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def uncertainty_scores(probs: Any, measure: str = "predictive_entropy") -> np.ndarray:
    """The uncertainty score ``measure`` (a name in :data:`SCORES`) of each row of ``probs``."""
    return _lookup(SCORES, measure, "uncertainty measure", "measure")(probs)


def _check_selective(uncertainty: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        u = np.asarray(uncertainty, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValueError("uncertainty must be numbers", field="uncertainty") from None
    if u.ndim != 1 or u.size == 0:
        raise InvalidValueError(f"uncertainty must have shape (N,) with N >= 1, got {u.shape}", field="uncertainty")
    if not np.all(np.isfinite(u)):
        raise InvalidValueError("uncertainty holds NaN or inf", field="uncertainty")
    c = np.asarray(correct)
    if c.shape != u.shape:
        raise InvalidValueError(f"correct must have shape {u.shape}, got {c.shape}", field="correct",
                                hint="Pass one boolean per case: prediction == label")
    if c.dtype.kind not in "biuf" or not np.all(np.isin(c, (0, 1))):
        raise InvalidValueError("correct must hold booleans (or 0/1)", field="correct")
    return u, c.astype(bool)


def risk_coverage_curve(uncertainty: Any, correct: Any) -> dict[str, np.ndarray]:
    """Selective risk against coverage, keeping the least uncertain cases first.

    One point per distinct uncertainty value (tied cases are kept or referred
    together, as a threshold would): keeping the cases with ``uncertainty <=
    threshold`` gives ``coverage`` (fraction kept) and ``risk`` (error rate on them).

    Returns:
        ``{"coverage", "risk", "threshold"}``, arrays of equal length, coverage increasing to 1.
    """
    u, ok = _check_selective(uncertainty, correct)
    order = np.argsort(u, kind="stable")
    u_sorted, err = u[order], (~ok[order]).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(u_sorted) > 0), len(u) - 1]  # end of each tie group
    kept = last + 1
    return {
        "coverage": kept / len(u),
        "risk": np.cumsum(err)[last] / kept,
        "threshold": u_sorted[last],
    }


def aurc(uncertainty: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (lower is better; the error rate when uncertainty is uninformative).

    The step integral of :func:`risk_coverage_curve`; without ties it is the mean
    of the selective risk after keeping 1, 2, ..., N cases (Geifman et al. 2019).
    """
    curve = risk_coverage_curve(uncertainty, correct)
    widths = np.diff(np.r_[0.0, curve["coverage"]])
    return float(np.sum(widths * curve["risk"]))


def accuracy_at_coverage(uncertainty: Any, correct: Any, coverage: float = 0.8) -> float:
    """Accuracy on the ``ceil(coverage * N)`` least uncertain cases (ties broken by order)."""
    u, ok = _check_selective(uncertainty, correct)
    if not 0 < float(coverage) <= 1:
        raise InvalidValueError(f"coverage must be in (0, 1], got {coverage}", field="coverage")
    k = max(1, math.ceil(float(coverage) * len(u) - 1e-9))
    return float(np.mean(ok[np.argsort(u, kind="stable")[:k]]))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


class AbstentionPolicy:
    """Refer a case when its uncertainty exceeds a threshold chosen on validation data.

    Args:
        measure: the uncertainty score (a name in :data:`SCORES`), used when
            :meth:`decide` computes uncertainty from ``probs``; recorded for the package.
        target_risk: choose the largest threshold whose selective risk (error rate
            on kept cases) on validation is <= ``target_risk`` ...
        coverage: ... or the threshold that keeps this fraction of validation cases.
            Exactly one of ``target_risk`` and ``coverage`` must be set.
        refer_on_ambiguous_set: also refer when a conformal prediction set holds
            more than one class (or none).
    """

    def __init__(self, measure: str = "predictive_entropy", target_risk: float | None = None,
                 coverage: float | None = None, refer_on_ambiguous_set: bool = True) -> None:
        _lookup(SCORES, measure, "uncertainty measure", "measure")
        if (target_risk is None) == (coverage is None):
            raise InvalidValueError("set exactly one of target_risk and coverage", field="target_risk",
                                    hint="e.g. AbstentionPolicy(target_risk=0.05) or AbstentionPolicy(coverage=0.8)")
        self.measure = measure
        self.target_risk = None if target_risk is None else _check_open_unit(target_risk, "target_risk")
        if coverage is not None and not 0 < float(coverage) <= 1:
            raise InvalidValueError(f"coverage must be in (0, 1], got {coverage}", field="coverage")
        self.coverage = None if coverage is None else float(coverage)
        self.refer_on_ambiguous_set = bool(refer_on_ambiguous_set)
        self.threshold_: float | None = None  # None after fit: no threshold met the target, refer everything
        self.fitted_ = False
        self.val_coverage_: float | None = None
        self.val_risk_: float | None = None
        self.n_val_: int | None = None

    def fit(self, uncertainty_val: Any, correct_val: Any) -> AbstentionPolicy:
        """Choose the threshold on validation uncertainty ``(N,)`` and correctness ``(N,)``; returns ``self``."""
        curve = risk_coverage_curve(uncertainty_val, correct_val)
        if self.target_risk is not None:
            feasible = np.flatnonzero(curve["risk"] <= self.target_risk + 1e-12)
            i = int(feasible[-1]) if feasible.size else None
        else:
            i = int(np.searchsorted(curve["coverage"], self.coverage - 1e-12, side="left"))
        if i is None:
            self.threshold_, self.val_coverage_, self.val_risk_ = None, 0.0, None
        else:
            self.threshold_ = float(curve["threshold"][i])
            self.val_coverage_ = float(curve["coverage"][i])
            self.val_risk_ = float(curve["risk"][i])
        self.n_val_ = int(len(np.asarray(uncertainty_val)))
        self.fitted_ = True
        return self

    def score(self, probs: Any) -> np.ndarray:
        """The policy's uncertainty measure for each row of ``probs``."""
        return uncertainty_scores(probs, self.measure)

    def _goal(self) -> str:
        if self.target_risk is not None:
            return f"for a {self.target_risk:.0%} risk"
        return f"to keep {self.coverage:.0%} of cases"

    def decide(self, uncertainty: Any = None, sets: Any = None, positive_index: int | None = None,
               probs: Any = None, *, class_names: Sequence[str] | None = None,
               set_level: float | None = None) -> list[dict[str, Any]]:
        """One decision per case, with a human-readable reason.

        Args:
            uncertainty: ``(N,)`` scores (higher = more uncertain); computed from
                ``probs`` with ``measure`` when None.
            sets: optional ``(N, C)`` boolean conformal prediction sets.
            positive_index: binary tasks: the positive class (default 1).
            probs: ``(N, C)`` probabilities, giving the predicted class (argmax).
                Without them the class comes from a one-class set.
            class_names: names used for multi-class decisions (default: the index as a string).
            set_level: coverage level of ``sets`` (e.g. 0.9), only for the wording.

        Returns:
            ``[{"decision", "reason", "uncertainty", "predicted", "set"}]``: ``decision`` is
            ``"positive"``/``"negative"``/``"refer"`` for binary tasks, else the class name or
            ``"refer"``; ``predicted`` is the class index (None if unknown); ``set`` the class
            indices in the prediction set (None without ``sets``).
        """
        if not self.fitted_:
            raise ConfigError("AbstentionPolicy is not fitted", field="policy",
                              hint="Call fit(uncertainty_val, correct_val) on validation data first")
        p = None if probs is None else _check_probs(probs)
        if uncertainty is None:
            if p is None:
                raise InvalidValueError("pass uncertainty or probs", field="uncertainty")
            uncertainty = uncertainty_scores(p, self.measure)
        u = np.asarray(uncertainty, dtype=np.float64)
        if u.ndim != 1 or not np.all(np.isfinite(u)):
            raise InvalidValueError(f"uncertainty must be a finite (N,) array, got shape {u.shape}",
                                    field="uncertainty")
        n = len(u)
        if p is not None and len(p) != n:
            raise InvalidValueError(f"probs has {len(p)} rows, uncertainty {n}", field="probs")
        s = None
        if sets is not None:
            s = np.asarray(sets)
            if s.ndim != 2 or s.shape[0] != n or s.dtype.kind not in "biu":
                raise InvalidValueError(f"sets must be a boolean ({n}, C) array, got {s.dtype} {s.shape}",
                                        field="sets")
            s = s.astype(bool)
            if p is not None and s.shape[1] != p.shape[1]:
                raise InvalidValueError(f"sets has {s.shape[1]} classes, probs {p.shape[1]}", field="sets")
        n_classes = p.shape[1] if p is not None else (s.shape[1] if s is not None else None)
        binary = n_classes == 2
        if binary:
            positive = 1 if positive_index is None else int(positive_index)
            if positive not in (0, 1):
                raise InvalidValueError(f"positive_index must be 0 or 1, got {positive_index}", field="positive_index")
        if class_names is not None and n_classes is not None and len(class_names) != n_classes:
            raise InvalidValueError(f"class_names has {len(class_names)} names for {n_classes} classes",
                                    field="class_names")
        level = "" if set_level is None else f"{float(set_level):.0%} "

        def name_of(k: int) -> str:
            if binary:
                return "positive" if k == positive else "negative"
            return str(class_names[k]) if class_names is not None else str(k)

        out = []
        for i in range(n):
            members = None if s is None else [int(k) for k in np.flatnonzero(s[i])]
            predicted = int(p[i].argmax()) if p is not None else (members[0] if members and len(members) == 1 else None)
            row: dict[str, Any] = {"uncertainty": float(u[i]), "predicted": predicted, "set": members}
            if self.threshold_ is None:
                row["decision"] = "refer"
                row["reason"] = (f"no uncertainty threshold met the {self.target_risk:.0%} risk target on "
                                 "validation, so every case is referred")
            elif u[i] > self.threshold_:
                row["decision"] = "refer"
                row["reason"] = (f"uncertainty {_fmt(u[i])} above the threshold {_fmt(self.threshold_)} "
                                 f"chosen on validation {self._goal()}")
            elif members is not None and self.refer_on_ambiguous_set and len(members) != 1:
                row["decision"] = "refer"
                if members:
                    listed = ", ".join(name_of(k) for k in members)
                    row["reason"] = f"the {level}prediction set holds {len(members)} classes ({listed})"
                else:
                    row["reason"] = (f"the {level}prediction set is empty: no class is plausible, "
                                     "the case may be unlike the training data")
            elif predicted is None:
                raise InvalidValueError("cannot tell the predicted class without probs", field="probs",
                                        hint="Pass probs=... (or sets with one class per case)")
            else:
                row["decision"] = name_of(predicted)
                conf = f" (p = {p[i, predicted]:.2f})" if p is not None else ""
                row["reason"] = (f"uncertainty {_fmt(u[i])} within the threshold {_fmt(self.threshold_)} "
                                 f"chosen on validation {self._goal()}; predicted {name_of(predicted)}{conf}")
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Settings, threshold and validation summary in plain JSON types."""
        return {
            "measure": self.measure, "target_risk": self.target_risk, "coverage": self.coverage,
            "refer_on_ambiguous_set": self.refer_on_ambiguous_set, "fitted": self.fitted_,
            "threshold": self.threshold_, "val_coverage": self.val_coverage_, "val_risk": self.val_risk_,
            "n_val": self.n_val_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AbstentionPolicy:
        """Rebuild from :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise InvalidValueError("expected a dict from AbstentionPolicy.to_dict()", field="policy")
        obj = cls(measure=d.get("measure", "predictive_entropy"), target_risk=d.get("target_risk"),
                  coverage=d.get("coverage"), refer_on_ambiguous_set=d.get("refer_on_ambiguous_set", True))
        if d.get("fitted"):
            t = d.get("threshold")
            if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t)):
                raise InvalidValueError(f"threshold must be a finite number or null, got {t!r}", field="threshold")
            obj.threshold_ = None if t is None else float(t)
            obj.val_coverage_, obj.val_risk_, obj.n_val_ = d.get("val_coverage"), d.get("val_risk"), d.get("n_val")
            obj.fitted_ = True
        return obj

    def __repr__(self) -> str:
        return (f"AbstentionPolicy(measure={self.measure!r}, target_risk={self.target_risk}, "
                f"coverage={self.coverage}, threshold={self.threshold_})")


def from_dict(d: dict[str, Any]) -> AbstentionPolicy:
    """Module-level alias of :meth:`AbstentionPolicy.from_dict`."""
    return AbstentionPolicy.from_dict(d)


__all__ = [
    "SCORES",
    "AbstentionPolicy",
    "accuracy_at_coverage",
    "aurc",
    "from_dict",
    "margin",
    "max_probability",
    "predictive_entropy",
    "register_score",
    "risk_coverage_curve",
    "uncertainty_scores",
]
