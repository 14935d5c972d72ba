"""``meddx pretrain``."""

from __future__ import annotations

from pathlib import Path

import typer

_DEFAULT_TASKS = "pneumoniamnist,covid-finding,covid-lung-side,bccd-cells,chase-vessels"
_TARGETS = "breastmnist,brain-tumor-mri-navoneel"


def _supervised():
    from meddx.training.pretrain import pretrain

    return pretrain


def _simclr():
    from meddx.training.selfsupervised import pretrain_simclr

    return pretrain_simclr


_OBJECTIVES = {"supervised": _supervised, "simclr": _simclr}
"""Objective name -> the function that runs it (imported on use; unknown names fail in the config check)."""


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def pretrain(
    model: str = typer.Option("cnn-small", help="Backbone (resnet18-28 for 28 px, resnet18 for 64-224 px, ...)."),
    size: int = typer.Option(64, help="Image side in pixels; all tasks are built grey at SIZE×SIZE."),
    epochs: int = typer.Option(10, help="Epochs over the capped training images of all tasks."),
    max_per_task: int = typer.Option(3000, help="At most this many images per task (class-balanced); 0 = no cap."),
    tasks: str = typer.Option(_DEFAULT_TASKS, help="Comma-separated pretraining tasks."),
    exclude: str = typer.Option(_TARGETS, help="Comma-separated data sets never to use (the benchmark targets)."),
    batch_size: int = typer.Option(128, help="Images per step, shared equally between tasks."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (warm-up, then cosine decay)."),
    seed: int = typer.Option(0, help="Random seed."),
    objective: str = typer.Option("supervised", help="supervised (one head per task) | simclr (self-supervised: "
                                  "the task images with labels unused, plus --unlabelled)."),
    unlabelled: str = typer.Option("", help="simclr: comma-separated extra image sets or folders (training split "
                                   "only), e.g. the target's own unlabelled images."),
    out: Path = typer.Option(None, help="Package folder (default under $MEDDX_HOME/runs)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Pretrain a backbone on medical images (supervised multi-task or self-supervised SimCLR); write a package
    that --pretrained accepts."""
    from meddx.training.pretrain import PretrainConfig

    config = PretrainConfig(model=model, size=size, epochs=epochs, max_per_task=max_per_task or None,
                            tasks=_names(tasks), exclude=_names(exclude), batch_size=batch_size, lr=lr, seed=seed,
                            objective=objective, unlabelled=_names(unlabelled), out=str(out) if out else None)
    run = _OBJECTIVES.get(objective, _OBJECTIVES["supervised"])()(config, progress=progress)
    typer.echo(str(run))
