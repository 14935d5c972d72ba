"""Batched, per-sample augmentation for medical images, on torch tensors.

Every sample of a batch draws its own parameters, and the whole batch is
transformed in one ``affine_grid``/``grid_sample`` call, so augmentation costs a
few milliseconds per batch on a CPU instead of a Python loop over images
(torchvision's v2 transforms draw one set of parameters per call).

Defaults are conservative for clinical images: small rotations, shifts and
zooms, mild brightness/contrast changes, optional horizontal flips (off for
images with a meaningful left/right, such as chest X-rays with situs markers).

:func:`shift_augment` turns on what the small-data recipe adds against scanner and
population shift (issue 17): gamma, a smooth multiplicative bias field (coil
non-uniformity), Gaussian blur, simulated low resolution and noise, each drawn per
sample. They are written as batched tensor operations (MONAI's and TorchIO's
versions draw one set of parameters per call, a Python loop per image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    gamma: tuple[float, float] = (1.0, 1.0)
    bias_field: float = 0.0
    blur_sigma: float = 0.0
    low_res: float = 1.0
    noise: float = 0.0
    p_intensity: float = 0.5

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
        out = self._scanner(out, generator)
        return out.contiguous()

    def _scanner(self, out: Any, generator: Any | None) -> Any:
        """Scanner-shift operations, each applied to a random ``p_intensity`` share of the batch."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        n, _, h, w = out.shape

        def chosen() -> Any:
            return (torch.rand(n, generator=generator) < self.p_intensity).view(n, 1, 1, 1)

        def uniform(low: float, high: float) -> Any:
            return (low + (high - low) * torch.rand(n, generator=generator)).view(n, 1, 1, 1)

        if self.bias_field > 0:  # exp of a random smooth (bilinear-upsampled 3x3) field: coil non-uniformity
            coarse = (torch.rand(n, 1, 3, 3, generator=generator) * 2 - 1) * self.bias_field
            field = torch.exp(F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True))
            out = torch.where(chosen(), (out * field).clamp(0, 1), out)
        if self.gamma != (1.0, 1.0):
            g = torch.exp(uniform(float(np.log(self.gamma[0])), float(np.log(self.gamma[1]))))
            out = torch.where(chosen(), out.clamp_min(1e-6) ** g, out)
        if self.blur_sigma > 0:
            out = torch.where(chosen(), _gaussian_blur(out, uniform(0.3, self.blur_sigma)), out)
        if self.low_res < 1.0:  # down- then up-sample by a random factor: a coarser acquisition matrix
            factor = float(self.low_res + (1 - self.low_res) * torch.rand(1, generator=generator))
            small = F.interpolate(out, scale_factor=factor, mode="bilinear", antialias=True, align_corners=False)
            coarse = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            out = torch.where(chosen(), coarse, out)
        if self.noise > 0:
            sigma = uniform(0.0, self.noise)
            noise = torch.randn(out.shape, generator=generator) * sigma
            out = torch.where(chosen(), (out + noise).clamp(0, 1), out)
        return out


def _gaussian_blur(batch: Any, sigma: Any) -> Any:
    """Blur each sample with its own Gaussian ``sigma`` ``(N,1,1,1)`` (separable, 7 taps, reflect padding)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    n, c, h, w = batch.shape
    taps = torch.arange(-3, 4, dtype=batch.dtype).view(1, 7)
    kernel = torch.exp(-0.5 * (taps / sigma.view(n, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, 7)
    x = batch.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, 7), groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="reflect"), kernel.view(n * c, 1, 7, 1), groups=n * c)
    return x.reshape(n, c, h, w)


def shift_augment(size: int, *, hflip: float = 0.5) -> BatchAugment:
    """The small-data recipe's augmentation against scanner and population shift, scaled to the image size.

    Stronger geometry (±15°, zoom 0.85–1.15, 8% shifts), brightness/contrast ±25%,
    gamma 0.7–1.5, a bias field of up to ±30%, and noise up to 0.04 on every size; blur
    (σ ≤ 1.2 px) and simulated low resolution (down to half) only from 48 px up, where a
    pixel is not already a large share of the anatomy (28-px MedMNIST images are blurred
    by their own downsampling).
    """
    fine = size >= 48
    return BatchAugment(hflip=hflip, degrees=15.0, translate=0.08, scale=(0.85, 1.15), brightness=0.25,
                        contrast=0.25, gamma=(0.7, 1.5), bias_field=0.3, blur_sigma=1.2 if fine else 0.0,
                        low_res=0.5 if fine else 1.0, noise=0.04, p_intensity=0.5)


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
