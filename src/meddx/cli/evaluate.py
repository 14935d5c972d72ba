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
    from meddx.data.datasets import load_images
    from meddx.evaluation.metrics import format_table
    from meddx.evaluation.report import evaluate_model, recorded_metrics, write_json
    from meddx.exceptions import ConfigError
    from meddx.inference import Pipeline
    from meddx.modalities import IMAGE, get_modality, modality_of_package
    from meddx.packaging.registry import read_package, resolve

    import numpy as np

    folder = resolve(model)
    modality = modality_of_package(read_package(folder))
    if modality != IMAGE:
        package = read_package(folder)
        result = get_modality(modality).handler().evaluate(
            folder, package, data, split=split, n_boot=n_boot,
            out=out if out is not None and out.suffix.lower() != ".json" else None, seed=seed, positive=positive)
        if out is not None and out.suffix.lower() == ".json":
            write_json(out, result)
        title = f"{result.get('model', folder.name)} on {data} [{result.get('split', split or 'test')}], n={result['n']}"
        typer.echo(format_table(result["metrics"], title))
        _print_shift(result)
        if out is not None:
            typer.echo(f"wrote {out}", err=True)
        return

    pipe = Pipeline.load(folder)
    pre = pipe.package["preprocess"]
    is_folder = Path(data).is_dir()
    sample = load_images(data, size=pre["size"], channels=pre["in_chans"]) if is_folder else load_images(data)
    from meddx.evaluation.shift import choose_partition, seen_title, shift_block

    part = choose_partition(pipe.folder, pipe.package, data, sample, split)
    chosen = part["split"]
    if record:
        _check_record(pipe.package, sample.meta.get("dataset"), data, chosen, is_folder)

    images, labels, groups = part["images"], part["labels"], part["groups"]
    result = evaluate_model(
        pipe, images, labels, groups=groups, class_names=sample.class_names,
        out_dir=out if out is not None and out.suffix.lower() != ".json" else None,
        n_boot=n_boot, seed=seed, positive=positive, data=data, split=chosen,
        source=Path(data) / "labels.csv" if is_folder else None,
    )
    result["seen_by_model"] = part["seen_by_model"]
    result["validation"] = part["seen_by_model"] is None
    from meddx.evaluation.report import map_labels

    y = map_labels(labels, pipe.class_names, sample.class_names, path=None)
    pos = pipe.class_names.index(result["positive_class"]) if result.get("positive_class") else None
    result["shift"] = shift_block(pipe, np.asarray(images), y, pos)
    if result["shift"] and "ece" in result["shift"]:
        result["ece"] = result["shift"]["ece"]["value"]
        result["ece_noise_floor"] = result["shift"]["ece"]["noise_floor_p95"]
    if out is not None and out.suffix.lower() != ".json":
        write_json(out / "metrics.json", result)
    if out is not None and out.suffix.lower() == ".json":
        write_json(out, result)

    version = pipe.package.get("version", "")
    title = f"{seen_title(result['seen_by_model'])}{result['model']} {version} on {data} [{chosen}], n={result['n']}"
    if result["n_groups"]:
        title += f", {result['n_groups']} patients/groups"
    typer.echo(format_table(result["metrics"], title))
    if result["positive_class"] is not None:
        typer.echo(f"\npositive class: {result['positive_class']} (threshold {result['threshold']})")
    shift = result.get("shift")
    if shift:
        line = f"outside the training data: {shift['flagged']}/{shift['n']} flagged " \
               f"(in-distribution rate {shift['expected_flag_rate']:.0%})"
        if "ece" in shift:
            line += f"; ECE {shift['ece']['value']:.3f} (noise floor at n={shift['n']}: {shift['ece']['noise_floor_p95']:.3f})"
        typer.echo(line)
        typer.echo(f"recommendation: {shift['recommendation']['action']} - {shift['recommendation']['why']}")
    if out is not None:
        typer.echo(f"wrote {out}", err=True)
    if record:
        from meddx.packaging import read_package, write_card, write_package

        package = read_package(pipe.folder)
        package["metrics"] = recorded_metrics(result)
        write_package(pipe.folder, package)
        card = write_card(pipe.folder, package)
        typer.echo(f"recorded the metrics in {pipe.folder / 'package.json'}; card: {card}", err=True)


def _check_record(package: dict, dataset: str | None, data: str, split: str, is_folder: bool) -> None:
    """--record is for the official test split of the catalogue set the model learnt from."""
    from meddx.exceptions import ConfigError

    if is_folder or dataset is None:
        raise ConfigError(
            "--record stores test metrics of a catalogue data set; this is a folder", field="record",
            hint="Evaluate on local data without --record (use --out to keep the report)",
        )
    if split != "test":
        raise ConfigError(f"--record needs the test split, not {split!r}", field="record", hint="Drop --split")
    trained_on = (package.get("data") or {}).get("dataset")
    if trained_on and trained_on != dataset:
        raise ConfigError(
            f"the model was trained on {trained_on}, not {dataset}", field="record",
            hint=f"Record on `{trained_on}`, or evaluate {data} without --record",
        )


def _print_shift(result: dict) -> None:
    """ECE beside its noise floor and the shift recommendation, for signal and record models."""
    value, floor = result.get("ece"), result.get("ece_noise_floor")
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(floor, dict):
        floor = floor.get("p95")
    shift = result.get("shift") or {}
    if value is not None:
        line = f"\nECE {value:.3f}"
        if floor is not None:
            line += f" (a perfectly calibrated model shows up to {floor:.3f} at n={result.get('n')})"
        typer.echo(line)
    rec = shift.get("recommendation") if isinstance(shift, dict) else None
    if isinstance(rec, dict) and rec.get("action"):
        typer.echo(f"recommendation: {rec['action']}" + (f" - {rec['why']}" if rec.get("why") else ""))

