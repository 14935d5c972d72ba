"""``meddx train``."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    data: str = typer.Argument(..., help="Catalogue image set (e.g. breastmnist) or a folder with labels.csv."),
    model: str = typer.Option("cnn-small", help="Model name (see meddx.models.list_models())."),
    epochs: int = typer.Option(40, help="Maximum epochs (early stopping on validation AUC)."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (one-cycle schedule)."),
    size: int = typer.Option(None, help="Resize images to SIZE×SIZE."),
    seed: int = typer.Option(0, help="Random seed."),
    pretrained: str = typer.Option(None, help="Start from weights: a state-dict file or a run folder."),
    out: Path = typer.Option(None, help="Run folder (default under $MEDDX_HOME/runs)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train an image classifier; write a run folder that evaluate/predict accept."""
    from meddx.training import TrainConfig
    from meddx.training import train as run_training

    config = TrainConfig(data=data, model=model, epochs=epochs, batch_size=batch_size, lr=lr, size=size,
                         seed=seed, pretrained=pretrained, out=str(out) if out else None)
    run = run_training(config, progress=progress)
    typer.echo(str(run))
