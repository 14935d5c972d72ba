"""Does a saliency map point at the annotated finding? Box-based localisation scores.

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the map's image, ``x``
along columns and ``y`` along rows, with ``x1``/``y1`` *exclusive* as in numpy
slicing: ``(4, 4, 10, 10)`` covers rows and columns 4 to 9. Fractional
coordinates (from :func:`rescale_boxes`) cover every pixel they touch
(``x0``/``y0`` rounded down, ``x1``/``y1`` rounded up). Boxes annotated on the
original image (e.g. a 1024 px radiograph) must be rescaled to the map's size
first with :func:`rescale_boxes`.

* :func:`energy_in_boxes` — share of the map's energy (sum) inside the boxes
  (the "energy-based pointing game" of Score-CAM, Wang et al. 2020).
* :func:`pointing_game` — whether the map's maximum falls in a box (Zhang et
  al. 2016), optionally within a tolerance in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meddx.exceptions import InvalidValueError

Boxes = Sequence[Sequence[float]] | np.ndarray


def _as_map(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2 or 0 in cam.shape:
        raise InvalidValueError(f"expected one (H, W) map, got shape {cam.shape}", field="cam")
    if not np.all(np.isfinite(cam)):
        raise InvalidValueError("the map holds NaN or infinite values", field="cam")
    return cam


def _as_boxes(boxes: Boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
        raise InvalidValueError(
            f"expected boxes as (K, 4) rows of (x0, y0, x1, y1), got shape {arr.shape}", field="boxes",
            hint="Localisation scores need at least one box: skip images without an annotated finding",
        )
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 2] <= arr[:, 0]) or np.any(arr[:, 3] <= arr[:, 1]):
        raise InvalidValueError("every box needs finite x0 < x1 and y0 < y1", field="boxes")
    return arr


def _pixel_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integer half-open pixel ranges, clipped to the image."""
    out = np.empty(boxes.shape, dtype=np.int64)
    out[:, 0] = np.clip(np.floor(boxes[:, 0]), 0, width)
    out[:, 1] = np.clip(np.floor(boxes[:, 1]), 0, height)
    out[:, 2] = np.clip(np.ceil(boxes[:, 2]), 0, width)
    out[:, 3] = np.clip(np.ceil(boxes[:, 3]), 0, height)
    return out


def boxes_mask(boxes: Boxes, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the union of ``boxes`` (parts outside the image are dropped)."""
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in _pixel_boxes(_as_boxes(boxes), height, width):
        mask[y0:y1, x0:x1] = True
    return mask


def rescale_boxes(boxes: Boxes, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes from an image of ``from_size`` to one of ``to_size``, both ``(height, width)``.

    Returns float ``(K, 4)``; no rounding, so no box collapses when shrinking.
    """
    arr = _as_boxes(boxes)
    (fh, fw), (th, tw) = from_size, to_size
    if min(fh, fw, th, tw) <= 0:
        raise InvalidValueError(f"sizes must be positive, got {from_size} -> {to_size}", field="size")
    return arr * np.array([tw / fw, th / fh, tw / fw, th / fh])


def energy_in_boxes(cam: np.ndarray, boxes: Boxes) -> float:
    """Share of the map's total energy (sum of values) that lies inside the union of ``boxes``.

    A uniform map scores the boxes' area share, a perfect one 1.0. The map must
    be non-negative (CAMs in ``[0, 1]`` are); an all-zero map scores 0.0 (no
    energy anywhere, so none in the boxes).
    """
    cam = _as_map(cam)
    if cam.min() < 0:
        raise InvalidValueError("energy needs a non-negative map", field="cam", hint="Clip or rescale it to [0, 1]")
    total = cam.sum()
    if total <= 0:
        return 0.0
    return float(cam[boxes_mask(boxes, cam.shape)].sum() / total)


def pointing_game(cam: np.ndarray, boxes: Boxes, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies in a box, or within ``tolerance`` pixels of one.

    The maximum is ``np.argmax`` (the first maximal pixel in row-major order
    when there are ties). The distance is Euclidean from the pixel to the
    nearest pixel of the box, so ``tolerance=0`` means strictly inside.
    """
    cam = _as_map(cam)
    if tolerance < 0:
        raise InvalidValueError(f"tolerance must be >= 0, got {tolerance}", field="tolerance")
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    for x0, y0, x1, y1 in _pixel_boxes(_as_boxes(boxes), *cam.shape):
        if x1 <= x0 or y1 <= y0:
            continue  # box entirely outside the image
        dx = max(x0 - col, 0, col - (x1 - 1))
        dy = max(y0 - row, 0, row - (y1 - 1))
        if np.hypot(dx, dy) <= tolerance:
            return True
    return False
