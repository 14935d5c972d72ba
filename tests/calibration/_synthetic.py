"""Synthetic calibrated data shared by the calibration tests."""

from __future__ import annotations

import numpy as np

from meddx.calibration import softmax


def sample(n: int, c: int, seed: int, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """True logits and labels drawn from their softmax (so softmax(z) is perfectly calibrated)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (n, c))
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z), axis=1)).sum(axis=1)
    return z, np.minimum(y, c - 1)
