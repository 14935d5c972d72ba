"""``meddx validate``: internal and external validation of a model, side by side."""

from __future__ import annotations

from pathlib import Path

import typer


def validate(
    model: str = typer.Argument(..., help="A run folder / package path, or a registered NAME[:VERSION]."),
    data: list[str] = typer.Option(
        None, "--data", help="Another source to score as it is (a folder with labels.csv, a CSV of records, a "
        "signal folder); repeat for several."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap (and of any retraining)."),
    out: Path = typer.Option(None, help="Write the result as JSON to this file."),
) -> None:
    """External validation: leave-one-source-out when the data know their sources, other collections and
    your folders, beside the internal figure (AUC with 95% CIs, ECE with its noise floor)."""
    from meddx.evaluation.report import write_json
    from meddx.evaluation.validate import format_validation
    from meddx.evaluation.validate import validate as run

    result = run(model, folders=list(data or []), n_boot=n_boot, seed=seed, progress=True)
    typer.echo(format_validation(result))
    if out is not None:
        write_json(out, result)
        typer.echo(f"wrote {out}", err=True)
