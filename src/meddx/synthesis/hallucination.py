"""Hallucination checks: what a synthetic image shows that its reference (or its own input) does not.

Three views, from the cheapest to the one that matters clinically:

- :func:`structures` (reference known, e.g. the full-dose image in a benchmark): regions where the
  output and the reference differ by more than ``threshold`` after a band-pass at the scale of small
  anatomy (difference of Gaussians, sigma 1 and 4 px, so noise and slow shading do not count), of at
  least ``min_area`` pixels. A region is *added* when the output has more local contrast there than
  the reference (a structure present in the output but not in the reference), *removed* otherwise.
- :func:`residual` (no reference: every prediction): what the restorer took away, ``input - output``,
  divided by the noise the dose model expects; taken away noise is white, so its band-passed local
  mean stays within ``k`` of its own standard deviation. Regions beyond it are structure the model
  added or removed rather than noise.
- downstream agreement (:func:`decisions`, :func:`boxes`, :func:`masks`): the classifier's decision,
  the detector's boxes and the segmenter's mask on the output against the same models on the
  reference; boxes and mask regions only in the output are reported as added structures.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def band_pass(image: np.ndarray, fine: float = 1.0, coarse: float = 4.0) -> np.ndarray:
    """Difference of Gaussians: structure between ``fine`` and ``coarse`` pixels across."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(image, np.float64)
    return gaussian_filter(x, fine) - gaussian_filter(x, coarse)


def _regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, list[np.ndarray]]:
    from scipy.ndimage import label

    labels, n = label(mask)
    keep = [labels == k for k in range(1, n + 1) if int((labels == k).sum()) >= min_area]
    out = np.zeros(mask.shape, bool)
    for region in keep:
        out |= region
    return out, keep


def structures(reference: np.ndarray, output: np.ndarray, *, threshold: float = 0.05,
               min_area: int | None = None) -> dict[str, Any]:
    """Structures the output adds to or removes from the reference (both [0, 1], same grid)."""
    reference, output = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    area = min_area if min_area is not None else max(4, reference.size // 4000)
    ref_bp, out_bp = band_pass(reference), band_pass(output)
    differs, regions = _regions(np.abs(out_bp - ref_bp) > threshold, area)
    added = [r for r in regions if np.abs(out_bp[r]).mean() > np.abs(ref_bp[r]).mean()]
    return {"added": len(added), "removed": len(regions) - len(added),
            "added_area": float(sum(r.sum() for r in added) / reference.size),
            "changed_area": float(differs.mean()), "threshold": threshold, "min_area": area,
            "map": differs}


def residual(observed: np.ndarray, output: np.ndarray, noise_sd: np.ndarray, *, k: float = 4.0,
             min_area: int | None = None, expected: np.ndarray | None = None) -> dict[str, Any]:
    """Structure in what the model removed (``observed - output``), relative to the expected noise.

    ``expected`` is the mean observation of the output (:meth:`DoseModel.expected`) when the noise is biased
    (Rician magnitude noise lifts dark regions); without it the output itself.
    """
    observed = np.asarray(observed, np.float64)
    output = np.asarray(expected if expected is not None else output, np.float64)
    z = (observed - output) / np.maximum(np.asarray(noise_sd, np.float64), 1e-6)
    bp = band_pass(z, 2.0, 8.0)
    # the same band-pass of white unit noise, measured once on a sample (its sd depends on the filter only)
    white = band_pass(np.random.default_rng(0).standard_normal((128, 128)), 2.0, 8.0)[16:-16, 16:-16].std()
    area = min_area if min_area is not None else max(4, observed.size // 4000)
    flagged, regions = _regions(np.abs(bp) > k * white, area)
    # positive = the model removed brightness (structure lost); negative = it added brightness
    removed = [r for r in regions if bp[r].mean() > 0]
    return {"regions": len(regions), "brighter": len(regions) - len(removed), "darker": len(removed),
            "flagged_area": float(flagged.mean()), "residual_sd": float(z.std()), "k": k, "min_area": area,
            "map": flagged}


def decisions(reference_p: np.ndarray, output_p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Binary decisions on output vs reference probabilities: disagreement rate and the flips each way."""
    a, b = np.asarray(reference_p) >= threshold, np.asarray(output_p) >= threshold
    return {"disagreement": float((a != b).mean()), "new_positive": float((~a & b).mean()),
            "new_negative": float((a & ~b).mean()), "n": int(len(a))}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def boxes(reference: list[dict[str, Any]], output: list[dict[str, Any]], *, iou: float = 0.5) -> dict[str, int]:
    """Detections (``{"label", "box"}``) on the output matched to those on the reference by label and IoU."""
    added = removed = matched = 0
    for label in {b["label"] for b in reference} | {b["label"] for b in output}:
        r = np.array([b["box"] for b in reference if b["label"] == label], np.float64).reshape(-1, 4)
        o = np.array([b["box"] for b in output if b["label"] == label], np.float64).reshape(-1, 4)
        used: set[int] = set()
        if len(r) and len(o):
            overlap = _iou(o, r)
            for i in np.argsort(-overlap.max(axis=1)):
                j = int(np.argmax(np.where([k in used for k in range(len(r))], -1, overlap[i])))
                if overlap[i, j] >= iou and j not in used:
                    used.add(j)
        matched += len(used)
        added += len(o) - len(used)
        removed += len(r) - len(used)
    return {"matched": matched, "added": added, "removed": removed}


def masks(reference: np.ndarray, output: np.ndarray, *, min_area: int = 10) -> dict[str, Any]:
    """Dice of two binary masks and the connected regions only the output has (added) or only the reference."""
    from scipy.ndimage import label

    a, b = np.asarray(reference, bool), np.asarray(output, bool)
    dice = float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    lab_b, nb = label(b)
    lab_a, na = label(a)
    added = sum(1 for k in range(1, nb + 1) if (lab_b == k).sum() >= min_area and not (a & (lab_b == k)).any())
    removed = sum(1 for k in range(1, na + 1) if (lab_a == k).sum() >= min_area and not (b & (lab_a == k)).any())
    return {"dice": dice, "added": added, "removed": removed}
