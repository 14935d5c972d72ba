"""Train an image classifier into a run folder that ``evaluate``/``predict`` accept.

A run folder holds everything needed to reproduce and use the model::

    config.json        the resolved configuration (seed included)
    history.jsonl      one line of metrics per epoch
    model.safetensors  the best weights (highest validation AUC)
    package.json       model name, classes, preprocessing, data and split, metrics
    train.log          the log
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

log = logging.getLogger("meddx.training")


@dataclass
class TrainConfig:
    """What to train on and how.

    Attributes:
        data: a catalogue image set (``breastmnist``) or a folder with ``labels.csv``.
        model: a name from :func:`meddx.models.list_models`.
        epochs: maximum epochs; early stopping may end sooner.
        patience: epochs without a better validation AUC before stopping.
        lr / weight_decay: AdamW settings; the schedule is one-cycle (cosine).
        balanced: weight the loss by inverse class frequency.
        augment: random flips and shifts during training.
        size: resize images to ``size``×``size`` (None keeps the data's size).
        val_fraction: for data without a validation split, the share of training
            groups held out for validation.
        pretrained: weights to start from (state-dict file or run folder).
        out: the run folder (default ``$MEDDX_HOME/runs/<data>-<model>-<time>``).
    """

    data: str
    model: str = "cnn-small"
    epochs: int = 40
    patience: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    balanced: bool = True
    augment: bool = True
    size: int | None = None
    val_fraction: float = 0.15
    seed: int = 0
    pretrained: str | None = None
    threads: int | None = None
    out: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_arrays(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 ``(N,H,W[,C])`` → float32 ``(N,C,H,W)`` in [0, 1], resized if asked."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = np.moveaxis(x, -1, 1)
    scale = 65535.0 if x.dtype == np.uint16 else 255.0
    t = torch.from_numpy(np.ascontiguousarray(x)).float() / scale
    if size is not None and t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.numpy()


def _augment(batch: Any, generator: Any) -> Any:
    """Random horizontal flip and a random shift of up to 1/10 of the side, per sample."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    pad = max(1, h // 10)
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (torch.arange(h)[None, :] + dy[:, None])  # (n, h)
    cols = (torch.arange(w)[None, :] + dx[:, None])  # (n, w)
    index = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _predict(model: Any, x: np.ndarray, mean: float, std: float, batch_size: int = 256) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = (torch.from_numpy(x[start:start + batch_size]) - mean) / std
            out.append(torch.softmax(model(batch), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Train ``config.model`` on ``config.data``; return the run folder."""
    import torch
    from torch import nn

    from meddx import __version__
    from meddx.data.datasets import load_images
    from meddx.data.splits import group_train_val_test_split
    from meddx.evaluation.metrics import compute_metrics
    from meddx.models import create_model

    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    _seed_everything(config.seed)
    sample = load_images(config.data, size=config.size)
    splits = dict(sample.splits)
    if "train" not in splits:
        if "all" not in splits:
            raise ConfigError("data has no 'train' or 'all' split", field="split", path=config.data)
        images, labels = splits.pop("all")
        groups = np.asarray(sample.meta.get("groups", np.arange(len(labels))))
        idx = group_train_val_test_split(labels, groups, val=config.val_fraction, test=0.0, seed=config.seed)
        splits["train"] = (images[idx["train"]], labels[idx["train"]])
        splits["val"] = (images[idx["val"]], labels[idx["val"]])
    if "val" not in splits:
        images, labels = splits["train"]
        idx = group_train_val_test_split(labels, np.arange(len(labels)), val=config.val_fraction, test=0.0,
                                         seed=config.seed)
        splits["train"] = (images[idx["train"]], labels[idx["train"]])
        splits["val"] = (images[idx["val"]], labels[idx["val"]])
    x_train = prepare_arrays(splits["train"][0], config.size)
    y_train = np.asarray(splits["train"][1]).reshape(-1).astype(np.int64)
    x_val = prepare_arrays(splits["val"][0], config.size)
    y_val = np.asarray(splits["val"][1]).reshape(-1).astype(np.int64)
    num_classes = int(max(y_train.max(), y_val.max()) + 1)
    if sample.class_names:
        num_classes = max(num_classes, len(sample.class_names))
    class_names = sample.class_names or [str(i) for i in range(num_classes)]
    in_chans = int(x_train.shape[1])
    mean, std = float(x_train.mean()), float(x_train.std() or 1.0)

    run = Path(config.out) if config.out else _default_run_dir(config)
    run.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")

    model = create_model(config.model, num_classes=num_classes, in_chans=in_chans, pretrained=config.pretrained)
    model = model.to(memory_format=torch.channels_last)
    counts = np.bincount(y_train, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1)) if config.balanced else np.ones(num_classes)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(x_train) / config.batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(config.seed)
    x_train_t = torch.from_numpy(x_train)
    y_train_t = torch.from_numpy(y_train)
    best_auc, best_epoch, stale = -1.0, -1, 0
    history = open(run / "history.jsonl", "w", encoding="utf-8")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc=f"train {config.model}", unit="epoch", leave=False)
    started = time.perf_counter()
    seen = 0
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_train_t), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            if len(index) < 2:
                continue
            batch = x_train_t[index]
            if config.augment:
                batch = _augment(batch, generator)
            batch = ((batch - mean) / std).contiguous(memory_format=torch.channels_last)
            loss = criterion(model(batch), y_train_t[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(index)
            seen += len(index)
        val_metrics = compute_metrics(y_val, _predict(model, x_val, mean, std))
        record = {"epoch": epoch + 1, "loss": total_loss / len(order), **{f"val_{k}": v for k, v in val_metrics.items()}}
        history.write(json.dumps(record) + "\n")
        history.flush()
        log.info("epoch %d loss %.4f val_auc %.4f val_acc %.4f", epoch + 1, record["loss"],
                 val_metrics["auc"], val_metrics["acc"])
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_auc=f"{val_metrics['auc']:.3f}")
            bar.update(1)
        auc = val_metrics["auc"] if not np.isnan(val_metrics["auc"]) else val_metrics["acc"]
        if auc > best_auc:
            best_auc, best_epoch, stale = auc, epoch + 1, 0
            _save_weights(model, run / "model.safetensors")
        else:
            stale += 1
            if stale >= config.patience:
                log.info("early stop at epoch %d (best %d)", epoch + 1, best_epoch)
                break
    elapsed = time.perf_counter() - started
    history.close()
    if bar is not None:
        bar.close()
    package = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": f"{sample.meta.get('dataset', Path(config.data).name)}-{config.model}",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "architecture": config.model,
        "num_classes": num_classes,
        "class_names": class_names,
        "modality": "image",
        "preprocess": {"in_chans": in_chans, "size": int(x_train.shape[-1]), "mean": mean, "std": std,
                       "scale": "divide by 255 (uint8) or 65535 (uint16)"},
        "data": {"source": config.data, "dataset": sample.meta.get("dataset"), "licence": sample.meta.get("licence"),
                 "train": int(len(y_train)), "val": int(len(y_val))},
        "training": {"best_epoch": best_epoch, "best_val_auc": best_auc, "seconds": elapsed,
                     "images_per_second": seen / elapsed if elapsed else None},
    }
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    log.removeHandler(handler)
    handler.close()
    return run


def _save_weights(model: Any, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _default_run_dir(config: TrainConfig) -> Path:
    from meddx.config import home_dir

    stem = Path(config.data).name or config.data
    return home_dir() / "runs" / f"{stem}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
