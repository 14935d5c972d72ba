"""Reading segmentation data: CHASE_DB1 from the catalogue, or a user folder of images and masks.

A user folder holds images (``.png``, ``.jpg``, ``.jpeg``, ``.tif``) and, for each image
``NAME.EXT``, its label mask either beside it as ``NAME_mask.png`` or in a ``masks/``
subfolder as ``masks/NAME.png``. Mask pixels > 0 are foreground. An optional second
observer's mask is ``NAME_mask2.png`` (or ``masks2/NAME.png``). A folder with ``train/``
and ``test/`` subfolders is split by them; otherwise the images are split by name order
(the last 30 % are the test partition).

CHASE_DB1 (``chase-db1-retina-vessel-seg``): ``Image_XX{L,R}.jpg`` with ``_1stHO.png``
(the reference) and ``_2ndHO.png`` (second observer); the common split puts the first
20 images (children 1-10) in training and the last 8 (children 11-14) in the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
)

CHASE = "chase-db1-retina-vessel-seg"
CHASE_TRAIN = 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PREPROCESSING = {
    "green-clahe": "green channel, CLAHE (clip 2, 8x8 tiles), gamma 1.2, z-scored inside the FOV, 0 outside",
    "rgb-clahe": "RGB with CLAHE on the L* channel of L*a*b*, each channel z-scored inside the FOV, 0 outside",
}
"""Preprocessing name → what it does (recorded in package.json)."""


@dataclass(frozen=True)
class Sample:
    """One image with its reference mask and, when there is one, a second observer's mask."""

    name: str
    image: Path
    mask: Path | None
    second: Path | None = None


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array, or a CorruptFileError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError("no such image file", path=path, hint="Check the path")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptFileError(f"cannot decode the image ({exc.__class__.__name__}: {exc})", path=path,
                               hint="Give a PNG or JPEG file that opens in an image viewer") from None


def read_mask(path: Path, shape: tuple[int, int], *, image: Path | None = None) -> np.ndarray:
    """A boolean (H, W) mask (pixels > 0 are foreground) that must match ``shape`` (the image's rows, columns)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mask = np.asarray(img.convert("L")) > 0
    except FileNotFoundError:
        raise DataFileNotFoundError("no such mask file", path=path, hint="Check the path") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptFileError(f"cannot decode the mask ({exc})", path=path,
                               hint="Give a PNG mask (0 = background, >0 = foreground)") from None
    if mask.shape != tuple(shape):
        raise InvalidValueError(
            f"mask is {mask.shape[0]}×{mask.shape[1]} pixels but its image {Path(image).name if image else ''} "
            f"is {shape[0]}×{shape[1]}", path=path, field="shape",
            hint="Give each image a mask of the same size (rows × columns), drawn on that image")
    return mask


def chase_samples(folder: Path) -> list[Sample]:
    """The 28 CHASE_DB1 images in name order (the first 20 are the common training set)."""
    images = sorted(Path(folder).glob("Image_*[LR].jpg"))
    if not images:
        raise EmptyDataError("no Image_XX{L,R}.jpg files", path=folder,
                             hint=f"Fetch the set again: meddx data fetch {CHASE}")
    out = []
    for image in images:
        first = image.with_name(f"{image.stem}_1stHO.png")
        second = image.with_name(f"{image.stem}_2ndHO.png")
        out.append(Sample(image.stem, image, first, second if second.is_file() else None))
    return out


def _mask_for(image: Path, root: Path, second: bool = False) -> Path | None:
    suffix = "_mask2" if second else "_mask"
    sub = "masks2" if second else "masks"
    for candidate in (image.with_name(f"{image.stem}{suffix}.png"), root / sub / f"{image.stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def folder_samples(folder: Path, *, need_masks: bool = True) -> list[Sample]:
    """Images of a user folder with their masks (see the module docstring for the layout)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileNotFoundError("no such folder", path=folder,
                                    hint=f"Give a folder of images and masks, or the catalogue name {CHASE}")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.stem.endswith(("_mask", "_mask2")))
    if not images:
        raise EmptyDataError("no images (.png, .jpg, .tif) in the folder", path=folder,
                             hint="Put NAME.png images beside NAME_mask.png masks (or in masks/NAME.png)")
    samples = []
    for image in images:
        mask = _mask_for(image, folder)
        if mask is None and need_masks:
            raise DataFileNotFoundError(f"no mask for {image.name}", path=image, field="mask",
                                        hint=f"Add {image.stem}_mask.png beside it or masks/{image.stem}.png")
        samples.append(Sample(image.stem, image, mask, _mask_for(image, folder, second=True)))
    return samples


def resolve(data: str) -> tuple[Path, str]:
    """``(folder, kind)`` of a training source: ``kind`` is ``"chase"`` or ``"folder"``."""
    if data == CHASE:
        from meddx.data.catalogue import fetch

        return Path(fetch(CHASE)), "chase"
    path = Path(data)
    if not path.exists():
        raise DataFileNotFoundError("no such folder or catalogue set", path=path,
                                    hint=f"Give {CHASE} or a folder of images with NAME_mask.png masks")
    if path.is_dir() and any(path.glob("Image_*[LR]_1stHO.png")):
        return path, "chase"
    return path, "folder"


def split(data: str) -> dict[str, list[Sample]]:
    """``{"train": [...], "test": [...]}`` for a catalogue name or a folder."""
    folder, kind = resolve(data)
    if kind == "chase":
        samples = chase_samples(folder)
        return {"train": samples[:CHASE_TRAIN], "test": samples[CHASE_TRAIN:]}
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return {"train": folder_samples(folder / "train"), "test": folder_samples(folder / "test")}
    samples = folder_samples(folder)
    if len(samples) < 2:
        raise EmptyDataError(f"{len(samples)} image(s): too few to train and test", path=folder,
                             hint="Give at least 2 images with masks (more than 10 for a useful model)")
    n_test = max(1, round(0.3 * len(samples)))
    return {"train": samples[:-n_test], "test": samples[-n_test:]}


def load(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image RGB uint8, reference mask bool or None)``; a mask of another size is an InvalidValueError."""
    image = read_image(sample.image)
    mask = read_mask(sample.mask, image.shape[:2], image=sample.image) if sample.mask else None
    return image, mask


def preprocess(image: np.ndarray, fov: np.ndarray, method: str = "green-clahe") -> np.ndarray:
    """Float32 (C, H, W) network input: CLAHE-enhanced green channel (or RGB), z-scored inside the FOV.

    ``green-clahe``: the green channel (best vessel contrast in fundus images), CLAHE
    (clip 2, 8×8 tiles), gamma 1.2, z-scored over the FOV, 0 outside.
    ``rgb-clahe``: CLAHE on the L channel of L*a*b*, each RGB channel z-scored over the FOV.
    """
    import cv2

    if method not in PREPROCESSING:
        raise ConfigError(f"unknown preprocessing {method!r}", field="preprocessing",
                          hint=f"Use one of {list(PREPROCESSING)}")
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    if method == "green-clahe":
        green = clahe.apply(np.ascontiguousarray(image[..., 1]))
        channels = (np.power(green / 255.0, 1.2))[None]
    else:
        lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        channels = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).transpose(2, 0, 1) / 255.0
    out = np.zeros(channels.shape, np.float32)
    for c, channel in enumerate(channels):
        values = channel[fov]
        sd = float(values.std()) or 1.0
        out[c] = np.where(fov, (channel - float(values.mean())) / sd, 0.0)
    return out
