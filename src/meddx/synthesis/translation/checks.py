"""Hallucination and structure checks of a translated image, and the domain classifier.

Translation changes contrast, so pixel differences to the input say nothing; these checks compare
*where the edges are*:

- :func:`edges`: Canny edges (Gaussian sigma 1.5, hysteresis thresholds at the 80th / 90th
  percentiles of the image's own gradient magnitude, so each contrast is judged on its own scale);
  nothing on a flat image;
- :func:`structures`: ``added`` = connected regions (8-connectivity, at least :data:`MIN_REGION`
  pixels) of the output's edges with no edge pixel of the reference (the input, or the true target
  when there is one) within :data:`TOLERANCE` pixels; ``removed`` = the same the other way round. A
  region is a boundary segment (an organ outline, a lesion rim), so ``added`` counts boundaries the
  output draws that the reference does not have; it is blind to changes of intensity inside a region
  and to structures whose edges coincide with existing ones;
- :func:`structure_ssim`: SSIM between the two images' gradient-magnitude maps (each scaled by its
  99th percentile): 1 when the output keeps the input's structure layout whatever its contrast;
- :class:`DomainClassifier`: L2-logistic regression on 16×16 thumbnails, a 16-bin histogram and
  edge density, fitted on real domain-A vs real domain-B training images; the share of translated
  images it calls domain B says whether the output *looks* like the target domain (to this simple
  classifier; a weak classifier is easy to fool, its accuracy on real held-out images is reported).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TOLERANCE = 2
"""Pixels an edge may move and still count as the same structure."""
MIN_REGION = 5
"""Edge regions smaller than this many pixels are ignored (noise specks)."""


def edges(image: np.ndarray) -> np.ndarray:
    """Boolean Canny edge map (see the module docstring)."""
    from skimage.feature import canny

    x = np.asarray(image, np.float64)
    if float(x.max() - x.min()) < 1e-6:
        return np.zeros(x.shape, bool)
    return canny(x, sigma=1.5, low_threshold=0.8, high_threshold=0.9, use_quantiles=True)


def _unmatched(a: np.ndarray, b: np.ndarray) -> int:
    """Regions of edge map ``a`` with no pixel of ``b`` within TOLERANCE pixels."""
    from scipy.ndimage import distance_transform_edt, label

    if not a.any():
        return 0
    if not b.any():
        regions, n = label(a, structure=np.ones((3, 3)))
        return int(sum((regions == k).sum() >= MIN_REGION for k in range(1, n + 1)))
    far = distance_transform_edt(~b) > TOLERANCE
    regions, n = label(a, structure=np.ones((3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    near = np.bincount(regions[~far].ravel(), minlength=n + 1)  # pixels of each region close to b
    return int(sum(1 for k in range(1, n + 1) if sizes[k] >= MIN_REGION and near[k] == 0))


def structures(output: np.ndarray, reference: np.ndarray) -> dict[str, int]:
    """``{"added", "removed"}``: edge regions of ``output`` absent from ``reference`` and the reverse."""
    eo, er = edges(output), edges(reference)
    return {"added": _unmatched(eo, er), "removed": _unmatched(er, eo)}


def _gradient(image: np.ndarray) -> np.ndarray:
    from skimage.filters import sobel

    g = sobel(np.asarray(image, np.float64))
    scale = float(np.percentile(g, 99))
    return np.clip(g / scale, 0, 1) if scale > 1e-9 else np.zeros_like(g)


def structure_ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of the two gradient-magnitude maps (contrast-independent structure similarity)."""
    from meddx.synthesis.metrics import ssim

    return ssim(_gradient(reference), _gradient(output))


def features(image: np.ndarray) -> np.ndarray:
    """The domain classifier's features of one [0, 1] image."""
    from skimage.transform import resize

    x = np.asarray(image, np.float64)
    thumb = resize(x, (16, 16), anti_aliasing=True).ravel()
    hist = np.histogram(np.clip(x, 0, 1), bins=16, range=(0, 1))[0] / x.size
    return np.concatenate([thumb, hist, [edges(x).mean(), float(_gradient(x).mean())]])


class DomainClassifier:
    """Logistic regression real-A (0) vs real-B (1); parameters are plain lists (kept in package.json)."""

    def __init__(self, mean: list[float], scale: list[float], coef: list[float], intercept: float,
                 info: dict[str, Any] | None = None) -> None:
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), float(intercept)
        self.info = info or {}

    @classmethod
    def fit(cls, domain_a: list[np.ndarray], domain_b: list[np.ndarray], *, seed: int = 0,
            limit: int = 1000) -> DomainClassifier:
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(seed)
        a = [domain_a[i] for i in rng.permutation(len(domain_a))[:limit]]
        b = [domain_b[i] for i in rng.permutation(len(domain_b))[:limit]]
        x = np.stack([features(i) for i in a + b])
        y = np.r_[np.zeros(len(a)), np.ones(len(b))]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        lr = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, y)
        return cls(mean.tolist(), scale.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]),
                   {"n_a": len(a), "n_b": len(b), "features": "16x16 thumbnail, 16-bin histogram, edge density, "
                    "mean gradient", "model": "L2 logistic regression, C=0.1, balanced classes"})

    def probability_b(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros(0)
        x = (np.stack([features(i) for i in images]) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(x @ self.coef + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, **self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainClassifier:
        info = {k: v for k, v in d.items() if k not in ("mean", "scale", "coef", "intercept")}
        return cls(d["mean"], d["scale"], d["coef"], d["intercept"], info)
