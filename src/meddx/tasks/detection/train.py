"""Training the detector: in-memory images, scale / flip / rotation / colour augmentation, AdamW.

:func:`fit` trains :func:`~meddx.tasks.detection.model.build_detector` on a list of
:class:`~meddx.tasks.detection.data.Item` and returns the model with a history. Images are
decoded once and kept as uint8; every step draws a batch, rescales each image by a random
factor around the input scale (multi-scale training), flips it both ways, turns it by a multiple
of 90 degrees (cells have no up or down; both off for X-rays, whose left and right lungs are
labels) and jitters brightness, contrast,
saturation and hue. The model at the best validation mAP@0.5 is kept when ``val`` is given.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.tasks.detection.data import Item
from meddx.tasks.detection.runtime import to_input

log = logging.getLogger("meddx.tasks.detection")


@dataclass
class FitConfig:
    """Training settings (``options`` of :func:`meddx.tasks.detection.package.train`)."""

    epochs: int = 60
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 5e-4
    long_side: int = 416
    """The input size: an image's long side is scaled to this (BCCD 640x480 -> 416x312)."""
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    hflip: bool = True
    """Random horizontal flips (wrong where left and right are labels, e.g. right / left lung)."""
    rotate: bool = True
    """Random 90-degree turns and vertical flips (right for cells, wrong for X-rays)."""
    colour: float = 0.15
    warmup_epochs: float = 2.0
    eval_every: int = 5
    time_budget_s: float | None = None
    """Stop training after this many seconds (the learning rate's cosine is squeezed to end then);
    the best model so far on validation is kept."""
    threads: int | None = None


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file (grey images repeated to three channels)."""
    from meddx.tasks.detection.runtime import read_rgb

    return read_rgb(path)


def scale_for(width: int, height: int, long_side: int) -> float:
    return long_side / max(width, height)


def _augment(img: Any, boxes: np.ndarray, cfg: FitConfig, rng: np.random.Generator, base: float):  # noqa: ANN202
    """One training view of ``img`` ((3, H, W) float tensor 0-1) and its boxes (n, 4) in input pixels."""
    import torch
    import torch.nn.functional as F

    _, h, w = img.shape
    s = base * float(np.exp(rng.uniform(*np.log(cfg.scale_jitter))))
    nh, nw = max(32, round(h * s)), max(32, round(w * s))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    b = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    if cfg.hflip and rng.random() < 0.5:
        img = img.flip(2)
        b = np.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], 1)
    if cfg.rotate:
        if rng.random() < 0.5:
            img = img.flip(1)
            b = np.stack([b[:, 0], nh - b[:, 3], b[:, 2], nh - b[:, 1]], 1)
        if rng.random() < 0.5:  # transpose = 90-degree turn with the flips above
            img = img.transpose(1, 2)
            b = b[:, [1, 0, 3, 2]]
    if cfg.colour > 0:
        c = cfg.colour
        img = img * float(rng.uniform(1 - c, 1 + c)) + float(rng.uniform(-c, c)) * 0.5  # contrast-ish, brightness
        grey = img.mean(0, keepdim=True)
        img = grey + (img - grey) * float(rng.uniform(1 - 2 * c, 1 + 2 * c))  # saturation
        img = img[torch.from_numpy(rng.permutation(3))] if rng.random() < 0.1 else img  # rare channel swap
        img = img.clamp(0, 1)
    return img.contiguous(), b


def fit(train: list[Item], cfg: FitConfig, det_cfg: Any, *, val: list[Item] | None = None, seed: int = 0,
        imagenet: str | Path | None = None, progress: Callable[[str], None] | None = None,
        evaluate_fn: Callable[[Any, list[Item]], float] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train a detector on ``train``; returns (model in eval mode, history)."""
    import torch

    from meddx.tasks.detection.model import build_detector

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_detector(det_cfg, imagenet)
    images = [torch.from_numpy(load_image(it.path)).permute(2, 0, 1).contiguous() for it in train]
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (0.1 + 0.9 * step / warm)
        t = (step - warm) / max(1, total - warm)
        if cfg.time_budget_s:  # the cosine ends with the time budget when that comes first
            t = max(t, (time.perf_counter() - start) / cfg.time_budget_s)
        t = min(1.0, t)
        return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    history: dict[str, Any] = {"epochs": [], "best_epoch": None, "best_val_map50": None}
    best_state, best = None, -1.0
    start, step = time.perf_counter(), 0
    stopped_early = False
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            if idx.size == 0:
                continue
            batch, targets = [], []
            for i in idx:
                it = train[i]
                img = images[i].float() / 255.0
                base = scale_for(it.width, it.height, cfg.long_side)
                view, b = _augment(img, it.boxes, cfg, rng, base)
                batch.append(view)
                targets.append({"boxes": torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).reshape(-1, 4),
                                "labels": torch.from_numpy(it.labels)})
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss_dict = model(batch, targets)
            loss = sum(loss_dict.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                               "seconds": round(time.perf_counter() - start, 1)}
        out_of_time = bool(cfg.time_budget_s) and time.perf_counter() - start > cfg.time_budget_s
        last = epoch + 1 == cfg.epochs or out_of_time
        if val and evaluate_fn is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
            model.eval()
            score = float(evaluate_fn(model, val))
            row["val_map50"] = round(score, 4)
            if score > best:
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                history["best_epoch"], history["best_val_map50"] = epoch + 1, round(score, 4)
        history["epochs"].append(row)
        if progress:
            progress(" ".join(f"{k}={v}" for k, v in row.items()))
        if out_of_time:
            stopped_early = epoch + 1 < cfg.epochs
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = round(time.perf_counter() - start, 1)
    history["stopped_by_time_budget"] = stopped_early
    return model, history


def torch_predict(model: Any, items: list[Item], long_side: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(boxes in original pixels, scores, labels) per item with the torch model (validation during training)."""
    import torch

    out = []
    with torch.no_grad():
        for it in items:
            x, s, _ = to_input(load_image(it.path), long_side)
            det = model([torch.from_numpy(x)])[0]
            out.append((det["boxes"].numpy() / s, det["scores"].numpy(), det["labels"].numpy()))
    return out
