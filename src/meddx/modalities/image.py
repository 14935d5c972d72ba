"""The (image, classification) handler: ``meddx.training`` trains, ``meddx.inference`` predicts.

The same interface as every other handler (see :mod:`meddx.modalities`), so the CLI, the
validation command and the report reach image classifiers the way they reach signal,
record, fusion, segmentation and detection models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, resume: Path | None = None, **options: Any) -> Path:
    """Train an image classifier (``options``: the fields of :class:`meddx.training.TrainConfig`)."""
    from dataclasses import fields

    from meddx.training import TrainConfig
    from meddx.training import train as run_training

    if resume is not None:
        saved = json.loads((Path(resume) / "config.json").read_text(encoding="utf-8"))
        config = TrainConfig(**{**saved, "resume": str(resume), "epochs": epochs or saved["epochs"]})
        return run_training(config, progress=progress)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"--{unknown[0].replace('_', '-')} does not apply to image classifiers", field=unknown[0],
                          hint="See `meddx train --help`")
    config = TrainConfig(data=data, model=model or "cnn-small", seed=seed, out=str(out) if out else None,
                         **({"epochs": epochs} if epochs is not None else {}), **options)
    return run_training(config, progress=progress)


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None, record: bool = False) -> dict[str, Any]:
    """Metrics with 95% CIs on ``data`` (default: a partition the model never saw), plus the shift block.

    ``record`` stores the metrics in the package and regenerates its card (only for the test
    split of the catalogue set the model was trained on).
    """
    from meddx.data.datasets import load_images
    from meddx.evaluation.report import evaluate_model, map_labels, recorded_metrics
    from meddx.evaluation.shift import choose_partition, seen_title, shift_block
    from meddx.inference import Pipeline

    pipe = Pipeline.load(folder)
    pre = pipe.package["preprocess"]
    is_folder = Path(data).is_dir()
    sample = load_images(data, size=pre["size"], channels=pre["in_chans"]) if is_folder else load_images(data)
    part = choose_partition(pipe.folder, pipe.package, data, sample, split)
    chosen = part["split"]
    if record:
        _check_record(pipe.package, sample.meta.get("dataset"), data, chosen, is_folder)
    images, labels, groups = part["images"], part["labels"], part["groups"]
    result = evaluate_model(
        pipe, images, labels, groups=groups, class_names=sample.class_names, out_dir=out, n_boot=n_boot, seed=seed,
        positive=positive, data=data, split=chosen, source=Path(data) / "labels.csv" if is_folder else None,
    )
    result["seen_by_model"] = part["seen_by_model"]
    result["validation"] = part["seen_by_model"] is None
    result["title_prefix"] = seen_title(result["seen_by_model"])
    y = map_labels(labels, pipe.class_names, sample.class_names, path=None)
    pos = pipe.class_names.index(result["positive_class"]) if result.get("positive_class") else None
    result["shift"] = shift_block(pipe, np.asarray(images), y, pos)
    if result["shift"] and "ece" in result["shift"]:
        result["ece"] = result["shift"]["ece"]["value"]
        result["ece_noise_floor"] = result["shift"]["ece"]["noise_floor_p95"]
    if record:
        from meddx.packaging import read_package, write_card, write_package

        stored = read_package(pipe.folder)
        stored["metrics"] = recorded_metrics(result)
        write_package(pipe.folder, stored)
        result["recorded"] = str(write_card(pipe.folder, stored))
    return result


def _check_record(package: dict[str, Any], dataset: str | None, data: str, split: str, is_folder: bool) -> None:
    """--record is for the official test split of the catalogue set the model learnt from."""
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


def predict(folder: Path, package: dict[str, Any], inputs: list[str], *, slice_index: int | None = None,
            uncertainty: str = "auto", samples: int = 20, explain: str | None = None,
            explain_dir: Path | None = None) -> list[dict[str, Any]]:
    """One prediction dict per image file (a rejected one for a file that is not a usable image)."""
    from meddx.inference import Pipeline

    return Pipeline.load(folder).predict([Path(i) for i in inputs], slice_index=slice_index, uncertainty=uncertainty,
                                         samples=samples, explain=explain, explain_dir=explain_dir or Path("."))


def report(folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
           split: str | None = None, explain: int = 4, explain_method: str = "gradcam", local_fraction: float = 0.0,
           uncertainty: str = "auto") -> Path:
    """The HTML validation report with explanations, subgroups and the checklist (:mod:`meddx.report.build`)."""
    from meddx.report.build import build_report

    return build_report(folder, data, split=split, out=out, n_boot=n_boot, explain=explain,
                        explain_method=explain_method, local_fraction=local_fraction, uncertainty=uncertainty)


def validate(folder: Path, package: dict[str, Any], *, folders: list[str], n_boot: int = 1000, seed: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Internal, other-collection, leave-one-source-out and user-folder rows."""
    from meddx.evaluation.validate_images import validate as run

    return run(folder, package, folders=folders, n_boot=n_boot, seed=seed, progress=progress)


def refit_ood(model: str | Path, *, flag_rate: float = 0.05) -> dict[str, Any]:
    """(Re)fit the package's out-of-distribution gate on its own training and validation splits."""
    from meddx.training.trainer import refit_ood as refit

    return refit(model, flag_rate=flag_rate)
