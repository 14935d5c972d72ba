"""Crop to the foreground (the head on a brain MRI slice) and standardise each image, inside the network.

Brain MRI slices from different collections differ most in what surrounds the anatomy
(black margins of any width, a head filling 40-100% of the frame) and in their grey
scale (each scanner and export sets its own window). Cropping every image to the
bounding box of its foreground and standardising its intensities removes both before
the first convolution, in training and prediction alike: the step is a module of the
network (:class:`ForegroundCrop`), so a package applies it wherever it runs and no
pipeline change is needed. It is differentiable-free arithmetic plus one
``grid_sample`` (ONNX opset 16).

:func:`dark_background` is the data rule the small-data recipe uses to turn it on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD = 0.1
"""Foreground: pixels above this share of the image's (smoothed) intensity range."""
MIN_LINE = 0.02
"""A row/column is inside the box when more than this share of its pixels is foreground."""
MARGIN = 0.04
"""The box is widened by this share of the image side on every edge."""


def _module() -> type:
    from torch import nn

    class ForegroundCrop(nn.Module):
        """Crop each image to its foreground bounding box (resampled to the input size), then standardise it."""

        def forward(self, x: Any) -> Any:
            import torch
            import torch.nn.functional as F  # noqa: N812

            n, _, h, w = x.shape
            g = F.avg_pool2d(x.mean(dim=1, keepdim=True), 3, stride=1, padding=1, count_include_pad=False)[:, 0]
            low = g.amin(dim=(1, 2), keepdim=True)
            high = g.amax(dim=(1, 2), keepdim=True)
            mask = ((g - low) > THRESHOLD * (high - low + 1e-6)).float()
            rows = (mask.mean(dim=2) > MIN_LINE).float()  # (N, H)
            cols = (mask.mean(dim=1) > MIN_LINE).float()  # (N, W)
            y0, y1 = _first(rows), h - 1 - _first(rows.flip(1))
            x0, x1 = _first(cols), w - 1 - _first(cols.flip(1))
            empty_y, empty_x = rows.sum(dim=1) == 0, cols.sum(dim=1) == 0
            y0 = torch.where(empty_y, torch.zeros_like(y0), y0)
            y1 = torch.where(empty_y, torch.full_like(y1, h - 1), y1)
            x0 = torch.where(empty_x, torch.zeros_like(x0), x0)
            x1 = torch.where(empty_x, torch.full_like(x1, w - 1), x1)
            # pixel centres -> normalised coordinates in [-1, 1] (align_corners=False), widened by the margin
            top, bottom = (2 * y0 + 1) / h - 1 - 2 * MARGIN, (2 * y1 + 1) / h - 1 + 2 * MARGIN
            left, right = (2 * x0 + 1) / w - 1 - 2 * MARGIN, (2 * x1 + 1) / w - 1 + 2 * MARGIN
            ty = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, h, 1)
            tx = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, w)
            gy = top.view(n, 1, 1) + (bottom - top).view(n, 1, 1) * ty
            gx = left.view(n, 1, 1) + (right - left).view(n, 1, 1) * tx
            grid = torch.stack([gx.expand(n, h, w), gy.expand(n, h, w)], dim=-1)
            out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            sd = out.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
            return (out - mean) / (sd + 1e-3)

    return ForegroundCrop


def _first(line: Any) -> Any:
    """Index of the first non-zero entry of each row of ``line`` ``(N, L)`` (0 when none), as float."""
    import torch

    length = line.shape[1]
    weights = torch.arange(length, 0, -1, device=line.device, dtype=line.dtype)  # earlier = larger
    return (length - (line * weights).amax(dim=1)).clamp(0, length - 1)


def ForegroundCrop() -> Any:  # noqa: N802 (a module factory, so torch is imported only when used)
    """A new :class:`ForegroundCrop` module."""
    return _module()()


def dark_background(images: np.ndarray, *, level: float = 0.05, share: float = 0.6) -> bool:
    """True when most images have a dark border: the median share of border pixels below ``level`` of the
    image's range exceeds ``share`` (brain MRI: 0.9+; breast ultrasound and chest X-ray MedMNIST: far less)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=-1) if x.shape[-1] in (1, 3, 4) else x.mean(axis=1)
    if x.ndim != 3 or min(x.shape[1:]) < 8:
        return False
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    norm = (x - lo) / np.maximum(hi - lo, 1e-6)
    k = max(1, min(x.shape[1:]) // 16)
    border = np.concatenate([norm[:, :k].reshape(len(x), -1), norm[:, -k:].reshape(len(x), -1),
                             norm[:, :, :k].reshape(len(x), -1), norm[:, :, -k:].reshape(len(x), -1)], axis=1)
    return bool(np.median((border < level).mean(axis=1)) > share)
