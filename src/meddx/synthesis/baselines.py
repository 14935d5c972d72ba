"""Classical restorers, given the same noise information as the learned ones.

- ``bm3d``: block-matching and 3-D filtering (the maintained ``bm3d`` package, Mäkinen, Azzari & Foi).
- ``nlm``: non-local means (scikit-image, fast mode, 5×5 patches, 13×13 search window,
  ``h = 0.8 sigma`` as its documentation recommends).

Both assume additive white Gaussian noise of one level. For photon-count (Poisson) noise they run
in the variance-stabilised domain, as the literature does (Mäkinen & Foi's Anscombe route): the
counts implied by the observed radiograph are Anscombe-transformed, where the noise sd is 1,
filtered, and mapped back with the closed-form unbiased inverse; otherwise the noise level is the
root-mean-square of the dose model's noise map. So BM3D is never handicapped by a wrong sigma.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from meddx.synthesis.dose import DoseModel


def _anscombe(counts: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(np.maximum(counts, 0.0) + 3.0 / 8.0)


def _inverse_anscombe(z: np.ndarray) -> np.ndarray:
    # closed-form approximation of the exact unbiased inverse (Mäkinen & Foi 2011)
    z = np.maximum(z, 1.0)
    return (0.25 * z**2 + 0.25 * np.sqrt(1.5) / z - 1.375 / z**2 + 0.625 * np.sqrt(1.5) / z**3 - 0.125)


def _in_stable_domain(filter_fn: Callable[[np.ndarray, float], np.ndarray], observed: np.ndarray,
                      model: DoseModel, dose: float, params: dict[str, Any]) -> np.ndarray:
    settings = model.settings(**params)
    incident = settings["photons"] * dose
    mu = settings["mu"]
    counts = incident * np.exp(-mu * observed.astype(np.float64))
    z = _anscombe(counts)
    lo, hi = float(z.min()), float(z.max())
    span = max(hi - lo, 1e-6)
    filtered = filter_fn((z - lo) / span, 1.0 / span) * span + lo
    restored = -np.log(np.maximum(_inverse_anscombe(filtered), 0.5) / incident) / mu
    return np.clip(restored, 0, 1).astype(np.float32)


def _bm3d(x: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return np.asarray(bm3d.bm3d(x.astype(np.float64), sigma_psd=float(sigma)), np.float64)


def _nlm(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(x.astype(np.float64), h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                            patch_distance=6)


FILTERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {"bm3d": _bm3d, "nlm": _nlm}
"""Baseline name → ``filter(image, sigma)`` for white Gaussian noise of level ``sigma``."""


def restore(name: str, observed: np.ndarray, model: DoseModel, dose: float, **params: Any) -> np.ndarray:
    """Restore ``observed`` (acquired at ``dose`` under ``model``) with the baseline ``name``."""
    from meddx.exceptions import ConfigError

    if name not in FILTERS:
        raise ConfigError(f"unknown baseline {name!r}", field="method", hint=f"Use one of {sorted(FILTERS)}")
    filter_fn = FILTERS[name]
    if model.name == "xray-poisson":
        return _in_stable_domain(filter_fn, observed, model, dose, params)
    sigma = float(np.sqrt(np.mean(model.noise_map(observed, dose, **params) ** 2)))
    return np.clip(filter_fn(observed, sigma), 0, 1).astype(np.float32)
