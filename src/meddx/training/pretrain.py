"""Pretrain a backbone on medical images with supervised multi-task heads.

One trunk from the model registry, one linear head per task (see
:mod:`meddx.training.pretrain_data`). Every step draws an equal share of the batch
from each task, runs the trunk once on the whole mixed batch (so BatchNorm sees
every domain), and averages the class-weighted cross-entropy of each task on
its own head. Each task keeps about 15% of its patients (groups) apart to report
a held-out accuracy per epoch.

The run folder is a model package of ``"kind": "backbone"``::

    model.safetensors  the trunk only: the keys of ``create_model(arch, ...)``
                       without its classifier, so ``pretrained=<folder>`` loads
                       the trunk and leaves the new head at its initialisation
    heads.safetensors  the task heads (``<task>.weight`` / ``<task>.bias``)
    package.json       format, kind, architecture, preprocessing, tasks, held-out
                       accuracy, seconds, licences, excluded data sets
    config.json        the resolved configuration
    history.jsonl      one line of losses and held-out accuracies per epoch
    train.log          the log

The benchmark targets (BreastMNIST, brain-tumor-mri-navoneel) are never used.
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
from meddx.training.pretrain_data import DEFAULT_TASKS, PRETRAIN_TARGETS, TaskData, holdout_mask, load_task

log = logging.getLogger("meddx.training.pretrain")


@dataclass
class PretrainConfig:
    """What to pretrain and on what.

    Attributes:
        model: a name from :func:`meddx.models.list_models` (``cnn-small``,
            ``resnet18-28`` for 28 px, ``resnet18`` for 64-224 px, ...).
        size: image side in pixels; every task is built at this size (grey, 1 channel).
        tasks: task names from :data:`meddx.training.pretrain_data.TASKS`.
        epochs: passes over the (capped) training images of all tasks.
        max_per_task: cap on images per task (class-balanced draw); None = no cap.
        batch_size: images per step, shared equally between tasks.
        lr / weight_decay: AdamW settings; linear warm-up (20% of steps), then cosine decay.
        holdout: share of each task's groups (patients, source images, children)
            held out for the per-task accuracy.
        augment: random shifts and intensity jitter (flips only where they keep the label).
        exclude: data sets that must not be used (the transfer benchmark's targets).
        threads: torch CPU threads (None = all cores).
        objective: ``supervised`` (one head per task, this module) or ``simclr``
            (self-supervised on the task images with labels unused, plus ``unlabelled``:
            :mod:`meddx.training.selfsupervised`).
        unlabelled: extra catalogue image sets or folders for ``simclr`` (training split only).
        ssl_temperature: NT-Xent temperature of ``simclr``.
        out: run folder (default ``$MEDDX_HOME/runs/pretrain-<model>-<size>px-<time>``).
    """

    model: str = "cnn-small"
    size: int = 64
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    epochs: int = 10
    max_per_task: int | None = 3000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    holdout: float = 0.15
    augment: bool = True
    exclude: list[str] = field(default_factory=lambda: list(PRETRAIN_TARGETS))
    seed: int = 0
    threads: int | None = None
    objective: str = "supervised"
    unlabelled: list[str] = field(default_factory=list)
    ssl_temperature: float = 0.2
    out: str | None = None


OBJECTIVES = ("supervised", "simclr")
"""Pretraining objectives ``meddx pretrain --objective`` accepts."""


def _check(config: PretrainConfig) -> None:
    if config.objective not in OBJECTIVES:
        raise ConfigError(f"unknown pretraining objective {config.objective!r}", field="objective",
                          hint=f"Use one of: {', '.join(OBJECTIVES)}")
    if config.objective == "supervised" and config.unlabelled:
        raise ConfigError("unlabelled images need a self-supervised objective", field="unlabelled",
                          hint="Add --objective simclr, or drop --unlabelled")
    if not config.ssl_temperature > 0:
        raise ConfigError(f"ssl_temperature must be positive, not {config.ssl_temperature}", field="ssl_temperature")
    if not config.tasks:
        raise ConfigError("no pretraining task given", field="tasks", hint=f"Use some of: {', '.join(DEFAULT_TASKS)}")
    if len(set(config.tasks)) != len(config.tasks):
        raise ConfigError(f"a task is listed twice: {', '.join(config.tasks)}", field="tasks")
    for name, value, low in (("epochs", config.epochs, 1), ("batch_size", config.batch_size, 2),
                             ("size", config.size, 8)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, not {value}", field=name)
    if not 0 < config.holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), not {config.holdout}", field="holdout")
    if config.batch_size < 2 * len(config.tasks):
        raise ConfigError(f"batch_size {config.batch_size} is too small for {len(config.tasks)} tasks",
                          field="batch_size", hint="Use at least 2 images per task and step")


def start(config: PretrainConfig) -> tuple[Any, np.random.Generator]:
    """Check ``config``, set the torch threads and seeds; the (torch, numpy) generators of the run."""
    import torch

    _check(config)
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    return torch.Generator().manual_seed(config.seed), np.random.default_rng(config.seed)


def open_run(config: PretrainConfig, logger: logging.Logger) -> tuple[Path, logging.Handler]:
    """Create the run folder, write ``config.json`` and send ``logger`` to its ``train.log`` too."""
    run = Path(config.out) if config.out else _default_run_dir(config)
    run.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    return run, handler


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``truth``."""
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


def head_keys(arch: str) -> list[str]:
    """State-dict keys of ``arch``'s classifier: those whose shape depends on ``num_classes``."""
    from meddx.models import create_model

    two = {k: tuple(v.shape) for k, v in create_model(arch, num_classes=2, in_chans=1).state_dict().items()}
    three = {k: tuple(v.shape) for k, v in create_model(arch, num_classes=3, in_chans=1).state_dict().items()}
    return sorted(k for k in two if three.get(k) != two[k])


def _embed(trunk: Any, x: Any) -> Any:
    """Pooled features of ``trunk`` (timm: ``forward_head(pre_logits=True)``; meddx CNNs: ``forward_features``)."""
    features = trunk.forward_features(x)
    if hasattr(trunk, "forward_head"):
        return trunk.forward_head(features, pre_logits=True)
    return features.flatten(2).mean(-1) if features.ndim > 2 else features


def _build_net(trunk: Any, num_features: int, tasks: list[TaskData]) -> Any:
    from torch import nn

    class MultiTaskNet(nn.Module):
        """A shared trunk and one linear head per task."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk
            self.heads = nn.ModuleDict({t.name: nn.Linear(num_features, len(t.class_names)) for t in tasks})

        def forward(self, x: Any) -> Any:
            return _embed(self.trunk, x)

    return MultiTaskNet()


def _warmup_cosine(total: int, warmup: float = 0.2) -> Any:
    """LR factor per step: linear warm-up over ``warmup`` of the steps, then cosine to zero (any ``total`` ≥ 1)."""
    import math

    ramp = max(1, round(total * warmup))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp + 1) / (total - ramp + 1))))

    return factor


def _augment(batch: Any, flip: Any, generator: Any) -> Any:
    """Per sample: a shift of up to 1/10 of the side, ±10% brightness/contrast, flips where ``flip``."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = batch.shape
    for dim in (-1, -2):
        do = flip & (torch.rand(n, generator=generator) < 0.5)
        batch = torch.where(do[:, None, None, None], batch.flip(dim), batch)
    pad = max(1, h // 10)
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = torch.arange(h)[None, :] + dy[:, None]
    cols = torch.arange(w)[None, :] + dx[:, None]
    index = torch.arange(n)[:, None, None]
    batch = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    centre = batch.mean(dim=(1, 2, 3), keepdim=True)
    return ((batch - centre) * contrast + centre + brightness).clamp(0, 1).contiguous()


def _evaluate(net: Any, task: TaskData, index: np.ndarray, mean: float, std: float) -> dict[str, float]:
    """Accuracy and balanced accuracy of ``task``'s head on ``index``."""
    import torch

    if len(index) == 0:
        return {"acc": float("nan"), "balanced_acc": float("nan"), "n": 0}
    net.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(index), 256):
            x = torch.from_numpy(task.images[index[start:start + 256]][:, None]).float() / 255.0
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            preds.append(net.heads[task.name](net(x)).argmax(1).numpy())
    pred = np.concatenate(preds)
    truth = task.labels[index]
    return {"acc": float(np.mean(pred == truth)), "balanced_acc": balanced_accuracy(pred, truth), "n": int(len(index))}


def pretrain(config: PretrainConfig, *, progress: bool = True) -> Path:
    """Pretrain ``config.model`` on ``config.tasks``; return the run folder (a backbone package)."""
    import torch
    from torch import nn

    from meddx import __version__
    from meddx.models import create_model

    generator, rng = start(config)

    started_loading = time.perf_counter()
    tasks = [load_task(name, size=config.size, cap=config.max_per_task, seed=config.seed, exclude=config.exclude)
             for name in config.tasks]
    load_seconds = time.perf_counter() - started_loading
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task in tasks:
        held = holdout_mask(task.groups, config.holdout, task.dataset)
        train_idx = np.flatnonzero(~held)
        if len(train_idx) < 2:
            raise ConfigError(f"task {task.name!r} has fewer than 2 training images", field="max_per_task",
                              hint="Raise --max-per-task")
        splits[task.name] = (train_idx, np.flatnonzero(held))
    pixels = np.concatenate([t.images[splits[t.name][0]].reshape(-1) for t in tasks])
    mean, std = float(pixels.mean() / 255.0), float(pixels.std() / 255.0 or 1.0)
    del pixels

    run, handler = open_run(config, log)
    for task in tasks:
        log.info("task %s (%s): %s, train %d, held out %d", task.name, task.dataset, task.counts(),
                 len(splits[task.name][0]), len(splits[task.name][1]))

    trunk = create_model(config.model, num_classes=2, in_chans=1)
    drop = head_keys(config.model)
    with torch.no_grad():
        num_features = int(_embed(trunk.eval(), torch.zeros(2, 1, config.size, config.size)).shape[1])
    net = _build_net(trunk, num_features, tasks).to(memory_format=torch.channels_last)
    criteria = {}
    for task in tasks:
        y = task.labels[splits[task.name][0]]
        counts = np.bincount(y, minlength=len(task.class_names)).astype(np.float64)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        criteria[task.name] = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    per_task = max(2, config.batch_size // len(tasks))
    total_train = sum(len(splits[t.name][0]) for t in tasks)
    steps_per_epoch = max(1, int(np.ceil(total_train / (per_task * len(tasks)))))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.epochs * steps_per_epoch))
    images = {t.name: torch.from_numpy(t.images) for t in tasks}
    labels = {t.name: torch.from_numpy(t.labels) for t in tasks}
    flips = torch.tensor(np.repeat([t.flip for t in tasks], per_task))
    queues: dict[str, list[int]] = {t.name: [] for t in tasks}

    def draw(task: TaskData) -> np.ndarray:
        """The next ``per_task`` training indices of ``task``: a fresh permutation each time one runs out."""
        queue = queues[task.name]
        while len(queue) < per_task:
            queue.extend(rng.permutation(splits[task.name][0]).tolist())
        taken, queues[task.name] = queue[:per_task], queue[per_task:]
        return np.asarray(taken)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc=f"pretrain {config.model}", unit="epoch", leave=False)
    history = open(run / "history.jsonl", "w", encoding="utf-8")
    started, seen, results = time.perf_counter(), 0, {}
    for epoch in range(config.epochs):
        net.train()
        sums = {t.name: 0.0 for t in tasks}
        epoch_started = time.perf_counter()
        for _ in range(steps_per_epoch):
            picks = [draw(t) for t in tasks]
            batch = torch.cat([images[t.name][p] for t, p in zip(tasks, picks, strict=True)])[:, None].float() / 255.0
            if config.augment:
                batch = _augment(batch, flips, generator)
            batch = ((batch - mean) / std).contiguous(memory_format=torch.channels_last)
            features = net(batch).split(per_task)
            losses = [criteria[t.name](net.heads[t.name](f), labels[t.name][p])
                      for t, f, p in zip(tasks, features, picks, strict=True)]
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for t, value in zip(tasks, losses, strict=True):
                sums[t.name] += float(value.item())
            seen += len(batch)
        train_seconds = time.perf_counter() - epoch_started
        results = {t.name: _evaluate(net, t, splits[t.name][1], mean, std) for t in tasks}
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": sum(sums.values()) / (steps_per_epoch * len(tasks)),
                                  "seconds": train_seconds}
        for t in tasks:
            record[f"loss_{t.name}"] = sums[t.name] / steps_per_epoch
            record[f"heldout_acc_{t.name}"] = results[t.name]["acc"]
            record[f"heldout_balanced_acc_{t.name}"] = results[t.name]["balanced_acc"]
        history.write(json.dumps(record) + "\n")
        history.flush()
        log.info("epoch %d loss %.4f %s (%.1f s)", epoch + 1, record["loss"],
                 " ".join(f"{n}={r['balanced_acc']:.3f}" for n, r in results.items()), train_seconds)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            bar.update(1)
    elapsed = time.perf_counter() - started
    history.close()
    if bar is not None:
        bar.close()

    trunk_state = {k: v.detach().contiguous() for k, v in trunk.state_dict().items() if k not in drop}
    heads_state = {f"{name}.{k}": v.detach().contiguous()
                   for name, head in net.heads.items() for k, v in head.state_dict().items()}
    _save(trunk_state, run / "model.safetensors")
    _save(heads_state, run / "heads.safetensors")
    from meddx.data.catalogue import get_dataset

    package = {
        "format": "meddx-model/1",
        "kind": "backbone",
        "meddx_version": __version__,
        "name": f"pretrain-{config.model}-{config.size}px",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "architecture": config.model,
        "modality": "image",
        "num_features": num_features,
        "preprocess": {"in_chans": 1, "size": config.size, "mean": mean, "std": std,
                       "scale": "divide by 255 (uint8), grey"},
        "weights": {"trunk": "model.safetensors", "heads": "heads.safetensors", "trunk_tensors": len(trunk_state),
                    "dropped_classifier_keys": drop},
        "objective": "supervised multi-task (one linear head per task, equal share of each batch)",
        "tasks": [
            {"name": t.name, "dataset": t.dataset, "class_names": t.class_names, "counts": t.counts(),
             "train": int(len(splits[t.name][0])), "heldout": int(len(splits[t.name][1])),
             "heldout_accuracy": results[t.name]["acc"], "heldout_balanced_accuracy": results[t.name]["balanced_acc"],
             "licence": t.licence}
            for t in tasks
        ],
        "excluded_datasets": list(config.exclude),
        "data": {"licences": {t.dataset: get_dataset(t.dataset).licence for t in tasks}},
        "training": {"epochs": config.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": per_task * len(tasks),
                     "seconds": elapsed, "load_seconds": load_seconds,
                     "images_per_second": seen / elapsed if elapsed else None, "threads": torch.get_num_threads()},
    }
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    log.removeHandler(handler)
    handler.close()
    return run


def _save(state: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _default_run_dir(config: PretrainConfig) -> Path:
    from meddx.config import home_dir

    prefix = "pretrain" if config.objective == "supervised" else config.objective
    return home_dir() / "runs" / f"{prefix}-{config.model}-{config.size}px-{time.strftime('%Y%m%d-%H%M%S')}"


__all__ = ["OBJECTIVES", "PretrainConfig", "balanced_accuracy", "head_keys", "open_run", "pretrain", "start"]
