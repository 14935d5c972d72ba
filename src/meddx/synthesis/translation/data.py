"""Training sources of the translators, and reading one 2-D image from any file meddx reads.

- ``phantom-pairs[:N]``: ``N`` (default 200) paired CT-like / MR-like phantoms
  (:mod:`~meddx.synthesis.translation.phantoms`), split 70/15/15 by index (each phantom is independent);
- a folder with ``source/`` and ``target/`` subfolders of images (PNG, JPEG, TIFF, BMP, DICOM): paired
  when both hold the same file names (or ``mode="paired"``), else unpaired (or ``mode="unpaired"``);
  split by sorted name, the last 15 % test and the 15 % before validation, per domain;
- ``unpaired:SETA,SETB``: two catalogue image sets (e.g. ``unpaired:pneumoniamnist,covid-cxr-ieee8023-lungbbox``)
  with their own train/val/test splits (official, or by patient). Sets of different native sizes are
  first brought to the smallest native side (so the two domains have one effective resolution and a
  translator cannot tell them apart by sharpness), then resized to ``size``.

Every image becomes float32 grey in [0, 1] (its own minimum and maximum), resized to ``size``×``size``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, MeddxError

PHANTOM = re.compile(r"^phantom-pairs(?::(\d+))?$")
UNPAIRED = "unpaired:"
DEFAULT_PHANTOMS = 200
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", "")
MODES = ("paired", "unpaired")


@dataclass
class Source:
    """Images of both domains per split; for ``paired`` the lists are aligned (``a[i]`` ↔ ``b[i]``)."""

    mode: str
    kind: str
    a_name: str
    b_name: str
    a: dict[str, list[np.ndarray]] = field(default_factory=dict)
    b: dict[str, list[np.ndarray]] = field(default_factory=dict)
    names: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    description: str = ""
    a_modality: str | None = None
    b_modality: str | None = None


def normalise(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array, np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize as sk_resize

    if image.shape == tuple(shape):
        return image.astype(np.float32)
    return sk_resize(image, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def read_2d(path: str | Path) -> tuple[np.ndarray, Any]:
    """``(grey float32 [0, 1] image on the file's own grid, the reader's sample)``; errors name file, field, fix."""
    from meddx.data.readers import read

    sample = read(path)
    array = getattr(sample, "array", None)
    if array is None:
        raise ConfigError(f"a {sample.kind} file, not an image", path=path, field="format",
                          hint="Give a 2-D image: PNG, JPEG or single-frame DICOM")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float64).mean(-1)
    if a.ndim != 2:
        raise ConfigError(f"pixel data of shape {a.shape}: translation models take one 2-D image", path=path,
                          field="shape", hint="Give one 2-D slice (PNG, or a single-frame DICOM)")
    if min(a.shape) < 16:
        raise ConfigError(f"image is {a.shape[0]}×{a.shape[1]} pixels, too small to translate", path=path,
                          field="shape", hint="Give an image at least 16 pixels on each side")
    if not np.isfinite(a).all():
        raise ConfigError("pixel data holds NaN or infinite values", path=path, field="pixel data",
                          hint="Re-export the image")
    return normalise(a), sample


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in SUFFIXES}


def _split_names(names: list[str]) -> dict[str, list[str]]:
    n = len(names)
    n_test = max(1, round(0.15 * n)) if n >= 3 else 0
    n_val = max(1, round(0.15 * n)) if n - n_test >= 2 else 0
    return {"train": names[: n - n_test - n_val], "val": names[n - n_test - n_val: n - n_test],
            "test": names[n - n_test:]}


def is_folder_source(data: str) -> bool:
    path = Path(data)
    return path.is_dir() and (path / "source").is_dir() and (path / "target").is_dir()


def load(data: str, *, size: int = 64, mode: str | None = None, max_train_images: int | None = None,
         seed: int = 0) -> Source:
    """The :class:`Source` of ``data`` (see the module docstring)."""
    from meddx.synthesis.translation.networks import MULTIPLE

    if size % MULTIPLE or size < MULTIPLE:
        raise ConfigError(f"size {size} is not a multiple of {MULTIPLE}", field="size", hint="Use e.g. 64")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}", field="mode", hint=f"Use one of {list(MODES)}")
    match = PHANTOM.match(data)
    if match:
        src = _phantoms(int(match.group(1) or DEFAULT_PHANTOMS), size, seed)
        if mode == "unpaired":
            src.mode = "unpaired"
    elif data.startswith(UNPAIRED):
        if mode == "paired":
            raise ConfigError("two catalogue sets hold no aligned pairs", field="mode",
                              hint="Use mode=unpaired (the default for unpaired:SETA,SETB)")
        src = _catalogue(data, size)
    elif is_folder_source(data):
        src = _folder(Path(data), size, mode)
    else:
        raise ConfigError(f"{data!r} is not a translation source", field="data",
                          hint="Use phantom-pairs[:N], a folder with source/ and target/ subfolders, or "
                          "unpaired:SETA,SETB (two catalogue image sets)")
    if max_train_images:
        src.a["train"] = src.a["train"][:max_train_images]
        src.b["train"] = src.b["train"][:max_train_images]
        for side in ("a", "b"):
            src.names["train"][side] = src.names["train"][side][:max_train_images]
    for side, images in (("source", src.a["train"]), ("target", src.b["train"])):
        if not images:
            raise ConfigError(f"no {side} training images in {data}", field="data",
                              hint="Give at least 3 images per domain (train, validation, test)")
    return src


def _phantoms(n: int, size: int, seed: int) -> Source:
    from meddx.synthesis.translation import phantoms as P

    if n < 3:
        raise ConfigError(f"phantom-pairs:{n}: need at least 3 pairs (train, validation, test)", field="data",
                          hint="Use phantom-pairs:16 or more")
    ct, mr, _ = P.pairs(n, size, seed)
    ids = [f"phantom-{seed}-{i}" for i in range(n)]
    parts = _split_names(ids)
    src = Source("paired", "phantom", P.SOURCE, P.TARGET, a_modality="CT", b_modality="MR",
                 description=f"{n} generated paired CT-like / MR-like phantoms (seed {seed}), split 70/15/15 by index")
    start = 0
    for key in ("train", "val", "test"):
        k = len(parts[key])
        src.a[key], src.b[key] = ct[start:start + k], mr[start:start + k]
        src.names[key] = {"a": parts[key], "b": parts[key]}
        start += k
    return src


def _folder(folder: Path, size: int, mode: str | None) -> Source:
    fa, fb = _files(folder / "source"), _files(folder / "target")
    paired = set(fa) == set(fb) and bool(fa)
    chosen = mode or ("paired" if paired else "unpaired")
    if chosen == "paired" and not paired:
        missing = sorted(set(fa) ^ set(fb))[:5]
        raise ConfigError(f"source/ and target/ do not hold the same file names (e.g. {missing})", path=folder,
                          field="mode", hint="Name each target like its source image, or use mode=unpaired")
    src = Source(chosen, "folder", f"{folder.name}/source", f"{folder.name}/target",
                 description=f"folder {folder}: {len(fa)} source and {len(fb)} target images, {chosen}; last 15 % "
                 "of the sorted names test, the 15 % before validation")
    shape = (size, size)

    def read_all(files: dict[str, Path], names: list[str]) -> list[np.ndarray]:
        out = []
        for n in names:
            try:
                out.append(resize(read_2d(files[n])[0], shape))
            except MeddxError as exc:
                raise ConfigError(f"training image unusable: {exc}", path=files[n], field="data",
                                  hint="Remove or fix the file") from None
        return out

    parts_a = _split_names(sorted(fa))
    parts_b = parts_a if chosen == "paired" else _split_names(sorted(fb))
    for key in ("train", "val", "test"):
        src.a[key], src.b[key] = read_all(fa, parts_a[key]), read_all(fb, parts_b[key])
        src.names[key] = {"a": parts_a[key], "b": parts_b[key]}
    return src


def _catalogue(data: str, size: int) -> Source:
    from meddx.data.datasets import load_images

    names = [n.strip() for n in data[len(UNPAIRED):].split(",") if n.strip()]
    if len(names) != 2:
        raise ConfigError(f"{data!r}: give exactly two catalogue sets", field="data",
                          hint="e.g. unpaired:pneumoniamnist,covid-cxr-ieee8023-lungbbox")
    sets = [load_images(n, size=size, channels=1) for n in names]
    for n, s in zip(names, sets, strict=True):
        if not getattr(s, "splits", None) or not all(k in s.splits for k in ("train", "val", "test")):
            raise ConfigError(f"{n} has no train/val/test split", field="data",
                              hint="Use catalogue sets with splits (e.g. pneumoniamnist, covid-cxr-ieee8023-lungbbox)")
    native = min(min(s.splits["train"][0].shape[1:3]) for s in sets)
    src = Source("unpaired", "catalogue", names[0], names[1],
                 description=f"unpaired {names[0]} (A) and {names[1]} (B), each with its own train/val/test split; "
                 f"both brought to {native} px (the smaller native side), then resized to {size} px")
    for side, s in zip(("a", "b"), sets, strict=True):
        store = src.a if side == "a" else src.b
        for key in ("train", "val", "test"):
            x = s.splits[key][0]
            x = x.mean(-1) if x.ndim == 4 else x
            store[key] = [resize(resize(normalise(i), (native, native)), (size, size)) for i in x]
            src.names.setdefault(key, {})[side] = [f"{key}-{i}" for i in range(len(x))]
    return src
