"""``meddx validate`` for image packages: internal beside external figures.

The checks, in order (see :mod:`meddx.evaluation.validate` for the row format):

1. **internal**: the partition of the package's own data set it never saw (test split or
   training hold-out, :func:`meddx.evaluation.shift.choose_partition`);
2. **other collections** registered for the set (:data:`COLLECTIONS`): e.g. the adult films
   of ``covid-cxr-ieee8023-lungbbox`` for a paediatric PneumoniaMNIST model;
3. **leave-one-source-out** when :mod:`meddx.data.sources` knows each image's source: the
   package's recipe (its ``config.json``) is retrained without one source, on a temporary
   image folder, and scored on that source; for each source in turn;
4. every **folder** the user gives (images with ``labels.csv``), scored as it is.

Each row also says which share of its images the OOD gate flags (``ood_flagged``) and the
AUC on the ones it does not (``auc_not_flagged``): off its data a model should say so.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from meddx.evaluation.validate import block

Collection = Callable[[Any], tuple[str, str, Any, np.ndarray, str]]
"""``fn(pipeline) -> (kind, source, images (a stack or a list), labels as model class indices, note)``."""

COLLECTIONS: dict[str, list[Collection]] = {}


def register_collection(dataset: str) -> Callable[[Collection], Collection]:
    """Register another collection that a model trained on ``dataset`` should be validated on."""

    def deco(fn: Collection) -> Collection:
        COLLECTIONS.setdefault(dataset, []).append(fn)
        return fn

    return deco


@register_collection("pneumoniamnist")
def _adult_films(pipeline: Any) -> tuple[str, str, list[np.ndarray], np.ndarray, str]:
    """Adult PA/AP films of the IEEE8023 collection: pneumonia findings against "No Finding"."""
    import csv

    from meddx.data.catalogue import fetch

    folder = Path(fetch("covid-cxr-ieee8023-lungbbox"))
    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        meta = {row["filename"]: row for row in csv.DictReader(fh)}
    positive = pipeline.class_names.index(pipeline.package.get("positive_class") or pipeline.class_names[-1])
    images, labels = [], []
    for record in sorted(coco["images"], key=lambda r: r["file_name"]):
        row = meta.get(record["orig_file_name"]) or {}
        finding = row.get("finding") or ""
        if row.get("view") not in ("PA", "AP", "AP Supine", "AP Erect") or finding in ("", "todo", "Unknown"):
            continue
        images.append(pipeline.image_from_file(folder / "images_max384" / record["file_name"]))
        labels.append(1 - positive if finding == "No Finding" else positive)
    return ("other collection", "covid-cxr adult PA/AP films (pneumonia vs No Finding)", images,
            np.asarray(labels), "adult films from many hospitals; the model was trained on children (Guangzhou)")


def _predict(pipeline: Any, images: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Calibrated probabilities and, when the package has an OOD gate, the flags.

    ``images`` is a stack, or a list of images of different sizes (each resized by the pipeline).
    """
    if isinstance(images, list):
        parts = [_predict(pipeline, image[None]) for image in images]
        proba = np.concatenate([p for p, _ in parts])
        flags = None if parts[0][1] is None else np.concatenate([f for _, f in parts])
        return proba, flags
    proba = pipeline.predict_arrays(images)
    flags = None
    if pipeline.ood is not None:
        flags = np.array([v["flagged"] for v in pipeline.assess_ood(images)])
    return proba, flags


def _row(kind: str, source: str, y: np.ndarray, proba: np.ndarray, flags: np.ndarray | None, *,
         n_boot: int, seed: int, groups: Any = None, note: str = "") -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if flags is not None:
        extra["ood_flagged"] = float(flags.mean())
        kept = ~flags
        if kept.sum() >= 10 and len(np.unique(y[kept])) == 2:
            from meddx.evaluation.validate import auc_ci

            extra["auc_not_flagged"] = auc_ci(y[kept], proba[kept], n_boot=n_boot, seed=seed)
    return block(kind, source, y, proba, n_boot=n_boot, seed=seed, groups=groups, note=note, **extra)


def _recipe(folder: Path, package: dict[str, Any]) -> dict[str, Any]:
    """The package's training configuration (first member of an ensemble), without data/out/resume."""
    from meddx.training import TrainConfig

    members = package.get("members") or []
    path = (folder / members[0] / "config.json") if members else folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    known = {f.name for f in fields(TrainConfig)}
    recipe = {k: v for k, v in config.items() if k in known and k not in ("data", "out", "resume")}
    if members:
        recipe["ensemble"] = len(members)
    return recipe


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                  groups: np.ndarray | None) -> Path:
    """Images as PNGs with a ``labels.csv`` (file,label[,group]): the trainer's folder format."""
    import csv

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "group"] if groups is not None else ["file", "label"])
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            name = f"{i:05d}.png"
            Image.fromarray(np.asarray(image)).save(root / name)
            row = [name, class_names[int(label)]]
            writer.writerow([*row, str(groups[i])] if groups is not None else row)
    return root


def leave_one_source_out(folder: Path, package: dict[str, Any], sample: Any, sources: dict[str, np.ndarray],
                         how: str, *, n_boot: int, seed: int, progress: bool = False,
                         min_per_class: int = 5) -> list[dict[str, Any]]:
    """Retrain the package's recipe without each source in turn; score it on that source."""
    from meddx.inference import Pipeline
    from meddx.training import TrainConfig, train

    names = list(sources)
    images = np.concatenate([np.asarray(sample.splits[k][0]) for k in names])
    labels = np.concatenate([np.asarray(sample.splits[k][1]) for k in names]).astype(int)
    where = np.concatenate([sources[k] for k in names])
    groups_meta = sample.meta.get("groups")
    groups = (np.concatenate([np.asarray(groups_meta[k]).astype(str) for k in names])
              if isinstance(groups_meta, dict) and all(k in groups_meta for k in names) else None)
    recipe = _recipe(folder, package)
    rows = []
    for source in sorted(np.unique(where)):
        held = where == source
        counts = np.bincount(labels[held], minlength=2)
        if counts.min() < min_per_class:
            continue
        with tempfile.TemporaryDirectory(prefix="meddx-loso-") as tmp:
            data = _write_folder(Path(tmp) / "data", images[~held], labels[~held], list(sample.class_names),
                                 None if groups is None else groups[~held])
            if progress:
                print(f"leave-one-source-out: training without {source} ({int((~held).sum())} images)", flush=True)
            run = train(TrainConfig(data=str(data), out=str(Path(tmp) / "run"), **recipe), progress=False)
            pipe = Pipeline.load(run)
            proba, flags = _predict(pipe, images[held])
            # the folder's classes come back sorted: put the columns in the data set's order
            order = [list(pipe.class_names).index(str(name)) for name in sample.class_names]
            proba, y = proba[:, order], labels[held]
            rows.append(_row("leave-one-source-out", str(source), y, proba, flags, n_boot=n_boot, seed=seed,
                             groups=None if groups is None else groups[held],
                             note=f"retrained without it; a source is {how}"))
    return rows


def validate(folder: Path, package: dict[str, Any], *, folders: list[str], n_boot: int = 1000, seed: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Internal, other-collection, leave-one-source-out and user-folder rows for an image package."""
    from meddx.data.datasets import load_images
    from meddx.data.sources import sources_of
    from meddx.evaluation.report import map_labels
    from meddx.evaluation.shift import choose_partition
    from meddx.inference import Pipeline

    pipe = Pipeline.load(folder)
    data = package.get("data") or {}
    dataset = str(data.get("dataset") or data.get("source") or "")
    pre = pipe.package["preprocess"]
    own_folder = Path(dataset).is_dir()
    sample = load_images(dataset, size=pre["size"], channels=pre["in_chans"]) if own_folder else load_images(dataset)
    cv = package.get("cv") or {}
    if cv.get("oof_auc") and "test" not in sample.splits:
        # a cross-validated ensemble saw every image of its set: its honest internal figure is the
        # out-of-fold one recorded at training (each image scored by the fold model that never saw it)
        internal = {"kind": "internal", "source": f"{dataset} [out-of-fold, {cv.get('folds')}-fold CV]",
                    "n": int(cv.get("n") or 0), "prevalence": None, "auc": cv["oof_auc"], "ece": None,
                    "ece_floor": None, "note": f"recorded at training: {cv.get('note', '')}"}
    else:
        part = choose_partition(folder, package, dataset, sample, None)
        y = map_labels(part["labels"], pipe.class_names, sample.class_names, path=None)
        proba, flags = _predict(pipe, np.asarray(part["images"]))
        internal = _row("internal", f"{dataset} [{part['split']}]", y, proba, flags, n_boot=n_boot, seed=seed,
                        groups=part["groups"])
    external: list[dict[str, Any]] = []
    for collection in COLLECTIONS.get(dataset, []):
        kind, source, images, labels, note = collection(pipe)
        p, f = _predict(pipe, images)
        external.append(_row(kind, source, labels, p, f, n_boot=n_boot, seed=seed, note=note))
    known = sources_of(dataset, sample)
    if known is not None:
        external += leave_one_source_out(folder, package, sample, *known, n_boot=n_boot, seed=seed,
                                         progress=progress)
    for path in folders:
        other = load_images(path, size=pre["size"], channels=pre["in_chans"])
        images = np.concatenate([np.asarray(v[0]) for v in other.splits.values()])
        raw = np.concatenate([np.asarray(v[1]) for v in other.splits.values()])
        yy = map_labels(raw, pipe.class_names, other.class_names, path=Path(path) / "labels.csv")
        p, f = _predict(pipe, images)
        external.append(_row("folder", str(path), yy, p, f, n_boot=n_boot, seed=seed, note="scored as it is"))
    return {"model": str(package.get("name") or folder.name), "set": dataset, "modality": "image",
            "internal": internal, "external": external,
            "sources": None if known is None else known[1]}
