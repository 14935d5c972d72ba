"""Tiny segmentation and detection packages for the service tests, trained in seconds on generated images.

* :func:`train_tiny_segmenter`: a U-Net (``unet-small``, 4 steps) on fundus-like phantoms (a bright
  disc with dark lines, the lines are the vessel masks), task ``segmentation``;
* :func:`train_tiny_detector`: an FCOS (``slim``, 1 epoch at 96 px) on grey images with bright
  squares (``dot``) and dark bars (``bar``) in VOC layout, task ``detection``; its score
  threshold is lowered so that the barely trained detector keeps a few boxes.

The models are not meant to be good: the service tests check what is stored and shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def fundus(seed: int, shape: tuple[int, int] = (96, 88)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB fundus-like phantom and its vessel mask (bool)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    disc = Image.new("L", (w, h), 0)
    ImageDraw.Draw(disc).ellipse([4, 4, w - 5, h - 5], fill=1)
    lines = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(lines)
    for _ in range(5):
        x0, x1 = (int(v) for v in rng.integers(0, w, 2))
        y0, y1 = (int(v) for v in rng.integers(0, h, 2))
        draw.line([x0, y0, x1, y1], fill=1, width=int(rng.integers(1, 4)))
    inside = np.asarray(disc) > 0
    mask = (np.asarray(lines) > 0) & inside
    image = np.zeros((h, w, 3), np.float64)
    image[inside] = (190, 100, 45)
    image[mask] = (120, 35, 20)
    image[inside] += rng.normal(0, 4, (int(inside.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def fundus_folder(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = fundus(i)
        Image.fromarray(image).save(folder / f"case{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"case{i:02d}_mask.png")
    return folder


def cells_voc(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Grey images with bright squares ("dot") and a dark bar ("bar"), in VOC layout."""
    from tests._factories import voc_shapes

    return voc_shapes(root, n=n, size=size, seed=seed)


def train_tiny_segmenter(work: Path) -> Path:
    from meddx.tasks.segmentation import package as seg

    data = fundus_folder(work / "fundus")
    return seg.train(str(data), model="unet-small", out=work / "seg-run", steps=4, eval_every=2, patch=32, batch=4,
                     roi=32, n_boot=5, progress=False, threads=1)


def train_tiny_detector(work: Path, keep: int = 6) -> Path:
    """The detector, with its score threshold set so that about ``keep`` boxes survive on a training image."""
    from meddx.packaging.registry import read_package, write_package
    from meddx.tasks.detection import package as det

    data = cells_voc(work / "cells")
    run = det.train(str(data), epochs=1, out=work / "det-run", progress=False, long_side=96, n_boot=5, threads=1,
                    batch_size=4)
    package = read_package(run)
    [probe] = det.predict(run, package, [str(data / "JPEGImages" / "img00.png")], out_dir=str(work / "probe"),
                          score_threshold=1e-6)
    scores = sorted((b["score"] for b in probe["boxes"]), reverse=True)
    package["score_threshold"] = float(scores[min(keep, len(scores)) - 1]) if scores else 0.01
    write_package(run, package)
    return run
