"""The trust layer of a model package: calibration, conformal sets and abstention.

Fitted once on the validation split when a model is trained (on out-of-fold predictions
when the small-data recipe cross-validates; see :mod:`meddx.training.trainer`), or refitted on a
hospital's local labelled sample with :func:`meddx.inference.refit.refit_package`, stored as JSON in
``package.json["trust"]``, and applied to every prediction, whatever the model's
modality:

1. a calibrator turns the model's logits into calibrated probabilities
   (temperature scaling by default, bounded to [0.05, 10]; vector/Dirichlet scaling for
   multi-class);
2. a split-conformal predictor (APS) turns those into a prediction set that holds
   the true class with the chosen coverage (90% by default);
3. an abstention policy refers the case to a specialist when the uncertainty passes
   a threshold chosen on validation data for a target risk (and, when asked with
   ``refer_on_ambiguous_set``, when the set does not hold exactly one class).

Inputs unlike the training data are the OOD gate's to refer (:mod:`meddx.trust.ood`),
and :func:`meddx.trust.decide.decide` combines both into the one decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS = {"calibration": "auto", "alpha": 0.1, "conformal": "aps", "measure": "predictive_entropy",
            "target_risk": 0.05, "refer_on_ambiguous_set": False}
"""``refer_on_ambiguous_set`` is off by default since packages carry an OOD gate (issue 16): with it on, the
90% conformal set's randomised empty and two-class sets referred 14% of PneumoniaMNIST test images on top of
the gate's 5-7%, where the bar for referred-or-flagged is 10%; the set is still reported with every prediction."""
AUTO_CANDIDATES = {2: ("identity", "temperature"), "multi": ("identity", "temperature", "vector")}
SMALL_N = 200
"""Below this many calibration cases the package records a warning: the realised coverage of a 90% conformal set
fitted on n cases varies by about ±1.96·sqrt(α(1−α)/(n+2)) between calibration sets (±8 points at n=50, ±4 at
n=200), and a temperature fitted on them is as loose (issue 17: T=29.2 from 37 validation images)."""
MIN_PER_CLASS = 20
"""Fewer cases than this in a class: its calibration and class-wise coverage are not supported by the data."""


def small_n_warnings(n_per_class: np.ndarray, alpha: float,
                     calibration: dict[str, Any]) -> tuple[list[str], list[float]]:
    """Plain-language warnings for a trust layer fitted on few cases, and the 95% range of its realised coverage.

    Split-conformal coverage given the calibration set is Beta-distributed (Vovk 2012; Angelopoulos &
    Bates 2021) with mean ≥ 1−α and variance ≈ α(1−α)/(n+2); the interval returned is ±1.96 SD.
    """
    n = int(np.sum(n_per_class))
    spread = 1.96 * float(np.sqrt(alpha * (1 - alpha) / (n + 2)))
    interval = [round(max(0.0, 1 - alpha - spread), 4), round(min(1.0, 1 - alpha + spread), 4)]
    warnings: list[str] = []
    if n < SMALL_N:
        warnings.append(
            f"Calibration, conformal sets and abstention were fitted on only n={n} cases (fewer than {SMALL_N}): "
            f"the {1 - alpha:.0%} coverage holds on average, but this package's realised coverage on new cases "
            f"may lie anywhere in about {interval[0]:.0%}–{interval[1]:.0%}, and its temperature is as loose. "
            "Refit the trust layer on a larger local labelled sample before relying on the probabilities.")
    if n < int(np.ceil((1 - alpha) / alpha)):
        warnings.append(f"n={n} is too small for {1 - alpha:.0%} conformal sets: every set holds all classes.")
    if n_per_class.size and int(n_per_class.min()) < MIN_PER_CLASS:
        warnings.append(f"Only {int(n_per_class.min())} calibration cases in the rarest class (fewer than "
                        f"{MIN_PER_CLASS}): its calibration and class-wise coverage are not supported by the data.")
    if (calibration.get("state") or {}).get("at_bound"):
        warnings.append(f"The temperature stopped at its bound ({calibration['state']['temperature']:.3g}): the "
                        "calibration cases could not determine it.")
    return warnings, interval


def select_calibrator(logits: np.ndarray, labels: np.ndarray, candidates: tuple[str, ...], folds: int = 5,
                      seed: int = 0) -> tuple[str, dict[str, float]]:
    """The candidate with the lowest cross-validated NLL on held-out data (validation only).

    Temperature scaling fitted on a small validation set can make an already
    well-calibrated model slightly worse on new data; comparing out-of-fold NLL
    keeps a calibrator only when it helps on cases it was not fitted on.
    """
    from meddx.calibration import create_calibrator, nll

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    parts = np.array_split(order, min(folds, max(2, len(labels) // 10)))
    scores: dict[str, float] = {}
    for name in candidates:
        losses = []
        for k, test in enumerate(parts):
            train = np.concatenate([p for j, p in enumerate(parts) if j != k])
            if len(np.unique(labels[train])) < 2:
                continue
            calibrator = create_calibrator(name).fit(logits[train], labels[train])
            losses.append(nll(calibrator.transform(logits[test]), labels[test]) * len(test))
        scores[name] = float(np.sum(losses) / len(labels)) if losses else float("inf")
    return min(scores, key=lambda n: (scores[n], candidates.index(n))), scores


def fit_trust(logits: np.ndarray, labels: np.ndarray, *, calibration: str = "auto", alpha: float = 0.1,
              conformal: str = "aps", measure: str = "predictive_entropy", target_risk: float = 0.05,
              refer_on_ambiguous_set: bool = False, fitted_on: str = "validation split") -> dict[str, Any]:
    """Fit the three parts on held-out ``logits`` ``(N, C)`` and ``labels``; return the JSON to store."""
    from meddx.calibration import (
        AbstentionPolicy,
        SplitConformal,
        calibration_metrics,
        create_calibrator,
    )
    from meddx.calibration.abstention import SCORES
    from meddx.calibration.scaling import softmax

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    selection = None
    if calibration == "auto":
        candidates = AUTO_CANDIDATES[2] if logits.shape[1] == 2 else AUTO_CANDIDATES["multi"]
        calibration, scores = select_calibrator(logits, labels, candidates)
        selection = {"rule": "lowest 5-fold cross-validated NLL on the validation split",
                     "cv_nll": {k: (v if np.isfinite(v) else None) for k, v in scores.items()},
                     "chosen": calibration}
    calibrator = create_calibrator(calibration).fit(logits, labels)
    probs = calibrator.transform(logits)
    # randomised APS/RAPS with empty sets allowed is exact (coverage 1 - alpha on average); an empty
    # set means no class is plausible, and the abstention policy refers such cases
    predictor = SplitConformal(method=conformal, alpha=alpha, allow_empty=conformal != "lac").fit(probs, labels)
    uncertainty = SCORES[measure](probs)
    correct = probs.argmax(axis=1) == labels
    policy = AbstentionPolicy(measure=measure, target_risk=target_risk,
                              refer_on_ambiguous_set=refer_on_ambiguous_set).fit(uncertainty, correct)
    raw = softmax(logits)
    n_per_class = np.bincount(labels, minlength=logits.shape[1])
    calibration_dict = calibrator.to_dict()
    warnings, interval = small_n_warnings(n_per_class, alpha, calibration_dict)
    return _finite({
        "fitted_on": fitted_on,
        "n": int(len(labels)),
        "n_per_class": [int(c) for c in n_per_class],
        "coverage_interval_95": interval,
        "warnings": warnings,
        "calibration": calibration_dict,
        "calibration_selection": selection,
        "conformal": predictor.to_dict(),
        "abstention": policy.to_dict(),
        "validation": {"before": calibration_metrics(raw, labels), "after": calibration_metrics(probs, labels)},
    })


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None, so package.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value




@dataclass
class TrustLayer:
    """The fitted parts, rebuilt from a package's JSON (identity when the package has none)."""

    calibrator: Any
    conformal: Any | None
    policy: Any | None
    alpha: float | None

    @classmethod
    def from_package(cls, package: dict[str, Any]) -> TrustLayer:
        from meddx.calibration import (
            SplitConformal,
            calibrator_from_dict,
            create_calibrator,
        )
        from meddx.calibration.abstention import AbstentionPolicy

        trust = package.get("trust") or {}
        calibrator = calibrator_from_dict(trust["calibration"]) if "calibration" in trust else \
            create_calibrator("identity")
        conformal = SplitConformal.from_dict(trust["conformal"]) if "conformal" in trust else None
        policy = AbstentionPolicy.from_dict(trust["abstention"]) if "abstention" in trust else None
        return cls(calibrator, conformal, policy, conformal.alpha if conformal is not None else None)

    def apply(self, logits: np.ndarray, class_names: list[str], positive_class: str | None) -> list[dict[str, Any]]:
        """Calibrated probabilities, prediction set and decision for each row of ``logits``."""
        from meddx.calibration.abstention import SCORES

        logits = np.asarray(logits, dtype=np.float64)
        calibrated = self.calibrator.transform(logits)
        sets = self.conformal.predict_sets(calibrated) if self.conformal is not None else None
        positive_index = class_names.index(positive_class) if positive_class in class_names else None
        if self.policy is not None:
            uncertainty = SCORES[self.policy.measure](calibrated)
            decisions = self.policy.decide(uncertainty, sets=sets, positive_index=positive_index, probs=calibrated,
                                           class_names=class_names, set_level=1 - self.alpha if self.alpha else None)
        else:
            decisions = [_plain_decision(row, class_names, positive_index) for row in calibrated]
        out = []
        for i, row in enumerate(calibrated):
            decision = dict(decisions[i])
            if positive_index is not None and decision.get("decision") not in ("positive", "negative", "refer"):
                decision["decision"] = "positive" if int(np.argmax(row)) == positive_index else "negative"
            elif positive_index is None and decision.get("decision") not in ("refer", *class_names):
                decision["decision"] = class_names[int(np.argmax(row))]
            out.append({
                "calibrated": row,
                "set": [class_names[j] for j in np.flatnonzero(sets[i])] if sets is not None else None,
                "decision": decision,
            })
        return out


def _plain_decision(row: np.ndarray, class_names: list[str], positive_index: int | None) -> dict[str, str]:
    top = int(np.argmax(row))
    if positive_index is not None:
        return {"decision": "positive" if top == positive_index else "negative",
                "reason": "no abstention policy in this package: the most probable class"}
    return {"decision": class_names[top], "reason": "no abstention policy in this package: the most probable class"}
