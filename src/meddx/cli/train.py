"""``meddx train``: train a model (any modality × task) into a run folder (a model package)."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    data: str = typer.Argument(..., help="Catalogue set (e.g. breastmnist, chase-db1-retina-vessel-seg, "
                               "bccd-blood-cell-detection, ecg-cinc2017-af, heart-disease-uci) or a folder / CSV."),
    task: str = typer.Option(
        None, help="classification | segmentation | detection (default: the data set's own task, e.g. detection "
        "for bccd-blood-cell-detection; covid-cxr-ieee8023-lungbbox: classification, or detection for its lung boxes)."),
    model: str = typer.Option(
        None, help="Model name (images: see meddx.models.list_models(), default cnn-small; signals and "
        "records: the modality's own default)."),
    epochs: int = typer.Option(40, help="Maximum epochs (early stopping on validation AUC)."),
    patience: int = typer.Option(12, help="Epochs without a better validation AUC before stopping."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float = typer.Option(3e-3, help="Peak learning rate."),
    weight_decay: float = typer.Option(1e-4, help="AdamW weight decay."),
    schedule: str = typer.Option("onecycle", help="onecycle | cosine | step (×0.1 at 50% and 75%)."),
    sampler: str = typer.Option("weighted-loss", help="weighted-loss | balanced | none."),
    augment: bool = typer.Option(True, help="Random flips and intensity jitter."),
    augment_geometry: bool = typer.Option(True, help="Also small rotations/shifts/zooms (they blur tiny images)."),
    hflip: float = typer.Option(0.5, help="Probability of a horizontal flip (0 for lateralised images)."),
    shift_px: int = typer.Option(0, help="Also shift images by up to this many whole pixels (no blur; 2-4 at 28 px)."),
    size: int = typer.Option(None, help="Resize images to SIZE×SIZE."),
    label_fraction: float = typer.Option(1.0, help="Train on this share of the training labels."),
    seed: int = typer.Option(0, help="Random seed."),
    pretrained: str = typer.Option(None, help="Start from weights: a meddx package/run folder or a state-dict file."),
    freeze: str = typer.Option("none", help="none | backbone (linear probe: train the head only)."),
    unfreeze_epoch: int = typer.Option(0, help="Keep the backbone frozen for this many epochs (gradual unfreezing)."),
    backbone_lr_mult: float = typer.Option(1.0, help="Backbone learning rate = lr × this."),
    ema: float = typer.Option(0.0, help="Exponential moving average of the weights (decay per step; 0 = off)."),
    label_smoothing: float = typer.Option(0.0, help="Cross-entropy label smoothing."),
    head: str = typer.Option("linear", help="linear | bayes (Bayes-by-backprop last layer)."),
    drop_rate: float = typer.Option(None, help="Dropout before the classifier (MC-dropout needs > 0)."),
    ensemble: int = typer.Option(1, help="Train this many members (seeds SEED, SEED+1, ...) as a deep ensemble."),
    calibration: str = typer.Option(
        "auto", help="auto (temperature scaling unless it does not lower cross-validated NLL on validation) | "
        "temperature | vector | dirichlet | identity."),
    conformal_alpha: float = typer.Option(0.1, help="1 - coverage of the conformal prediction sets."),
    target_risk: float = typer.Option(0.05, help="Error rate allowed on the cases the model keeps (abstention)."),
    amp: bool = typer.Option(None, help="Mixed precision (default: on with CUDA)."),
    resume: Path = typer.Option(None, help="Continue the run in this folder from its last.pt."),
    export: str = typer.Option("onnx", help="onnx (also write model.onnx: predictions without torch) | none."),
    recipe: str = typer.Option(
        "auto", help="auto (small-data for 100-1,999 labelled train+val images of 33 px or more, small-ensemble for "
        "smaller thumbnails in that range, else standard) | standard (the options as given) | small-ensemble (the "
        "standard recipe as a 5-seed deep ensemble) | small-data (5-fold group-CV ensemble over train+val, fixed epochs, shift "
        "augmentation, foreground crop on dark-background images such as brain MRI, images > 64 px resized to "
        "64, calibration and conformal sets fitted on out-of-fold predictions)."),
    cv_folds: int = typer.Option(0, help="Folds of the cross-validated ensemble (0: the recipe's choice, 5 for "
                                 "small-data)."),
    out: Path = typer.Option(None, help="Run folder (default under $MEDDX_HOME/runs)."),
    set_: list[str] = typer.Option(
        None, "--set", help="KEY=VALUE: an option of the model kind's own (repeatable), e.g. --set noise=mri-rician "
        "for restoration, --set steps=2000; numbers and true/false are converted."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a model (images, signals, records, fusion; classification, segmentation or detection); write a
    run folder (model package) that evaluate/predict/report/serve accept. Image-classifier options are
    refused by name for models that do not take them."""
    given = {k: v for k, v in locals().items() if k not in ("data", "task", "resume", "set_") and v != _DEFAULTS[k]}
    given.update(_settings(set_ or []))
    from meddx.modalities import CLASSIFICATION, IMAGE, call, get_handler, handler_for_data

    if resume is not None:
        handler = get_handler(IMAGE, CLASSIFICATION)  # only image classifiers checkpoint mid-run
        given["resume"] = resume
    else:
        handler = handler_for_data(data, task)
    given.setdefault("progress", progress)
    run = call(handler.handler().train, data, what=f"{handler.name} {handler.task}", **given)
    typer.echo(str(run))


def _value(text: str) -> object:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _settings(items: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs as options (keys with ``-`` become ``_``)."""
    from meddx.exceptions import ConfigError

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", field="set", hint="e.g. --set noise=mri-rician")
        out[key.strip().replace("-", "_")] = _value(value)
    return out


def _defaults() -> dict:
    import inspect

    return {name: getattr(p.default, "default", p.default) for name, p in inspect.signature(train).parameters.items()}


_DEFAULTS = _defaults()
