"""Feature attributions for record models, per prediction and global.

Every attribution explains the model's calibrated log-odds of the positive class,
``logit(p(x))``, as a sum over the task's features (the encoded columns of one
feature - value, missingness indicator, one-hot levels - are grouped back):

* ``logreg``: exact (interventional) SHAP of a linear model, ``w · (z - E[z])``.
* ``catboost``: TreeSHAP (CatBoost's ``ShapValues``), times the Platt slope.
* ``mlp``, ``tabnet``, ``hybrid``: sampled Shapley values (the permutation
  estimator of KernelSHAP's target, with a background sample of training rows):
  each permutation adds the row's features one at a time to a background row, so
  the attributions always sum to ``f(x) - mean f(background)``.

:func:`global_importance` averages absolute attributions over rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.records.models import CatBoost, LogReg, logit


def _group_sum(values: np.ndarray, groups: np.ndarray, n_features: int) -> np.ndarray:
    out = np.zeros((values.shape[0], n_features))
    for j in range(n_features):
        out[:, j] = values[:, groups == j].sum(1)
    return out


def method_of(model: Any) -> str:
    if isinstance(model, LogReg):
        return "linear-shap"
    if isinstance(model, CatBoost):
        return "tree-shap"
    return "sampled-shapley"


def attributions(model: Any, Z: np.ndarray, groups: np.ndarray, n_features: int, background: np.ndarray, *,
                 permutations: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(attributions ``(n, n_features)``, base value ``(n,)``) for encoded rows ``Z``.

    ``base + attributions.sum(1)`` is the calibrated log-odds for the linear and
    sampled methods (TreeSHAP's base is CatBoost's expected raw log-odds, mapped by Platt).
    """
    Z = np.asarray(Z, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    if isinstance(model, LogReg):
        w = model.model_.coef_[0]
        phi = (Z - background.mean(0)) * w
        base = model.model_.decision_function(background.astype(np.float64)).mean()
        return _group_sum(phi, groups, n_features), np.full(len(Z), base)
    if isinstance(model, CatBoost):
        from catboost import Pool

        full = model.model_.get_feature_importance(Pool(Z), type="ShapValues")
        a, b = model.platt_.a_, model.platt_.b_
        return _group_sum(full[:, :-1] * a, groups, n_features), full[:, -1] * a + b
    return sampled_shapley(lambda X: logit(model.predict_proba(X)[:, 1]), Z, groups, n_features, background,
                           permutations=permutations, seed=seed)


def sampled_shapley(f: Any, Z: np.ndarray, groups: np.ndarray, n_features: int, background: np.ndarray, *,
                    permutations: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Permutation-sampled Shapley values of ``f`` over feature groups (antithetic permutations)."""
    rng = np.random.default_rng(seed)
    perms = []
    for _ in range(max(1, permutations // 2)):
        p = rng.permutation(n_features)
        perms += [p, p[::-1]]
    K, D = background.shape
    phis = np.zeros((len(Z), n_features))
    bases = np.zeros(len(Z))
    masks = [groups == j for j in range(n_features)]
    for i, z in enumerate(Z):
        batch = np.empty((len(perms), n_features + 1, K, D), dtype=np.float32)
        for a, perm in enumerate(perms):
            cur = background.copy()
            batch[a, 0] = cur
            for s, j in enumerate(perm):
                cur[:, masks[j]] = z[masks[j]]
                batch[a, s + 1] = cur
        out = np.asarray(f(batch.reshape(-1, D))).reshape(len(perms), n_features + 1, K).mean(2)
        for a, perm in enumerate(perms):
            phis[i, perm] += np.diff(out[a])
        phis[i] /= len(perms)
        bases[i] = out[:, 0].mean()
    return phis, bases


def global_importance(phi: np.ndarray, names: list[str]) -> dict[str, float]:
    """Mean absolute attribution per feature, largest first."""
    values = np.abs(np.asarray(phi)).mean(0)
    order = np.argsort(-values)
    return {names[j]: float(values[j]) for j in order}


__all__ = ["attributions", "global_importance", "method_of", "sampled_shapley"]
