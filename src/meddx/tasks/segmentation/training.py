"""Patch training of a vessel segmentation network (Dice + BCE, vessel-weighted patch sampling).

Patches are cut at random centres: half on a reference-mask pixel (vessels are ~9 % of the
FOV), half anywhere inside the FOV; each gets a random flip, a multiple-of-90° rotation and
an intensity change (gain, offset, gamma-like power). The learning rate follows a cosine
schedule (over the steps, or over ``time_limit_s`` when that ends first); every ``eval_every`` steps the model is scored on the held-out validation images
(sliding window, AUC inside the FOV) and the best state is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.tasks.segmentation.inference import OVERLAP, ROI, torch_logits


@dataclass
class Prepared:
    """One image ready for training or scoring: network input, reference mask, field of view."""

    name: str
    x: np.ndarray       # (C, H, W) float32
    mask: np.ndarray    # (H, W) bool
    fov: np.ndarray     # (H, W) bool
    second: np.ndarray | None = None


@dataclass
class TrainConfig:
    network: str = "unet-small"
    preprocessing: str = "green-clahe"
    patch: int = 96
    batch: int = 16
    steps: int = 6000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    vessel_fraction: float = 0.5
    eval_every: int = 500
    roi: int = ROI
    overlap: float = OVERLAP
    seed: int = 0
    time_limit_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _sample_patches(images: list[Prepared], cfg: TrainConfig, rng: np.random.Generator,
                    vessel_idx: list[np.ndarray], fov_idx: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    p, half = cfg.patch, cfg.patch // 2
    xs = np.zeros((cfg.batch, images[0].x.shape[0], p, p), np.float32)
    ys = np.zeros((cfg.batch, 1, p, p), np.float32)
    for b in range(cfg.batch):
        k = int(rng.integers(len(images)))
        img = images[k]
        pool = vessel_idx[k] if rng.random() < cfg.vessel_fraction else fov_idx[k]
        flat = int(pool[rng.integers(len(pool))])
        H, W = img.mask.shape
        r, c = divmod(flat, W)
        r = int(np.clip(r - half, 0, H - p))
        c = int(np.clip(c - half, 0, W - p))
        x = img.x[:, r:r + p, c:c + p]
        y = img.mask[r:r + p, c:c + p]
        turns = int(rng.integers(4))
        x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns)
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        gain = float(rng.uniform(0.8, 1.2))
        offset = float(rng.normal(0, 0.15))
        xs[b] = x * gain + offset
        ys[b, 0] = y
    return xs, ys


def validation_scores(net: Any, images: list[Prepared], cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``(logits, labels)`` of the FOV pixels of ``images``."""
    logits, labels = [], []
    for img in images:
        out = torch_logits(net, img.x, roi=cfg.roi, overlap=cfg.overlap)
        logits.append(out[img.fov])
        labels.append(img.mask[img.fov])
    return np.concatenate(logits), np.concatenate(labels)


def train_network(train: list[Prepared], val: list[Prepared], cfg: TrainConfig,
                  log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train ``cfg.network`` on patches of ``train``; returns ``(net with the best validation state, info)``."""
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceLoss
    from sklearn.metrics import roc_auc_score

    from meddx.tasks.segmentation.network import build
    from meddx.training.selection import BestState

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = build(cfg.network, in_channels=train[0].x.shape[0], dropout=cfg.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dice = DiceLoss(sigmoid=True, batch=True)
    vessel_idx = [np.flatnonzero(img.mask & img.fov) for img in train]
    fov_idx = [np.flatnonzero(img.fov) for img in train]
    best = BestState()
    start = time.perf_counter()
    running = 0.0
    step = 0
    for step in range(1, cfg.steps + 1):
        # cosine decay over the steps, or over the time limit when that comes first
        progress = step / cfg.steps
        if cfg.time_limit_s:
            progress = max(progress, (time.perf_counter() - start) / cfg.time_limit_s)
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        for group in opt.param_groups:
            group["lr"] = max(lr, cfg.lr * 0.01)
        xs, ys = _sample_patches(train, cfg, rng, vessel_idx, fov_idx)
        net.train()
        x, y = torch.from_numpy(xs), torch.from_numpy(ys)
        logits = net(x)
        loss = dice(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        elapsed = time.perf_counter() - start
        out_of_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
        if val and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
            scores, labels = validation_scores(net, val, cfg)
            auc = float(roc_auc_score(labels, scores))
            cfg.history.append({"step": step, "loss": round(running, 4), "val_auc": round(auc, 5),
                                "seconds": round(elapsed, 1)})
            if log:
                log(f"step {step}/{cfg.steps} loss {running:.4f} val AUC {auc:.4f} ({elapsed:.0f} s)")
            best.offer(net, auc, step)
        elif log and step % 100 == 0:
            log(f"step {step}/{cfg.steps} loss {running:.4f} ({elapsed:.0f} s)")
        if out_of_time:
            break
    best.restore(net)
    net.eval()
    info = {"steps": step, "best_step": best.step, "val_auc": best.score if best.state is not None else -1.0,
            "seconds": round(time.perf_counter() - start, 1), "history": cfg.history}
    return net, info
