"""The field of view (FOV) of a fundus photograph: the bright disc the camera saw.

CHASE_DB1 ships no FOV masks, so, as is standard practice for it (and for HRF/STARE
when their masks are missing), the FOV is derived from the image: threshold the red
channel (the brightest channel of a fundus image, well above the black border),
close small gaps, keep the largest connected region and fill its holes.
Metrics are computed inside this mask only.
"""

from __future__ import annotations

import numpy as np

RED_THRESHOLD = 20
"""Red-channel value (0-255) above which a pixel is inside the FOV (the border is 0-10 in CHASE's JPEGs)."""


def field_of_view(image: np.ndarray, *, threshold: int = RED_THRESHOLD) -> np.ndarray:
    """Boolean FOV mask of an RGB (H, W, 3) or grey (H, W) uint8 image.

    Red channel (luminance for grey images) ``> threshold`` → morphological opening
    (removes JPEG noise in the border) and closing (fills dark vessels touching the
    rim) with a 7-pixel disc → largest connected component → holes filled → eroded
    by 2 pixels so the bright rim artefact is left out.
    """
    import cv2
    from scipy import ndimage

    channel = image[..., 0] if image.ndim == 3 else image
    binary = (np.asarray(channel) > threshold).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, disc)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, disc)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:  # nothing bright: treat the whole image as the field of view
        return np.ones(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = ndimage.binary_fill_holes(labels == largest).astype(np.uint8)
    region = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return region.astype(bool)
