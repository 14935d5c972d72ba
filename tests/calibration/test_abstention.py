"""Abstention: uncertainty scores, risk-coverage, AURC, and the referral policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meddx.calibration import (
    SCORES,
    AbstentionPolicy,
    SplitConformal,
    accuracy_at_coverage,
    aurc,
    margin,
    max_probability,
    policy_from_dict,
    predictive_entropy,
    risk_coverage_curve,
    uncertainty_scores,
)
from meddx.exceptions import ConfigError, InvalidValueError


def calibrated(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and labels drawn from them: errors concentrate where the model is unsure."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.7), n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return p, y


@pytest.mark.parametrize("name", ["max_probability", "predictive_entropy", "margin"])
def test_scores_higher_means_more_uncertain(name: str) -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    u = SCORES[name](probs)
    assert u[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(u) > 0)
    np.testing.assert_array_equal(uncertainty_scores(probs, name), u)


def test_score_values() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(max_probability(probs), [0.5, 0.1])
    np.testing.assert_allclose(margin(probs), [1.0, 0.2])
    np.testing.assert_allclose(predictive_entropy(probs)[0], np.log(2))
    with pytest.raises(InvalidValueError) as info:
        uncertainty_scores(probs, "variance")
    assert info.value.field == "measure" and "margin" in info.value.hint


def test_risk_coverage_curve_by_hand_with_ties() -> None:
    u = np.array([0.1, 0.2, 0.2, 0.5, 0.9])
    correct = np.array([True, True, False, True, False])
    curve = risk_coverage_curve(u, correct)
    np.testing.assert_allclose(curve["coverage"], [0.2, 0.6, 0.8, 1.0])  # the tie at 0.2 moves together
    np.testing.assert_allclose(curve["risk"], [0.0, 1 / 3, 0.25, 0.4])
    np.testing.assert_allclose(curve["threshold"], [0.1, 0.2, 0.5, 0.9])
    assert aurc(u, correct) == pytest.approx(0.2 * 0 + 0.4 / 3 + 0.2 * 0.25 + 0.2 * 0.4)


def test_aurc_rewards_informative_uncertainty() -> None:
    correct = np.array([True] * 8 + [False] * 2)
    good = np.arange(10.0)  # the errors are the most uncertain
    bad = good[::-1]  # the errors are the least uncertain
    assert aurc(np.zeros(10), correct) == pytest.approx(0.2)  # all tied: the overall error rate
    assert aurc(good, correct) < 0.2 < aurc(bad, correct)
    # without ties: the mean selective risk after keeping 1..N cases
    risks = np.cumsum(~correct) / np.arange(1, 11)
    assert aurc(good, correct) == pytest.approx(risks.mean())


def test_abstaining_on_uncertain_cases_raises_accuracy() -> None:
    probs, y = calibrated(3000, 3, seed=0)
    correct = probs.argmax(1) == y
    for name in SCORES:
        u = SCORES[name](probs)
        assert accuracy_at_coverage(u, correct, 0.8) > correct.mean() + 0.04
        assert accuracy_at_coverage(u, correct, 1.0) == pytest.approx(correct.mean())
    random_u = np.random.default_rng(1).random(3000)
    assert abs(accuracy_at_coverage(random_u, correct, 0.8) - correct.mean()) < 0.03


def test_policy_meets_target_risk_on_validation() -> None:
    probs, y = calibrated(2000, 3, seed=2)
    u, correct = predictive_entropy(probs), probs.argmax(1) == y
    assert correct.mean() < 0.7  # a hard task: 35% errors without abstention
    policy = AbstentionPolicy(target_risk=0.15).fit(u, correct)
    kept = u <= policy.threshold_
    assert np.mean(~correct[kept]) <= 0.15
    assert policy.val_risk_ == pytest.approx(np.mean(~correct[kept]))
    assert policy.val_coverage_ == pytest.approx(kept.mean()) and 0.25 < kept.mean() < 1.0
    # the largest such threshold: every higher one breaks the target
    higher = np.unique(u[u > policy.threshold_])
    assert all(np.mean(~correct[u <= t]) > 0.15 for t in higher)
    # and it roughly holds on new data from the same site
    probs_t, y_t = calibrated(2000, 3, seed=3)
    kept_t = predictive_entropy(probs_t) <= policy.threshold_
    assert np.mean(probs_t.argmax(1)[kept_t] != y_t[kept_t]) < 0.2


def test_policy_by_coverage() -> None:
    probs, y = calibrated(1000, 3, seed=4)
    u, correct = max_probability(probs), probs.argmax(1) == y
    policy = AbstentionPolicy(measure="max_probability", coverage=0.7).fit(u, correct)
    assert 0.7 <= np.mean(u <= policy.threshold_) < 0.71


def test_decide_binary_with_reasons() -> None:
    probs, y = calibrated(1000, 2, seed=5)
    u, correct = predictive_entropy(probs), probs.argmax(1) == y
    policy = AbstentionPolicy(target_risk=0.05).fit(u, correct)
    new = np.array([[0.99, 0.01], [0.02, 0.98], [0.55, 0.45]])
    out = policy.decide(probs=new)  # uncertainty computed with the policy's measure
    assert [d["decision"] for d in out] == ["negative", "positive", "refer"]
    assert "above the threshold" in out[2]["reason"] and "5% risk" in out[2]["reason"]
    assert "within the threshold" in out[1]["reason"]
    assert [d["decision"] for d in policy.decide(probs=new, positive_index=0)][:2] == ["positive", "negative"]
    # an ambiguous conformal set refers even a confident-looking case
    sets = np.array([[True, True], [False, True], [True, False]])
    out = policy.decide(predictive_entropy(new), sets=sets, probs=new, set_level=0.9)
    assert out[0]["decision"] == "refer" and out[0]["reason"].startswith("the 90% prediction set holds 2 classes")
    assert out[1]["decision"] == "positive" and out[1]["set"] == [1]
    relaxed = AbstentionPolicy(target_risk=0.05, refer_on_ambiguous_set=False).fit(u, correct)
    assert relaxed.decide(predictive_entropy(new), sets=sets, probs=new)[0]["decision"] == "negative"


def test_decide_multiclass_with_conformal_sets_only() -> None:
    probs, y = calibrated(1200, 3, seed=6)
    cp = SplitConformal("aps", alpha=0.1).fit(probs[:600], y[:600])
    u = margin(probs)
    policy = AbstentionPolicy(measure="margin", coverage=0.9).fit(u[:600], probs[:600].argmax(1) == y[:600])
    sets = cp.predict_sets(probs[600:])
    out = policy.decide(u[600:], sets=sets, class_names=["normal", "benign", "malignant"])
    assert len(out) == 600
    names = {"normal", "benign", "malignant", "refer"}
    assert {d["decision"] for d in out} <= names
    for d, s in zip(out, sets):
        if d["decision"] != "refer":
            assert s.sum() == 1 and d["decision"] == ["normal", "benign", "malignant"][int(np.flatnonzero(s)[0])]
    assert any("holds" in d["reason"] for d in out)


def test_infeasible_target_refers_everything() -> None:
    policy = AbstentionPolicy(target_risk=0.01).fit([0.1, 0.2, 0.3], [False, True, True])
    assert policy.threshold_ is None
    out = policy.decide([0.0], probs=np.array([[0.9, 0.1]]))
    assert out[0]["decision"] == "refer" and "every case is referred" in out[0]["reason"]


def test_policy_json_round_trip() -> None:
    probs, y = calibrated(800, 2, seed=7)
    u, correct = predictive_entropy(probs), probs.argmax(1) == y
    policy = AbstentionPolicy(target_risk=0.08).fit(u, correct)
    back = policy_from_dict(json.loads(json.dumps(policy.to_dict())))
    assert back.to_dict() == policy.to_dict()
    assert back.decide(probs=probs[:50]) == policy.decide(probs=probs[:50])
    unfitted = AbstentionPolicy.from_dict(AbstentionPolicy(coverage=0.5).to_dict())
    with pytest.raises(ConfigError, match="not fitted"):
        unfitted.decide([0.1], probs=np.array([[0.5, 0.5]]))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({}, "target_risk"),
    ({"target_risk": 0.1, "coverage": 0.8}, "target_risk"),
    ({"target_risk": 1.2}, "target_risk"),
    ({"coverage": 0.0}, "coverage"),
    ({"coverage": 0.8, "measure": "variance"}, "measure"),
])
def test_bad_policy_settings(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        AbstentionPolicy(**kwargs)
    assert info.value.field == field


def test_bad_selective_inputs() -> None:
    with pytest.raises(InvalidValueError) as info:
        risk_coverage_curve([0.1, 0.2], [True])
    assert info.value.field == "correct"
    with pytest.raises(InvalidValueError) as info:
        aurc([0.1, np.nan], [True, False])
    assert info.value.field == "uncertainty"
    with pytest.raises(InvalidValueError) as info:
        accuracy_at_coverage([0.1, 0.2], [True, False], coverage=1.5)
    assert info.value.field == "coverage"
    policy = AbstentionPolicy(coverage=0.5).fit([0.1, 0.2], [True, False])
    with pytest.raises(InvalidValueError) as info:
        policy.decide([0.1])
    assert info.value.field == "probs"
