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

_IMAGE_SETS = {"breastmnist": "*mnist*.npz", "pneumoniamnist": "*mnist*.npz"}


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
        sample = read(resolve_file(fetch(spec.name), _IMAGE_SETS[spec.name]), reader="npz")
        sample.class_names = list(spec.classes.values())
        sample.meta["dataset"] = spec.name
        sample.meta["licence"] = spec.licence
    if not isinstance(sample, LabelledImagesSample):
        raise DatasetNotFoundError(
            f"{source} does not hold labelled images ({sample.kind})", field="data",
            hint="Pass a MedMNIST .npz, a folder with labels.csv, or a catalogue image set",
        )
    return sample
