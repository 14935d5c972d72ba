"""``meddx predict``."""

from __future__ import annotations

from pathlib import Path

import typer


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
