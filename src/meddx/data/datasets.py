"""Labelled image collections for training and evaluation, from the catalogue or a folder.

``load_images("breastmnist")`` fetches the data set (mirror → cache → download)
and returns its official splits; ``load_images("path/to/folder")`` reads a
folder of images with a ``labels.csv``. Data sets without an official split are
split by group (patient, record, near-duplicate group) by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from meddx.data.sample import LabelledImagesSample
from meddx.exceptions import DatasetNotFoundError

if TYPE_CHECKING:
    import numpy as np

_POSITIVE = {"breastmnist": "malignant", "pneumoniamnist": "pneumonia", "brain-tumor-mri-navoneel": "tumour",
             "covid-cxr-ieee8023-lungbbox": "COVID-19"}
# catalogue name -> the .npz inside it, or None for sets read by a loader of _FOLDER_LOADERS
_IMAGE_SETS = {"breastmnist": "*mnist*.npz", "pneumoniamnist": "*mnist*.npz", "brain-tumor-mri-navoneel": None,
               "covid-cxr-ieee8023-lungbbox": None}


def load_images(source: str | Path, *, size: int | None = None, channels: int | None = None) -> LabelledImagesSample:
    """Labelled images from a catalogue name or a folder/``.npz`` path."""
    from meddx.data.catalogue import fetch, get_dataset, resolve_file
    from meddx.data.readers import read

    path = Path(source)
    if path.exists():
        options = {}
        if path.is_dir():
            if size is not None:
                options["size"] = (size, size)
            if channels is not None:
                options["channels"] = channels
        sample = read(path, **options)
    else:
        spec = get_dataset(str(source))
        if spec.name not in _IMAGE_SETS:
            raise DatasetNotFoundError(
                f"{spec.name} is not a labelled image classification set", field="data",
                hint=f"Use one of: {', '.join(_IMAGE_SETS)}, or a folder with labels.csv",
            )
        if _IMAGE_SETS[spec.name] is None:
            sample = _FOLDER_LOADERS[spec.name](fetch(spec.name), size or 128, channels or 1)
        else:
            sample = read(resolve_file(fetch(spec.name), _IMAGE_SETS[spec.name]), reader="npz")
            sample.class_names = list(spec.classes.values())
        sample.meta["dataset"] = spec.name
        sample.meta["positive_class"] = _POSITIVE.get(spec.name)
        sample.meta["licence"] = spec.licence
    if not isinstance(sample, LabelledImagesSample):
        raise DatasetNotFoundError(
            f"{source} does not hold labelled images ({sample.kind})", field="data",
            hint="Pass a MedMNIST .npz, a folder with labels.csv, or a catalogue image set",
        )
    return sample


def _brain_tumor(folder: Path, size: int, channels: int) -> LabelledImagesSample:
    """All 253 images resized to ``size``, labels ``no``=0 / ``yes``=1, near-duplicate groups in meta."""
    import numpy as np
    from PIL import Image

    from meddx.data.splits import near_duplicate_groups

    files = sorted(p for sub in ("no", "yes") for p in (folder / sub).iterdir()
                   if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    mode = "L" if channels == 1 else "RGB"
    grey = [np.asarray(Image.open(f).convert("L")) for f in files]
    images = np.stack([np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BILINEAR)) for f in files])
    labels = np.array([int(f.parent.name == "yes") for f in files], dtype=np.int64)
    groups = near_duplicate_groups(grey)
    return LabelledImagesSample(
        path=folder, format="image-folder", splits={"all": (images, labels)}, class_names=["no tumour", "tumour"],
        files={"all": [str(f.relative_to(folder)) for f in files]},
        meta={"dataset": "brain-tumor-mri-navoneel", "groups": {"all": groups.tolist()},
              "licence": "unknown (Kaggle) / carrier repository Apache-2.0",
              "grouping": "near-duplicates (normalised correlation > 0.95 at 64x64)"},
    )


def _pad_square(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Zero-pad a grey image to a square, centred; return it and the (x, y) offsets."""
    import numpy as np

    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side), dtype=image.dtype)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = image
    return out, x0, y0


def _covid_cxr(folder: Path, size: int, channels: int) -> LabelledImagesSample:
    """COVID-19 vs other findings on chest X-rays, split 70/15/15 by patient (seed 0).

    Images with an unknown finding (``todo``, ``Unknown``, none) are left out and
    counted in ``meta["excluded"]``. Each image is zero-padded to a square and
    resized to ``size``; the lung boxes (COCO, ``Right Lung``/``Left Lung``) follow
    into ``meta["boxes"][split]`` as ``(x0, y0, x1, y1)`` in those pixels, and sex
    and age into ``meta["attributes"][split]`` for subgroup tables.
    """
    import csv
    import json

    import numpy as np
    from PIL import Image

    from meddx.data.splits import group_train_val_test_split

    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        meta_rows = {row["filename"]: row for row in csv.DictReader(fh)}
    boxes_by_image: dict[int, list[list[float]]] = {}
    for ann in coco["annotations"]:
        boxes_by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    images, labels, groups, sex, age, boxes, files = [], [], [], [], [], [], []
    excluded: dict[str, int] = {}
    for record in sorted(coco["images"], key=lambda r: r["file_name"]):
        row = meta_rows.get(record["orig_file_name"])
        finding = (row or {}).get("finding") or "missing metadata"
        if finding in ("todo", "Unknown", "missing metadata"):
            excluded[finding] = excluded.get(finding, 0) + 1
            continue
        grey = np.asarray(Image.open(folder / "images_max384" / record["file_name"]).convert("L"))
        square, x_off, y_off = _pad_square(grey)
        scale = size / square.shape[0]
        resized = Image.fromarray(square).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(resized.convert("RGB") if channels == 3 else resized))
        labels.append(int("COVID-19" in finding))
        groups.append(row["patientid"])
        sex.append(row.get("sex") or "unknown")
        age.append(row.get("age") or None)
        boxes.append([[(x + x_off) * scale, (y + y_off) * scale, (x + w + x_off) * scale, (y + h + y_off) * scale]
                      for x, y, w, h in boxes_by_image.get(record["id"], [])])
        files.append(record["file_name"])
    labels_arr = np.asarray(labels, dtype=np.int64)
    idx = group_train_val_test_split(labels_arr, np.asarray(groups), val=0.15, test=0.15, seed=0)
    stack = np.stack(images)
    splits = {k: (stack[v], labels_arr[v]) for k, v in idx.items()}
    pick = {k: [int(i) for i in v] for k, v in idx.items()}
    return LabelledImagesSample(
        path=folder, format="image-folder", splits=splits, class_names=["other finding", "COVID-19"],
        files={k: [files[i] for i in v] for k, v in pick.items()},
        meta={"dataset": "covid-cxr-ieee8023-lungbbox", "groups": {k: [groups[i] for i in v] for k, v in pick.items()},
              "attributes": {k: {"sex": [sex[i] for i in v], "age": [age[i] for i in v]} for k, v in pick.items()},
              "boxes": {k: [boxes[i] for i in v] for k, v in pick.items()}, "excluded": excluded,
              "grouping": "patientid; 70/15/15 train/val/test split by patient (seed 0)",
              "description": "Chest X-rays from the IEEE8023 COVID-19 image collection with lung boxes; "
                             "COVID-19 against other findings (bacterial, viral and fungal pneumonias, "
                             "ARDS, no finding).",
              "licence": "per image (metadata.csv `license`), mostly CC BY-NC-SA / CC BY"},
    )


_FOLDER_LOADERS = {"brain-tumor-mri-navoneel": _brain_tumor, "covid-cxr-ieee8023-lungbbox": _covid_cxr}
