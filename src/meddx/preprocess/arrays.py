"""Stored images to model input arrays: the one conversion training and prediction share."""

from __future__ import annotations

import numpy as np


def prepare_arrays(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8/uint16 ``(N,H,W[,C])`` → float32 ``(N,C,H,W)`` in [0, 1], resized if asked.

    Resizing is Pillow's antialiased bilinear filter on float32 planes (the filter
    ``torch.nn.functional.interpolate(..., antialias=True)`` reproduces, within
    2e-5), shared by training and prediction and free of torch, so that a cold
    prediction need not import it.
    """
    x = np.asarray(images)
    x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)
    scale = 65535.0 if x.dtype == np.uint16 else 255.0 if x.dtype == np.uint8 else 1.0
    x = np.ascontiguousarray(x, dtype=np.float32) / np.float32(scale)
    if size is None or x.shape[-2:] == (size, size):
        return x
    from PIL import Image

    out = np.empty((*x.shape[:2], size, size), dtype=np.float32)
    for i, j in np.ndindex(*x.shape[:2]):
        out[i, j] = np.asarray(Image.fromarray(x[i, j]).resize((size, size), Image.Resampling.BILINEAR))
    return out
