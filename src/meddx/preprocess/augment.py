"""Batched, per-sample augmentation for medical images, on torch tensors.

Every sample of a batch draws its own parameters, and the whole batch is
transformed in one ``affine_grid``/``grid_sample`` call, so augmentation costs a
few milliseconds per batch on a CPU instead of a Python loop over images
(torchvision's v2 transforms draw one set of parameters per call).

Defaults are conservative for clinical images: small rotations, shifts and
zooms, mild brightness/contrast changes, optional horizontal flips (off for
images with a meaningful left/right, such as chest X-rays with situs markers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchAugment:
    """Random flip, rotation, shift, zoom and intensity jitter, per sample.

    Attributes:
        hflip: probability of a horizontal flip.
        degrees: maximum absolute rotation.
        translate: maximum shift as a fraction of the side.
        scale: (min, max) zoom factor.
        brightness / contrast: maximum relative change (0 turns it off).
        shift_px: maximum shift in whole pixels (edge-padded, then cropped back). Unlike
            ``translate`` it does not interpolate, so it does not blur tiny images (28 px).
    """

    hflip: float = 0.5
    degrees: float = 10.0
    translate: float = 0.08
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.1
    shift_px: int = 0

    def __call__(self, batch: Any, generator: Any | None = None) -> Any:
        """Augment ``batch`` ``(N, C, H, W)`` float in [0, 1]; returns a new tensor."""
        import torch
        import torch.nn.functional as F

        n = batch.shape[0]

        def uniform(low: float, high: float) -> Any:
            return low + (high - low) * torch.rand(n, generator=generator)

        angle = uniform(-self.degrees, self.degrees) * math.pi / 180
        zoom = uniform(*self.scale)
        tx, ty = uniform(-self.translate, self.translate) * 2, uniform(-self.translate, self.translate) * 2
        flip = torch.where(torch.rand(n, generator=generator) < self.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([
            torch.stack([cos * flip, -sin, tx], dim=1),
            torch.stack([sin * flip, cos, ty], dim=1),
        ], dim=1).to(batch.dtype)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.brightness or self.contrast:
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            c = uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1)
            b = uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
            out = ((out - mean) * c + mean + b).clamp(0, 1)
        if self.shift_px > 0:
            out = _shift_pixels(out, self.shift_px, generator)
        return out.contiguous()


def _shift_pixels(batch: Any, k: int, generator: Any | None) -> Any:
    """Shift each sample by its own whole-pixel offset in ``[-k, k]`` (edge padding)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = batch.shape
    padded = F.pad(batch, (k, k, k, k), mode="replicate")
    dy = torch.randint(0, 2 * k + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * k + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, batch.shape[1], h, w + 2 * k)
    picked = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, batch.shape[1], h, w)
    return torch.gather(picked, 3, cols)
