"""Label-shift adaptation: Bayes re-weighting and EM prior estimation without labels."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.calibration import (
    adjust_to_priors,
    class_priors,
    classwise_ece,
    ece,
    em_priors,
    nll,
)
from meddx.exceptions import InvalidValueError


def shifted_site(n: int, train_prior: float, site_prior: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes (x | y=1 ~ N(1, 1), x | y=0 ~ N(-1, 1)) sampled with ``site_prior``.

    The probabilities are the exact posteriors for ``train_prior``: calibrated on
    the training site, miscalibrated on this one.
    """
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < site_prior).astype(int)
    x = rng.normal(2.0 * y - 1.0, 1.0)
    logit = 2.0 * x + np.log(train_prior / (1 - train_prior))
    p1 = 1.0 / (1.0 + np.exp(-logit))
    return np.stack([1 - p1, p1], axis=1), y


def test_em_recovers_new_prior_and_lowers_ece() -> None:
    train = np.array([0.26, 0.74])
    probs, y = shifted_site(6000, 0.74, 0.5, seed=0)
    adjusted, priors = em_priors(probs, train)
    assert priors[1] == pytest.approx(0.5, abs=0.03)
    assert priors.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(adjusted.sum(1), 1.0)
    before, after = ece(probs, y), ece(adjusted, y)
    assert before > 0.03
    assert after < before / 2
    # the class-wise view sees the shift more clearly (the top label hides part of it)
    assert classwise_ece(probs, y) > 0.08
    assert classwise_ece(adjusted, y) < 0.04
    assert nll(adjusted, y) < nll(probs, y)


def test_em_without_shift_stays_put() -> None:
    probs, _ = shifted_site(6000, 0.3, 0.3, seed=1)
    _, priors = em_priors(probs, [0.7, 0.3])
    assert priors[1] == pytest.approx(0.3, abs=0.03)


def test_em_three_classes() -> None:
    rng = np.random.default_rng(2)
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    train, site = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.3, 0.5])
    y = rng.choice(3, size=6000, p=site)
    x = rng.normal(means[y], 1.0)
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1) + np.log(train)
    probs = np.exp(loglik - loglik.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    _, priors = em_priors(probs, train)
    np.testing.assert_allclose(priors, site, atol=0.03)


def test_adjust_to_priors_bayes_rule() -> None:
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(adjust_to_priors(probs, [0.5, 0.5], [0.5, 0.5]), probs)
    out = adjust_to_priors(probs, [0.5, 0.5], [0.8, 0.2])
    np.testing.assert_allclose(out[0], [0.8, 0.2])
    np.testing.assert_allclose(out[1], [0.2 * 0.8 / (0.2 * 0.8 + 0.8 * 0.2), 0.5])
    # with the true new priors the shifted site becomes calibrated again
    shifted, y = shifted_site(6000, 0.74, 0.5, seed=3)
    assert ece(adjust_to_priors(shifted, [0.26, 0.74], [0.5, 0.5]), y) < 0.03


def test_class_priors() -> None:
    np.testing.assert_allclose(class_priors([0, 1, 1, 2], 4), [0.25, 0.5, 0.25, 0.0])


@pytest.mark.parametrize(
    ("train", "new", "field"),
    [
        ([0.5, 0.6], [0.5, 0.5], "train_priors"),  # does not sum to 1
        ([1.0, 0.0], [0.5, 0.5], "train_priors"),  # zero training prior
        ([0.5, 0.5], [0.2, 0.3, 0.5], "new_priors"),  # wrong length
        ([0.5, 0.5], [1.5, -0.5], "new_priors"),  # negative
    ],
)
def test_bad_priors_name_the_field(train: list, new: list, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        adjust_to_priors(np.array([[0.3, 0.7]]), train, new)
    assert info.value.field == field


def test_em_bad_inputs() -> None:
    with pytest.raises(InvalidValueError) as info:
        em_priors(np.array([[0.3, 0.8]]), [0.5, 0.5])
    assert info.value.field == "probs"
    with pytest.raises(InvalidValueError) as info:
        em_priors(np.array([[0.3, 0.7]]), [0.5, 0.5], tol=0)
    assert info.value.field == "tol"
