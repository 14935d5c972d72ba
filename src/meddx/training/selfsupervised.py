"""Self-supervised pretraining (SimCLR) of a backbone on unlabelled medical images.

Labels are not needed: two strongly augmented views of every image are pulled
together and pushed away from the other images of the batch (NT-Xent loss and
projection head from the maintained ``lightly`` library). The views draw what a
new hospital changes: zoom and crop, rotation, flips, contrast, gamma, a coil
bias field, blur, lower resolution and noise (:class:`meddx.preprocess.BatchAugment`),
so the trunk learns features that survive them.

The pool: every image of the pretraining tasks (their labels unused) plus any
``unlabelled`` catalogue image set or folder (its training split only: never its
test split). The transfer targets (:data:`~meddx.training.pretrain_data.PRETRAIN_TARGETS`)
stay out unless ``exclude`` is emptied, as for supervised pretraining.

How good the features are is measured without fine-tuning: a logistic-regression
probe on the frozen features of each task, trained on its training groups and
scored on its held-out groups (``probe_balanced_accuracy`` in the package), the
same hold-out as :func:`meddx.training.pretrain.pretrain` uses for its heads.

The run folder is a backbone package exactly like the supervised one (``kind``
``backbone``, trunk weights in ``model.safetensors``), so ``meddx train
--pretrained RUN`` accepts either.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.training.pretrain import (PretrainConfig, _embed, _save, _warmup_cosine, balanced_accuracy, head_keys,
                                     open_run, start)
from meddx.training.pretrain_data import TaskData, holdout_mask, load_task

log = logging.getLogger("meddx.training.selfsupervised")

PROJECTION_DIM = 64
"""Output size of the SimCLR projection head (discarded after pretraining)."""


def view_augment(size: int) -> Any:
    """Two views of one image differ by what another scanner or protocol would change."""
    from meddx.preprocess import BatchAugment

    fine = size >= 48
    return BatchAugment(hflip=0.5, degrees=20.0, translate=0.15, scale=(0.8, 1.8), brightness=0.35,
                        contrast=0.35, gamma=(0.6, 1.7), bias_field=0.35, blur_sigma=1.5 if fine else 0.0,
                        low_res=0.4 if fine else 1.0, noise=0.05, p_intensity=0.6)


def unlabelled_pool(config: PretrainConfig) -> tuple[list[TaskData], list[tuple[str, np.ndarray]]]:
    """The tasks (for the probe) and every image source of the pool as ``(name, uint8 images)``."""
    from meddx.data.datasets import load_images
    from meddx.preprocess.arrays import prepare_arrays

    tasks = [load_task(name, size=config.size, cap=config.max_per_task, seed=config.seed, exclude=config.exclude)
             for name in config.tasks]
    sources = [(f"task:{t.name}", t.images) for t in tasks]
    for name in config.unlabelled:
        if name in config.exclude:
            raise ConfigError(f"unlabelled set {name!r} is excluded from pretraining", field="unlabelled",
                              hint="Drop it, or remove it from --exclude if it is not a benchmark target")
        sample = load_images(name, size=config.size)
        split = "train" if "train" in sample.splits else "all"
        if split not in sample.splits:
            raise ConfigError(f"{name} has no train split to pretrain on (its test split is never used)",
                              field="unlabelled")
        x = prepare_arrays(np.asarray(sample.splits[split][0]), config.size)  # float (N, C, S, S) in [0, 1]
        grey = (x.mean(axis=1) * 255).round().clip(0, 255).astype(np.uint8)
        if config.max_per_task and len(grey) > config.max_per_task:
            grey = grey[np.random.default_rng(config.seed).choice(len(grey), config.max_per_task, replace=False)]
        sources.append((f"unlabelled:{Path(name).name}", grey))
    return tasks, sources


def _probe(trunk: Any, tasks: list[TaskData], holdout: float, mean: float, std: float) -> dict[str, dict[str, float]]:
    """Balanced accuracy of a logistic-regression probe on frozen features, per task (held-out groups)."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    trunk.eval()
    out = {}
    for task in tasks:
        held = holdout_mask(task.groups, holdout, task.dataset)
        with torch.inference_mode():
            x = torch.from_numpy(task.images[:, None]).float() / 255.0
            feats = torch.cat([_embed(trunk, ((x[i:i + 256] - mean) / std).contiguous())
                               for i in range(0, len(x), 256)]).numpy()
        if held.all() or not held.any() or len(np.unique(task.labels[~held])) < 2:
            continue
        scaler = StandardScaler().fit(feats[~held])
        clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(feats[~held]),
                                                                            task.labels[~held])
        pred = clf.predict(scaler.transform(feats[held]))
        out[task.name] = {"balanced_acc": balanced_accuracy(pred, task.labels[held]), "n_heldout": int(held.sum())}
    return out


def pretrain_simclr(config: PretrainConfig, *, progress: bool = True) -> Path:
    """SimCLR-pretrain ``config.model`` on the unlabelled pool; return the run folder (a backbone package)."""
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    from meddx import __version__
    from meddx.models import create_model

    generator, rng = start(config)

    started_loading = time.perf_counter()
    tasks, sources = unlabelled_pool(config)
    pool = np.concatenate([images for _, images in sources])
    load_seconds = time.perf_counter() - started_loading
    if len(pool) < config.batch_size:
        raise ConfigError(f"{len(pool)} images are fewer than one batch of {config.batch_size}", field="batch_size",
                          hint="Lower --batch-size or add --unlabelled images")
    mean, std = float(pool.mean() / 255.0), float(pool.std() / 255.0 or 1.0)

    run, handler = open_run(config, log)
    for name, images in sources:
        log.info("pool %s: %d images", name, len(images))

    trunk = create_model(config.model, num_classes=2, in_chans=1)
    drop = head_keys(config.model)
    with torch.no_grad():
        num_features = int(_embed(trunk.eval(), torch.zeros(2, 1, config.size, config.size)).shape[1])
    projection = SimCLRProjectionHead(num_features, num_features, PROJECTION_DIM)
    criterion = NTXentLoss(temperature=config.ssl_temperature)
    params = list(trunk.parameters()) + list(projection.parameters())
    steps_per_epoch = max(1, len(pool) // config.batch_size)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.epochs * steps_per_epoch))
    augment = view_augment(config.size)
    images = torch.from_numpy(pool)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc=f"simclr {config.model}", unit="epoch", leave=False)
    history = open(run / "history.jsonl", "w", encoding="utf-8")
    started, seen, loss_value = time.perf_counter(), 0, float("nan")
    for epoch in range(config.epochs):
        trunk.train()
        projection.train()
        order = rng.permutation(len(pool))
        total, epoch_started = 0.0, time.perf_counter()
        for step in range(steps_per_epoch):
            batch = images[order[step * config.batch_size:(step + 1) * config.batch_size]][:, None].float() / 255.0
            views = [((augment(batch, generator) - mean) / std).contiguous() for _ in range(2)]
            z = projection(_embed(trunk, torch.cat(views))).split(len(batch))
            loss = criterion(z[0], z[1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.item())
            seen += 2 * len(batch)
        loss_value = total / steps_per_epoch
        record = {"epoch": epoch + 1, "loss": loss_value, "seconds": time.perf_counter() - epoch_started}
        history.write(json.dumps(record) + "\n")
        history.flush()
        log.info("epoch %d NT-Xent %.4f (%.1f s)", epoch + 1, loss_value, record["seconds"])
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.3f}")
            bar.update(1)
    elapsed = time.perf_counter() - started
    history.close()
    if bar is not None:
        bar.close()
    probe = _probe(trunk, tasks, config.holdout, mean, std)
    log.info("linear probe (held-out balanced accuracy): %s",
             " ".join(f"{k}={v['balanced_acc']:.3f}" for k, v in probe.items()))

    trunk_state = {k: v.detach().contiguous() for k, v in trunk.state_dict().items() if k not in drop}
    _save(trunk_state, run / "model.safetensors")
    from meddx.data.catalogue import get_dataset

    datasets = sorted({t.dataset for t in tasks} | {n for n in config.unlabelled if not Path(n).exists()})
    package = {
        "format": "meddx-model/1",
        "kind": "backbone",
        "meddx_version": __version__,
        "name": f"simclr-{config.model}-{config.size}px",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "architecture": config.model,
        "modality": "image",
        "num_features": num_features,
        "preprocess": {"in_chans": 1, "size": config.size, "mean": mean, "std": std,
                       "scale": "divide by 255 (uint8), grey"},
        "weights": {"trunk": "model.safetensors", "trunk_tensors": len(trunk_state), "dropped_classifier_keys": drop},
        "objective": (f"self-supervised SimCLR (lightly NT-Xent, temperature {config.ssl_temperature}; two views "
                      "with scanner-shift augmentation); labels unused"),
        "pool": [{"source": name, "images": int(len(x))} for name, x in sources],
        "tasks": [{"name": t.name, "dataset": t.dataset, "images": int(len(t.labels)), "licence": t.licence,
                   "probe_balanced_accuracy": probe.get(t.name, {}).get("balanced_acc"),
                   "probe_heldout": probe.get(t.name, {}).get("n_heldout")} for t in tasks],
        "excluded_datasets": list(config.exclude),
        "data": {"licences": {d: get_dataset(d).licence for d in datasets}},
        "training": {"epochs": config.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": config.batch_size,
                     "final_loss": loss_value, "seconds": elapsed, "load_seconds": load_seconds,
                     "images_per_second": seen / elapsed if elapsed else None, "threads": torch.get_num_threads()},
    }
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    log.removeHandler(handler)
    handler.close()
    return run


__all__ = ["pretrain_simclr", "unlabelled_pool", "view_augment"]
