"""Ordinary image files (PNG, JPEG, BMP, TIFF) and labelled image folders, with Pillow.

Clinics export screenshots, fundus photos, dermatoscopy and X-ray PNGs in every
PIL mode there is. :class:`ImageFileReader` turns each into one of a few array
layouts a model can use:

=============================  =========================================
PIL mode                       array
=============================  =========================================
``L``, ``LA``, grey ``P``      ``(H, W)`` uint8 (alpha dropped)
``1``                          ``(H, W)`` uint8, 0 or 255
``RGB``, ``RGBA``, colour      ``(H, W, 3)`` uint8 (alpha dropped, no
``P``, ``CMYK``, ``YCbCr``     compositing)
``I;16``, ``I;16B``...         ``(H, W)`` uint16 (native byte order)
``I``                          uint16 if the values fit, else int32
``F``                          float32
=============================  =========================================

A multi-page TIFF whose pages share size and mode comes back as ``(F, H, W[, 3])``.

:class:`ImageFolderReader` reads a folder with a ``labels.csv`` (``file,label``
plus optional ``split`` and ``patient_id``/``group``) into a
:class:`~meddx.data.sample.LabelledImagesSample`.

Only the formats above are decoded, whatever a file's content claims, so an
exotic Pillow plugin (EPS runs Ghostscript) is never reached from here. Images
larger than ``Image.MAX_IMAGE_PIXELS`` (or ``max_pixels=``) are refused before
decoding: a tiny file can otherwise declare a gigapixel image. The decoded size
must also be a plausible expansion of the file (:mod:`meddx.data.readers.limits`),
and a PNG's compressed rows are counted (streaming, nothing kept) against the
height its header declares, so a PNG with missing rows is a CorruptFileError
instead of an image whose lower part Pillow fills with zeros.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from meddx.data.readers._base import (
    DEFAULT_DECODE_ERRORS,
    Reader,
    check_options,
    decoding,
    register_reader,
)
from meddx.data.readers.limits import check_expansion
from meddx.data.sample import ImageSample, LabelledImagesSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF")
"""Pillow decoders this module may use (the JPEG one also opens camera MPO files)."""

LABELS_FILE = "labels.csv"
GROUP_COLUMNS = ("patient_id", "group")
_FILE_OPTIONS = frozenset({"max_pixels"})
_FOLDER_OPTIONS = frozenset({"size", "channels", "max_pixels"})
_GREY = "MONOCHROME2"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA)."""
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_MODE_BYTES = {"1": 0.125, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def _decoding(path: Path, errors: tuple[type[BaseException], ...], row: str = "") -> Any:
    """Turn Pillow's exceptions on malformed bytes into CorruptFileError naming ``path``."""
    return decoding(path, errors, what="the image", row=row,
                    hint="The file is truncated, corrupt or not a PNG/JPEG/BMP/TIFF image; re-export it")


def _check_options(options: dict[str, Any], allowed: frozenset[str], path: Path, reader: str) -> None:
    check_options(options, allowed, path, reader)


def _max_pixels(value: Any, path: Path) -> int | None:
    from PIL import Image

    if value is None:
        return Image.MAX_IMAGE_PIXELS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"max_pixels must be a positive integer, not {value!r}", path=path, field="max_pixels"
        )
    return value


def _open(path: Path, max_pixels: int | None, row: str = "") -> Any:
    """Open ``path`` with Pillow, refusing decompression bombs before any pixel is decoded.

    ``row`` prefixes messages (``"labels.csv row 3: "``) when the image comes from a folder.
    """
    from PIL import Image, UnidentifiedImageError

    hint = (
        "If the image is genuine, pass max_pixels=N (up to PIL.Image.MAX_IMAGE_PIXELS, "
        "which can be raised too)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidValueError(
            f"{row}image too large to decode safely: {exc}", path=path, field="size", hint=hint
        ) from exc
    except UnidentifiedImageError as exc:
        raise CorruptFileError(
            f"{row}not a PNG, JPEG, BMP or TIFF image Pillow can identify",
            path=path,
            field="signature",
            hint="The file is corrupt or in another format",
        ) from exc
    width, height = img.size
    frames = int(getattr(img, "n_frames", 1) or 1)
    if max_pixels is not None and width * height * frames > max_pixels:
        img.close()
        raise InvalidValueError(
            f"{row}{width}x{height} pixels x {frames} frame(s) exceeds the limit of {max_pixels:,} pixels",
            path=path,
            field="size",
            hint=hint,
        )
    per_pixel = _MODE_BYTES.get(img.mode, len(img.getbands()))
    try:
        check_expansion(int(width * height * frames * per_pixel), path.stat().st_size, path=path, field="size",
                        what=f"{row}the {img.format} image ({width}x{height} {img.mode} x {frames} frame(s))")
        if img.format == "PNG":
            check_png_rows(path, row)
    except BaseException:
        img.close()
        raise
    return img


def _png_data_size(width: int, height: int, bit_depth: int, colour: int, interlace: int) -> int:
    """Bytes the IDAT stream of a PNG inflates to (filter byte plus packed samples per row, Adam7 passes)."""
    bits = _PNG_CHANNELS.get(colour, 4) * bit_depth
    passes = _ADAM7 if interlace == 1 else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pass_width = max(0, -(-(width - x0) // dx))
        pass_height = max(0, -(-(height - y0) // dy))
        if pass_width and pass_height:
            total += pass_height * (1 + -(-pass_width * bits // 8))
    return total


def check_png_rows(path: Path, row: str = "") -> None:
    """Raise CorruptFileError if a PNG's image data holds fewer rows than IHDR declares.

    The IDAT stream is inflated in bounded steps and only counted, up to the
    size the header declares, so this costs no memory whatever the file.
    Pillow itself fills missing rows with zeros when the stream ends early.
    """
    with open(path, "rb") as fh:
        if fh.read(8) != PNG_MAGIC:
            return
        inflater = zlib.decompressobj()
        expected = produced = 0
        header: tuple[int, ...] = ()
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                data = fh.read(length)
                if len(data) < 13:
                    return  # Pillow has already refused or will refuse it
                header = struct.unpack(">IIBBBBB", data[:13])
                width, height, depth, colour, _, _, interlace = header
                expected = _png_data_size(width, height, depth, colour, interlace)
            elif kind == b"IDAT":
                remaining = length
                while remaining and produced < expected and not inflater.eof:
                    chunk = fh.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    try:
                        out = inflater.decompress(chunk, expected - produced + 1)
                        produced += len(out)
                        while produced < expected and not inflater.eof:  # an empty tail drains held output
                            out = inflater.decompress(inflater.unconsumed_tail, expected - produced + 1)
                            if not out:
                                break
                            produced += len(out)
                    except zlib.error as exc:
                        raise CorruptFileError(
                            f"{row}the PNG image data (IDAT) is corrupt: {exc}", path=path, field="IDAT",
                            hint="The file is damaged; re-export it",
                        ) from exc
                fh.seek(remaining, 1)
            elif kind == b"IEND":
                break
            else:
                fh.seek(length, 1)
            fh.seek(4, 1)  # CRC
            if produced >= expected and header:
                return
    if header and produced < expected:
        width, height = header[0], header[1]
        line = expected / max(height, 1)
        raise CorruptFileError(
            f"{row}the PNG image data holds about {int(produced // line):,} of the {height:,} rows its header "
            f"declares ({width}x{height}); the rest would be filled with zeros",
            path=path,
            field="IHDR height",
            hint="The file is truncated or its header is corrupt; re-export it",
        )


def _exif_upright(img: Any) -> tuple[Any, bool]:
    """Apply the EXIF orientation (phones and cameras store images rotated)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the image
        return img, False
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img), True
    return img, False


def _pil_to_array(img: Any) -> tuple[np.ndarray, str]:
    """Array and photometric name for any PIL mode (see the module docstring)."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8), _GREY
    if mode == "L":
        return np.asarray(img, dtype=np.uint8), _GREY
    if mode in ("LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.uint8), _GREY
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16, copy=False), _GREY  # native byte order
    if mode == "I":
        arr = np.asarray(img)
        if arr.size and arr.min() >= 0 and arr.max() <= np.iinfo(np.uint16).max:
            return arr.astype(np.uint16), _GREY
        return arr.astype(np.int32, copy=False), _GREY
    if mode == "F":
        return np.asarray(img, dtype=np.float32), _GREY
    if mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0]), _GREY
        return rgb, "RGB"
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8), "RGB"
    return np.asarray(img.convert("RGB"), dtype=np.uint8), "RGB"


def _frames(img: Any) -> Iterator[Any]:
    for index in range(int(getattr(img, "n_frames", 1) or 1)):
        img.seek(index)
        yield img


def _read_image(
    path: Path, max_pixels: int | None, errors: tuple[type[BaseException], ...], row: str = ""
) -> ImageSample:
    """Decode one image file into an ImageSample (all pages of a TIFF stack)."""
    with _decoding(path, errors, row):
        img = _open(path, max_pixels, row)
        with img:
            meta: dict[str, Any] = {
                "mode": img.mode,
                "size": [int(img.size[0]), int(img.size[1])],
                "pil_format": img.format,
            }
            dpi = img.info.get("dpi")
            if dpi:
                meta["dpi"] = [float(v) for v in dpi]
            n_frames = int(getattr(img, "n_frames", 1) or 1)
            meta["n_frames"] = n_frames
            if n_frames > 1 and img.format == "TIFF":
                pages = []
                for page in _frames(img):
                    page.load()
                    pages.append(_pil_to_array(page))
                shapes = {a.shape for a, _ in pages}
                if len(shapes) == 1 and len({p for _, p in pages}) == 1:
                    arr, photometric = np.stack([a for a, _ in pages]), pages[0][1]
                else:
                    warnings.warn(
                        f"{path}: TIFF pages differ in size or mode; reading the first page only",
                        UserWarning,
                        stacklevel=3,
                    )
                    arr, photometric = pages[0]
                    meta["first_page_only"] = True
            else:
                img.load()  # decode now so truncation is reported as such
                upright, turned = _exif_upright(img)
                meta["exif_transposed"] = turned
                arr, photometric = _pil_to_array(upright)
    return ImageSample(path=path, format="image", meta=meta, array=arr, photometric=photometric)


class _ImageDecodeErrors:
    """``decode_errors``: the defaults plus what Pillow raises on broken files."""

    def __get__(self, obj: object, owner: type | None = None) -> tuple[type[BaseException], ...]:
        extra: tuple[type[BaseException], ...] = (SyntaxError, NotImplementedError)  # PNG chunk errors
        try:
            from PIL import Image

            extra += (Image.DecompressionBombError,)
        except ImportError:  # pragma: no cover
            pass
        return DEFAULT_DECODE_ERRORS + extra


@register_reader
class ImageFileReader(Reader):
    """One PNG/JPEG/BMP/TIFF file as an ImageSample (uint8/uint16, grey or RGB).

    Options:
        max_pixels: refuse images with more pixels (default ``PIL.Image.MAX_IMAGE_PIXELS``).
    """

    name: ClassVar[str] = "image"
    suffixes: ClassVar[tuple[str, ...]] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    decode_errors = _ImageDecodeErrors()  # type: ignore[assignment]

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC)

    def read(self, path: Path, **options: Any) -> ImageSample:
        """Read one image file."""
        path = Path(path)
        _check_options(options, _FILE_OPTIONS, path, "image")
        return _read_image(path, _max_pixels(options.get("max_pixels"), path), self.decode_errors)


def _natural_key(label: str) -> tuple[int, float | str]:
    """Sort integer-like labels numerically ("2" < "10"), other labels as text after them."""
    try:
        number = float(label)
    except ValueError:
        return (1, label)
    return (0, number) if math.isfinite(number) else (1, label)


def _size_option(value: Any, path: Path) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        height, width = (int(v) for v in value)
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        ok, height, width = False, 0, 0
    if not ok or height < 1 or width < 1:
        raise ConfigError(
            f"size must be (height, width) in pixels, not {value!r}",
            path=path,
            field="size",
            hint="For example size=(224, 224)",
        )
    return height, width


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit/int/float image data to uint8 (0..65535 -> 0..255; floats by their range)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (np.nan_to_num(data, nan=low) - low) / ((high - low) or 1.0) * 255.0
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _conform(arr: np.ndarray, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """Convert to ``channels`` (1 = L, 3 = RGB) and resize (bilinear) to ``size`` = (H, W)."""
    from PIL import Image

    if channels is None and size is None:
        return arr
    arr = _to_uint8(arr)
    if channels == 1 and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr, "RGB").convert("L"))
    elif channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if size is not None and arr.shape[:2] != size:
        pil = Image.fromarray(arr, "RGB" if arr.ndim == 3 else "L")
        arr = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return arr


@register_reader
class ImageFolderReader(Reader):
    """A folder of images listed in ``labels.csv`` as a LabelledImagesSample.

    ``labels.csv`` has columns ``file`` (a path relative to the folder) and
    ``label``; optional ``split`` (train/val/test...; without it every row is in
    split ``"all"``) and ``patient_id`` or ``group`` (kept in
    ``meta["groups"]`` so splits can be made per patient).

    ``class_names`` are the distinct labels, sorted (numerically when they are
    all numbers); ``labels`` are indices into it.

    Options:
        size: ``(H, W)``: resize every image (bilinear) so that they stack.
            Without it all images must already share one shape.
        channels: 1 (grey, L) or 3 (RGB): convert every image. Converted or
            resized images are uint8 (16-bit data scaled by 1/257).
        max_pixels: refuse larger images (see ImageFileReader).
    """

    name: ClassVar[str] = "image-folder"
    suffixes: ClassVar[tuple[str, ...]] = ()
    directories: ClassVar[bool] = True
    decode_errors = _ImageDecodeErrors()  # type: ignore[assignment]

    def accepts_directory(self, path: Path) -> bool:
        return (path / LABELS_FILE).is_file()

    def read(self, path: Path, **options: Any) -> LabelledImagesSample:
        """Read every image listed in ``path/labels.csv``."""
        folder = Path(path)
        _check_options(options, _FOLDER_OPTIONS, folder, "image-folder")
        size = _size_option(options.get("size"), folder)
        channels = options.get("channels")
        if channels not in (None, 1, 3) or isinstance(channels, bool):
            raise ConfigError(
                f"channels must be 1 or 3, not {channels!r}", path=folder, field="channels"
            )
        max_pixels = _max_pixels(options.get("max_pixels"), folder)
        labels_path = folder / LABELS_FILE
        if not labels_path.is_file():
            raise DataFileNotFoundError(
                f"no {LABELS_FILE} in the folder",
                path=labels_path,
                hint="Add a labels.csv with columns file,label (and optionally split, patient_id)",
            )
        rows = self._rows(folder, labels_path)

        label_names = sorted({r["label"] for r in rows}, key=_natural_key)
        index = {name: i for i, name in enumerate(label_names)}
        split_names: list[str] = []
        for r in rows:
            if r["split"] not in split_names:
                split_names.append(r["split"])
        images: dict[str, list[np.ndarray]] = {s: [] for s in split_names}
        labels: dict[str, list[int]] = {s: [] for s in split_names}
        files: dict[str, list[str]] = {s: [] for s in split_names}
        groups: dict[str, list[str | None]] = {s: [] for s in split_names}
        first_shape: tuple[tuple[int, ...], str] | None = None
        for r in rows:
            image_path = folder / r["file"]
            where = f"{LABELS_FILE} row {r['line']}: "
            arr = _read_image(image_path, max_pixels, self.decode_errors, where).array
            if arr.ndim not in (2, 3):
                raise InvalidValueError(
                    f"{where}multi-page images are not supported in an image folder",
                    path=image_path,
                    field="file",
                    hint="Save one page per file",
                )
            arr = _conform(arr, channels, size)
            if first_shape is None:
                first_shape = (arr.shape, r["file"])
            elif arr.shape != first_shape[0]:
                raise InvalidValueError(
                    f"{where}{r['file']} is {arr.shape} but {first_shape[1]} is {first_shape[0]}",
                    path=labels_path,
                    field="size",
                    hint="Images differ in size or channels: pass size=(H, W) and channels=1 or 3",
                )
            images[r["split"]].append(arr)
            labels[r["split"]].append(index[r["label"]])
            files[r["split"]].append(r["file"])
            groups[r["split"]].append(r["group"])

        splits = {
            s: (np.stack(images[s]), np.asarray(labels[s], dtype=np.int64)) for s in split_names
        }
        meta: dict[str, Any] = {
            "labels_file": str(labels_path),
            "n_images": len(rows),
            "size": list(size) if size else None,
            "channels": channels,
        }
        if any(g is not None for split in groups.values() for g in split):
            meta["groups"] = groups
        return LabelledImagesSample(
            path=folder,
            format=self.name,
            meta=meta,
            splits=splits,
            class_names=[str(n) for n in label_names],
            files=files,
        )

    @staticmethod
    def _rows(folder: Path, labels_path: Path) -> list[dict[str, Any]]:
        """Validated rows of labels.csv: file, label, split, group and the CSV line number."""
        import pandas as pd

        try:
            table = pd.read_csv(labels_path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.EmptyDataError as exc:
            raise EmptyDataError(
                "labels.csv is empty",
                path=labels_path,
                hint="Write a header file,label and one row per image",
            ) from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise CorruptFileError(
                f"cannot parse labels.csv: {exc}", path=labels_path, hint="Check the CSV quoting and encoding"
            ) from exc
        table.columns = [str(c).strip() for c in table.columns]
        for column in ("file", "label"):
            if column not in table.columns:
                raise MissingFieldError(
                    f"labels.csv has no column {column!r} (columns: {', '.join(table.columns)})",
                    path=labels_path,
                    field=column,
                    hint="The header must name the columns file,label",
                )
        if table.empty:
            raise EmptyDataError(
                "labels.csv lists no images", path=labels_path, hint="Add one row per image: file,label"
            )
        group_column = next((c for c in GROUP_COLUMNS if c in table.columns), None)
        has_split = "split" in table.columns
        root = folder.resolve()
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        missing: list[tuple[int, str]] = []
        for position, record in enumerate(table.to_dict("records")):
            line = position + 2  # 1-based, after the header line
            file = str(record["file"]).strip()
            label = str(record["label"]).strip()
            split = str(record["split"]).strip() if has_split else "all"
            for field_name, value in (("file", file), ("label", label), ("split", split)):
                if not value:
                    raise InvalidValueError(
                        f"row {line}: empty {field_name}",
                        path=labels_path,
                        field=field_name,
                        hint="Every row needs a file, a label (and a split if the column exists)",
                    )
            relative = PurePosixPath(file.replace("\\", "/"))
            target = (folder / relative).resolve()
            if relative.is_absolute() or re.match(r"^[A-Za-z]:", file) or not target.is_relative_to(root):
                raise InvalidValueError(
                    f"row {line}: {file!r} points outside the folder",
                    path=labels_path,
                    field="file",
                    hint="Files must be given relative to the folder holding labels.csv",
                )
            if file in seen:
                raise InvalidValueError(
                    f"row {line}: {file!r} is listed again (first on row {seen[file]})",
                    path=labels_path,
                    field="file",
                    hint="List every image once; duplicates leak between splits",
                )
            seen[file] = line
            if not target.is_file():
                missing.append((line, file))
                continue
            group = str(record[group_column]).strip() or None if group_column else None
            rows.append({"file": str(relative), "label": label, "split": split, "group": group, "line": line})
        if missing:
            line, file = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataFileNotFoundError(
                f"row {line}: {file!r} does not exist{more}",
                path=labels_path,
                field="file",
                hint="Fix the path in labels.csv (relative to its folder) or restore the image",
            )
        return rows


__all__ = ["ImageFileReader", "ImageFolderReader", "check_png_rows"]
