"""``meddx train``, ``meddx evaluate`` and ``meddx predict``."""

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


def evaluate(
    model: Path = typer.Argument(..., help="A run folder / model package."),
    data: str = typer.Argument(..., help="Catalogue set (e.g. breastmnist) or a folder with labels.csv."),
    split: str = typer.Option("test", help="Split to evaluate (catalogue sets)."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    out: Path = typer.Option(None, help="Write the metrics as JSON here."),
) -> None:
    """Evaluate a model on a split: metrics with 95% bootstrap CIs, as a table (and JSON)."""
    import json

    import numpy as np

    from meddx.data.datasets import load_images
    from meddx.evaluation.metrics import bootstrap_metrics, format_table
    from meddx.exceptions import ConfigError
    from meddx.inference import Pipeline

    pipe = Pipeline.load(model)
    sample = load_images(data)
    available = list(sample.splits)
    chosen = split if split in sample.splits else ("all" if available == ["all"] else None)
    if chosen is None:
        raise ConfigError(f"no split {split!r} in {data}", field="split", hint=f"Choose one of {available}")
    images, labels = sample.splits[chosen]
    proba = pipe.predict_arrays(images)
    y = np.asarray(labels).reshape(-1).astype(int)
    results = bootstrap_metrics(y, proba, n_boot=n_boot)
    title = f"{pipe.package['name']} on {data} [{chosen}], n={len(y)}"
    typer.echo(format_table(results, title))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": pipe.package["name"], "data": data, "split": chosen, "n": len(y),
                                   "metrics": results}, indent=2), encoding="utf-8")


def predict(
    model: Path = typer.Argument(..., help="A run folder / model package."),
    files: list[Path] = typer.Argument(..., help="DICOM, PNG/JPEG or NIfTI files."),
    slice_index: int = typer.Option(None, "--slice", help="Slice of a 3-D volume to use."),
) -> None:
    """Predict class probabilities for files; print JSON."""
    import json

    from meddx.inference import Pipeline

    results = Pipeline.load(model).predict_files(list(files), slice_index=slice_index)
    typer.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
