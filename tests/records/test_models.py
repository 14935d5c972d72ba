"""Models, calibration, attributions and the statistics of the bench."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.records.explain import attributions, sampled_shapley
from meddx.records.models import LogReg, Platt, logit
from meddx.records.stats import corrected_ci, corrected_ttest, ece


def test_intercept_recalibration_recovers_a_prior_shift():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-(logit(p) + 1.0)))
    cal = Platt(intercept_only=True).fit(p, y)
    assert cal.a_ == 1.0
    assert cal.b_ == pytest.approx(1.0, abs=0.1)
    assert ece(cal.transform(p), y) < ece(p, y)


def test_corrected_ttest_signs_and_width():
    a = np.array([0.90, 0.91, 0.92, 0.93, 0.91])
    t = corrected_ttest(a, a - 0.02 + np.array([0.0, 0.001, -0.001, 0.002, -0.002]), 400, 100)
    assert t["diff"] == pytest.approx(0.02)
    assert t["low"] > 0 and t["p"] < 0.05
    # the correction widens the interval compared with a naive t interval
    naive = np.std(a, ddof=1) / np.sqrt(len(a))
    ci = corrected_ci(a, 400, 100)
    assert (ci["high"] - ci["value"]) > 2.7 * naive


def test_sampled_shapley_is_additive_and_exact_for_linear():
    rng = np.random.default_rng(1)
    bg = rng.normal(size=(15, 5)).astype(np.float32)
    z = rng.normal(size=(2, 5)).astype(np.float32)
    groups = np.array([0, 0, 1, 2, 2])

    def f(X):
        return np.tanh(X[:, 0] * X[:, 3]) + X[:, 2] ** 2

    phi, base = sampled_shapley(f, z, groups, 3, bg, permutations=6)
    assert np.allclose(base + phi.sum(1), f(z), atol=1e-5)
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    phi, _ = sampled_shapley(lambda X: X @ w, z, groups, 3, bg, permutations=2)
    exact = np.stack([((z - bg.mean(0)) * w)[:, groups == j].sum(1) for j in range(3)], 1)
    assert np.allclose(phi, exact, atol=1e-4)


def test_linear_shap_adds_up_to_the_logit():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=200) > 0).astype(int)
    model = LogReg().fit(X, y)
    phi, base = attributions(model, X[:3], np.array([0, 1, 2, 2]), 3, X[:50])
    assert np.allclose(base + phi.sum(1), model.decision_function(X[:3]), atol=1e-4)
    assert abs(phi[:, 0]).mean() > abs(phi[:, 2]).mean()


def test_model_selection_uses_training_cv_and_keeps_logreg_unless_beaten():
    import pandas as pd

    from meddx.records.models import select_model
    from meddx.records.schema import infer_task

    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(300, 2))
    xor = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": ((X[:, 0] * X[:, 1]) > 0).astype(int)})
    task = infer_task(xor, "xor")
    chosen, means = select_model(task, xor, xor["y"].to_numpy(), ("logreg", "catboost"), repeats=1, folds=3)
    assert chosen == "catboost" and means["catboost"] > means["logreg"] + 0.2
    linear = xor.assign(y=(X[:, 0] + X[:, 1] + rng.normal(0, 0.3, 300) > 0).astype(int))
    chosen, means = select_model(task, linear, linear["y"].to_numpy(), ("logreg", "catboost"), repeats=1, folds=3)
    assert chosen == "logreg"
