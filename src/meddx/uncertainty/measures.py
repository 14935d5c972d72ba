"""Uncertainty measures from sampled predictive distributions.

For samples ``p_s(y|x)`` (MC-dropout passes, ensemble members, test-time
augmentations or posterior draws of a Bayesian layer) the total uncertainty,
the predictive entropy H[E_s p_s], splits into the expected entropy
E_s H[p_s] (aleatoric: noise the data cannot resolve) and the mutual
information between prediction and weights (epistemic: disagreement between
samples that more data would remove) (Depeweg et al. 2018).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis``."""
    p = np.clip(probs, _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def decompose(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Measures per case from ``samples`` of shape ``(S, N, C)`` (probabilities).

    Returns ``mean`` ``(N, C)`` and, per case, ``predictive_entropy``,
    ``expected_entropy`` and ``mutual_information`` (both 0 and equal to the
    entropy split when S = 1) and ``max_probability``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must be (S, N, C), got shape {samples.shape}")
    mean = samples.mean(axis=0)
    total = entropy(mean)
    expected = entropy(samples).mean(axis=0)
    return {
        "mean": mean,
        "predictive_entropy": total,
        "expected_entropy": expected,
        "mutual_information": np.maximum(total - expected, 0.0),
        "max_probability": mean.max(axis=1),
    }
