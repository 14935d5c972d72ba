"""A tiny training loop for the 3-D (and 2-D) networks, with the metrics that judge them.

``fit_segmenter`` trains with MONAI's ``DiceCELoss`` (softmax, one-hot
targets), ``fit_classifier`` with cross-entropy; both use Adam, a fixed seed
and one torch thread by default (small volumes: a thread pool costs more than
it gains). Inputs are ``(n, 1, D, H, W)`` float volumes (``(n, 1, H, W)`` for
2-D networks), z-scored per volume with :func:`normalise`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, LabelShapeError


def normalise(volumes: np.ndarray) -> np.ndarray:
    """Z-score each volume (over all but the first axis); constant volumes become 0."""
    x = np.asarray(volumes, dtype=np.float32)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _loop(model: Any, x: np.ndarray, y: np.ndarray, loss_fn: Any, *, epochs: int, lr: float, batch_size: int,
          seed: int, threads: int | None, time_limit_s: float | None) -> Any:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs, targets = torch.from_numpy(normalise(x)), torch.from_numpy(y)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.monotonic()
    with _threads(threads):
        model.train()
        for _ in range(epochs):
            order = rng.permutation(len(inputs))
            for begin in range(0, len(order), batch_size):
                idx = torch.from_numpy(order[begin : begin + batch_size])
                optimiser.zero_grad()
                loss = loss_fn(model(inputs[idx]), targets[idx])
                loss.backward()
                optimiser.step()
            if time_limit_s is not None and time.monotonic() - start > time_limit_s:
                break
        model.eval()
    return model


def fit_segmenter(
    volumes: np.ndarray,
    masks: np.ndarray,
    *,
    model: Any = None,
    n_classes: int = 2,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 4,
    seed: int = 0,
    threads: int | None = 1,
    time_limit_s: float | None = None,
) -> Any:
    """Train a segmenter (default :func:`~meddx.tasks.volume.networks.segmenter_3d`) on ``volumes`` and ``masks``.

    ``masks`` hold class indices (0 = background) shaped like ``volumes``
    (``(n, 1, D, H, W)``). ``time_limit_s`` stops after the epoch that passes it.
    """
    from monai.losses import DiceCELoss

    from meddx.tasks.volume.networks import segmenter_3d

    volumes, masks = np.asarray(volumes), np.asarray(masks)
    if volumes.shape != masks.shape:
        raise LabelShapeError(f"masks have shape {masks.shape} but volumes {volumes.shape}", field="masks",
                              hint="Give one mask per volume, of the same shape (n, 1, D, H, W)")
    if int(masks.max(initial=0)) >= n_classes or int(masks.min(initial=0)) < 0:
        raise ConfigError(f"mask values run to {int(masks.max())} but n_classes is {n_classes}", field="n_classes",
                          hint="Pass n_classes = background + number of classes")
    model = model if model is not None else segmenter_3d(n_classes)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    return _loop(model, volumes, masks.astype(np.int64), loss, epochs=epochs, lr=lr, batch_size=batch_size,
                 seed=seed, threads=threads, time_limit_s=time_limit_s)


def fit_classifier(
    volumes: np.ndarray,
    labels: np.ndarray,
    *,
    model: Any = None,
    n_classes: int = 2,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 8,
    seed: int = 0,
    threads: int | None = 1,
    time_limit_s: float | None = None,
) -> Any:
    """Train a volume classifier (default :func:`~meddx.tasks.volume.networks.classifier_3d`) with cross-entropy."""
    import torch

    from meddx.tasks.volume.networks import classifier_3d

    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(volumes),):
        raise LabelShapeError(f"{labels.shape} labels for {len(volumes)} volumes", field="labels",
                              hint="Give one class index per volume")
    model = model if model is not None else classifier_3d(n_classes)
    return _loop(model, np.asarray(volumes), labels, torch.nn.CrossEntropyLoss(), epochs=epochs, lr=lr,
                 batch_size=batch_size, seed=seed, threads=threads, time_limit_s=time_limit_s)


def _batched(model: Any, volumes: np.ndarray, batch_size: int, threads: int | None) -> np.ndarray:
    import torch

    x = torch.from_numpy(normalise(volumes))
    outputs = []
    with _threads(threads), torch.no_grad():
        model.eval()
        for begin in range(0, len(x), batch_size):
            outputs.append(torch.softmax(model(x[begin : begin + batch_size]), dim=1).numpy())
    return np.concatenate(outputs)


def predict_proba(model: Any, volumes: np.ndarray, *, batch_size: int = 8, threads: int | None = 1) -> np.ndarray:
    """Class probabilities ``(n, classes)`` for a classifier, or ``(n, classes, *spatial)`` for a segmenter."""
    return _batched(model, np.asarray(volumes), batch_size, threads)


def predict_mask(model: Any, volumes: np.ndarray, *, batch_size: int = 4, threads: int | None = 1) -> np.ndarray:
    """The most probable class per voxel: ``(n, *spatial)`` integers (0 = background)."""
    return predict_proba(model, volumes, batch_size=batch_size, threads=threads).argmax(axis=1).astype(np.uint8)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(prediction) > 0, np.asarray(truth) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


__all__ = ["dice", "fit_classifier", "fit_segmenter", "normalise", "predict_mask", "predict_proba"]
