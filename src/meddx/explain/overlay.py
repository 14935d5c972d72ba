"""Heat-map overlays of a CAM on the image a clinician looks at.

The image passed here must already be *display-ready* uint8: for CT/MR/X-ray
DICOM that means windowed (window centre/width, or VOI LUT) and, for
MONOCHROME1, inverted *before* calling :func:`overlay` — this module does no
intensity mapping of its own, so what is shown under the heat map is exactly
what was windowed upstream. The model's normalised input tensor is not a
suitable background.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from meddx.exceptions import InvalidValueError

COLORMAPS: dict[str, str] = {}
"""Registered colour maps: meddx name -> OpenCV ``COLORMAP_*`` attribute."""


def register_colormap(name: str, cv2_attr: str) -> None:
    """Register an OpenCV colour map (``cv2.<cv2_attr>``) under ``name``."""
    COLORMAPS[name] = cv2_attr


for _name in ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "bone"):
    register_colormap(_name, f"COLORMAP_{_name.upper()}")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InvalidValueError(
            f"expected a uint8 image, got {image.dtype}", field="image",
            hint="Window/scale the image to 0-255 first (e.g. the DICOM window) and cast to uint8",
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise InvalidValueError(
        f"expected a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}", field="image",
    )


def _heat(cam: np.ndarray, height: int, width: int, colormap: str) -> np.ndarray:
    import cv2

    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim == 3 and cam.shape[0] == 1:
        cam = cam[0]
    if cam.ndim != 2 or 0 in cam.shape:
        raise InvalidValueError(f"expected one (H, W) map, got shape {cam.shape}", field="cam")
    if not np.all(np.isfinite(cam)):
        raise InvalidValueError("the map holds NaN or infinite values", field="cam")
    if colormap not in COLORMAPS:
        raise InvalidValueError(
            f"unknown colormap {colormap!r}", field="colormap", hint=f"Known: {', '.join(sorted(COLORMAPS))}",
        )
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(np.clip(cam, 0.0, 1.0) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(levels, getattr(cv2, COLORMAPS[colormap]))
    return bgr[:, :, ::-1]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped CAM over ``image``: RGB uint8 ``(H, W, 3)``.

    Args:
        image: display-ready uint8 grey ``(H, W)`` / ``(H, W, 1)`` or RGB ``(H, W, 3)``
            (already windowed, see the module docstring).
        cam: one map ``(h, w)`` in ``[0, 1]`` (values outside are clipped); resized
            bilinearly to the image size.
        alpha: weight of the heat map, ``0`` (image only) to ``1`` (heat map only).
        colormap: a name from :data:`COLORMAPS`.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidValueError(f"alpha must be in [0, 1], got {alpha}", field="alpha")
    rgb = _as_rgb(image)
    heat = _heat(cam, rgb.shape[0], rgb.shape[1], colormap)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_overlay(
    path: str | PathLike[str],
    image: np.ndarray,
    cam: np.ndarray,
    alpha: float = 0.45,
    colormap: str = "jet",
) -> Path:
    """Write :func:`overlay` as a PNG file at ``path`` (parents created); return the path.

    The file is PNG whatever the suffix (lossless, so the heat map keeps its colours).
    """
    from PIL import Image

    rgb = overlay(image, cam, alpha=alpha, colormap=colormap)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out, format="PNG")
    return out
