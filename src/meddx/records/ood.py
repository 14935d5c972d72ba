"""Out-of-distribution checks and site-shift statistics for clinical-record models.

Two checks flag a record as "outside the model's training data" (decision ``refer``,
through :func:`meddx.trust.decide.decide`):

* **feature-space distance**: the shared :class:`meddx.trust.ood.OODGate` fitted on the
  standardised model inputs (imputed, missingness indicators, one-hot, scaled) of the
  training rows. The thresholds come from **5-fold cross-fitting** on those rows: each
  fold is scored by detectors fitted on the other four, and each method's threshold is
  the ``1 - flag_rate`` quantile of these out-of-fold scores (all training rows serve as
  validation, and none is scored by a detector that saw it). The final detectors are
  refitted on every training row; their scores on new data are a little lower than the
  out-of-fold ones, so the in-distribution flag rate is at most about ``flag_rate``.
  The out-of-fold scores are kept as the reference sample of the two-sample test.
* **training range**: a numeric value more than :data:`RANGE_MARGIN` of the training
  range beyond the smallest or largest training value (age 95 for a model trained on
  ages 28-77) flags the record and names the feature, whatever the distance says:
  a linear model extrapolates there without knowing it.

:func:`shift_summary` is what ``meddx evaluate`` adds for a batch: the share of rows
flagged (Wilson 95% CI, binomial test against the flag rate), a KS test of the OOD scores
against the out-of-fold reference, the prevalence estimated without labels (prior-shift
EM), calibration-in-the-large, the ECE with its noise floor at that n
(:func:`ece_noise_floor`) and :func:`meddx.trust.drift.recommend`'s plain recommendation.
Both calibration figures count only beyond their noise: the ECE against the 95th
percentile of its floor, calibration-in-the-large only when its bootstrap 95% CI excludes
0 (at n = 120 its standard error is about 0.045, so a fixed 0.05 cut alone would ask for
recalibration of a well-calibrated model about one time in four).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from meddx.trust.decide import OOD_REASON, REFER, decide
from meddx.trust.ood import DEFAULT_FLAG_RATE, OODGate, fit_ood, threshold_for

RANGE_MARGIN = 0.1
"""A value beyond the training range by more than this share of the range flags the record."""
FOLDS = 5
METHOD = "mahalanobis"
"""The records' distance: on one block of standardised inputs the layer-wise variant flags the same rows
(a monotone rescaling), and a squared Mahalanobis distance reads directly (about D for a typical row)."""
FEATURES = "standardised model inputs (imputed, indicators where the task's imputation adds them, one-hot)"


def model_inputs(pipe: Any, frame: Any) -> np.ndarray:
    """The encoded, standardised inputs the model sees for ``frame`` (the OOD features)."""
    return np.asarray(pipe.named_steps["pre"].transform(frame), dtype=np.float64)


def log_probs(estimator: Any, Z: np.ndarray) -> np.ndarray:
    """``(N, 2)`` log-probabilities of a binary records model (the OOD gate's logits)."""
    p = np.clip(np.asarray(estimator.predict_proba(np.asarray(Z, dtype=np.float32))[:, 1], dtype=np.float64),
                1e-12, 1 - 1e-12)
    return np.column_stack([np.log1p(-p), np.log(p)])


def fit_gate(Z: np.ndarray, logp: np.ndarray, y: np.ndarray, *, seed: int = 0, folds: int = FOLDS,
             flag_rate: float = DEFAULT_FLAG_RATE) -> tuple[OODGate, dict[str, list[float]]]:
    """The gate fitted on all training rows with cross-fitted thresholds, and the out-of-fold scores."""
    from sklearn.model_selection import StratifiedKFold

    Z, logp, y = np.asarray(Z, np.float64), np.asarray(logp, np.float64), np.asarray(y).reshape(-1)
    oof: dict[str, np.ndarray] = {}
    for fit_idx, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(Z, y):
        fold = fit_ood(Z[fit_idx], logp[fit_idx], y[fit_idx], Z[held], logp[held], flag_rate=flag_rate)
        for m in fold.detectors:
            oof.setdefault(m, np.empty(len(Z)))[held] = fold.scores(Z[held], logp[held], m)
    gate = fit_ood(Z, logp, y, Z, logp, flag_rate=flag_rate, method=METHOD, features=FEATURES,
                   fitted_on="training rows")
    gate.thresholds = {m: threshold_for(oof[m], flag_rate) for m in gate.detectors}
    gate.info.pop("warning", None)
    gate.info["threshold_on"] = f"out-of-fold scores of the training rows ({folds}-fold cross-fitting, n={len(Z)})"
    gate.info["n_threshold"] = int(len(Z))
    gate.info["methods"] = {m: {"val_flag_rate": float(np.mean(oof[m] > gate.thresholds[m]))} for m in gate.detectors}
    if len(Z) < 100:
        gate.info["warning"] = (f"the OOD thresholds were chosen on {len(Z)} cases: the in-distribution flag "
                                f"rate may differ from {flag_rate:.0%} by several points")
    return gate, {m: [float(v) for v in oof[m]] for m in gate.detectors}


def training_ranges(clean: Any, task: Any) -> dict[str, list[float]]:
    """``{feature: [min, max]}`` of the numeric training values (after units and missing codes)."""
    return {f.name: [float(clean[f.name].min()), float(clean[f.name].max())]
            for f in task.features if f.kind == "numeric" and clean[f.name].notna().any()}


def range_flags(values: dict[str, Any], ranges: dict[str, list[float]], units: dict[str, str | None] | None = None,
                margin: float = RANGE_MARGIN) -> list[str]:
    """One message per feature far outside its training range (``margin`` of the range beyond either end)."""
    out = []
    for name, (lo, hi) in ranges.items():
        v = values.get(name)
        if v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)):
            continue
        slack = margin * (hi - lo)
        if v < lo - slack or v > hi + slack:
            unit = f" {units[name]}" if units and units.get(name) else ""
            out.append(f"{name}={float(v):.4g}{unit} is far outside the training range {lo:.4g}-{hi:.4g}{unit}")
    return out


def verdicts(gate: OODGate | None, Z: np.ndarray, logp: np.ndarray, clean: Any, ranges: dict[str, list[float]],
             *, units: dict[str, str | None] | None = None, margin: float = RANGE_MARGIN,
             method: str | None = None) -> list[dict[str, Any]]:
    """One verdict per row: the gate's ``method/score/threshold`` and ``flagged`` (distance or range),
    ``distance_flagged`` and the ``range`` messages that name the features."""
    n = len(Z)
    rows = clean.to_dict("records") if n else []
    results = gate.assess(Z, logp, method) if gate is not None else [None] * n
    out = []
    for i in range(n):
        far = range_flags(rows[i], ranges, units, margin)
        r = results[i]
        block: dict[str, Any] = {"method": r.method, "score": r.score, "threshold": r.threshold,
                                 "flag_rate": gate.flag_rate} if r is not None else {}
        distance = bool(r.flagged) if r is not None else False
        out.append({**block, "flagged": distance or bool(far), "distance_flagged": distance, "range": far})
    return out


def decision(trust_decision: dict[str, Any] | None, verdict: dict[str, Any] | None,
             rejections: list[str] | None = None) -> dict[str, str]:
    """:func:`meddx.trust.decide.decide`, with the reason naming the features when the training range flagged."""
    if verdict is None or "method" not in verdict:
        if verdict is not None and verdict.get("flagged"):
            verdict = {**verdict, "method": "range", "score": math.nan, "threshold": math.nan}
        else:
            return decide(trust_decision, ood=None, rejections=rejections)
    out = decide(trust_decision, ood=verdict, rejections=rejections)
    if out["decision"] == REFER and verdict.get("flagged") and not verdict.get("distance_flagged"):
        out["reason"] = (f"{OOD_REASON}: {'; '.join(verdict['range'])} (more than {RANGE_MARGIN:.0%} of that range "
                         "beyond it); refer to a specialist")
    elif out["decision"] == REFER and verdict.get("range"):
        out["reason"] += "; also " + "; ".join(verdict["range"])
    return out


# ------------------------------------------------------------------------------------------ batch shift
def wilson(k: int, n: int, z: float = 1.959964) -> dict[str, float]:
    """The share ``k / n`` with its Wilson score 95% interval."""
    if n == 0:
        return {"value": math.nan, "low": math.nan, "high": math.nan}
    from meddx.trust.drift import wilson_interval

    low, high = wilson_interval(k / n, n, z)
    return {"value": k / n, "low": low, "high": high}


def ece_noise_floor(p: Any, *, n_bins: int = 10, draws: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The ECE a perfectly calibrated model shows at this n: labels drawn from the model's own probabilities.

    ECE is biased upwards in small samples (every bin's observed rate is noisy), so an
    ECE of 0.08 on 120 cases is not evidence of miscalibration. Drawing ``y ~ Bernoulli(p)``
    ``draws`` times gives the ECE's distribution when the model is calibrated by
    construction; its mean and 95th percentile are returned (the latter is the floor an
    observed ECE must pass to say "miscalibrated here" at the 5% level).
    """
    from meddx.records.stats import ece

    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sims = np.array([ece(p, rng.random(len(p)) < p, n_bins) for _ in range(draws)])
    return {"mean": float(sims.mean()), "p95": float(np.quantile(sims, 0.95)), "draws": int(draws),
            "n": int(len(p)), "method": "ECE of labels drawn from the model's own probabilities"}


def calibration_in_the_large(y: Any, p: Any) -> float:
    """Observed minus mean predicted risk (positive: the model under-predicts here)."""
    return float(np.mean(np.asarray(y, np.float64)) - np.mean(np.asarray(p, np.float64)))


def shift_summary(y: np.ndarray, p: np.ndarray, verdict_rows: list[dict[str, Any]], *,
                  reference: dict[str, list[float]] | None, train_prevalence: float, flag_rate: float,
                  ece_value: float, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The batch's shift block for ``meddx evaluate``: flags, KS, prevalence, calibration, recommendation."""
    from meddx.calibration.prior_shift import em_priors
    from meddx.trust.drift import binomial_p_greater, ks_two_sample, recommend

    n = len(y)
    flagged = int(sum(bool(v["flagged"]) for v in verdict_rows))
    distance = int(sum(bool(v.get("distance_flagged")) for v in verdict_rows))
    by_range = int(sum(bool(v.get("range")) for v in verdict_rows))
    named: dict[str, int] = {}
    for v in verdict_rows:
        for message in v.get("range") or ():
            feature = message.split("=", 1)[0]
            named[feature] = named.get(feature, 0) + 1
    method = next((v["method"] for v in verdict_rows if "method" in v), None)
    ks = None
    if method and reference and reference.get(method):
        scores = [v["score"] for v in verdict_rows if "score" in v]
        ks = {"method": method, "what": "OOD scores of these rows vs the out-of-fold scores of the training rows",
              "n_reference": len(reference[method]), **ks_two_sample(scores, reference[method])}
    probs = np.column_stack([1 - p, p])
    prior = min(max(float(train_prevalence), 1e-6), 1 - 1e-6)
    _, priors = em_priors(probs, [1 - prior, prior])
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(min(n_boot, 200)):
        i = rng.integers(0, n, n)
        boot.append(float(em_priors(probs[i], [1 - prior, prior], max_iter=200, tol=1e-6)[1][1]))
    citl = calibration_in_the_large(y, p)
    citl_boot = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        citl_boot.append(calibration_in_the_large(y[i], p[i]))
    floor = ece_noise_floor(p, seed=seed)
    citl_low, citl_high = float(np.quantile(citl_boot, 0.025)), float(np.quantile(citl_boot, 0.975))
    citl_beyond_noise = citl_low > 0 or citl_high < 0
    share = flagged / n if n else math.nan
    caveat = None
    if share > max(3 * flag_rate, 0.2):
        caveat = (f"{share:.0%} of rows are outside the training data: the EM estimate assumes only the class mix "
                  "changed (p(x | y) as in training), which these rows contradict; do not rely on it")
    return {
        "flag_rate_expected": flag_rate,
        "flagged": {"n": flagged, "share": wilson(flagged, n), "by_distance": distance, "by_training_range": by_range,
                    "features_outside_training_range": named,
                    "p_value_above_expected": binomial_p_greater(flagged, n, flag_rate)},
        "ks_ood_scores": ks,
        "prevalence": {"observed": float(np.mean(y)), "estimated_unlabelled": float(priors[1]),
                       "estimated_low": float(np.quantile(boot, 0.025)),
                       "estimated_high": float(np.quantile(boot, 0.975)),
                       "training": float(train_prevalence), "method": "prior-shift EM (Saerens et al. 2002), "
                       "bootstrap 95% CI over 200 resamples", **({"caveat": caveat} if caveat else {})},
        "calibration_in_the_large": {"value": citl, "low": citl_low, "high": citl_high,
                                     "beyond_noise": citl_beyond_noise,
                                     "definition": "observed prevalence minus mean predicted risk"},
        "ece": {"value": float(ece_value), "noise_floor": floor},
        "recommendation": recommend(share, flag_rate, n, ece=float(ece_value), ece_floor=floor["p95"],
                                    calibration_in_the_large=citl if citl_beyond_noise else None),
    }


__all__ = ["FOLDS", "METHOD", "RANGE_MARGIN", "calibration_in_the_large", "decision", "ece_noise_floor", "fit_gate",
           "log_probs", "model_inputs", "range_flags", "shift_summary", "training_ranges", "verdicts", "wilson"]
