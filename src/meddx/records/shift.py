"""Site shift and missing features: does a model hold up at another hospital?

:func:`site_shift` trains on one site (Cleveland), scores another (Hungary) before
and after recalibration (intercept-only; two-parameter Platt for comparison) on a small labelled local sample (20%), scoring both
on the remaining 80% so the recalibration never sees the rows it is judged on.
:func:`missing_features` measures what losing features at prediction time costs
against a model trained without them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.records.models import Platt, make_pipeline
from meddx.records.stats import bootstrap, corrected_ci, corrected_ttest, ece


def _auc(y: Any, p: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def site_shift(task: Any, frame: Any, *, train_site: str, test_site: str, kind: str = "logreg", seed: int = 0,
               local_fraction: float = 0.2, repeats: int = 20, n_boot: int = 1000) -> dict[str, Any]:
    """Train on ``train_site``; AUC and ECE at ``test_site`` before/after recalibration on a local sample."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    site = frame[task.site].astype(str).to_numpy()
    y = task.label(frame[task.target])
    a, b = np.flatnonzero(site == train_site), np.flatnonzero(site == test_site)
    # internal (same-site) performance by 5-fold CV at the training site
    internal = np.zeros(len(a))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(a, y[a]):
        pipe = make_pipeline(task, kind, seed).fit(frame.iloc[a[tr]], y[a[tr]])
        internal[te] = pipe.predict_proba(frame.iloc[a[te]])[:, 1]
    pipe = make_pipeline(task, kind, seed).fit(frame.iloc[a], y[a])
    p_ext = pipe.predict_proba(frame.iloc[b])[:, 1]
    yb = y[b]
    runs = []
    rng = np.random.default_rng(seed)
    for r in range(repeats):
        loc, ev = train_test_split(np.arange(len(b)), train_size=local_fraction, stratify=yb, random_state=seed + r)
        after = Platt(intercept_only=True).fit(p_ext[loc], yb[loc]).transform(p_ext[ev])
        after_platt = Platt().fit(p_ext[loc], yb[loc]).transform(p_ext[ev])
        runs.append({"auc_before": _auc(yb[ev], p_ext[ev]), "auc_after": _auc(yb[ev], after),
                     "ece_before": ece(p_ext[ev], yb[ev]), "ece_after": ece(after, yb[ev]),
                     "ece_after_platt": ece(after_platt, yb[ev]),
                     # ECE a perfectly calibrated model with these probabilities would show on this many rows
                     "ece_sampling_floor": float(np.mean([ece(after, rng.random(len(after)) < after)
                                                          for _ in range(50)]))})
    first_loc, first_ev = train_test_split(np.arange(len(b)), train_size=local_fraction, stratify=yb,
                                           random_state=seed)
    after0 = Platt(intercept_only=True).fit(p_ext[first_loc], yb[first_loc]).transform(p_ext[first_ev])
    summary = {k: {"mean": float(np.mean([r[k] for r in runs])), "low": float(np.quantile([r[k] for r in runs], 0.025)),
                   "high": float(np.quantile([r[k] for r in runs], 0.975))} for k in runs[0]}
    return {
        "model": kind, "train_site": train_site, "test_site": test_site, "n_train": int(len(a)), "n_test": int(len(b)),
        "local_fraction": local_fraction, "repeats": repeats,
        "internal_cv_auc": bootstrap(_auc, y[a], internal, n_boot=n_boot, seed=seed),
        "internal_cv_ece": bootstrap(lambda t, p: ece(p, t), y[a], internal, n_boot=n_boot, seed=seed),
        "external_auc_all": bootstrap(_auc, yb, p_ext, n_boot=n_boot, seed=seed),
        "external_ece_all": bootstrap(lambda t, p: ece(p, t), yb, p_ext, n_boot=n_boot, seed=seed),
        "split0_before": {"auc": bootstrap(_auc, yb[first_ev], p_ext[first_ev], n_boot=n_boot, seed=seed),
                          "ece": bootstrap(lambda t, p: ece(p, t), yb[first_ev], p_ext[first_ev], n_boot=n_boot, seed=seed)},
        "split0_after": {"auc": bootstrap(_auc, yb[first_ev], after0, n_boot=n_boot, seed=seed),
                         "ece": bootstrap(lambda t, p: ece(p, t), yb[first_ev], after0, n_boot=n_boot, seed=seed)},
        "over_local_samples": summary,
        "recalibration": "intercept-only (recalibration-in-the-large) on the local sample; 'ece_after_platt' is "
                         "the two-parameter Platt fit on the same sample, for comparison",
        "missing_at_test_site": {f: float(frame.iloc[b][f].isna().mean()) for f in task.names},
    }


def missing_features(task: Any, frame: Any, absent: list[str], *, kind: str = "logreg", folds: int = 5,
                     repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Repeated CV: the full model scored with ``absent`` blanked at prediction vs a model trained without them."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = task.label(frame[task.target])
    reduced = task.without(absent)
    full_auc, blank_auc, red_auc = [], [], []
    n_tr = n_te = 0
    for tr, te in RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(frame, y):
        full = make_pipeline(task, kind, seed).fit(frame.iloc[tr], y[tr])
        red = make_pipeline(reduced, kind, seed).fit(frame.iloc[tr], y[tr])
        test = frame.iloc[te]
        blank = test.drop(columns=absent)
        full_auc.append(_auc(y[te], full.predict_proba(test)[:, 1]))
        blank_auc.append(_auc(y[te], full.predict_proba(blank)[:, 1]))
        red_auc.append(_auc(y[te], red.predict_proba(test)[:, 1]))
        n_tr, n_te = len(tr), len(te)
    return {
        "model": kind, "absent": list(absent), "folds": folds, "repeats": repeats,
        "auc_full_model_all_features": corrected_ci(full_auc, n_tr, n_te),
        "auc_full_model_features_absent": corrected_ci(blank_auc, n_tr, n_te),
        "auc_model_trained_without": corrected_ci(red_auc, n_tr, n_te),
        "absent_minus_trained_without": corrected_ttest(blank_auc, red_auc, n_tr, n_te),
    }


__all__ = ["missing_features", "site_shift"]
