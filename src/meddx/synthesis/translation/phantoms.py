"""Generated paired "CT-like" / "MR-like" images: one random anatomy rendered with two contrasts.

There is no paired CT↔MR data in the offline mirror, so paired translation is built and tested on
these phantoms. Each pair is one random label map (a body ellipse with a subcutaneous fat rim, two
air-filled lungs, a vertebra-like bone ring with marrow, a liver-like and a kidney-like organ, and
0-3 small lesions inside the organs) rendered twice, with the tissue intensities of
:data:`CT_TABLE` and :data:`MR_TABLE`. The tables differ where CT and T1-weighted MR really differ:

- cortical bone: bright in CT (dense), dark in MR (no mobile protons);
- fat and fatty marrow: dark-grey in CT (about -100 HU), bright in T1 MR;
- lesions: hypodense in CT, hyperintense in MR; liver brighter than kidney in MR, similar in CT;
- air / lung: dark in both.

Then each is made "acquired": CT gets Gaussian noise and a slight blur; MR gets a smooth
multiplicative bias field and Rician noise. The pair shares the anatomy exactly (same label map,
same grid), so a translator can be scored pixel by pixel. What the phantoms do *not* show: real
anatomy, partial-volume and texture statistics, misregistration of real CT/MR pairs, or any
clinical validity of the translation. Everything is deterministic given the seed.
"""

from __future__ import annotations

import numpy as np

TISSUES = ("background", "soft tissue", "fat", "lung", "bone", "marrow", "liver", "kidney", "lesion")
"""Label values 0..8 of the label maps."""
CT_TABLE = {"background": 0.0, "soft tissue": 0.45, "fat": 0.28, "lung": 0.06, "bone": 0.95, "marrow": 0.62,
            "liver": 0.52, "kidney": 0.49, "lesion": 0.36}
"""CT-like intensities (a soft-tissue window mapped to [0, 1])."""
MR_TABLE = {"background": 0.0, "soft tissue": 0.32, "fat": 0.88, "lung": 0.04, "bone": 0.06, "marrow": 0.78,
            "liver": 0.52, "kidney": 0.26, "lesion": 0.70}
"""T1-weighted-MR-like intensities ([0, 1])."""
SOURCE, TARGET = "CT-like phantom", "MR-like phantom"


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    y, x = yy - cy, xx - cx
    u, v = x * c + y * s, -x * s + y * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def label_map(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size) uint8 label map (values index :data:`TISSUES`)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # unit coordinates
    lab = np.zeros((size, size), np.uint8)
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04)
    ry, rx = rng.uniform(0.30, 0.40), rng.uniform(0.38, 0.47)
    body = _ellipse(yy, xx, cy, cx, ry, rx)
    fat_rim = rng.uniform(0.025, 0.05)
    lab[body] = TISSUES.index("fat")
    lab[_ellipse(yy, xx, cy, cx, ry - fat_rim, rx - fat_rim)] = TISSUES.index("soft tissue")
    for side in (-1, 1):  # lungs in the upper (anterior) half
        lung = _ellipse(yy, xx, cy - ry * rng.uniform(0.15, 0.35), cx + side * rx * rng.uniform(0.42, 0.55),
                        ry * rng.uniform(0.30, 0.42), rx * rng.uniform(0.22, 0.30), rng.uniform(-0.3, 0.3))
        lab[lung & body] = TISSUES.index("lung")
    organs = []
    for name, dx in (("liver", -1), ("kidney", 1)):
        oy, ox = cy + ry * rng.uniform(0.25, 0.45), cx + dx * rx * rng.uniform(0.30, 0.50)
        size_y = ry * (rng.uniform(0.22, 0.32) if name == "liver" else rng.uniform(0.14, 0.2))
        size_x = rx * (rng.uniform(0.22, 0.32) if name == "liver" else rng.uniform(0.10, 0.15))
        organ = _ellipse(yy, xx, oy, ox, size_y, size_x, rng.uniform(-0.6, 0.6)) & body
        lab[organ] = TISSUES.index(name)
        organs.append((oy, ox, size_y, size_x))
    # vertebra-like bone ring with marrow, posterior midline
    vy, vx = cy + ry * rng.uniform(0.55, 0.68), cx + rng.uniform(-0.02, 0.02)
    vr = rng.uniform(0.055, 0.075)
    lab[_ellipse(yy, xx, vy, vx, vr, vr * 1.15) & body] = TISSUES.index("bone")
    lab[_ellipse(yy, xx, vy, vx, vr * 0.6, vr * 0.7) & body] = TISSUES.index("marrow")
    for _ in range(int(rng.integers(0, 4))):  # lesions inside an organ
        oy, ox, sy, sx = organs[int(rng.integers(len(organs)))]
        r = rng.uniform(0.02, 0.045)
        ly, lx = oy + rng.uniform(-0.5, 0.5) * sy, ox + rng.uniform(-0.5, 0.5) * sx
        lesion = _ellipse(yy, xx, ly, lx, r, r * rng.uniform(0.8, 1.25))
        inside = np.isin(lab, [TISSUES.index("liver"), TISSUES.index("kidney")])
        lab[lesion & inside] = TISSUES.index("lesion")
    return lab


def render(labels: np.ndarray, table: dict[str, float]) -> np.ndarray:
    """The noise-free image of ``labels`` with the intensities of ``table`` (float32)."""
    values = np.array([table[t] for t in TISSUES], np.float32)
    return values[labels]


def _ct(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(clean, 0.6) + rng.normal(0, 0.02, clean.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def _mr(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = clean.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] / n
    a, b, c = rng.uniform(-0.25, 0.25, 3)
    bias = 1.0 + a * (yy - 0.5) + b * (xx - 0.5) + c * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)  # smooth coil shading
    x = gaussian_filter(clean, 0.8) * bias
    sd = 0.025
    x = np.sqrt((x + rng.normal(0, sd, x.shape)) ** 2 + rng.normal(0, sd, x.shape) ** 2)  # Rician magnitude
    return np.clip(x, 0, 1).astype(np.float32)


def pair(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ct_like, mr_like, labels)``: one phantom of ``size``×``size`` pixels, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, size])
    labels = label_map(size, rng)
    return _ct(render(labels, CT_TABLE), rng), _mr(render(labels, MR_TABLE), rng), labels


def pairs(n: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``n`` phantom pairs ``(ct_like list, mr_like list, label maps)``; pair ``i`` is ``pair(size, seed*100003+i)``."""
    out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for i in range(n):
        for store, item in zip(out, pair(size, seed * 100003 + i), strict=True):
            store.append(item)
    return out
