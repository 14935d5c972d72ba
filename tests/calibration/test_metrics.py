"""Calibration metrics: ECE (uniform/adaptive), Brier, NLL, reliability curves, bootstrap, plots."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.calibration import (
    bootstrap_calibration,
    brier,
    calibration_metrics,
    classwise_ece,
    ece,
    nll,
    plot_reliability,
    reliability_curve,
    softmax,
)
from meddx.exceptions import InvalidValueError
from tests.calibration._synthetic import sample


def test_ece_small_when_calibrated_large_when_overconfident() -> None:
    z, y = sample(10000, 3, seed=0)
    for strategy in ("uniform", "quantile"):
        assert ece(softmax(z), y, strategy=strategy) < 0.02
        assert ece(softmax(4 * z), y, strategy=strategy) > 0.1
    assert classwise_ece(softmax(z), y) < 0.02
    assert classwise_ece(softmax(4 * z), y) > 0.05


def test_uniform_and_adaptive_ece_agree_on_a_trivial_case() -> None:
    probs = np.tile([0.7, 0.3], (10, 1))  # every case 70% confident ...
    labels = np.array([0] * 6 + [1] * 4)  # ... and 60% right
    assert ece(probs, labels) == pytest.approx(0.1)
    assert ece(probs, labels, strategy="quantile") == pytest.approx(0.1)


def test_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    # 2 bins: (0, .5] empty; (.5, 1]: conf (.9+.9+.6+.8)/4 = .8, acc 3/4
    assert ece(probs, labels, n_bins=2) == pytest.approx(0.05)
    # 10 bins: {.9,.9}: acc .5 gap .4; {.6}: acc 1 gap .4; {.8}: gap .2 -> (2*.4 + .4 + .2)/4
    assert ece(probs, labels, n_bins=10) == pytest.approx(0.35)


def test_brier_and_nll_by_hand() -> None:
    onehot = np.eye(3)[[0, 2, 1]]
    assert brier(onehot, [0, 2, 1]) == pytest.approx(0.0)
    assert brier(np.full((4, 2), 0.5), [0, 1, 1, 0]) == pytest.approx(0.5)
    assert brier(onehot, [1, 2, 1]) == pytest.approx(2 / 3)  # one wrong one-hot row costs 2
    assert nll(np.array([[0.25, 0.75], [0.5, 0.5]]), [1, 0]) == pytest.approx(-(np.log(0.75) + np.log(0.5)) / 2)
    assert np.isfinite(nll(np.array([[1.0, 0.0]]), [1]))  # clipped, not inf


def test_reliability_curve() -> None:
    z, y = sample(3000, 3, seed=1)
    curve = reliability_curve(softmax(z), y, n_bins=10)
    assert set(curve) >= {"confidence", "accuracy", "count"}
    assert curve["count"].sum() == 3000 and curve["confidence"].shape == (10,)
    assert curve["ece"] == pytest.approx(ece(softmax(z), y, n_bins=10))
    full = curve["count"] > 50
    np.testing.assert_allclose(curve["accuracy"][full], curve["confidence"][full], atol=0.1)
    adaptive = reliability_curve(softmax(z), y, n_bins=10, strategy="quantile")
    assert set(adaptive["count"].tolist()) == {300}  # equal mass
    assert np.all(adaptive["lower"] <= adaptive["upper"])


def test_calibration_metrics_keys() -> None:
    z, y = sample(500, 4, seed=2)
    m = calibration_metrics(softmax(z), y)
    assert set(m) == {"ece", "ece_adaptive", "brier", "nll"}
    assert m["brier"] == pytest.approx(brier(softmax(z), y))


def test_bootstrap_contains_point_and_is_reproducible() -> None:
    z, y = sample(800, 3, seed=3)
    probs = softmax(3 * z)
    a = bootstrap_calibration(probs, y, n_boot=200, seed=1)
    assert a == bootstrap_calibration(probs, y, n_boot=200, seed=1)
    for name, r in a.items():
        assert r["low"] <= r["value"] <= r["high"], name
        assert r["high"] > r["low"]


def test_bootstrap_groups_resample_patients() -> None:
    z, y = sample(100, 2, seed=4)
    probs = softmax(3 * z)
    # every patient contributes 8 identical images: resampling images ignores that and is too narrow
    probs8, y8, groups = np.repeat(probs, 8, axis=0), np.repeat(y, 8), np.repeat(np.arange(100), 8)
    by_image = bootstrap_calibration(probs8, y8, n_boot=300, seed=0)
    by_patient = bootstrap_calibration(probs8, y8, n_boot=300, seed=0, groups=groups)
    width = {k: (v["high"] - v["low"]) for k, v in by_image.items()}
    width_g = {k: (v["high"] - v["low"]) for k, v in by_patient.items()}
    assert width_g["brier"] > 2 * width["brier"]
    assert width_g["nll"] > 2 * width["nll"]
    assert by_patient["brier"]["value"] == by_image["brier"]["value"]
    with pytest.raises(InvalidValueError) as info:
        bootstrap_calibration(probs8, y8, n_boot=10, groups=groups[:-1])
    assert info.value.field == "groups"


def test_plot_reliability_writes_png(tmp_path) -> None:  # noqa: ANN001
    z, y = sample(600, 3, seed=5)
    out = plot_reliability({"before": (softmax(3 * z), y), "after": (softmax(z), y)}, tmp_path / "sub" / "rel.png",
                           n_bins=10, title="test")
    assert out == tmp_path / "sub" / "rel.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidValueError) as info:
        plot_reliability({}, tmp_path / "x.png")
    assert info.value.field == "curves"


@pytest.mark.parametrize(
    ("probs", "labels", "field"),
    [
        (np.array([[0.6, 0.6], [0.5, 0.5]]), [0, 1], "probs"),  # rows do not sum to 1
        (np.array([[2.0, -1.0], [0.5, 0.5]]), [0, 1], "probs"),  # logits, not probabilities
        (np.array([0.2, 0.8]), [0, 1], "probs"),  # 1-D
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 2], "labels"),  # out of range
        (np.array([[0.5, 0.5], [0.5, 0.5]]), [0], "labels"),  # wrong length
        (np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"], "labels"),  # names, not indices
    ],
)
def test_bad_inputs_name_the_field(probs: np.ndarray, labels: list, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        ece(probs, labels)
    assert info.value.field == field


def test_unknown_strategy_and_bad_bins() -> None:
    with pytest.raises(InvalidValueError) as info:
        ece(np.full((2, 2), 0.5), [0, 1], strategy="equal-width")
    assert info.value.field == "strategy" and "quantile" in info.value.hint and "uniform" in info.value.hint
    with pytest.raises(InvalidValueError) as info:
        ece(np.full((2, 2), 0.5), [0, 1], n_bins=0)
    assert info.value.field == "n_bins"
