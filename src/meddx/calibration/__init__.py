"""Calibration, conformal prediction and abstention: probabilities a clinic can trust.

The flow has three steps:

1. **Fit on validation data.** After training, run the model on the held-out
   validation set and fit, on its logits ``(N, C)`` and labels ``(N,)``:

   * a calibrator (:func:`create_calibrator`: ``temperature``, ``vector``,
     ``dirichlet``) so that 80% confidence means 80% right;
   * a :class:`SplitConformal` predictor on the *calibrated* probabilities, so
     that prediction sets hold the true class with probability >= 1 - alpha;
   * an :class:`AbstentionPolicy` that picks an uncertainty threshold meeting a
     target error rate (or coverage) on validation.

   Check the result with :func:`calibration_metrics`, :func:`bootstrap_calibration`
   and :func:`plot_reliability` (before/after).

2. **Store in the package.** Each fitted object's ``to_dict()`` is plain JSON and
   goes into the model package's ``package.json``; :func:`calibrator_from_dict`,
   :meth:`SplitConformal.from_dict` and :meth:`AbstentionPolicy.from_dict`
   rebuild it exactly.

3. **Apply at predict time.** ``probs = calibrator.transform(logits)``, then
   ``sets = conformal.predict_sets(probs)`` and
   ``policy.decide(probs=probs, sets=sets)`` give, per case, a diagnosis or a
   referral with its reason. At a new site whose class frequencies differ,
   :func:`em_priors` re-weights the probabilities without needing labels.

Example::

    cal = create_calibrator("temperature").fit(val_logits, val_labels)
    val_probs = cal.transform(val_logits)
    cp = SplitConformal("aps", alpha=0.1).fit(val_probs, val_labels)
    policy = AbstentionPolicy(target_risk=0.05).fit(
        predictive_entropy(val_probs), val_probs.argmax(1) == val_labels)
    package["calibration"] = {"calibrator": cal.to_dict(), "conformal": cp.to_dict(), "policy": policy.to_dict()}
"""

from __future__ import annotations

from meddx.calibration.abstention import (
    SCORES,
    AbstentionPolicy,
    accuracy_at_coverage,
    aurc,
    margin,
    max_probability,
    predictive_entropy,
    register_score,
    risk_coverage_curve,
    uncertainty_scores,
)
from meddx.calibration.abstention import from_dict as policy_from_dict
from meddx.calibration.conformal import (
    CONFORMAL_SCORES,
    SplitConformal,
    classwise_coverage,
    conformal_quantile,
    coverage,
    evaluate_resplits,
    mean_set_size,
    register_conformal_score,
)
from meddx.calibration.conformal import from_dict as conformal_from_dict
from meddx.calibration.metrics import (
    BINNINGS,
    bootstrap_calibration,
    brier,
    calibration_metrics,
    classwise_ece,
    ece,
    nll,
    plot_reliability,
    register_binning,
    reliability_curve,
)
from meddx.calibration.prior_shift import adjust_to_priors, class_priors, em_priors
from meddx.calibration.scaling import (
    CALIBRATORS,
    Calibrator,
    DirichletCalibrator,
    IdentityCalibrator,
    TemperatureScaling,
    VectorScaling,
    calibrator_from_dict,
    create_calibrator,
    list_calibrators,
    log_softmax,
    register_calibrator,
    softmax,
)

__all__ = [
    "BINNINGS",
    "CALIBRATORS",
    "CONFORMAL_SCORES",
    "SCORES",
    "AbstentionPolicy",
    "Calibrator",
    "DirichletCalibrator",
    "IdentityCalibrator",
    "SplitConformal",
    "TemperatureScaling",
    "VectorScaling",
    "accuracy_at_coverage",
    "adjust_to_priors",
    "aurc",
    "bootstrap_calibration",
    "brier",
    "calibration_metrics",
    "calibrator_from_dict",
    "class_priors",
    "classwise_coverage",
    "classwise_ece",
    "conformal_from_dict",
    "conformal_quantile",
    "coverage",
    "create_calibrator",
    "ece",
    "em_priors",
    "evaluate_resplits",
    "list_calibrators",
    "log_softmax",
    "margin",
    "max_probability",
    "mean_set_size",
    "nll",
    "plot_reliability",
    "policy_from_dict",
    "predictive_entropy",
    "register_binning",
    "register_calibrator",
    "register_conformal_score",
    "register_score",
    "reliability_curve",
    "risk_coverage_curve",
    "softmax",
    "uncertainty_scores",
]
