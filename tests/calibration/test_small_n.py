"""Calibration for small n (issue 17): the bounded temperature and the recorded warnings."""

from __future__ import annotations

import numpy as np

from meddx.calibration import create_calibrator
from meddx.calibration.scaling import TemperatureScaling
from meddx.inference.trust import SMALL_N, fit_trust


def _uninformative(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n)
    return np.stack([-z, z], axis=1), rng.integers(0, 2, n)


def test_temperature_is_bounded_and_flags_the_bound() -> None:
    logits, labels = _uninformative(37)
    cal = create_calibrator("temperature").fit(logits, labels)
    assert TemperatureScaling.T_MIN <= cal.temperature_ <= TemperatureScaling.T_MAX == 10.0
    state = cal.to_dict()["state"]
    assert state["at_bound"] is True and state["temperature"] == 10.0


def test_temperature_inside_the_bounds_is_not_flagged() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    z = (labels * 2 - 1) * 2.0 + rng.normal(0, 1, 400)
    cal = create_calibrator("temperature").fit(np.stack([-z, z], axis=1), labels)
    assert 0.05 < cal.temperature_ < 10 and cal.to_dict()["state"]["at_bound"] is False


def test_small_validation_sets_are_recorded_with_a_warning() -> None:
    logits, labels = _uninformative(37)
    trust = fit_trust(logits, labels, calibration="temperature")
    assert trust["n"] == 37 and sum(trust["n_per_class"]) == 37
    low, high = trust["coverage_interval_95"]
    assert low < 0.9 < high and high - low > 0.15  # ±1.96·sqrt(0.09/39) ≈ ±0.094
    text = " ".join(trust["warnings"])
    assert "n=37" in text and "bound" in text and "rarest class" in text


def test_large_balanced_sets_carry_no_warning() -> None:
    rng = np.random.default_rng(2)
    labels = np.arange(SMALL_N + 100) % 2
    z = (labels * 2 - 1) * 1.5 + rng.normal(0, 1, len(labels))
    trust = fit_trust(np.stack([-z, z], axis=1), labels)
    assert trust["warnings"] == []
    assert trust["coverage_interval_95"][1] - trust["coverage_interval_95"][0] < 0.08
