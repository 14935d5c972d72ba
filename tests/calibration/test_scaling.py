"""Post-hoc calibrators: recovery of a known temperature, held-out NLL, JSON round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meddx.calibration import (
    CALIBRATORS,
    Calibrator,
    calibrator_from_dict,
    create_calibrator,
    ece,
    list_calibrators,
    nll,
    register_calibrator,
    softmax,
)
from meddx.exceptions import ConfigError, InvalidValueError
from tests.calibration._synthetic import sample


def test_registry_lists_the_four_calibrators() -> None:
    assert set(list_calibrators()) >= {"identity", "temperature", "vector", "dirichlet"}
    assert list_calibrators() == sorted(CALIBRATORS)


def test_temperature_recovers_overconfidence_factor_and_lowers_ece() -> None:
    z, y = sample(4000, 4, seed=0)
    logits = 3.0 * z  # over-confident by a factor 3
    cal = create_calibrator("temperature").fit(logits, y)
    assert cal.temperature_ == pytest.approx(3.0, abs=0.25)
    before, after = ece(softmax(logits), y), ece(cal.transform(logits), y)
    assert before > 0.1
    assert after < 0.03 and after < before / 4
    # temperature scaling never changes the predicted class
    np.testing.assert_array_equal(cal.transform(logits).argmax(1), logits.argmax(1))


def test_temperature_fit_is_deterministic() -> None:
    z, y = sample(500, 3, seed=1)
    a = create_calibrator("temperature").fit(2 * z, y).temperature_
    b = create_calibrator("temperature").fit(2 * z, y).temperature_
    assert a == b


@pytest.mark.parametrize("name", ["vector", "dirichlet"])
def test_vector_and_dirichlet_fix_class_bias_on_held_out_data(name: str) -> None:
    bias = np.array([1.5, 0.0, -1.5])
    z, y = sample(3000, 3, seed=2)
    zt, yt = sample(3000, 3, seed=3)
    cal = create_calibrator(name).fit(2 * z + bias, y)
    temp = create_calibrator("temperature").fit(2 * z + bias, y)
    held_raw = nll(softmax(2 * zt + bias), yt)
    held_cal = nll(cal.transform(2 * zt + bias), yt)
    assert held_cal < held_raw  # does not increase held-out NLL ...
    assert held_cal < nll(temp.transform(2 * zt + bias), yt)  # ... and fixes what one temperature cannot
    assert held_cal < nll(softmax(zt), yt) + 0.02  # close to the true model


@pytest.mark.parametrize("name", ["identity", "temperature", "vector", "dirichlet"])
def test_binary_logits_and_probability_rows(name: str) -> None:
    z, y = sample(400, 2, seed=4)
    probs = create_calibrator(name).fit(2 * z, y).transform(2 * z)
    assert probs.shape == (400, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert np.all(probs >= 0)
    if name != "identity":
        assert nll(probs, y) <= nll(softmax(2 * z), y) + 1e-9


@pytest.mark.parametrize("name", ["identity", "temperature", "vector", "dirichlet"])
def test_json_round_trip_gives_identical_outputs(name: str) -> None:
    z, y = sample(600, 3, seed=5)
    zt, _ = sample(50, 3, seed=6)
    cal = create_calibrator(name).fit(2 * z, y)
    text = json.dumps(cal.to_dict())
    back = calibrator_from_dict(json.loads(text))
    assert type(back) is type(cal)
    np.testing.assert_array_equal(back.transform(zt), cal.transform(zt))
    assert back.to_dict() == cal.to_dict()


def test_unfitted_round_trip_and_not_fitted_error() -> None:
    cal = create_calibrator("dirichlet", reg_lambda=1e-2)
    back = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.reg_lambda == 1e-2 and not back.is_fitted
    with pytest.raises(ConfigError, match="not fitted"):
        back.transform(np.zeros((2, 3)))


def test_unknown_calibrator_lists_known_names() -> None:
    with pytest.raises(InvalidValueError) as info:
        create_calibrator("platt-ish")
    assert info.value.field == "method"
    assert "temperature" in info.value.hint and "dirichlet" in info.value.hint
    with pytest.raises(InvalidValueError) as info:
        calibrator_from_dict({"params": {}})
    assert info.value.field == "name"


@pytest.mark.parametrize(
    ("logits", "labels", "field"),
    [
        (np.zeros((4, 3)), np.array([0, 1, 2]), "labels"),  # wrong length
        (np.zeros((4, 3)), np.array([0, 1, 2, 3]), "labels"),  # out of range
        (np.zeros((4, 3)), np.array([0.5, 1, 2, 0]), "labels"),  # not integers
        (np.zeros(4), np.array([0, 1, 1, 0]), "logits"),  # 1-D
        (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "logits"),  # NaN
    ],
)
def test_bad_inputs_name_the_field(logits: np.ndarray, labels: np.ndarray, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        create_calibrator("temperature").fit(logits, labels)
    assert info.value.field == field


def test_transform_checks_number_of_classes() -> None:
    z, y = sample(100, 3, seed=7)
    cal = create_calibrator("vector").fit(z, y)
    with pytest.raises(InvalidValueError) as info:
        cal.transform(np.zeros((5, 4)))
    assert info.value.field == "logits"


def test_corrupt_state_is_rejected() -> None:
    z, y = sample(100, 3, seed=8)
    d = create_calibrator("dirichlet").fit(z, y).to_dict()
    d["state"]["weights"] = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(InvalidValueError) as info:
        calibrator_from_dict(d)
    assert info.value.field == "weights"


def test_register_a_new_calibrator() -> None:
    @register_calibrator("_test_shift")
    class Shift(Calibrator):
        def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
            pass

        def _logits(self, logits: np.ndarray) -> np.ndarray:
            return logits + 1.0

    try:
        cal = calibrator_from_dict(json.loads(json.dumps(create_calibrator("_test_shift").fit(
            np.zeros((2, 2)), [0, 1]).to_dict())))
        assert isinstance(cal, Shift) and cal.name == "_test_shift"
        np.testing.assert_allclose(cal.transform(np.zeros((1, 2))), [[0.5, 0.5]])
    finally:
        CALIBRATORS.pop("_test_shift", None)


def test_identity_needs_no_fit_so_packages_without_trust_still_predict() -> None:
    cal = create_calibrator("identity")
    z = np.array([[0.0, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(cal.transform(z), softmax(z))
    back = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_allclose(back.transform(np.zeros((1, 3))), np.full((1, 3), 1 / 3))
