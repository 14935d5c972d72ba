"""Image-quality measures of a restored image against its full-dose reference, with bootstrap CIs.

PSNR and SSIM (scikit-image; data range 1, SSIM with its default 7×7 window) per image; a set's
figure is the mean over images, its 95 % CI the percentile bootstrap over images (the noise floor
of the test set), and :func:`paired` gives the CI of the mean difference between two methods on
the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, np.clip(image, 0, 1), data_range=1.0))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    side = min(reference.shape)
    win = 7 if side >= 7 else (side if side % 2 else side - 1)
    return float(structural_similarity(reference, np.clip(image, 0, 1).astype(reference.dtype), data_range=1.0,
                                       win_size=win))


def per_image(references: list[np.ndarray], images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"psnr": (n,), "ssim": (n,)}`` for paired lists."""
    return {"psnr": np.array([psnr(r, x) for r, x in zip(references, images, strict=True)]),
            "ssim": np.array([ssim(r, x) for r, x in zip(references, images, strict=True)])}


def mean_ci(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{"value", "low", "high"}``: the mean and its 95 % percentile-bootstrap CI over the values."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    boots = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return {"value": float(values.mean()), "low": float(np.percentile(boots, 2.5)),
            "high": float(np.percentile(boots, 97.5))}


def paired(a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of ``a - b`` over the same images with its CI, and the share of images where ``a > b``."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {**mean_ci(diff, n_boot=n_boot, seed=seed), "wins": float((diff > 0).mean())}
