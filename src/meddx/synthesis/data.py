"""Images for restoration: catalogue sets or folders, as [0, 1] grey arrays with patient-level splits.

Restoration needs no labels, but its test images must come from patients (or near-duplicate groups)
the model never trained on, like every meddx split: PneumoniaMNIST keeps its official split,
the COVID chest X-rays the catalogue's patient split (70 / 15 / 15 %, seed 0, the one every COVID model
uses) and the brain MRI set is split by near-duplicate group (seed 0, 10 % validation, 25 % test). A folder is read recursively (PNG, JPEG, DICOM); with ``train/`` and
``test/`` subfolders those are the split, otherwise the last 25 % of the sorted files are the test
images and 10 % of the rest validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, EmptyDataError

SETS: dict[str, dict[str, Any]] = {
    "pneumoniamnist": {"noise": "xray-poisson", "size": 28, "modality": "xray",
                       "description": "paediatric chest X-ray, 28 px (MedMNIST)"},
    "covid-cxr-ieee8023-lungbbox": {"noise": "xray-poisson", "size": 256, "modality": "xray",
                                    "description": "adult chest X-ray, 256 px"},
    "brain-tumor-mri-navoneel": {"noise": "mri-rician", "size": 256, "modality": "mri",
                                 "description": "brain MRI slices, 256 px"},
    "breastmnist": {"noise": "xray-poisson", "size": 28, "modality": "ultrasound",
                    "description": "breast ultrasound, 28 px (MedMNIST); photon noise is not its physics"},
}
"""Catalogue sets a restorer trains on by default, with their dose model and image size."""
SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff"}


@dataclass
class Images:
    """Grey [0, 1] float32 images per split, with their names (file or set index)."""

    splits: dict[str, list[np.ndarray]]
    names: dict[str, list[str]]
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def to_unit(array: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D float32 image in [0, 1] and the ``(low, high)`` it was scaled from.

    8-bit images are divided by 255 and 16-bit integers by 65535 (absolute intensities, as in training);
    anything else (DICOM values after rescale, floats) is min-max scaled. Colour is turned to luminance.
    """
    x = np.asarray(array)
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        x = x[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        low, high = 0.0, 255.0
    elif x.dtype == np.uint8:
        low, high = 0.0, 255.0
    elif x.dtype == np.uint16:
        low, high = 0.0, 65535.0
    else:
        low, high = float(np.min(x)), float(np.max(x))
    if x.ndim != 2:
        raise ConfigError(f"restoration reads 2-D images, this one has shape {x.shape}", field="image",
                          hint="Give one slice (2-D DICOM, PNG or JPEG)")
    span = high - low if high > low else 1.0
    return np.clip((x.astype(np.float64) - low) / span, 0, 1).astype(np.float32), (low, high)


def read_file(path: str | Path) -> tuple[np.ndarray, Any]:
    """``(image in [0, 1], sample)`` of one file through the project's readers (clear errors name the file)."""
    from meddx.data.readers import read

    sample = read(path)
    array = getattr(sample, "array", None)
    if array is None:
        raise ConfigError(f"{Path(path).name} holds no image ({getattr(sample, 'kind', '?')})", field="file",
                          hint="Give a PNG, JPEG or DICOM image")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] not in (3, 4):  # a volume: the middle slice is not what was asked
        raise ConfigError(f"{Path(path).name} is a volume {array.shape}; restoration works slice by slice",
                          field="file", hint="Export the slice to restore as its own file")
    return to_unit(array)[0], sample


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape == (size, size):
        return x
    from skimage.transform import resize

    return np.clip(resize(x, (size, size), order=1, anti_aliasing=True, preserve_range=True), 0, 1).astype(np.float32)


def _file(sample: Any, i: int, name: str) -> str:
    files = (getattr(sample, "files", None) or {}).get("all")
    return str(files[i]) if files else f"{name}[{i}]"


def _catalogue(name: str, size: int) -> Images:
    from meddx.data.datasets import load_images
    from meddx.data.splits import group_train_val_test_split

    sample = load_images(name, size=size, channels=1)
    if "all" in sample.splits:
        images, labels = sample.splits["all"]
        groups = np.asarray(sample.meta["groups"]["all"])
        idx = group_train_val_test_split(labels, groups, val=0.1, test=0.25, seed=0)
        split_rule = "grouped (patient or near-duplicate group), seed 0: 65 / 10 / 25 %"
        return Images({k: [to_unit(images[i])[0] for i in np.sort(v)] for k, v in idx.items()},
                      {k: [_file(sample, i, name) for i in np.sort(v)] for k, v in idx.items()}, name,
                      {"split": split_rule, "labels": {k: np.asarray(labels)[np.sort(v)] for k, v in idx.items()}})
    splits, names, labels = {}, {}, {}
    for part in ("train", "val", "test"):
        images, y = sample.splits[part]
        splits[part] = [to_unit(np.squeeze(x))[0] for x in images]
        files = (getattr(sample, "files", None) or {}).get(part)
        names[part] = list(files) if files else [f"{name}:{part}[{i}]" for i in range(len(images))]
        labels[part] = np.asarray(y).reshape(len(y), -1)[:, 0]
    return Images(splits, names, name, {"split": "official", "labels": labels})


def _folder(root: Path, size: int | None) -> Images:
    def files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)

    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {"train": files(root / "train"), "test": files(root / "test")}
        rule = "the folder's train/ and test/ subfolders"
    else:
        every = files(root)
        n_test = max(1, round(0.25 * len(every))) if len(every) > 2 else 0
        parts = {"train": every[:len(every) - n_test], "test": every[len(every) - n_test:]}
        rule = "sorted file names: the last 25 % test"
    if not parts["train"]:
        raise EmptyDataError("no training images", path=root, field="data",
                             hint=f"Put images ({', '.join(sorted(SUFFIXES))}) in the folder or its train/ subfolder")
    n_val = max(1, round(0.1 * len(parts["train"]))) if len(parts["train"]) > 1 else 0
    parts = {"train": parts["train"][:len(parts["train"]) - n_val], "val": parts["train"][len(parts["train"]) - n_val:],
             "test": parts["test"]}
    splits = {k: [_resize(read_file(p)[0], size) for p in v] for k, v in parts.items()}
    return Images(splits, {k: [str(p.relative_to(root)) for p in v] for k, v in parts.items()}, str(root),
                  {"split": rule + "; the last 10 % of the rest validation"})


def load(data: str, size: int | None = None) -> Images:
    """The images of a catalogue set (:data:`SETS`) or a folder, split for restoration."""
    if data in SETS:
        return _catalogue(data, size or SETS[data]["size"])
    path = Path(data)
    if path.is_dir():
        return _folder(path, size)
    raise ConfigError(f"{data!r} is neither a restoration set nor a folder", field="data",
                      hint=f"Use one of {sorted(SETS)} or a folder of PNG/JPEG/DICOM images")
