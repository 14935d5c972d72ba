"""MedMNIST-style ``.npz`` files: ``{split}_images`` and ``{split}_labels`` arrays.

MedMNIST ships each data set as one ``.npz`` holding ``train``, ``val`` and
``test`` splits. Copies found in the wild differ in small ways (labels ``(N,)``
instead of ``(N, 1)``, extra splits), so this reader accepts:

* any ``<split>_images`` key with a matching ``<split>_labels`` (``train``,
  ``val``, ``test`` come first, other splits after them, sorted);
* labels shaped ``(N,)`` or ``(N, 1)`` -> ``(N,)`` int64, and multi-label
  ``(N, K>1)`` kept as 2-D int64 with ``meta["multi_label"] = True``.

It never unpickles (``np.load(allow_pickle=False)``): an object array is an
UnsupportedFormatError. Every member's ``.npy`` header is checked against the
ZIP directory before loading, so a corrupt shape cannot trigger a huge
allocation, and a compressed member's size must stay within the decompression
limits of :mod:`meddx.data.readers.limits` (zipfile never inflates past it).
"""

from __future__ import annotations

import math
import tokenize
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from meddx.data.readers._base import DEFAULT_DECODE_ERRORS, Reader, decoding, register_reader
from meddx.data.readers.limits import check_expansion
from meddx.data.sample import LabelledImagesSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    InvalidValueError,
    LabelShapeError,
    MissingFieldError,
    UnsupportedFormatError,
)

ZIP_MAGIC = b"PK\x03\x04"
STANDARD_SPLITS = ("train", "val", "test")
MAX_DEFLATE_RATIO = 1032
"""Deflate cannot expand data by more than about 1032:1; more means a corrupt ZIP entry."""

_IMAGES, _LABELS = "_images", "_labels"


def _header(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of member ``key``.npy, validated against the ZIP directory."""
    info = archive.getinfo(f"{key}.npy")
    declared_ratio = info.file_size / max(info.compress_size, 1)
    if info.compress_type != zipfile.ZIP_STORED and declared_ratio > MAX_DEFLATE_RATIO:
        raise CorruptFileError(
            f"ZIP entry {info.filename} claims {info.file_size:,} bytes "
            f"from {info.compress_size:,} compressed",
            path=path,
            field=key,
            hint="The archive is corrupt",
        )
    if info.compress_type != zipfile.ZIP_STORED:  # zipfile never inflates past file_size; bound that
        check_expansion(info.file_size, info.compress_size, path=path, field=key,
                        what=f"ZIP entry {info.filename}")
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise UnsupportedFormatError(
                f"unknown .npy format version {version}", path=path, field=key, hint="Re-save with numpy"
            )
        header_size = fh.tell()
    if dtype.hasobject:
        raise UnsupportedFormatError(
            f"{key} is an object (pickled) array, which meddx never loads",
            path=path,
            field=key,
            hint="Re-save the arrays with a numeric dtype (np.savez with uint8/int64 arrays)",
        )
    needed = math.prod(shape) * dtype.itemsize
    if header_size + needed > info.file_size:
        raise CorruptFileError(
            f"{key} declares shape {shape} of {dtype} ({needed:,} bytes) but its entry holds "
            f"{info.file_size - header_size:,}",
            path=path,
            field=key,
            hint="The archive is truncated or corrupt; re-download it",
        )
    return tuple(int(n) for n in shape), dtype


def _verify_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Read a member to its end (streamed, nothing kept) so zipfile checks its name and CRC-32.

    numpy may stop short of the end of a member, and then a damaged member
    reads with changed values and no error; a member whose name was damaged in
    the directory would otherwise just be missing (and its split with it).
    """
    key = info.filename.removesuffix(".npy")
    key = key if key.isprintable() else ascii(key)
    if info.compress_type != zipfile.ZIP_STORED:
        check_expansion(info.file_size, info.compress_size, path=path, field=key,
                        what=f"ZIP entry {info.filename}")
    try:
        with archive.open(info) as fh:
            while fh.read(1 << 22):
                pass
    except zipfile.BadZipFile as exc:
        raise _damaged(key, path, exc) from exc


def _damaged(key: str, path: Path, exc: Exception) -> CorruptFileError:
    return CorruptFileError(
        f"ZIP entry {key!r} is damaged: {exc}", path=path, field=key, hint="The archive is corrupt; re-download it"
    )


def _split_order(names: list[str]) -> list[str]:
    standard = [s for s in STANDARD_SPLITS if s in names]
    return standard + sorted(n for n in names if n not in STANDARD_SPLITS)


def _labels(labels: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, bool]:
    """(N,) or (N,1) -> (N,) int64; (N,K>1) -> (N,K) int64 multi-label; else LabelShapeError."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] == 0):
        raise LabelShapeError(
            f"labels have shape {labels.shape}; expected (N,), (N, 1) or (N, K) multi-label",
            path=path,
            field=key,
            hint="Store one integer class per image (or one 0/1 column per class)",
        )
    if labels.dtype == np.bool_:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
        raise InvalidValueError(
            f"labels have dtype {labels.dtype}, not integers",
            path=path,
            field=key,
            hint="Store integer class indices",
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise InvalidValueError(
                "labels hold non-integer values (NaN or fractions)",
                path=path,
                field=key,
                hint="Store integer class indices",
            )
    out = labels.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise InvalidValueError(
            f"labels hold a negative value ({int(out.min())})",
            path=path,
            field=key,
            hint="Class indices start at 0",
        )
    return out, labels.ndim == 2


@register_reader
class NpzReader(Reader):
    """MedMNIST ``.npz`` files as a LabelledImagesSample (no options)."""

    name: ClassVar[str] = "npz"
    suffixes: ClassVar[tuple[str, ...]] = (".npz",)
    decode_errors: ClassVar[tuple[type[BaseException], ...]] = DEFAULT_DECODE_ERRORS + (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,  # unsupported ZIP compression method
        SyntaxError,  # numpy parses the .npy header dict with ast.literal_eval ...
        tokenize.TokenError,  # ... after tokenizing it
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(ZIP_MAGIC) and path.name.lower().endswith(".npz")

    def read(self, path: Path, **options: Any) -> LabelledImagesSample:
        """Read every ``<split>_images``/``<split>_labels`` pair of ``path``."""
        path = Path(path)
        if options:
            name = sorted(options)[0]
            raise ConfigError(f"the npz reader takes no option {name!r}", path=path, field=name)
        with decoding(path, self.decode_errors, what="as npz",
                      hint="The file is truncated or not a numpy .npz archive; re-download it"):
            return self._read(path)

    def _read(self, path: Path) -> LabelledImagesSample:
        with zipfile.ZipFile(path) as archive:
            keys = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
            splits = _split_order([k[: -len(_IMAGES)] for k in keys if k.endswith(_IMAGES)])
            if not splits:
                raise MissingFieldError(
                    f"no '<split>_images' array (keys: {', '.join(sorted(keys)) or 'none'})",
                    path=path,
                    field="train_images",
                    hint="A MedMNIST .npz holds train_images/train_labels, val_..., test_...",
                )
            shapes: dict[str, tuple[int, ...]] = {}
            for split in splits:
                for key in (split + _IMAGES, split + _LABELS):
                    if key not in keys:
                        raise MissingFieldError(
                            f"{split + _IMAGES} has no matching {key}",
                            path=path,
                            field=key,
                            hint="Every <split>_images needs <split>_labels "
                            f"(keys: {', '.join(sorted(keys))})",
                        )
                    try:
                        shapes[key] = _header(archive, key, path)[0]
                    except zipfile.BadZipFile as exc:  # a small member fails its CRC-32 on the first read
                        raise _damaged(key, path, exc) from exc

            for info in archive.infolist():  # every member: a damaged name would silently drop a split
                _verify_crc(archive, info, path)

        result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        multi_label = False
        with np.load(path, allow_pickle=False) as data:
            for split in splits:
                images_key, labels_key = split + _IMAGES, split + _LABELS
                images = data[images_key]
                if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
                    raise InvalidValueError(
                        f"images have shape {images.shape}; expected (N, H, W) or (N, H, W, C)",
                        path=path,
                        field=images_key,
                        hint="Store images as (N, H, W) grey or (N, H, W, 3) colour",
                    )
                labels, is_multi = _labels(data[labels_key], labels_key, path)
                if result:
                    first_key = splits[0] + _LABELS
                    first = next(iter(result.values()))[1]
                    if labels.shape[1:] != first.shape[1:]:
                        raise LabelShapeError(
                            f"labels have shape {labels.shape} but {first_key} has {first.shape}",
                            path=path,
                            field=labels_key,
                            hint="Every split needs the same label layout (single- or multi-label)",
                        )
                multi_label = is_multi
                if len(labels) != len(images):
                    raise LabelShapeError(
                        f"{len(labels)} labels for {len(images)} images in {images_key}",
                        path=path,
                        field=labels_key,
                        hint="There must be one label (row) per image",
                    )
                result[split] = (images, labels)
        extra = sorted(k for k in keys if not any(k in (s + _IMAGES, s + _LABELS) for s in splits))
        all_labels = [lab for _, lab in result.values() if lab.size]
        meta: dict[str, Any] = {
            "keys": sorted(keys),
            "multi_label": multi_label,
            "image_shape": list(next(iter(result.values()))[0].shape[1:]),
            "image_dtype": str(next(iter(result.values()))[0].dtype),
        }
        if all_labels:
            meta["n_classes"] = (
                int(all_labels[0].shape[1]) if multi_label else max(int(lab.max()) for lab in all_labels) + 1
            )
        if extra:
            meta["extra_keys"] = extra
        return LabelledImagesSample(path=path, format=self.name, meta=meta, splits=result)


__all__ = ["NpzReader"]
