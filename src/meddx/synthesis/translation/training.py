"""Training of the translators: pix2pix (paired) and CycleGAN (unpaired), time- and step-limited.

- :func:`train_pix2pix` (Isola et al. 2017): generator G: A → B and a conditional PatchGAN D on
  (input, output) pairs; G's loss is the LSGAN adversarial term + ``lambda_l1`` (100) × L1 to the
  true target. The best state is the one with the highest validation PSNR (translated vs true target).
- :func:`train_cyclegan` (Zhu et al. 2017): G_ab, G_ba and one PatchGAN per domain, LSGAN losses,
  cycle loss ``lambda_cycle`` (10) × (|G_ba(G_ab(a)) - a| + |G_ab(G_ba(b)) - b|), identity loss
  ``lambda_identity`` (0.5) × ``lambda_cycle`` × (|G_ab(b) - b| + |G_ba(a) - a|), a pool of 50 past
  fakes for the discriminators. The best state is the one with the lowest validation cycle error
  (mean L1 of both round trips on the validation images), chosen among the checkpoints of the second
  half of training only: an untrained, near-identity generator has a small cycle error without
  translating anything.

Both use Adam (lr 1e-3 by default: few steps on one CPU thread; betas 0.5/0.999), constant for the first half and linearly decayed to 0 in the
second half (of ``steps`` or of ``time_limit_s``, whichever comes first), random flips as augmentation,
and images of one size (a multiple of 16) in [0, 1]; generator outputs are linear, clipped to [0, 1] when used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.synthesis.translation.networks import CHANNELS, MULTIPLE


@dataclass
class TranslateConfig:
    steps: int = 2000
    batch: int = 8
    lr: float = 1e-3
    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    eval_every: int = 100
    time_limit_s: float | None = None
    seed: int = 0
    channels: tuple[int, ...] = CHANNELS
    flip: bool = True
    pool: int = 50
    history: list[dict[str, Any]] = field(default_factory=list)


def _check(images: list[np.ndarray], what: str) -> None:
    if not images:
        raise ConfigError(f"no {what} images", field="data", hint="Give at least one image per domain")
    shapes = {x.shape for x in images}
    if len(shapes) != 1:
        raise ConfigError(f"{what} images have several sizes {sorted(shapes)[:3]}", field="size",
                          hint="Resize all images to one size (a multiple of 16)")
    h, w = next(iter(shapes))
    if h % MULTIPLE or w % MULTIPLE:
        raise ConfigError(f"{what} images are {h}×{w}: sides must be multiples of {MULTIPLE}", field="size",
                          hint="Resize to e.g. 64×64")


def _stack(images: list[np.ndarray], idx: np.ndarray, flips: np.ndarray | None = None) -> Any:
    import torch

    x = np.stack([images[i] for i in idx]).astype(np.float32)
    if flips is not None:
        x[flips] = x[flips][:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x[:, None]))


def _schedule(opts: list[Any], cfg: TranslateConfig, progress: float) -> None:
    lr = cfg.lr if progress < 0.5 else cfg.lr * max(0.0, 2.0 * (1.0 - progress))
    for opt in opts:
        for group in opt.param_groups:
            group["lr"] = max(lr, cfg.lr * 0.01)


def _progress(step: int, cfg: TranslateConfig, start: float) -> float:
    p = step / cfg.steps
    if cfg.time_limit_s:
        p = max(p, (time.perf_counter() - start) / cfg.time_limit_s)
    return min(p, 1.0)


def _state(*nets: Any) -> list[dict[str, Any]]:
    return [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in nets]


def _split_val(images: list[np.ndarray], share: float = 0.2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n_val = max(1, round(share * len(images))) if len(images) > 1 else 0
    return images[: len(images) - n_val], images[len(images) - n_val:]


def train_pix2pix(pairs_src: list[np.ndarray], pairs_tgt: list[np.ndarray], cfg: TranslateConfig, *,
                  val_src: list[np.ndarray] | None = None, val_tgt: list[np.ndarray] | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train G: source → target on aligned pairs; returns ``(G in eval mode, best by validation PSNR), info)``.

    Without ``val_src``/``val_tgt`` the last 20 % of the pairs validate.
    """
    import torch
    from torch.nn import functional as F

    from meddx.synthesis.metrics import psnr
    from meddx.synthesis.translation.networks import discriminator, generator, translate

    if len(pairs_src) != len(pairs_tgt):
        raise ConfigError(f"{len(pairs_src)} source but {len(pairs_tgt)} target images", field="data",
                          hint="Paired training needs one target per source image")
    if val_src is None or val_tgt is None:
        (pairs_src, val_src), (pairs_tgt, val_tgt) = _split_val(pairs_src), _split_val(pairs_tgt)
    _check(pairs_src + pairs_tgt + val_src + val_tgt, "paired")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    g, d = generator(cfg.channels), discriminator(2)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    baseline = float(np.mean([psnr(t, s) for s, t in zip(val_src, val_tgt, strict=True)])) if val_src else math.nan
    best: dict[str, Any] = {"score": -math.inf, "step": 0, "state": None}
    start = time.perf_counter()
    step, run_g, run_d, run_l1 = 0, 0.0, 0.0, 0.0
    for step in range(1, cfg.steps + 1):
        _schedule([opt_g, opt_d], cfg, _progress(step, cfg, start))
        idx = rng.integers(0, len(pairs_src), cfg.batch)
        flips = rng.random(cfg.batch) < 0.5 if cfg.flip else None
        a, b = _stack(pairs_src, idx, flips), _stack(pairs_tgt, idx, flips)
        g.train()
        d.train()
        fake = g(a)
        # discriminator: real pairs → 1, fake pairs → 0 (least squares)
        d_real, d_fake = d(torch.cat([a, b], 1)), d(torch.cat([a, fake.detach()], 1))
        loss_d = 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        d_fake = d(torch.cat([a, fake], 1))
        l1 = F.l1_loss(fake, b)
        loss_g = F.mse_loss(d_fake, torch.ones_like(d_fake)) + cfg.lambda_l1 * l1
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        k = 1.0 if step == 1 else 0.05
        run_g, run_d, run_l1 = (1 - k) * run_g + k * loss_g.item(), (1 - k) * run_d + k * loss_d.item(), \
            (1 - k) * run_l1 + k * l1.item()
        elapsed = time.perf_counter() - start
        out_of_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
        if val_src and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
            out = translate(g, val_src)
            score = float(np.mean([psnr(t, o) for t, o in zip(val_tgt, out, strict=True)]))
            cfg.history.append({"step": step, "loss_g": round(run_g, 4), "loss_d": round(run_d, 4),
                                "l1": round(run_l1, 4), "val_psnr": round(score, 3), "seconds": round(elapsed, 1)})
            if log:
                log(f"step {step}/{cfg.steps} L1 {run_l1:.4f} D {run_d:.3f} validation PSNR {score:.2f} dB "
                    f"(input copied: {baseline:.2f}) ({elapsed:.0f} s)")
            if score > best["score"]:
                best = {"score": score, "step": step, "state": _state(g)}
        if out_of_time:
            break
    if best["state"] is not None:
        g.load_state_dict(best["state"][0])
    g.eval()
    return g, {"mode": "paired", "steps": step, "best_step": best["step"], "val_psnr": best["score"],
               "val_psnr_input_copied": baseline, "n_train": len(pairs_src), "n_val": len(val_src),
               "seconds": round(time.perf_counter() - start, 1), "loss": "LSGAN + 100 x L1",
               "history": cfg.history}


class _Pool:
    """The last ``size`` generated images; half of each discriminator batch comes from it (Shrivastava 2017)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.items, self.rng = size, [], rng

    def __call__(self, batch: Any) -> Any:
        import torch

        if self.size == 0:
            return batch
        out = []
        for x in batch.detach():
            if len(self.items) < self.size:
                self.items.append(x.clone())
                out.append(x)
            elif self.rng.random() < 0.5:
                i = int(self.rng.integers(self.size))
                out.append(self.items[i].clone())
                self.items[i] = x.clone()
            else:
                out.append(x)
        return torch.stack(out)


def cycle_error(g_ab: Any, g_ba: Any, val_a: list[np.ndarray], val_b: list[np.ndarray]) -> float:
    """Mean absolute error of the round trips a → b → a and b → a → b (validation images, both domains)."""
    from meddx.synthesis.translation.networks import translate

    errs = []
    if val_a:
        errs += [float(np.abs(r - x).mean()) for x, r in zip(val_a, translate(g_ba, translate(g_ab, val_a)),
                                                                strict=True)]
    if val_b:
        errs += [float(np.abs(r - x).mean()) for x, r in zip(val_b, translate(g_ab, translate(g_ba, val_b)),
                                                                strict=True)]
    return float(np.mean(errs)) if errs else math.nan


def train_cyclegan(domain_a: list[np.ndarray], domain_b: list[np.ndarray], cfg: TranslateConfig, *,
                   val_a: list[np.ndarray] | None = None, val_b: list[np.ndarray] | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train G_ab and G_ba on unpaired images; returns ``(G_ab, G_ba, info)`` in eval mode (best state by
    validation cycle error in the second half of training). Without ``val_a``/``val_b`` the last 20 % of
    each domain validates."""
    import itertools

    import torch
    from torch.nn import functional as F

    from meddx.synthesis.translation.networks import discriminator, generator

    if val_a is None:
        domain_a, val_a = _split_val(domain_a)
    if val_b is None:
        domain_b, val_b = _split_val(domain_b)
    _check(domain_a + domain_b + val_a + val_b, "unpaired")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    g_ab, g_ba = generator(cfg.channels), generator(cfg.channels)
    d_a, d_b = discriminator(1), discriminator(1)
    opt_g = torch.optim.Adam(itertools.chain(g_ab.parameters(), g_ba.parameters()), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), lr=cfg.lr, betas=(0.5, 0.999))
    pool_a, pool_b = _Pool(cfg.pool, rng), _Pool(cfg.pool, rng)
    baseline = cycle_error(g_ab, g_ba, val_a, val_b)
    best: dict[str, Any] = {"score": math.inf, "step": 0, "state": None}
    last_state: list[dict[str, Any]] | None = None
    start = time.perf_counter()
    step = 0
    run = {"gan": 0.0, "cycle": 0.0, "identity": 0.0, "d": 0.0}

    def mse(x: Any, target: float) -> Any:
        return F.mse_loss(x, torch.full_like(x, target))

    for step in range(1, cfg.steps + 1):
        progress = _progress(step, cfg, start)
        _schedule([opt_g, opt_d], cfg, progress)
        fa = rng.random(cfg.batch) < 0.5 if cfg.flip else None
        fb = rng.random(cfg.batch) < 0.5 if cfg.flip else None
        a = _stack(domain_a, rng.integers(0, len(domain_a), cfg.batch), fa)
        b = _stack(domain_b, rng.integers(0, len(domain_b), cfg.batch), fb)
        for n in (g_ab, g_ba, d_a, d_b):
            n.train()
        fake_b, fake_a = g_ab(a), g_ba(b)
        gan = mse(d_b(fake_b), 1.0) + mse(d_a(fake_a), 1.0)
        cycle = F.l1_loss(g_ba(fake_b), a) + F.l1_loss(g_ab(fake_a), b)
        identity = F.l1_loss(g_ab(b), b) + F.l1_loss(g_ba(a), a) if cfg.lambda_identity > 0 else torch.zeros(())
        loss_g = gan + cfg.lambda_cycle * cycle + cfg.lambda_identity * cfg.lambda_cycle * identity
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        pb, pa = pool_b(fake_b), pool_a(fake_a)
        loss_d = 0.5 * (mse(d_b(b), 1.0) + mse(d_b(pb), 0.0)) + 0.5 * (mse(d_a(a), 1.0) + mse(d_a(pa), 0.0))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        k = 1.0 if step == 1 else 0.05
        for key, value in (("gan", gan), ("cycle", cycle), ("identity", identity), ("d", loss_d)):
            run[key] = (1 - k) * run[key] + k * float(value.item())
        elapsed = time.perf_counter() - start
        out_of_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            score = cycle_error(g_ab, g_ba, val_a, val_b)
            eligible = progress >= 0.5 or step == cfg.steps or out_of_time
            cfg.history.append({"step": step, **{f"loss_{k}": round(v, 4) for k, v in run.items()},
                                "val_cycle_l1": round(score, 5), "eligible": eligible, "seconds": round(elapsed, 1)})
            if log:
                log(f"step {step}/{cfg.steps} GAN {run['gan']:.3f} cycle {run['cycle']:.4f} D {run['d']:.3f} "
                    f"validation cycle L1 {score:.4f} ({elapsed:.0f} s)")
            last_state = _state(g_ab, g_ba)
            if eligible and score < best["score"]:
                best = {"score": score, "step": step, "state": last_state}
        if out_of_time:
            break
    state = best["state"] or last_state
    if state is not None:
        g_ab.load_state_dict(state[0])
        g_ba.load_state_dict(state[1])
    g_ab.eval()
    g_ba.eval()
    return g_ab, g_ba, {"mode": "unpaired", "steps": step, "best_step": best["step"], "val_cycle_l1": best["score"],
                        "val_cycle_l1_untrained": baseline, "n_train_a": len(domain_a), "n_train_b": len(domain_b),
                        "n_val_a": len(val_a), "n_val_b": len(val_b), "seconds": round(time.perf_counter() - start, 1),
                        "loss": "LSGAN + 10 x cycle L1 + 5 x identity L1", "history": cfg.history}
