"""Split conformal prediction: coverage over re-splits, scores by hand, quantile, round trips, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from meddx.calibration import (
    CONFORMAL_SCORES,
    SplitConformal,
    classwise_coverage,
    conformal_from_dict,
    conformal_quantile,
    coverage,
    evaluate_resplits,
    mean_set_size,
)
from meddx.exceptions import ConfigError, InvalidValueError


def calibrated(n: int, c: int, seed: int, concentration: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from a Dirichlet and labels drawn from them (perfectly calibrated)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, concentration), n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return p, y


@pytest.mark.parametrize(("method", "kwargs"), [("aps", {}), ("raps", {"lam": 0.05, "k_reg": 1}), ("lac", {})])
def test_mean_coverage_over_resplits_matches_alpha(method: str, kwargs: dict) -> None:
    probs, y = calibrated(2000, 3, seed=0)
    res = evaluate_resplits(probs, y, alpha=0.1, method=method, n_splits=20, seed=0, **kwargs)
    assert 0.88 <= res["coverage_mean"] <= 0.92
    assert 0 < res["coverage_sd"] < 0.03
    assert 1.0 < res["size_mean"] < 3.0
    assert len(res["coverages"]) == 20 and res["n_cal"] == 1000 and res["n_test"] == 1000


def test_scores_by_hand() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    u = np.array([0.5, 1.0])
    np.testing.assert_allclose(CONFORMAL_SCORES["lac"](probs, u), [[0.5, 0.7, 0.8], [0.8, 0.5, 0.7]])
    # aps: mass ranked above the class plus u times its own probability
    np.testing.assert_allclose(CONFORMAL_SCORES["aps"](probs, u), [[0.25, 0.65, 0.9], [1.0, 0.5, 0.8]])
    # raps: + lam per rank beyond k_reg
    np.testing.assert_allclose(CONFORMAL_SCORES["raps"](probs, u, k_reg=1, lam=0.1),
                               [[0.25, 0.75, 1.1], [1.2, 0.5, 0.9]])


def test_conformal_quantile_finite_sample_correction() -> None:
    scores = np.arange(10.0)[::-1]
    assert conformal_quantile(scores, 0.1) == 9.0  # ceil(11 * 0.9) = 10th smallest
    assert conformal_quantile(scores, 0.2) == 8.0  # ceil(11 * 0.8) = 9th smallest
    assert conformal_quantile(scores, 0.05) == math.inf  # ceil(11 * 0.95) = 11 > n


def test_too_few_calibration_cases_give_full_sets_and_round_trip() -> None:
    probs, y = calibrated(10, 3, seed=1)
    cp = SplitConformal("lac", alpha=0.05).fit(probs, y)
    assert cp.qhat_ == math.inf
    assert cp.predict_sets(probs).all()
    back = SplitConformal.from_dict(json.loads(json.dumps(cp.to_dict(), allow_nan=False)))
    assert back.qhat_ == math.inf and back.predict_sets(probs).all()


def test_raps_without_penalty_is_aps() -> None:
    probs, y = calibrated(400, 4, seed=2)
    aps = SplitConformal("aps", seed=3).fit(probs[:200], y[:200]).predict_sets(probs[200:])
    raps = SplitConformal("raps", lam=0.0, seed=3).fit(probs[:200], y[:200]).predict_sets(probs[200:])
    np.testing.assert_array_equal(aps, raps)


def test_sets_grow_as_alpha_shrinks_and_are_never_empty() -> None:
    probs, y = calibrated(1000, 5, seed=4)
    small = SplitConformal("aps", alpha=0.2, randomized=False).fit(probs[:500], y[:500]).predict_sets(probs[500:])
    large = SplitConformal("aps", alpha=0.05, randomized=False).fit(probs[:500], y[:500]).predict_sets(probs[500:])
    assert np.all(large | ~small)  # every set at 95% contains the set at 80%
    assert mean_set_size(large) > mean_set_size(small)
    assert small.sum(1).min() >= 1
    # non-randomised APS is conservative
    assert coverage(large, y[500:]) >= 0.93


def test_randomized_sets_are_reproducible() -> None:
    probs, y = calibrated(600, 4, seed=5)
    a = SplitConformal("aps", seed=7).fit(probs[:300], y[:300])
    b = SplitConformal("aps", seed=7).fit(probs[:300], y[:300])
    assert a.qhat_ == b.qhat_
    np.testing.assert_array_equal(a.predict_sets(probs[300:]), a.predict_sets(probs[300:]))
    np.testing.assert_array_equal(a.predict_sets(probs[300:]), b.predict_sets(probs[300:]))


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_json_round_trip_gives_identical_sets(method: str) -> None:
    probs, y = calibrated(600, 4, seed=6)
    cp = SplitConformal(method, alpha=0.15, lam=0.02, k_reg=2, seed=11).fit(probs[:300], y[:300])
    back = conformal_from_dict(json.loads(json.dumps(cp.to_dict())))
    assert back.to_dict() == cp.to_dict()
    np.testing.assert_array_equal(back.predict_sets(probs[300:]), cp.predict_sets(probs[300:]))


def test_coverage_and_set_size_by_hand() -> None:
    sets = np.array([[True, False, False], [True, True, False], [False, False, True], [True, True, True]])
    labels = np.array([0, 2, 2, 1])
    assert coverage(sets, labels) == pytest.approx(0.75)
    assert mean_set_size(sets) == pytest.approx(7 / 4)
    np.testing.assert_allclose(classwise_coverage(sets, labels), [1.0, 1.0, 0.5])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
    ({"method": "thr"}, "method"),
    ({"lam": -1.0}, "lam"),
    ({"k_reg": -1}, "k_reg"),
])
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        SplitConformal(**kwargs)
    assert info.value.field == field
    if field == "method":
        assert all(name in info.value.hint for name in ("aps", "raps", "lac"))


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        SplitConformal().predict_sets(np.full((1, 2), 0.5))
    probs, y = calibrated(100, 3, seed=8)
    cp = SplitConformal().fit(probs, y)
    with pytest.raises(InvalidValueError) as info:
        cp.predict_sets(np.full((1, 2), 0.5))
    assert info.value.field == "probs"
    with pytest.raises(InvalidValueError) as info:
        SplitConformal().fit(probs, y[:-1])
    assert info.value.field == "labels_cal"
    with pytest.raises(InvalidValueError) as info:
        evaluate_resplits(probs, y, cal_fraction=1.0)
    assert info.value.field == "cal_fraction"
