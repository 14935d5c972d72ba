"""Record OOD: cross-fitted gate, training-range flags, decisions, and the batch shift statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from meddx.records.ood import (
    calibration_in_the_large,
    decision,
    ece_noise_floor,
    fit_gate,
    range_flags,
    shift_summary,
    verdicts,
    wilson,
)

TRUST = {"decision": "negative", "reason": "P(disease) = 0.20 (threshold 0.5)"}


def _data(n: int, shift: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    Z = rng.normal(size=(n, 6)) + y[:, None] * 0.8 + shift
    p = 1 / (1 + np.exp(-(Z[:, 0] - 0.4)))
    return Z, np.column_stack([np.log1p(-p), np.log(p)]), y


@pytest.fixture(scope="module")
def gate():
    Z, logp, y = _data(600)
    return fit_gate(Z, logp, y, seed=0)


def test_thresholds_come_from_out_of_fold_scores(gate):
    g, reference = gate
    assert len(reference["mahalanobis"]) == 600 and g.info["n_threshold"] == 600
    assert "cross-fitting" in g.info["threshold_on"]
    oof = np.asarray(reference["mahalanobis"])
    assert np.mean(oof > g.thresholds["mahalanobis"]) == pytest.approx(0.05, abs=0.01)
    # a detector's scores on its own fitting rows are lower than out-of-fold: thresholding on them would
    # flag far more than 5% of new in-distribution data
    assert np.mean(g.scores(*_data(600)[:2], "mahalanobis")) < np.mean(oof)


def test_in_distribution_rows_are_flagged_at_about_the_rate_and_shifted_rows_far_more(gate):
    g, _ = gate
    Z, logp, _ = _data(2000, seed=1)
    assert np.mean([r.flagged for r in g.assess(Z, logp)]) == pytest.approx(0.05, abs=0.025)
    Z, logp, _ = _data(500, shift=2.5, seed=2)
    assert np.mean([r.flagged for r in g.assess(Z, logp)]) > 0.8


def test_range_flags_name_the_feature_only_when_far_outside():
    ranges = {"age": [28.0, 77.0], "chol": [85.0, 564.0]}
    assert range_flags({"age": 80.0, "chol": 240.0}, ranges) == []  # within 10% of the range (4.9 years)
    assert range_flags({"age": 82.5, "chol": None}, ranges, {"age": "years"}) == [
        "age=82.5 years is far outside the training range 28-77 years"]
    assert range_flags({"age": float("nan"), "chol": 10.0}, ranges)[0].startswith("chol=10 ")


def test_verdicts_combine_distance_and_range(gate):
    g, _ = gate
    Z, logp, _ = _data(2, seed=3)
    clean = pd.DataFrame({"age": [50.0, 99.0]})
    first, second = verdicts(g, Z, logp, clean, {"age": [28.0, 77.0]})
    assert first["range"] == [] and first["flagged"] == first["distance_flagged"]
    assert second["flagged"] and second["range"] and second["method"] == "mahalanobis"
    assert second["flag_rate"] == 0.05


def test_a_range_flag_refers_with_the_feature_named():
    verdict = {"method": "mahalanobis", "score": 3.0, "threshold": 40.0, "flag_rate": 0.05, "flagged": True,
               "distance_flagged": False, "range": ["age=99 years is far outside the training range 28-77 years"]}
    out = decision(TRUST, verdict)
    assert out["decision"] == "refer"
    assert out["reason"].startswith("outside the model's training data: age=99 years is far outside")
    assert "mahalanobis" not in out["reason"]


def test_a_distance_flag_refers_through_decide_and_adds_any_range_message():
    verdict = {"method": "mahalanobis", "score": 80.0, "threshold": 40.0, "flag_rate": 0.05, "flagged": True,
               "distance_flagged": True, "range": ["chol=900 mg/dL is far outside the training range 85-564 mg/dL"]}
    out = decision(TRUST, verdict)
    assert out["decision"] == "refer" and "mahalanobis score 80 is above the threshold 40" in out["reason"]
    assert out["reason"].endswith("also chol=900 mg/dL is far outside the training range 85-564 mg/dL")


def test_no_flag_keeps_the_model_decision_and_rejections_win():
    verdict = {"method": "mahalanobis", "score": 3.0, "threshold": 40.0, "flag_rate": 0.05, "flagged": False,
               "distance_flagged": False, "range": []}
    assert decision(TRUST, verdict) == TRUST
    rejected = decision(TRUST, {**verdict, "flagged": True}, rejections=["age=640 is implausible"])
    assert rejected["decision"] == "rejected"
    # a package without a gate still refers on the training range
    assert decision(TRUST, {"flagged": True, "distance_flagged": False, "range": ["age=99 ..."]})["decision"] == "refer"
    assert decision(TRUST, None) == TRUST


def test_ece_noise_floor_is_what_a_calibrated_model_shows_and_shrinks_with_n():
    from meddx.records.stats import ece

    rng = np.random.default_rng(0)
    small = ece_noise_floor(rng.uniform(0.05, 0.95, 100), draws=300)
    large = ece_noise_floor(rng.uniform(0.05, 0.95, 2000), draws=300)
    assert 0.04 < small["mean"] < 0.12 and small["p95"] > small["mean"]
    assert large["mean"] < small["mean"] / 3
    # a calibrated model's observed ECE falls under the p95 floor about 95% of the time
    p = rng.uniform(0.05, 0.95, 100)
    floor = ece_noise_floor(p, draws=300)["p95"]
    under = np.mean([ece(p, rng.random(100) < p) <= floor for _ in range(300)])
    assert under == pytest.approx(0.95, abs=0.04)


def test_wilson_interval_and_calibration_in_the_large():
    w = wilson(6, 120)
    assert w["value"] == 0.05 and 0.02 < w["low"] < 0.05 < w["high"] < 0.11
    assert wilson(0, 50)["low"] == 0.0 and math.isnan(wilson(0, 0)["value"])
    assert calibration_in_the_large([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(-0.25)


def _rows(flags: list[bool]) -> list[dict]:
    return [{"method": "mahalanobis", "score": 10.0 + 30 * f, "threshold": 30.0, "flag_rate": 0.05, "flagged": f,
             "distance_flagged": f, "range": []} for f in flags]


def test_shift_summary_recommends_from_flags_and_calibration():
    rng = np.random.default_rng(0)
    p = np.clip(rng.beta(0.4, 0.4, 300), 0.02, 0.98)
    y = (rng.random(300) < p).astype(int)
    reference = {"mahalanobis": list(rng.uniform(0, 30, 400))}
    calm = shift_summary(y, p, _rows([i % 25 == 0 for i in range(300)]), reference=reference, train_prevalence=0.5,
                         flag_rate=0.05, ece_value=0.03, n_boot=100)
    assert calm["recommendation"]["action"] == "use as is"
    assert calm["flagged"]["n"] == 12 and calm["flagged"]["p_value_above_expected"] > 0.5
    assert abs(calm["prevalence"]["estimated_unlabelled"] - y.mean()) < 0.08
    assert calm["prevalence"]["estimated_low"] <= calm["prevalence"]["estimated_unlabelled"] <= \
        calm["prevalence"]["estimated_high"]
    shifted = shift_summary(y, p, _rows([i % 2 == 0 for i in range(300)]), reference=reference, train_prevalence=0.5,
                            flag_rate=0.05, ece_value=0.03, n_boot=100)
    assert shifted["recommendation"]["action"] == "do not use here"
    assert "do not rely on it" in shifted["prevalence"]["caveat"] and "caveat" not in calm["prevalence"]
    assert shifted["ks_ood_scores"]["p_value"] < 1e-6 and shifted["flagged"]["p_value_above_expected"] < 1e-6
    y_off = (rng.random(300) < np.clip(p + 0.25, 0, 1)).astype(int)
    off = shift_summary(y_off, p, _rows([False] * 300), reference=reference, train_prevalence=0.5, flag_rate=0.05,
                        ece_value=0.25, n_boot=100)
    assert off["recommendation"]["action"] == "recalibrate on local labelled cases"
    assert off["calibration_in_the_large"]["low"] > 0.1 and off["calibration_in_the_large"]["beyond_noise"]
    # calibration-in-the-large beyond 0.05 but within its noise does not ask for recalibration
    y_noisy = (np.arange(60) < 26).astype(int)  # 43% observed where 50% is predicted: -0.067, SE about 0.064
    noisy = shift_summary(y_noisy, np.full(60, 0.5), _rows([False] * 60), reference=reference, train_prevalence=0.5,
                          flag_rate=0.05, ece_value=0.0, n_boot=200)
    citl = noisy["calibration_in_the_large"]
    assert citl["value"] == pytest.approx(-0.0667, abs=1e-3) and not citl["beyond_noise"]
    assert noisy["recommendation"]["action"] == "use as is"
