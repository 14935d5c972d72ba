"""Train an image classifier into a run folder that ``evaluate``/``predict`` accept.

A run folder holds everything needed to reproduce, resume and use the model::

    config.json        the resolved configuration (seed included)
    history.jsonl      one line of metrics per epoch
    model.safetensors  the best weights (highest validation AUC)
    last.pt            model, optimiser, scheduler and RNG state after the last epoch (resume)
    package.json       model name, classes, preprocessing, data and split, metrics
    train.log          the log

Transfer learning: ``pretrained`` starts from a meddx backbone package, a
state-dict file or (through timm) ImageNet weights; ``freeze="backbone"`` trains
the head only (linear probe); ``unfreeze_epoch=k`` keeps the backbone frozen for
the first k epochs (gradual unfreezing); ``backbone_lr_mult`` gives the backbone
a lower learning rate than the new head.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.inference.trust import fit_trust
from meddx.preprocess.arrays import prepare_arrays  # noqa: F401 - re-exported: benches and tests import it from here

log = logging.getLogger("meddx.training")

SAMPLERS = ("weighted-loss", "balanced", "none")
SCHEDULES = ("onecycle", "cosine", "step")
FREEZE = ("none", "backbone")
EXPORTS = ("onnx", "none")
RECIPES = ("auto", "standard", "small-data", "small-ensemble")
SELECTS = ("best", "last")
AUGMENT_PROFILES = ("standard", "shift")
SMALL_DATA_MAX = 2000
"""``recipe="auto"`` picks the small-data recipe below this many labelled training + validation images ..."""
SMALL_DATA_MIN = 100
"""... and from this many up: below 100 images five folds of under 20 cases train nothing usable, so ``auto``
keeps the fast standard recipe (and the package warns that its trust layer rests on too few cases)."""
SMALL_DATA_MIN_SIDE = 33
"""... for images of at least this side. Thumbnails (MedMNIST's 28 px) get ``small-ensemble`` instead: on
BreastMNIST the small-data recipe gave test AUC 0.839 [0.753, 0.906] against the standard one's 0.891
(``bench/results/small_data.md``); its crop, blur and low-resolution parts do not apply at 28 px anyway."""
SMALL_ENSEMBLE = 5
"""``small-ensemble`` (``auto`` for SMALL_DATA_MIN..SMALL_DATA_MAX thumbnails): the standard recipe trained as a
deep ensemble of this many seeds. On BreastMNIST single models' test AUC ranged 0.84-0.89 across seeds (validation
AUC 0.89-0.94 on 78 cases: too few to pick the lucky seed); averaging five removes most of that variance, gives
the trust layer ensemble uncertainty, and costs about 2 minutes on 2 CPU cores at 28 px."""
SMALL_DATA_FOLDS = 5
SMALL_DATA_EPOCHS = 25
"""The small-data recipe trains each fold model for at most this many epochs ..."""
SMALL_DATA_IMAGES = 5000
"""... and shows it about this many training images in all (epochs = ceil(5000 / fold training images)): five
members must train on 2 CPU cores, and BreastMNIST's (the demo's) about as fast as its old single model
(brain MRI, 202 images a fold: 25 epochs; BreastMNIST, 499: 11 epochs at batch 64)."""
SMALL_BATCH_BELOW = 400
"""Fold training sets smaller than this train at batch ≤ 32 (more steps per epoch on a few hundred images)."""
SMALL_DATA_MAX_SIZE = 64
"""The small-data recipe resizes larger images to this side (a 5-model CV ensemble must train on 2 CPU cores)."""
SMALL_VAL_N = 200
"""Below this many validation cases the package records that its calibration and conformal guarantees are loose
(see :data:`meddx.inference.trust.SMALL_N`); the small-data recipe fits them on out-of-fold predictions instead."""


@dataclass
class TrainConfig:
    """What to train on and how.

    Attributes:
        data: a catalogue image set (``breastmnist``) or a folder with ``labels.csv``.
        model: a name from :func:`meddx.models.list_models`.
        epochs / patience: maximum epochs; stop after ``patience`` epochs without a
            better validation AUC.
        lr / weight_decay / schedule: AdamW with a one-cycle, cosine or ``step``
            schedule (×0.1 at 50% and 75% of the epochs, as in MedMNIST v2).
        ema: keep an exponential moving average of the weights with this decay per
            step (0 turns it off) and validate, select and save the averaged model:
            steadier than the raw weights on small, noisy validation sets.
        label_smoothing: cross-entropy label smoothing.
        head / drop_rate: ``linear`` or ``bayes`` (a Bayes-by-backprop last layer, for
            scarce data) and the dropout in front of it (MC-dropout needs it > 0).
        calibration / conformal_alpha / target_risk: the trust layer fitted on the
            validation split after training (see :mod:`meddx.inference.trust`).
        ood_flag_rate: share of in-distribution (validation) inputs the out-of-distribution
            detector may flag; its threshold is chosen for this rate (see :mod:`meddx.trust.ood`).
        holdout_fraction: carve this share of the training split out as a hold-out test
            set, disjoint by patient (by near-duplicate image group when the data have
            no patient ids), never used for fitting or calibration; its indices into the
            training split go to ``holdout.json``.
        ensemble: train this many members (seeds ``seed``, ``seed+1``, ...) on the
            same split and package them as one deep ensemble.
        sampler: ``weighted-loss`` (inverse class frequency in the loss),
            ``balanced`` (class-balanced sampling) or ``none``.
        augment / augment_geometry / hflip: batched random flips + intensity jitter, and
            (with ``augment_geometry``) small rotations, shifts and zooms, which
            resample, and so blur, very small images such as 28 px MedMNIST.
        shift_px: with ``augment``, also shift each image by up to this many whole pixels
            (edge-padded; no interpolation, so no blur).
        size: resize images to ``size``×``size`` (None keeps the data's size).
        label_fraction: train on this share of the training labels (stratified).
        val_fraction: for data without a validation split, the share of groups held out.
        pretrained: weights to start from (see module docstring).
        freeze / unfreeze_epoch / backbone_lr_mult: transfer-learning options.
        amp: mixed precision; None turns it on where it helps (CUDA).
        resume: a run folder whose ``last.pt`` to continue from.
        export: ``onnx`` also writes ``model.onnx`` (checked against the torch model),
            which predictions run on without importing torch; ``none`` skips it.
        out: the run folder (default ``$MEDDX_HOME/runs/<data>-<model>-<time>``).
        recipe: ``standard`` (the fields as given), ``small-data`` (see :func:`resolve_recipe`: a
            5-fold cross-validated ensemble over train+validation, fixed epochs, shift augmentation,
            foreground crop on dark-background images, trust layer fitted on out-of-fold
            predictions) or ``auto``: small-data for 100 to 1,999 labelled train + val images
            of at least 33 px (so not for 28-px MedMNIST).
        cv_folds: train one member per fold of a group k-fold over train+validation and package
            them as an ensemble; each member is validated on its own held-out fold, whose
            predictions (out-of-fold, OOF) fit the ensemble's trust layer (0 or 1: off).
        select: ``best`` keeps the epoch with the best validation AUC; ``last`` keeps the last
            epoch (no early stopping), so the validation fold is never used for selection and its
            predictions stay honest out-of-fold estimates.
        augment_profile: ``standard`` (:class:`~meddx.preprocess.BatchAugment` defaults) or
            ``shift`` (:func:`~meddx.preprocess.shift_augment`: intensity, gamma, bias field, blur,
            low resolution, noise against scanner shift).
    """

    data: str
    model: str = "cnn-small"
    epochs: int = 40
    patience: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    sampler: str = "weighted-loss"
    augment: bool = True
    augment_geometry: bool = True
    hflip: float = 0.5
    shift_px: int = 0
    size: int | None = None
    label_fraction: float = 1.0
    val_fraction: float = 0.15
    seed: int = 0
    pretrained: str | None = None
    freeze: str = "none"
    unfreeze_epoch: int = 0
    backbone_lr_mult: float = 1.0
    ema: float = 0.0
    label_smoothing: float = 0.0
    head: str = "linear"
    drop_rate: float | None = None
    calibration: str = "auto"
    conformal_alpha: float = 0.1
    target_risk: float = 0.05
    ood_flag_rate: float = 0.05
    ensemble: int = 1
    split_seed: int | None = None
    holdout_fraction: float = 0.0
    amp: bool | None = None
    threads: int | None = None
    device: str = "auto"
    resume: str | None = None
    export: str = "onnx"
    out: str | None = None
    recipe: str = "auto"
    cv_folds: int = 0
    select: str = "best"
    augment_profile: str = "standard"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name, value, allowed in (("sampler", self.sampler, SAMPLERS), ("schedule", self.schedule, SCHEDULES),
                                     ("freeze", self.freeze, FREEZE), ("export", self.export, EXPORTS),
                                     ("recipe", self.recipe, RECIPES), ("select", self.select, SELECTS),
                                     ("augment_profile", self.augment_profile, AUGMENT_PROFILES)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}", field=name)
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {self.label_fraction}", field="label_fraction")
        if not 0 <= self.shift_px <= 16:
            raise ConfigError(f"shift_px must be in [0, 16], got {self.shift_px}", field="shift_px",
                              hint="2-4 pixels suit 28-px images")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}", field="ema",
                              hint="Typical decays are 0.99 to 0.999; 0 turns averaging off")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
                              field="label_smoothing")
        if not 0 <= self.holdout_fraction < 0.5:
            raise ConfigError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction}",
                              field="holdout_fraction")
        if not 0 < self.ood_flag_rate < 0.5:
            raise ConfigError(f"ood_flag_rate must be in (0, 0.5), got {self.ood_flag_rate}", field="ood_flag_rate",
                              hint="0.05 flags about 5% of in-distribution inputs")
        if self.ensemble < 1:
            raise ConfigError(f"ensemble must be ≥ 1, got {self.ensemble}", field="ensemble")
        if self.cv_folds < 0 or self.cv_folds == 1 or self.cv_folds > 20:
            raise ConfigError(f"cv_folds must be 0 (off) or 2-20, got {self.cv_folds}", field="cv_folds",
                              hint="5 folds suit a few hundred images")
        if not 0 < self.conformal_alpha < 1:
            raise ConfigError(f"conformal_alpha must be in (0, 1), got {self.conformal_alpha}",
                              field="conformal_alpha", hint="0.1 gives 90% prediction sets")
        from meddx.models.heads import HEADS

        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {tuple(sorted(HEADS))}, got {self.head!r}", field="head")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("epochs must be ≥ 1 and batch_size ≥ 2", field="epochs/batch_size")


@dataclass
class FitResult:
    """What :func:`fit` returns: the best model state and its bookkeeping."""

    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float
    images_per_second: float
    history: list[dict[str, float]]


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def head_module(model: Any) -> Any:
    """The classifier of ``model`` (timm's ``get_classifier()`` or meddx's ``head``)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    if hasattr(model, "head"):
        return model.head
    raise ConfigError(f"{type(model).__name__} exposes no classifier head", field="model")


def _set_backbone_trainable(model: Any, trainable: bool) -> None:
    head_ids = {id(p) for p in head_module(model).parameters()}
    for p in model.parameters():
        if id(p) not in head_ids:
            p.requires_grad_(trainable)


def _backbone_frozen(model: Any) -> bool:
    head_ids = {id(p) for p in head_module(model).parameters()}
    return not any(p.requires_grad for p in model.parameters() if id(p) not in head_ids)


def _train_mode(model: Any) -> None:
    """``model.train()``, but a frozen backbone keeps its normalisation statistics (a true linear probe)."""
    from torch import nn

    model.train()
    if _backbone_frozen(model):
        head = set(head_module(model).modules())
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head:
                module.eval()


def predict_logits(model: Any, x: np.ndarray, mean: float, std: float, batch_size: int = 256,
                   device: str | None = None) -> np.ndarray:
    """Logits ``(N, classes)`` for preprocessed inputs ``x`` ``(N,C,H,W)`` (eval mode)."""
    import torch

    model.eval()
    if device is None:
        device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = ((torch.from_numpy(x[start:start + batch_size]) - mean) / std).to(device)
            out.append(model(batch).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def predict_embeddings(model: Any, x: np.ndarray, mean: float, std: float, batch_size: int = 256,
                       device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, classes)`` and OOD features ``(N, D)`` (see :func:`meddx.models.heads.logits_and_features`)."""
    import torch

    from meddx.models.heads import logits_and_features

    model.eval()
    if device is None:
        device = next(model.parameters()).device
    logits, features = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = ((torch.from_numpy(x[start:start + batch_size]) - mean) / std).to(device)
            z, f = logits_and_features(model, batch)
            logits.append(z.float().cpu().numpy())
            features.append(f.float().cpu().numpy())
    return np.concatenate(logits).astype(np.float64), np.concatenate(features).astype(np.float64)


def fit_ood_gate(model: Any, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, mean: float, std: float,
                 *, flag_rate: float = 0.05) -> Any:
    """The package's OOD gate: detectors fitted on training features, thresholds on validation features."""
    from meddx.models.heads import feature_groups
    from meddx.trust.ood import fit_ood

    train_logits, train_features = predict_embeddings(model, x_train, mean, std)
    val_logits, val_features = predict_embeddings(model, x_val, mean, std)
    groups = feature_groups(model, int(x_train.shape[1]), int(x_train.shape[-1]))
    return fit_ood(train_features, train_logits, y_train, val_features, val_logits, flag_rate=flag_rate,
                   features="penultimate layer + channel mean/SD of each network stage", groups=groups)


def drift_reference(trust: dict[str, Any], val_logits: np.ndarray) -> list[float]:
    """Validation scores a drift monitor compares a site's scores with (calibrated last-class probability)."""
    from meddx.inference.trust import TrustLayer

    calibrated = TrustLayer.from_package({"trust": trust}).calibrator.transform(val_logits)
    return [round(float(v), 6) for v in calibrated[:, -1]]


def intended_input_for(sample: Any, x_train: np.ndarray, dataset: str | None) -> dict[str, Any]:
    """What the package accepts: the catalogue's declaration plus channels and sizes seen in training."""
    from meddx.trust.intended import IntendedInput

    declared: dict[str, Any] = {}
    if dataset:
        from meddx.data.catalogue import get_dataset

        try:
            declared = dict(get_dataset(dataset).intended_input)
        except Exception:  # noqa: BLE001 - a folder named like no catalogue set declares nothing
            declared = {}
    declared.setdefault("description", f"images like those of {dataset}" if dataset else "images like its training set")
    declared.setdefault("channels", int(x_train.shape[1]))
    return IntendedInput.from_dict({"kind": "image", **declared}).to_dict()


def predict_proba(model: Any, x: np.ndarray, mean: float, std: float, batch_size: int = 256,
                  device: str | None = None) -> np.ndarray:
    """Softmax probabilities for preprocessed inputs ``x`` ``(N,C,H,W)``."""
    from meddx.calibration.scaling import softmax

    logits = predict_logits(model, x, mean, std, batch_size, device)
    return logits if logits.size == 0 else softmax(logits)


def subsample_labels(labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the samples (whole groups when given), at least 2 per class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    keep: list[int] = []
    for c in np.unique(labels):
        class_groups = np.unique(groups[labels == c])
        rng.shuffle(class_groups)
        n = max(2, int(round(fraction * len(class_groups))))
        chosen = set(class_groups[:n].tolist())
        keep += [i for i in np.flatnonzero(labels == c) if groups[i] in chosen]
    return np.array(sorted(keep), dtype=np.int64)


def fit(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig,
    *,
    run: Path | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    progress: bool = False,
) -> FitResult:
    """The training loop on preprocessed arrays; keeps the best state (by validation AUC) in ``model``.

    With ``run`` it also writes ``history.jsonl``, ``model.safetensors`` (best)
    and ``last.pt`` (for ``resume``), and resumes from ``run/last.pt`` when
    ``config.resume`` names that folder.
    """
    import copy

    import torch
    from torch import nn

    from meddx.evaluation.metrics import compute_metrics
    from meddx.preprocess import BatchAugment

    config.validate()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    use_amp = (device == "cuda") if config.amp is None else config.amp
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    num_classes = int(max(y_train.max(), y_val.max()) + 1)
    model = model.to(device=device, memory_format=torch.channels_last)
    counts = np.bincount(y_train, minlength=num_classes).astype(np.float64)
    inv = counts.sum() / (num_classes * np.maximum(counts, 1))
    loss_weights = inv if config.sampler == "weighted-loss" else np.ones(num_classes)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(loss_weights, dtype=torch.float32, device=device),
                                    label_smoothing=config.label_smoothing)

    head_params = list(head_module(model).parameters())
    head_ids = {id(p) for p in head_params}
    backbone_params = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": head_params, "lr": config.lr}]
    if config.freeze != "backbone":
        groups.append({"params": backbone_params, "lr": config.lr * config.backbone_lr_mult})
    _set_backbone_trainable(model, config.freeze != "backbone" and config.unfreeze_epoch == 0)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(x_train) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps, pct_start=0.2)
    elif config.schedule == "step":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[total_steps // 2, (3 * total_steps) // 4], gamma=0.1)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    ema = None
    if config.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    scored = (lambda: ema.module) if ema is not None else (lambda: model)  # the weights we validate and keep
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device == "cuda")
    generator = torch.Generator().manual_seed(config.seed)
    augment = None
    if config.augment and config.augment_profile == "shift":
        from meddx.preprocess import shift_augment

        augment = shift_augment(int(x_train.shape[-1]), hflip=config.hflip)
    elif config.augment:
        augment = BatchAugment(hflip=config.hflip, shift_px=config.shift_px) if config.augment_geometry else \
            BatchAugment(hflip=config.hflip, degrees=0.0, translate=0.0, scale=(1.0, 1.0), shift_px=config.shift_px)
    sample_weights = torch.tensor(inv[y_train], dtype=torch.float64)

    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "stale": 0, "seen": 0, "seconds": 0.0}
    best_state = copy.deepcopy(scored().state_dict())
    history: list[dict[str, float]] = []
    if config.resume:
        checkpoint = Path(config.resume) / "last.pt"
        if not checkpoint.is_file():
            raise ConfigError("no last.pt to resume from", path=checkpoint.parent, field="resume")
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("total_steps", total_steps) != total_steps:
            raise ConfigError(
                "resume needs the same epochs, batch size and data as the interrupted run", path=checkpoint,
                field="epochs", hint="Resume with the run's own config.json, or start a new run",
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        best_state = saved["best_model"]
        if ema is not None and saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        state.update(saved["state"])
        history = saved["history"]
        log.info("resumed from %s at epoch %d", checkpoint, state["epoch"])

    from meddx.models.heads import is_bayes, kl_divergence

    bayesian = any(is_bayes(m) for m in model.modules())
    x_train_t = torch.from_numpy(x_train)
    y_train_t = torch.from_numpy(y_train)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, initial=state["epoch"], desc=f"train {config.model}", unit="epoch")
    history_file = open(run / "history.jsonl", "a" if config.resume else "w", encoding="utf-8") if run else None
    try:
        for epoch in range(state["epoch"], config.epochs):
            if config.freeze != "backbone" and config.unfreeze_epoch and epoch == config.unfreeze_epoch:
                _set_backbone_trainable(model, True)
                log.info("epoch %d: backbone unfrozen", epoch + 1)
            started = time.perf_counter()
            _train_mode(model)
            if config.sampler == "balanced":
                order = torch.multinomial(sample_weights, len(y_train), replacement=True, generator=generator)
            else:
                order = torch.randperm(len(x_train_t), generator=generator)
            total_loss, n_seen = 0.0, 0
            for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
                index = order[start:start + config.batch_size]
                batch = x_train_t[index]
                if augment is not None:
                    batch = augment(batch, generator)
                batch = ((batch - mean) / std).to(device).contiguous(memory_format=torch.channels_last)
                target = y_train_t[index].to(device)
                with torch.autocast(device_type=device, dtype=amp_dtype, enabled=use_amp):
                    loss = criterion(model(batch).float(), target)
                if bayesian:  # Bayes-by-backprop: the KL term, spread over the training set
                    loss = loss + kl_divergence(model) / len(x_train)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                total_loss += loss.item() * len(index)
                n_seen += len(index)
            state["seconds"] += time.perf_counter() - started
            state["seen"] += n_seen
            val = compute_metrics(y_val, predict_proba(scored(), x_val, mean, std, device=device))
            record = {"epoch": epoch + 1, "loss": total_loss / max(n_seen, 1),
                      "lr": optimizer.param_groups[0]["lr"], **{f"val_{k}": v for k, v in val.items()}}
            history.append(record)
            if history_file:
                history_file.write(json.dumps(record) + "\n")
                history_file.flush()
            log.info("epoch %d loss %.4f val_auc %.4f val_acc %.4f", epoch + 1, record["loss"], val["auc"], val["acc"])
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}", val_auc=f"{val['auc']:.3f}", val_acc=f"{val['acc']:.3f}")
                bar.update(1)
            score = val["auc"] if not np.isnan(val["auc"]) else val["acc"]
            state["epoch"] = epoch + 1
            # select="last": no selection on validation, the last epoch is the model
            if config.select == "last" or score > state["best_auc"]:
                state.update(best_auc=score, best_epoch=epoch + 1, stale=0)
                best_state = copy.deepcopy(scored().state_dict())
                if run:
                    save_weights(scored(), run / "model.safetensors")
            else:
                state["stale"] += 1
            if run:
                tmp = run / "last.pt.tmp"
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                            "best_model": best_state, "state": state, "history": history,
                            "ema": ema.state_dict() if ema is not None else None,
                            "total_steps": total_steps}, tmp)
                os.replace(tmp, run / "last.pt")
            if state["stale"] >= config.patience and config.select == "best":
                log.info("early stop at epoch %d (best %d)", epoch + 1, state["best_epoch"])
                break
    finally:
        if history_file:
            history_file.close()
        if bar is not None:
            bar.close()
    model.load_state_dict(best_state)
    seconds = state["seconds"]
    return FitResult(state["best_epoch"], state["best_auc"], state["epoch"], seconds,
                     state["seen"] / seconds if seconds else 0.0, history)


CROPPED = {"cnn-small": "cnn-small-crop", "cnn-tiny": "cnn-tiny-crop"}
"""Models whose foreground-cropping variant the small-data recipe uses on dark-background images."""


def labelled_count(sample: Any) -> int:
    """Labelled images available for training and validation (the test split excluded)."""
    return int(sum(len(sample.splits[k][1]) for k in ("train", "val", "all") if k in sample.splits))


def resolve_recipe(config: TrainConfig, sample: Any) -> TrainConfig:
    """The configuration ``config.recipe`` stands for on ``sample`` (idempotent).

    ``auto`` is ``small-data`` from :data:`SMALL_DATA_MIN` up to (not including)
    :data:`SMALL_DATA_MAX` labelled training + validation images of at least
    :data:`SMALL_DATA_MIN_SIDE` px, ``small-ensemble`` for smaller thumbnails in that range
    (BreastMNIST: 624 images of 28 px; the standard recipe as a :data:`SMALL_ENSEMBLE`-seed
    deep ensemble), else ``standard`` (the fields as given: PneumoniaMNIST, 5,232 images).
    ``small-data`` (issue 17, chosen by ``bench/small_data.py``): a
    :data:`SMALL_DATA_FOLDS`-fold cross-validated ensemble over train + validation (each fold
    model trained for the fixed number of epochs, the last epoch kept: no selection on a tiny
    validation split) for at most :data:`SMALL_DATA_EPOCHS` epochs and about
    :data:`SMALL_DATA_IMAGES` images, batch ≤ 32 below :data:`SMALL_BATCH_BELOW` fold images,
    :func:`~meddx.preprocess.shift_augment`, images larger than
    :data:`SMALL_DATA_MAX_SIZE` px resized to it, and, when most images lie on a dark
    background (:func:`~meddx.preprocess.dark_background`, e.g. brain MRI), the model's
    foreground-cropping variant (:data:`CROPPED`). The trust layer is then fitted on the
    out-of-fold predictions.
    """
    from dataclasses import replace

    if config.recipe == "standard" or config.resume:
        return config
    if config.recipe == "small-ensemble":
        return replace(config, ensemble=config.ensemble if config.ensemble > 1 else SMALL_ENSEMBLE)
    source = next(k for k in ("train", "all", "val") if k in sample.splits)
    images = np.asarray(sample.splits[source][0])
    if config.recipe == "auto" and not SMALL_DATA_MIN <= labelled_count(sample) < SMALL_DATA_MAX:
        return replace(config, recipe="standard")
    if config.recipe == "auto" and min(images.shape[1:3]) < SMALL_DATA_MIN_SIDE:
        return resolve_recipe(replace(config, recipe="small-ensemble"), sample)
    model = CROPPED.get(config.model, config.model) if dark_background(images[:500]) else config.model
    side = int(max(images.shape[1:3]))
    size = config.size if config.size is not None else (SMALL_DATA_MAX_SIZE if side > SMALL_DATA_MAX_SIZE else None)
    folds = config.cv_folds or SMALL_DATA_FOLDS
    fold_train = labelled_count(sample) * (folds - 1) / folds
    epochs = min(config.epochs, SMALL_DATA_EPOCHS, max(1, int(np.ceil(SMALL_DATA_IMAGES / fold_train))))
    batch = min(config.batch_size, 32) if fold_train < SMALL_BATCH_BELOW else config.batch_size
    return replace(config, recipe="small-data", model=model, size=size, select="last", augment_profile="shift",
                   cv_folds=folds, batch_size=batch, epochs=epochs)


def dark_background(images: np.ndarray) -> bool:
    from meddx.preprocess import dark_background as rule

    return rule(images)


def train(config: TrainConfig, *, progress: bool = True, _fold: int | None = None,
          _norm: tuple[float, float] | None = None) -> Path:
    """Train ``config.model`` on ``config.data``; return the run folder (a model package).

    ``_fold``/``_norm`` are internal: train the member of a cross-validated ensemble that holds
    out fold ``_fold``, with the ensemble's shared input normalisation.
    """
    import torch

    from meddx import __version__
    from meddx.data.datasets import load_images
    from meddx.models import create_model

    config.validate()
    sample = None
    if _fold is None and config.recipe != "standard" and not config.resume:
        sample = load_images(config.data, size=config.size)
        resolved = resolve_recipe(config, sample)
        if resolved.size != config.size:
            sample = load_images(config.data, size=resolved.size)
        config = resolved
        if config.recipe == "small-data":
            log.info("small-data recipe: %s", json.dumps({k: getattr(config, k) for k in (
                "model", "size", "cv_folds", "select", "augment_profile", "batch_size", "epochs")}))
    if _fold is None and config.cv_folds > 1:
        return _train_cv(config, sample, progress=progress)
    if config.ensemble > 1:
        return _train_ensemble(config, progress=progress)
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    seed_everything(config.seed)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    if sample is None:
        sample = load_images(config.data, size=config.size)
    splits, split_note = resolve_splits(sample, config, split_seed, fold=_fold)
    groups_all = (sample.meta.get("groups") or {}).get("all")
    holdout = None
    if config.holdout_fraction > 0:
        holdout = carve_holdout(splits["train"][0], splits["train"][1], config.holdout_fraction, split_seed,
                                groups=(sample.meta.get("groups") or {}).get("train"))
        keep_idx = np.setdiff1d(np.arange(len(splits["train"][1])), holdout["indices"])
        splits["train"] = (splits["train"][0][keep_idx], np.asarray(splits["train"][1])[keep_idx])
        split_note += f"; {len(holdout['indices'])} training images held out ({holdout['grouping']})"
    x_train = prepare_arrays(splits["train"][0], config.size)
    y_train = np.asarray(splits["train"][1]).reshape(len(x_train), -1)[:, 0].astype(np.int64)
    if config.label_fraction < 1:
        keep = subsample_labels(y_train, config.label_fraction, split_seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_val = prepare_arrays(splits["val"][0], config.size)
    y_val = np.asarray(splits["val"][1]).reshape(len(x_val), -1)[:, 0].astype(np.int64)
    num_classes = int(max(y_train.max(), y_val.max()) + 1)
    if sample.class_names:
        num_classes = max(num_classes, len(sample.class_names))
    class_names = sample.class_names or [str(i) for i in range(num_classes)]
    in_chans = int(x_train.shape[1])
    mean, std = _norm if _norm is not None else (float(x_train.mean()), float(x_train.std() or 1.0))

    run = Path(config.resume or config.out or _default_run_dir(config))
    run.mkdir(parents=True, exist_ok=True)
    if holdout is not None:
        (run / "holdout.json").write_text(json.dumps(holdout), encoding="utf-8")
    if _fold is not None:
        (run / "fold.json").write_text(json.dumps({"fold": _fold, "folds": config.cv_folds, "split_seed": split_seed}),
                                       encoding="utf-8")
    handler = logging.FileHandler(run / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        (run / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
        model = create_model(config.model, num_classes=num_classes, in_chans=in_chans, pretrained=config.pretrained,
                             head=config.head, drop_rate=config.drop_rate)
        result = fit(model, x_train, y_train, x_val, y_val, config, run=run, mean=mean, std=std, progress=progress)
        trust = fit_trust(predict_logits(model, x_val, mean, std), y_val, calibration=config.calibration,
                          alpha=config.conformal_alpha, target_risk=config.target_risk,
                          fitted_on=f"validation split (n={len(y_val)})")
        gate = fit_ood_gate(model, x_train, y_train, x_val, mean, std, flag_rate=config.ood_flag_rate)
        reference_scores = drift_reference(trust, predict_logits(model, x_val, mean, std))
    finally:
        log.removeHandler(handler)
        handler.close()
    dataset = sample.meta.get("dataset")
    positive = sample.meta.get("positive_class") or (class_names[1] if num_classes == 2 else None)
    grouped = groups_all is not None or bool((sample.meta.get("groups") or {}).get("train"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset or Path(config.data).name}-{config.model}").strip("-")
    package = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": name,
        "version": time.strftime("%Y%m%d%H%M%S"),
        "architecture": config.model,
        "head": config.head,
        "drop_rate": config.drop_rate,
        "num_classes": num_classes,
        "class_names": class_names,
        "positive_class": positive,
        "modality": "image",
        "task": "binary classification" if num_classes == 2 else "multi-class classification",
        "preprocess": {"in_chans": in_chans, "size": int(x_train.shape[-1]), "mean": mean, "std": std,
                       "scale": "divide by 255 (uint8) or 65535 (uint16)",
                       "windowing": "DICOM: the file's window centre/width; 8-bit PNG/JPEG/DICOM as is; "
                                    "16-bit PNG ÷257; NIfTI/float: min-max of the slice"},
        "data": {"source": config.data, "dataset": dataset, "licence": sample.meta.get("licence"),
                 "split": split_note, "grouped": grouped, "train": int(len(y_train)), "val": int(len(y_val)),
                 "test": int(len(sample.splits["test"][1])) if "test" in sample.splits else None,
                 "label_fraction": config.label_fraction},
        "training": {"best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc,
                     "epochs_run": result.epochs_run, "seconds": result.seconds,
                     "images_per_second": result.images_per_second, "seed": config.seed,
                     "pretrained": config.pretrained, "freeze": config.freeze},
        "trust": trust,
        "ood": gate.to_package(run),
        "drift": {"reference_scores": reference_scores,
                  "reference": f"calibrated probability of the last class on the validation split (n={len(y_val)})"},
        "intended_input": intended_input_for(sample, x_train, dataset),
        "intended_use": "Research and clinical decision support by qualified staff; not for primary diagnosis.",
        "extra_files": ["ood.npz"],
    }
    if config.export == "onnx":
        from meddx.inference.runtime import export_package

        export_package(model, run, package)
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    from meddx.packaging.card import write_card

    write_card(run, package)
    return run


def save_weights(model: Any, path: Path) -> None:
    """Write the model's state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _default_run_dir(config: TrainConfig) -> Path:
    from meddx.config import home_dir

    stem = Path(config.data).name or config.data
    return home_dir() / "runs" / f"{stem}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train_ensemble(config: TrainConfig, *, progress: bool) -> Path:
    """Train ``config.ensemble`` members on one split and package them as a deep ensemble."""
    from dataclasses import replace

    from meddx.inference import Pipeline

    run = Path(config.out or _default_run_dir(config))
    run.mkdir(parents=True, exist_ok=True)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    members = []
    for k in range(config.ensemble):
        member_out = run / "members" / f"m{k}"
        member = replace(config, ensemble=1, seed=config.seed + k, split_seed=split_seed, out=str(member_out),
                         recipe="standard" if config.recipe == "small-ensemble" else config.recipe,
                         resume=str(member_out) if config.resume and (member_out / "last.pt").is_file() else None)
        if (member_out / "package.json").is_file() and config.resume:
            members.append(member_out)  # finished before the interruption
            continue
        members.append(train(member, progress=progress))
    first = json.loads((members[0] / "package.json").read_text(encoding="utf-8"))
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    first = {k: v for k, v in first.items() if k not in ("runtime", "extra_files")}  # the members' own files
    if "ood" in first:  # the gate reads the first member's features
        first["ood"] = {**first["ood"], "file": f"{members[0].relative_to(run)}/{first['ood']['file']}",
                        "member": str(members[0].relative_to(run))}
    package = {**first, "kind": "ensemble", "members": [str(m.relative_to(run)) for m in members],
               "name": re.sub(r"-m0$", "", first["name"]) + f"-ensemble{config.ensemble}",
               "version": time.strftime("%Y%m%d%H%M%S")}
    trained = [json.loads((m / "package.json").read_text())["training"] for m in members]
    package["training"] = {**first["training"], "seed": config.seed, "members": config.ensemble,
                           "recipe": config.recipe, "best_epoch": [t["best_epoch"] for t in trained],
                           "seconds": sum(float(t.get("seconds") or 0.0) for t in trained)}
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    # the ensemble's own trust layer, fitted on the members' averaged validation predictions
    pipeline = Pipeline.load(run)
    x_val, y_val = _validation_arrays(replace(config, ensemble=1, split_seed=split_seed))
    logits = np.log(np.clip(pipeline.predict_arrays(x_val, calibrated=False), 1e-12, 1.0))
    package["trust"] = fit_trust(logits, y_val, calibration=config.calibration, alpha=config.conformal_alpha,
                                 target_risk=config.target_risk,
                                 fitted_on=f"validation split (n={len(y_val)}), ensemble mean")
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    from meddx.packaging.card import write_card

    write_card(run, package)
    return run


def _train_cv(config: TrainConfig, sample: Any, *, progress: bool) -> Path:
    """Train one member per fold of a group k-fold over train + val; package them as an ensemble whose
    trust layer (calibration, conformal sets, abstention) and drift reference come from the
    out-of-fold predictions: every case scored by the one member that never saw it."""
    from dataclasses import replace

    from meddx.data.datasets import load_images
    from meddx.inference import Pipeline
    from meddx.packaging.card import write_card

    if sample is None:
        sample = load_images(config.data, size=config.size)
    run = Path(config.out or _default_run_dir(config))
    run.mkdir(parents=True, exist_ok=True)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    images, labels, groups, names = pooled_for_cv(sample)
    folds = cv_folds_of(labels, groups, config.cv_folds, split_seed)
    x_all = prepare_arrays(images, config.size)
    norm = (float(x_all.mean()), float(x_all.std() or 1.0))  # shared, so the members read one input
    del x_all
    member_config = replace(config, ensemble=1, split_seed=split_seed, resume=None)
    members: list[Path] = []
    oof = np.full((len(labels), 0), np.nan)
    for k in range(config.cv_folds):
        out = run / "members" / f"f{k}"
        members.append(train(replace(member_config, seed=config.seed + k, out=str(out)), progress=progress,
                             _fold=k, _norm=norm))
        logits = Pipeline.load(out, runtime="torch").predict_logits(images[folds[k][1]])
        if oof.shape[1] == 0:
            oof = np.full((len(labels), logits.shape[1]), np.nan)
        oof[folds[k][1]] = logits
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    first = json.loads((members[0] / "package.json").read_text(encoding="utf-8"))
    first = {k: v for k, v in first.items() if k not in ("runtime", "extra_files")}
    if "ood" in first:  # the gate reads the first member's features (fitted on its training folds)
        first["ood"] = {**first["ood"], "file": f"{members[0].relative_to(run)}/{first['ood']['file']}",
                        "member": str(members[0].relative_to(run))}
    n = len(labels)
    fitted_on = (f"out-of-fold predictions of the {config.cv_folds}-fold cross-validation over {names} (n={n}): "
                 f"each case scored by the fold model that never saw it")
    trust = fit_trust(oof, labels, calibration=config.calibration, alpha=config.conformal_alpha,
                      target_risk=config.target_risk, fitted_on=fitted_on)
    package = {**first, "kind": "ensemble", "members": [str(m.relative_to(run)) for m in members],
               "name": f"{first['name']}-cv{config.cv_folds}",
               "version": time.strftime("%Y%m%d%H%M%S"), "trust": trust}
    package["data"] = {**first["data"], "split": f"{config.cv_folds}-fold stratified group cross-validation over "
                       f"{names}; the package averages the {config.cv_folds} fold models",
                       "train": int(n - min(len(f[1]) for f in folds)), "val": int(n), "recipe": config.recipe}
    package["training"] = {**first["training"], "seed": config.seed, "members": config.cv_folds,
                           "recipe": config.recipe, "select": config.select, "best_val_auc": None,
                           "augment_profile": config.augment_profile,
                           "best_epoch": [json.loads((m / "package.json").read_text())["training"]["best_epoch"]
                                          for m in members]}
    package["cv"] = _oof_summary(oof, labels, groups, config.cv_folds, names)
    package["drift"] = {"reference_scores": drift_reference(trust, oof),
                        "reference": f"calibrated probability of the last class, out-of-fold (n={n})"}
    (run / "package.json").write_text(json.dumps(package, indent=2), encoding="utf-8")
    write_card(run, package)
    return run


def _oof_summary(oof: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, names: str) -> dict[str, Any]:
    """Out-of-fold AUC with a group-bootstrap 95% CI (the package's own estimate of its accuracy on new cases)."""
    from meddx.calibration.scaling import softmax
    from meddx.evaluation.metrics import bootstrap_metrics

    summary: dict[str, Any] = {"folds": folds, "pooled": names, "n": int(len(labels)),
                               "note": "single fold models on their held-out folds; the packaged average of all "
                                       "folds is usually a little better"}
    if oof.shape[1] == 2 and len(np.unique(labels)) == 2:
        auc = bootstrap_metrics(labels, softmax(oof), groups=groups, n_boot=500)["auc"]
        summary["oof_auc"] = {k: float(auc[k]) for k in ("value", "low", "high")}
    return summary


def carve_holdout(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int,
                  groups: list[Any] | None = None) -> dict[str, Any]:
    """A group-disjoint, stratified hold-out of ``fraction`` of a training split (indices and how grouped)."""
    from meddx.data.splits import group_train_val_test_split, near_duplicate_groups

    labels = np.asarray(labels).reshape(len(images), -1)[:, 0]
    if groups is not None:
        group_ids, grouping = np.asarray(groups), "patient groups from the data set"
    else:
        group_ids = near_duplicate_groups(list(images))
        grouping = "near-duplicate image groups (correlation > 0.95), as no patient ids exist"
    idx = group_train_val_test_split(labels, group_ids, val=0.0, test=fraction, seed=seed)
    return {"indices": sorted(int(i) for i in idx["test"]), "fraction": fraction, "seed": seed,
            "grouping": grouping, "groups": int(len(np.unique(group_ids))), "n_train_split": int(len(labels))}


def pooled_for_cv(sample: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Images, labels and groups a cross-validated ensemble deals into folds (train + val, or all), and a note."""
    names = [k for k in ("train", "val") if k in sample.splits] or ["all"]
    if names == ["all"] and "all" not in sample.splits:
        raise ConfigError("data has no 'train' or 'all' split", field="split")
    images = np.concatenate([np.asarray(sample.splits[k][0]) for k in names])
    labels = np.concatenate([np.asarray(sample.splits[k][1]).reshape(len(sample.splits[k][1]), -1)[:, 0]
                             for k in names]).astype(np.int64)
    known = sample.meta.get("groups") or {}
    if all(known.get(k) is not None for k in names):
        groups = np.concatenate([np.asarray(known[k]).astype(str) for k in names])
    else:
        groups = np.array([f"{k}:{i}" for k in names for i in range(len(sample.splits[k][1]))])
    return images, labels, groups, "+".join(names)


def cv_folds_of(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold ``(train_index, held_out_index)`` pairs (the same for every member)."""
    from meddx.data.splits import group_kfold

    return list(group_kfold(labels, groups, n_splits=folds, seed=seed))


def resolve_splits(sample: Any, config: TrainConfig, split_seed: int,
                   fold: int | None = None) -> tuple[dict[str, Any], str]:
    """Train and validation splits for ``sample``: official ones, else whole groups dealt out.

    Data with only an ``all`` split, or a ``train`` split without ``val``, are split
    by group (patient, near-duplicate) with ``config.val_fraction`` and ``split_seed``.
    With ``fold`` (a member of a ``config.cv_folds``-fold ensemble) train + val are pooled
    and fold ``fold`` of a stratified group k-fold is the validation split.
    Returns the splits and a note saying which was done.
    """
    from meddx.data.splits import group_train_val_test_split

    if fold is not None:
        images, labels, groups, names = pooled_for_cv(sample)
        train_idx, val_idx = cv_folds_of(labels, groups, config.cv_folds, split_seed)[fold]
        splits = {k: v for k, v in sample.splits.items() if k == "test"}
        splits["train"] = (images[train_idx], labels[train_idx])
        splits["val"] = (images[val_idx], labels[val_idx])
        return splits, (f"fold {fold + 1} of a {config.cv_folds}-fold stratified group cross-validation over "
                        f"{names} ({len(labels)} images); this fold held out for validation")
    splits = dict(sample.splits)
    if "train" in splits and "val" in splits:
        return splits, "official train/val"
    source = "train" if "train" in splits else "all"
    if source not in splits:
        raise ConfigError("data has no 'train' or 'all' split", field="split", path=config.data)
    images, labels = splits.pop(source)
    known = (sample.meta.get("groups") or {}).get(source)
    groups = np.asarray(known) if known is not None else np.arange(len(labels))
    idx = group_train_val_test_split(labels, groups, val=config.val_fraction, test=0.0, seed=split_seed)
    splits["train"] = (images[idx["train"]], labels[idx["train"]])
    splits["val"] = (images[idx["val"]], labels[idx["val"]])
    train_share, val_share = f"{1 - config.val_fraction:.0%}", f"{config.val_fraction:.0%}"
    split_note = (f"group split of all data: {train_share} train / {val_share} val" if source == "all"
                  else f"train split re-split {train_share} / {val_share} for validation")
    return splits, split_note


def _validation_arrays(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The raw validation images and labels that :func:`train` uses for ``config``."""
    from meddx.data.datasets import load_images

    split_seed = config.seed if config.split_seed is None else config.split_seed
    splits, _ = resolve_splits(load_images(config.data, size=config.size), config, split_seed)
    images, labels = splits["val"]
    return images, np.asarray(labels).reshape(len(images), -1)[:, 0].astype(np.int64)


def refit_ood(model: str | Path, *, flag_rate: float = 0.05) -> dict[str, Any]:
    """(Re)fit a trained image package's OOD gate on its own training and validation splits; save it.

    For packages trained before OOD detection existed, or to change the flag rate.
    The splits are rebuilt from the run's ``config.json`` exactly as :func:`train` made
    them (hold-out images excluded). Returns the new ``package.json["ood"]`` block.
    """
    from dataclasses import fields

    from meddx.data.datasets import load_images
    from meddx.inference import Pipeline
    from meddx.packaging.card import write_card
    from meddx.packaging.registry import read_package, write_package

    pipeline = Pipeline.load(model, runtime="torch")
    folder = pipeline.folder
    config_path = folder / "config.json"
    if pipeline.package.get("members"):
        config_path = folder / pipeline.package["members"][0] / "config.json"
    if not config_path.is_file():
        raise ConfigError("the package has no config.json to rebuild its training split from", path=config_path,
                          field="config.json", hint="Retrain it with `meddx train` (which fits the OOD gate)")
    splits, sample = rebuild_splits(config_path)
    images, labels = splits["train"]
    pre = pipeline.package["preprocess"]
    x_train, x_val = prepare_arrays(images, pre["size"]), prepare_arrays(splits["val"][0], pre["size"])
    y_train = np.asarray(labels).reshape(len(x_train), -1)[:, 0].astype(np.int64)
    gate = fit_ood_gate(pipeline.members[0], x_train, y_train, x_val, pre["mean"], pre["std"], flag_rate=flag_rate)
    member = folder / pipeline.package["members"][0] if pipeline.package.get("members") else folder
    block = gate.to_package(member)
    if member != folder:
        block = {**block, "file": f"{pipeline.package['members'][0]}/{block['file']}",
                 "member": pipeline.package["members"][0]}
    package = read_package(folder)
    package["ood"] = block
    package.setdefault("intended_input", intended_input_for(sample, x_train, sample.meta.get("dataset")))
    if member == folder:
        package["extra_files"] = sorted({*package.get("extra_files", []), block["file"]})
    if "files" in package:  # a registered package lists every file's sha256
        package["files"] = {**package["files"], block["file"]: block["sha256"]}
    write_package(folder, package)
    write_card(folder, package)
    return block


def rebuild_splits(config_path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    """The run's ``train`` (hold-out removed), ``val`` and, when it was carved, ``holdout`` images and labels,
    rebuilt from its ``config.json`` exactly as :func:`train` made them; and the loaded sample."""
    from dataclasses import fields

    from meddx.data.datasets import load_images

    config_path = Path(config_path)
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    config = TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})
    split_seed = config.seed if config.split_seed is None else config.split_seed
    sample = load_images(config.data, size=config.size)
    fold_file = config_path.parent / "fold.json"
    fold = json.loads(fold_file.read_text(encoding="utf-8")) if fold_file.is_file() else None
    if fold is not None:
        split_seed = int(fold.get("split_seed", split_seed))
    splits, _ = resolve_splits(sample, config, split_seed, fold=None if fold is None else int(fold["fold"]))
    out = {"train": splits["train"], "val": splits["val"]}
    holdout_file = config_path.parent / "holdout.json"
    if holdout_file.is_file():
        held = np.asarray(json.loads(holdout_file.read_text(encoding="utf-8"))["indices"], dtype=np.int64)
        images, labels = splits["train"]
        keep = np.setdiff1d(np.arange(len(labels)), held)
        out["train"] = (images[keep], np.asarray(labels)[keep])
        out["holdout"] = (images[held], np.asarray(labels)[held])
    return out, sample
