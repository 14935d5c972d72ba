"""Labelled image collections for training and evaluation, from the catalogue or a folder.

``load_images("breastmnist")`` fetches the data set (mirror → cache → download)
and returns its official splits; ``load_images("path/to/folder")`` reads a
folder of images with a ``labels.csv``. Data sets without an official split are
split by group (patient, record, near-duplicate group) by the caller.
"""

from __future__ import annotations

from pathlib import Path

from meddx.data.sample import LabelledImagesSample
from meddx.exceptions import DatasetNotFoundError

_POSITIVE = {"breastmnist": "malignant", "pneumoniamnist": "pneumonia", "brain-tumor-mri-navoneel": "tumour"}
_IMAGE_SETS = {"breastmnist": "*mnist*.npz", "pneumoniamnist": "*mnist*.npz", "brain-tumor-mri-navoneel": None}


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
        if _IMAGE_SETS[spec.name] is None:  # an image folder: yes/ and no/, grouped by near-duplicates
            sample = _brain_tumor(fetch(spec.name), size or 128, channels or 1)
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
