"""``meddx evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer


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
