"""Will a records model hold up at another hospital? External checks and site recalibration.

The sealed test of issue 17 is a model trained on Cleveland + Hungary scored at two other
hospitals (Switzerland, VA Long Beach) where cholesterol is often recorded as 0 and ``ca``,
``thal``, ``slope`` are mostly absent. Without those sets, this module builds the external
checks the mirror allows and scores candidate recipes on all of them:

* **leave-one-site-out** (:func:`site_splits`): train on every site but one, score that one;
* **simulated other site** (:data:`PATTERNS`, :func:`simulate`): the held-out rows get another
  hospital's missingness, either on a left-out site or on pooled cross-validation folds (the
  only check whose training data mixes sites, as the default model's does; it is what exposes
  missingness indicators that learned "this row is from Hungary").

:data:`CANDIDATES` are the recipes compared (always including the plain logistic regression
with mean imputation that the issue names as the bar). :func:`recalibration_curve` measures
how many local labelled cases an intercept update needs before the ECE at a new site falls
to the noise floor of a perfectly calibrated model; :func:`recalibrate_proba` applies one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

LOCAL_CASES = 75
"""Local labelled cases the shipped heart model needs for an intercept update (ECE vs k, bench/records.py)."""
FLOOR_REPEATS = 10
"""Draws of :func:`recalibration_curve` whose recalibrated probabilities also get a noise floor."""


# ------------------------------------------------------------------------------ missingness patterns
@dataclass(frozen=True)
class Pattern:
    """Another hospital's missingness: columns absent for every row, others blanked in a share of rows."""

    name: str
    description: str
    absent: tuple[str, ...] = ()
    partial: tuple[tuple[str, float], ...] = ()


PATTERNS: dict[str, Pattern] = {
    "switzerland-va": Pattern(
        "switzerland-va", "cholesterol not measured (recorded as 0), ca/thal/slope absent: the Switzerland/VA "
        "pattern of the UCI originals, applied to every row", absent=("chol", "ca", "thal", "slope")),
    "patchy": Pattern(
        "patchy", "ca absent; chol, thal, slope each missing in a random half of the rows; fbs, trestbps, "
        "thalch, exang, oldpeak in a random fifth (missingness that varies from row to row)",
        absent=("ca",), partial=(("chol", 0.5), ("thal", 0.5), ("slope", 0.5), ("fbs", 0.2), ("trestbps", 0.2),
                                 ("thalch", 0.2), ("exang", 0.2), ("oldpeak", 0.2))),
}


def simulate(frame: Any, pattern: str | Pattern, *, seed: int = 0) -> Any:
    """``frame`` with ``pattern``'s values blanked (chol 0 is the same as blank: both mean not measured)."""
    pat = pattern if isinstance(pattern, Pattern) else _pattern(pattern)
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for col in pat.absent:
        if col in out:
            out[col] = np.nan
    for col, share in pat.partial:
        if col in out:
            hit = rng.random(len(out)) < share
            out.loc[out.index[hit], col] = np.nan
    return out


def _pattern(name: str) -> Pattern:
    try:
        return PATTERNS[name]
    except KeyError:
        raise ConfigError(f"unknown missingness pattern {name!r}", field="pattern",
                          hint=f"Use one of {sorted(PATTERNS)}") from None


# ------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    """A recipe: ``make(task, seed)`` returns an unfitted scikit-learn pipeline taking the raw frame."""

    name: str
    description: str
    make: Callable[[Any, int], Any]


CANDIDATES: dict[str, Candidate] = {}


def register_candidate(c: Candidate) -> Candidate:
    CANDIDATES[c.name] = c
    return c


def _baseline(task: Any, seed: int) -> Any:
    """Plain logistic regression (C = 1) on one-hot features, every column mean-imputed, no indicators."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from meddx.records.transform import ConditionalEncoder, MissingCodes, UnitHarmoniser

    spec = task.to_dict()
    pre = Pipeline([("units", UnitHarmoniser(spec)), ("codes", MissingCodes(spec)),
                    ("encode", ConditionalEncoder(spec, method="mean"))])
    return Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=5000))])


def _kind(kind: str, imputation: str) -> Callable[[Any, int], Any]:
    """A :data:`meddx.records.models.MODELS` kind with the given imputation."""
    def make(task: Any, seed: int) -> Any:
        from meddx.records.models import make_pipeline

        return make_pipeline(replace(task, imputation=imputation), kind, seed)
    return make


def _monotone(task: Any, seed: int) -> Any:
    """Histogram gradient boosting with monotone constraints on the conditional-mean-imputed inputs."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    from meddx.records.models import MONOTONE
    from meddx.records.transform import ConditionalEncoder, preprocessor

    task = replace(task, imputation="conditional")
    directions = MONOTONE.get(task.name, {})
    constraints = [directions.get(c, 0) for c in ConditionalEncoder.columns_of(task)]
    model = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0,
                                           monotonic_cst=constraints, early_stopping=True, validation_fraction=0.2,
                                           random_state=seed)
    return Pipeline([("pre", preprocessor(task)), ("model", model)])


register_candidate(Candidate("baseline-mean-lr", "plain logistic regression (C=1), mean imputation", _baseline))
register_candidate(Candidate("logreg-indicators", "L2 logistic regression (inner-CV C), median imputation + "
                                                  "missingness indicators (the default before issue 17)",
                             _kind("logreg", "indicator")))
register_candidate(Candidate("logreg-conditional", "L2 logistic regression (inner-CV C), conditional-mean "
                                                   "imputation, no indicators", _kind("logreg", "conditional")))
register_candidate(Candidate("monotone-boosting", "gradient boosting (scikit-learn HistGradientBoosting) with "
                                                  "monotone risk directions, conditional-mean imputation", _monotone))
register_candidate(Candidate("blend", "logistic regression + monotone gradient boosting averaged, conditional-mean "
                                      "imputation (the heart default since issue 17)", _kind("blend", "conditional")))


# -------------------------------------------------------------------------------- external checks
def site_splits(task: Any, frame: Any) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(site, train rows, test rows)``: each site left out in turn (nothing when there is one site)."""
    if not task.site or task.site not in frame:
        return
    site = frame[task.site].astype(str).to_numpy()
    names = sorted(set(site))
    if len(names) < 2:
        return
    for s in names:
        yield s, np.flatnonzero(site != s), np.flatnonzero(site == s)


def external_predictions(task: Any, frame: Any, make: Callable[[Any, int], Any], *, seed: int = 0,
                         folds: int = 5) -> dict[str, dict[str, Any]]:
    """Every external check's ``{"kind", "y", "p", "site"}``, plus ``internal`` (pooled CV)."""
    from sklearn.model_selection import StratifiedKFold

    y = task.label(frame[task.target])
    out: dict[str, dict[str, Any]] = {}
    oof = np.zeros(len(y))
    sims = {name: np.zeros(len(y)) for name in PATTERNS}
    for i, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(frame, y)):
        pipe = make(task, seed).fit(frame.iloc[tr], y[tr])
        oof[te] = pipe.predict_proba(frame.iloc[te])[:, 1]
        for name in PATTERNS:
            sims[name][te] = pipe.predict_proba(simulate(frame.iloc[te], name, seed=seed + i))[:, 1]
    out["internal"] = {"kind": "internal", "source": f"pooled {folds}-fold CV", "y": y, "p": oof}
    for name, p in sims.items():
        out[f"pooled:{name}"] = {"kind": "simulated other site", "source": f"pooled CV folds, {name} missingness",
                                 "y": y, "p": p}
    for s, tr, te in site_splits(task, frame):
        pipe = make(task, seed).fit(frame.iloc[tr], y[tr])
        out[f"loso:{s}"] = {"kind": "leave-one-site-out", "source": s, "y": y[te],
                            "p": pipe.predict_proba(frame.iloc[te])[:, 1], "site": s}
        for name in PATTERNS:
            out[f"loso:{s}:{name}"] = {
                "kind": "simulated other site", "source": f"{s} left out, {name} missingness", "y": y[te], "site": s,
                "p": pipe.predict_proba(simulate(frame.iloc[te], name, seed=seed))[:, 1]}
    return out


def choose(summary: dict[str, dict[str, float]], *, margin: float = 0.005) -> tuple[str, str]:
    """The recipe to ship from ``{name: {"auc": mean external AUC, "ece": mean external ECE}}``, and why.

    The highest mean external AUC wins, unless a logistic regression (simpler, exact
    attributions) is within ``margin`` of it **and** no worse calibrated externally: the two
    bars of issue 17 are discrimination and calibration at other hospitals.
    """
    best = max(summary, key=lambda c: summary[c]["auc"])
    linear = [c for c in summary if "lr" in c.split("-") or c.startswith("logreg")]
    lr = max(linear, key=lambda c: summary[c]["auc"]) if linear else best
    if lr != best and summary[best]["auc"] - summary[lr]["auc"] <= margin and summary[lr]["ece"] <= summary[best]["ece"]:
        return lr, (f"{lr}: within {margin} of {best}'s mean external AUC and no worse calibrated "
                    f"(ECE {summary[lr]['ece']:.3f} vs {summary[best]['ece']:.3f})")
    if lr != best and summary[best]["auc"] - summary[lr]["auc"] <= margin:
        return best, (f"{best}: highest mean external AUC ({summary[best]['auc']:.4f}; best LR {lr} "
                      f"{summary[lr]['auc']:.4f}, within {margin}) and lower mean external ECE "
                      f"({summary[best]['ece']:.3f} vs {summary[lr]['ece']:.3f})")
    return best, f"{best}: highest mean external AUC ({summary[best]['auc']:.4f})"


def paired_auc_difference(y: Any, p: Any, q: Any, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """AUC(p) - AUC(q) on the same rows with a paired bootstrap 95% CI (both scored on each resample)."""
    from sklearn.metrics import roc_auc_score

    from meddx.records.stats import bootstrap

    both = np.column_stack([np.asarray(p, dtype=float), np.asarray(q, dtype=float)])
    return bootstrap(lambda yy, pq: roc_auc_score(yy, pq[:, 0]) - roc_auc_score(yy, pq[:, 1]), y, both,
                     n_boot=n_boot, seed=seed)


def positive_ece(y: Any, p: Any, *, seed: int = 0) -> dict[str, float]:
    """ECE of P(positive) (10 equal-width bins, as ``meddx evaluate``) and its noise floor at this n (p95).

    The top-label ECE of :func:`meddx.evaluation.validate.block` folds predictions below and
    above 0.5 together, which can hide a shift of every risk in one direction (a new site's
    prevalence); this one does not.
    """
    from meddx.records.ood import ece_noise_floor
    from meddx.records.stats import ece

    p = np.asarray(p, dtype=float)
    floor = ece_noise_floor(p, draws=500, seed=seed)["p95"]
    return {"ece_positive": ece(p, np.asarray(y)), "ece_positive_floor": floor}


# -------------------------------------------------------------------------------- recalibration
def recalibrate_proba(p_local: Any, y_local: Any, p: Any, *, method: str = "intercept") -> tuple[np.ndarray, dict]:
    """``p`` after a logistic recalibration fitted on local labelled cases; also the map's parameters.

    ``intercept`` updates only the intercept (recalibration-in-the-large: the prevalence
    shift; stable from a few dozen cases); ``logistic`` also fits the slope (needs more).
    """
    from meddx.records.models import Platt

    if method not in ("intercept", "logistic"):
        raise ConfigError(f"unknown recalibration {method!r}", field="method", hint="Use 'intercept' or 'logistic'")
    platt = Platt(intercept_only=method == "intercept").fit(np.asarray(p_local), np.asarray(y_local))
    return platt.transform(np.asarray(p)), {"method": method, **platt.to_dict(), "n_local": int(len(y_local))}


def with_prevalence(y: Any, prevalence: float, *, seed: int = 0) -> np.ndarray:
    """Row indices of a subsample of ``y`` whose share of positives is ``prevalence`` (the largest such)."""
    y = np.asarray(y)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    if len(pos) / max(len(neg), 1) >= prevalence / (1 - prevalence):
        n_pos = int(round(len(neg) * prevalence / (1 - prevalence)))
        keep = np.concatenate([rng.choice(pos, min(n_pos, len(pos)), replace=False), neg])
    else:
        n_neg = int(round(len(pos) * (1 - prevalence) / prevalence))
        keep = np.concatenate([pos, rng.choice(neg, min(n_neg, len(neg)), replace=False)])
    return np.sort(keep)


def recalibration_curve(y: Any, p: Any, *, ks: tuple[int, ...] = (10, 20, 30, 50, 75, 100), repeats: int = 50,
                        method: str = "intercept", seed: int = 0) -> dict[str, Any]:
    """ECE after recalibrating on ``k`` random local cases, scored on the site's other cases, per ``k``.

    Each row also gives the noise floor (95th percentile of the ECE a perfectly calibrated
    model shows on that many scored cases) and the ECE before recalibration on the same
    rows; ``cases_needed`` is the smallest ``k`` whose mean ECE after is within the floor.
    """
    from meddx.records.ood import ece_noise_floor
    from meddx.records.stats import ece

    y, p = np.asarray(y), np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        if k >= len(y) - 10:
            break
        before, after, floors = [], [], []
        for r in range(repeats):
            order = rng.permutation(len(y))
            loc, ev = order[:k], order[k:]
            q, _ = recalibrate_proba(p[loc], y[loc], p[ev], method=method)
            before.append(ece(p[ev], y[ev]))
            after.append(ece(q, y[ev]))
            if r < FLOOR_REPEATS:  # the floor varies little between draws; a few keep the curve fast
                floors.append(ece_noise_floor(q, draws=200, seed=seed + r)["p95"])
        rows.append({"k": int(k), "n_scored": int(len(y) - k), "ece_before": float(np.mean(before)),
                     "ece_after": float(np.mean(after)), "ece_after_low": float(np.percentile(after, 2.5)),
                     "ece_after_high": float(np.percentile(after, 97.5)), "ece_floor": float(np.mean(floors))})
    needed = next((r["k"] for r in rows if r["ece_after"] <= r["ece_floor"]), None)
    return {"method": method, "repeats": repeats, "n": int(len(y)), "prevalence": float(y.mean()),
            "rows": rows, "cases_needed": needed}


__all__ = ["CANDIDATES", "LOCAL_CASES", "PATTERNS", "Candidate", "Pattern", "choose", "external_predictions",
           "paired_auc_difference", "positive_ece", "recalibrate_proba", "recalibration_curve", "register_candidate",
           "simulate", "site_splits", "with_prevalence"]
