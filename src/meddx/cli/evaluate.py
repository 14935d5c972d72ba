"""``meddx evaluate``: metrics with 95% bootstrap CIs, plots and JSON for a model on labelled images."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    model: str = typer.Argument(..., help="A run folder / package path, or a registered NAME[:VERSION]."),
    data: str = typer.Argument(..., help="Catalogue set (e.g. breastmnist) or a folder with labels.csv."),
    split: str = typer.Option(
        None, help="Split to evaluate. Default: 'test' (catalogue sets; folders with a split column), "
        "else all of a folder's images."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    out: Path = typer.Option(
        None, help="Output folder: metrics.json, roc.png, pr.png, confusion.png. "
        "A path ending in .json writes only that JSON file."),
    positive: str = typer.Option(None, help="Positive class of a binary model (default: class 1)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    record: bool = typer.Option(
        False, "--record", help="Store the metrics with CIs in the package's package.json and regenerate "
        "MODEL_CARD.md (only for the test split of the catalogue set the model was trained on)."),
) -> None:
    """Evaluate a model on a split or a hospital's own folder: metrics with 95% CIs (patients resampled when known)."""
    from meddx.evaluation.metrics import format_table
    from meddx.evaluation.report import write_json
    from meddx.modalities import call, handler_for_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(model)
    package = read_package(folder)
    handler = handler_for_package(package)
    as_json = out is not None and out.suffix.lower() == ".json"
    result = call(handler.handler().evaluate, folder, package, data, split=split, n_boot=n_boot,
                  out=None if as_json else out, seed=seed, positive=positive, what=f"{handler.name} {handler.task}",
                  **({"record": True} if record else {}))
    prefix = result.pop("title_prefix", "")  # says so when the partition was seen in training or tuning
    if out is not None:
        write_json(out if as_json else out / "metrics.json", result)
    title = f"{prefix}{result.get('model', folder.name)}"
    version = result.get("version") or package.get("version")
    title += f" {version}" if version else ""
    title += f" on {data} [{result.get('split', split or 'test')}], n={result['n']}"
    if result.get("n_groups"):
        title += f", {result['n_groups']} patients/groups"
    typer.echo(format_table(result["metrics"], title))
    if result.get("positive_class") is not None:
        typer.echo(f"\npositive class: {result['positive_class']} (threshold {result['threshold']})")
    _print_shift(result)
    if out is not None:
        typer.echo(f"wrote {out}", err=True)
    if result.get("recorded"):
        typer.echo(f"recorded the metrics in {folder / 'package.json'}; card: {result['recorded']}", err=True)


def _print_shift(result: dict) -> None:
    """Inputs flagged as unlike the training data, ECE beside its noise floor, and the shift recommendation."""
    shift = result.get("shift") or {}
    if isinstance(shift, dict) and isinstance(shift.get("flagged"), int):
        line = f"outside the training data: {shift['flagged']}/{shift.get('n', result.get('n'))} flagged"
        if isinstance(shift.get("expected_flag_rate"), float):
            line += f" (in-distribution rate {shift['expected_flag_rate']:.0%})"
        typer.echo(line)
    value, floor = result.get("ece"), result.get("ece_noise_floor")
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(floor, dict):
        floor = floor.get("p95")
    if value is not None:
        line = f"\nECE {value:.3f}"
        if floor is not None:
            line += f" (a perfectly calibrated model shows up to {floor:.3f} at n={result.get('n')})"
        typer.echo(line)
    rec = shift.get("recommendation") if isinstance(shift, dict) else None
    if isinstance(rec, dict) and rec.get("action"):
        typer.echo(f"recommendation: {rec['action']}" + (f" - {rec['why']}" if rec.get("why") else ""))

