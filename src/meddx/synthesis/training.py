"""Paired training of a restorer: clean crops, degraded on the fly at random doses, L1 loss.

Doses are drawn log-uniformly over ``dose_range`` so one network (told the noise level per pixel)
serves every dose in it. For dose models whose noise is not pixel-wise (CT: noise made on the
sinogram) a bank of degraded copies of each whole image is made first and crops are cut from it.
Every ``eval_every`` steps the batch-norm statistics are recomputed over fresh training batches
(:func:`precise_batch_norm`) and the network is scored (PSNR) on the validation images at the
``val_doses``; the best state is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.synthesis.dose import DoseModel
from meddx.synthesis.networks import MULTIPLE


@dataclass
class TrainConfig:
    network: str = "unet"
    patch: int = 64
    batch: int = 16
    steps: int = 4000
    lr: float = 1e-3
    dose_range: tuple[float, float] = (0.03, 0.5)
    val_doses: tuple[float, ...] = (0.25, 0.1, 0.05)
    eval_every: int = 250
    time_limit_s: float | None = None
    seed: int = 0
    loss: str = "l1+ssim"
    """``l1``, or ``l1+ssim`` (L1 + ``ssim_weight`` × (1 - SSIM), MONAI's SSIMLoss: keeps fine texture)."""
    ssim_weight: float = 0.5
    bank: int = 3
    """Degraded copies per image and dose for non-pixel-wise dose models."""
    params: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def patch_size(images: list[np.ndarray], wanted: int) -> int:
    """The largest multiple of 8 no larger than ``wanted`` and the smallest image side."""
    side = min(min(x.shape) for x in images)
    size = min(wanted, side) // MULTIPLE * MULTIPLE
    return max(size, MULTIPLE)


class _Batches:
    """Random (observed, noise level, clean) crops."""

    def __init__(self, images: list[np.ndarray], model: DoseModel, cfg: TrainConfig, rng: np.random.Generator):
        self.images, self.model, self.cfg, self.rng = images, model, cfg, rng
        self.patch = patch_size(images, cfg.patch)
        self.bank: list[list[tuple[float, np.ndarray, np.ndarray]]] = []
        if not model.pixelwise:
            for x in images:
                copies = []
                for _ in range(cfg.bank):
                    d = _log_uniform(rng, *cfg.dose_range)
                    y = model.degrade(x, d, rng, **cfg.params)
                    copies.append((d, y, model.noise_map(y, d, **cfg.params)))
                self.bank.append(copies)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, cfg, rng = self.patch, self.cfg, self.rng
        obs = np.zeros((cfg.batch, 1, p, p), np.float32)
        lev = np.zeros_like(obs)
        clean = np.zeros_like(obs)
        for b in range(cfg.batch):
            k = int(rng.integers(len(self.images)))
            x = self.images[k]
            r = int(rng.integers(0, x.shape[0] - p + 1))
            c = int(rng.integers(0, x.shape[1] - p + 1))
            crop = x[r:r + p, c:c + p]
            if self.bank:
                _, y, n = self.bank[k][int(rng.integers(len(self.bank[k])))]
                y, n = y[r:r + p, c:c + p], n[r:r + p, c:c + p]
            else:
                d = _log_uniform(rng, *cfg.dose_range)
                y = self.model.degrade(crop, d, rng, **cfg.params)
                n = self.model.noise_map(y, d, **cfg.params)
            turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            for out, arr in ((obs, y), (lev, n), (clean, crop)):
                a = np.rot90(arr, turns)
                out[b, 0] = a[:, ::-1] if flip else a
        return obs, lev, clean


def precise_batch_norm(net: Any, batches: Any, n: int = 24) -> None:
    """Recompute batch-norm statistics as the plain mean over ``n`` fresh training batches.

    The running averages (momentum 0.1) follow the last few batches, whose random doses change the
    activations' scale, so a network scored with them swings by ±1 dB from one evaluation to the next;
    population statistics make evaluation (and the saved model) stable.
    """
    import torch

    from meddx.synthesis.networks import restore_tensor

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for _ in range(n):
            obs, lev, _clean = (torch.from_numpy(a) for a in batches())
            restore_tensor(net, obs, lev)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


def restore_images(net: Any, observed: list[np.ndarray], levels: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``net`` on each image (whole, padded to a multiple of 8); float32 images in [0, 1]."""
    import torch

    from meddx.synthesis.networks import restore_tensor

    out = []
    with torch.inference_mode():
        for y, n in zip(observed, levels, strict=True):
            t = restore_tensor(net, torch.from_numpy(y[None, None].astype(np.float32)),
                               torch.from_numpy(n[None, None].astype(np.float32)))
            out.append(np.clip(t[0, 0].numpy(), 0, 1))
    return out


def validation_set(images: list[np.ndarray], model: DoseModel, doses: tuple[float, ...], params: dict[str, float],
                   seed: int = 1) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed degraded copies (dose, clean, observed, noise level) of the validation images."""
    rng = np.random.default_rng(seed)
    out = []
    for d in doses:
        for x in images:
            y = model.degrade(x, d, rng, **params)
            out.append((d, x, y, model.noise_map(y, d, **params)))
    return out


def train_restorer(train: list[np.ndarray], val: list[np.ndarray], model: DoseModel, cfg: TrainConfig,
                   log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train ``cfg.network``; returns ``(net in eval mode with the best validation state, info)``."""
    import torch

    from meddx.synthesis.metrics import psnr
    from meddx.synthesis.networks import build, restore_tensor
    from meddx.training.selection import BestState

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = build(cfg.network)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    batches = _Batches(train, model, cfg, rng)
    if cfg.loss not in ("l1", "l1+ssim"):
        from meddx.exceptions import ConfigError

        raise ConfigError(f"unknown loss {cfg.loss!r}", field="loss", hint="Use l1 or l1+ssim")
    ssim_loss = None
    if cfg.loss == "l1+ssim":
        from monai.losses import SSIMLoss

        ssim_loss = SSIMLoss(spatial_dims=2, data_range=1.0, win_size=min(7, batches.patch))
    checks = validation_set(val, model, cfg.val_doses, cfg.params)
    baseline = float(np.mean([psnr(x, y) for _, x, y, _ in checks])) if checks else float("nan")
    best = BestState()
    start = time.perf_counter()
    running, step = 0.0, 0
    for step in range(1, cfg.steps + 1):
        progress = step / cfg.steps
        if cfg.time_limit_s:
            progress = max(progress, (time.perf_counter() - start) / cfg.time_limit_s)
        for group in opt.param_groups:
            group["lr"] = max(cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))), cfg.lr * 0.01)
        obs, lev, clean = (torch.from_numpy(a) for a in batches())
        net.train()
        restored = restore_tensor(net, obs, lev)
        loss = torch.nn.functional.l1_loss(restored, clean)
        if ssim_loss is not None:
            loss = loss + cfg.ssim_weight * ssim_loss(restored.clamp(0, 1), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = loss.item() if step == 1 else 0.98 * running + 0.02 * loss.item()
        elapsed = time.perf_counter() - start
        out_of_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
        if checks and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
            precise_batch_norm(net, batches)
            net.eval()
            restored = restore_images(net, [c[2] for c in checks], [c[3] for c in checks])
            score = float(np.mean([psnr(c[1], r) for c, r in zip(checks, restored, strict=True)]))
            cfg.history.append({"step": step, "loss": round(running, 5), "val_psnr": round(score, 3),
                                "seconds": round(elapsed, 1)})
            if log:
                log(f"step {step}/{cfg.steps} loss {running:.4f} validation PSNR {score:.2f} dB "
                    f"(low dose {baseline:.2f}) ({elapsed:.0f} s)")
            best.offer(net, score, step)
        elif log and step % 100 == 0:
            log(f"step {step}/{cfg.steps} loss {running:.4f} ({elapsed:.0f} s)")
        if out_of_time:
            break
    best.restore(net)
    net.eval()
    return net, {"steps": step, "best_step": best.step, "val_psnr": best.score, "val_psnr_low_dose": baseline,
                 "patch": batches.patch, "seconds": round(time.perf_counter() - start, 1), "history": cfg.history}
