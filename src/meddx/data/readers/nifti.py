"""NIfTI reader (``.nii``, ``.nii.gz``, NIfTI-1 pairs and NIfTI-2) with nibabel.

Volumes come back reoriented to RAS (``nibabel.as_closest_canonical``): array
index increases towards the patient's Right along axis 0, Anterior along axis 1
and Superior along axis 2, whatever order the scanner wrote. The affine of the
reoriented array, the voxel sizes and the original orientation codes are kept.

Data type policy: integer data without scaling (``scl_slope`` unset or 1/0)
keeps its integer type, so label maps and masks stay exact and small; scaled
data and floating-point data come back as float32. ``as_float=True`` forces
float32 for everything.

The header is checked against the file before any data is read: a truncated
file, or a corrupt ``dim`` that declares gigabytes, is a CorruptFileError and
never a huge allocation.
"""

from __future__ import annotations

import gzip
import math
import struct
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from meddx.data.readers._base import (
    DEFAULT_DECODE_ERRORS,
    Reader,
    decoding,
    import_optional,
    register_reader,
)
from meddx.data.sample import ImageSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    InvalidValueError,
    UnsupportedFormatError,
)

NIFTI1_MAGIC_OFFSET = 344
NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
MAX_DEFLATE_RATIO = 1032
"""Deflate cannot expand data by more than about 1032:1; more means a corrupt header."""

_OPTIONS = frozenset({"as_float", "canonical"})
_TIME_UNIT_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_STANDARD_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz")


class _LazyDecodeErrors:
    """``decode_errors`` that adds nibabel's exceptions on first use (nibabel is an optional extra)."""

    def __get__(self, obj: object, owner: type | None = None) -> tuple[type[BaseException], ...]:
        base = DEFAULT_DECODE_ERRORS + (AttributeError,)
        try:
            from nibabel.filebasedimages import ImageFileError
            from nibabel.spatialimages import HeaderDataError
            from nibabel.wrapstruct import WrapStructError
        except ImportError:  # pragma: no cover - the nifti extra is not installed
            return base
        return base + (HeaderDataError, ImageFileError, WrapStructError)


def _import_nibabel(path: Path) -> Any:
    return import_optional("nibabel", extra="nifti", purpose="reading NIfTI", path=path)


def _decoding(path: Path, errors: tuple[type[BaseException], ...]) -> Any:
    """Turn nibabel/gzip exceptions on malformed bytes into CorruptFileError naming ``path``."""
    return decoding(path, errors, what="as NIfTI", hint="The file is truncated or corrupt; re-export or re-download it")


def _gzip_holds_at_least(path: Path, needed: int) -> bool:
    """True if the gzip file ``path`` decompresses to at least ``needed`` bytes.

    Cheap checks first: deflate's maximum ratio, then the ISIZE trailer (the
    uncompressed size modulo 2**32 of the last member). Only when ISIZE is too
    small (a multi-member file, a size over 4 GiB, or truncation) is the stream
    decompressed and counted, without keeping the bytes.
    """
    size = path.stat().st_size
    if needed > MAX_DEFLATE_RATIO * size + 1024:
        return False
    with open(path, "rb") as fh:
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if len(tail) == 4 and needed < 2**32 and struct.unpack("<I", tail)[0] >= needed:
        return True
    count = 0
    with gzip.open(path, "rb") as stream:
        while count < needed:
            chunk = stream.read(min(1 << 22, needed - count))
            if not chunk:
                break
            count += len(chunk)
    return count >= needed


def _check_data_size(img: Any, path: Path) -> None:
    """Raise CorruptFileError if the header declares more data than the file holds."""
    header, proxy = img.header, img.dataobj
    # the array proxy holds what will really be read (nibabel resets some header fields on load)
    shape = tuple(int(n) for n in getattr(proxy, "shape", header.get_data_shape()))
    if any(n < 0 for n in shape):
        raise CorruptFileError(
            f"negative dimension in {shape}", path=path, field="dim", hint="The header is corrupt"
        )
    dtype = np.dtype(getattr(proxy, "dtype", header.get_data_dtype()))
    raw_offset = float(getattr(proxy, "offset", header.get_data_offset()))
    if not math.isfinite(raw_offset) or raw_offset < 0:
        raise CorruptFileError(
            f"vox_offset {raw_offset} is not a valid byte offset",
            path=path,
            field="vox_offset",
            hint="The header is corrupt",
        )
    offset = int(raw_offset)
    needed = math.prod(shape) * dtype.itemsize
    holder = img.file_map.get("image")
    data_path = Path(holder.filename) if holder is not None and holder.filename else path
    if not data_path.exists():
        raise CorruptFileError(
            f"the data file {data_path.name} of this header is missing",
            path=path,
            hint="Keep the .hdr and .img files of a NIfTI pair together",
        )
    declared = (
        f"dim {list(shape)} x {dtype.itemsize} bytes ({dtype}) = {needed:,} bytes after offset {offset}"
    )
    with open(data_path, "rb") as fh:
        compressed = fh.read(2) == GZIP_MAGIC
    if compressed:
        if not _gzip_holds_at_least(data_path, offset + needed):
            raise CorruptFileError(
                f"the compressed file cannot hold {declared}",
                path=path,
                field="dim",
                hint="The file is truncated or its header is corrupt; re-export or re-download it",
            )
    elif offset + needed > data_path.stat().st_size:
        raise CorruptFileError(
            f"the file holds {data_path.stat().st_size:,} bytes but the header declares {declared}",
            path=path,
            field="dim",
            hint="The file is truncated or its header is corrupt; re-export or re-download it",
        )


def _load(nib: Any, path: Path, head: bytes, stack: ExitStack) -> Any:
    """nibabel image for ``path``; files with non-standard names are read as a stream.

    The stream stays open (on ``stack``) until the data is read; nothing is
    decompressed before the header has been checked against the file.
    """
    if path.name.lower().endswith(_STANDARD_SUFFIXES):
        return nib.load(path)
    opened = gzip.open(path, "rb") if head[:2] == GZIP_MAGIC else open(path, "rb")  # noqa: SIM115
    stream: Any = stack.enter_context(opened)
    start = stream.read(12)
    stream.seek(0)
    klass = nib.Nifti2Image if start[4:12] == NIFTI2_MAGIC else nib.Nifti1Image
    return klass.from_stream(stream)


def _as_array(data: np.ndarray, scaled: bool, as_float: bool, path: Path) -> np.ndarray:
    """Apply the documented dtype policy (ints kept unless scaled, floats as float32)."""
    if data.dtype.fields:  # NIfTI RGB/RGBA: structured bytes -> trailing channel axis
        data = np.stack([data[name] for name in data.dtype.names or ()], axis=-1)
    if np.iscomplexobj(data):
        raise UnsupportedFormatError(
            "complex-valued NIfTI data is not supported",
            path=path,
            field="datatype",
            hint="Convert to magnitude (or real/imaginary volumes) first",
        )
    if as_float or scaled or np.issubdtype(data.dtype, np.floating):
        return np.asarray(data, dtype=np.float32)
    return np.asarray(data, dtype=data.dtype.newbyteorder("="))


@register_reader
class NiftiReader(Reader):
    """NIfTI-1/NIfTI-2 volumes, reoriented to RAS.

    Options:
        as_float: return float32 even for unscaled integer data.
        canonical: reorient to RAS (default True); False keeps the stored order.
    """

    name: ClassVar[str] = "nifti"
    suffixes: ClassVar[tuple[str, ...]] = (".nii", ".nii.gz")
    decode_errors = _LazyDecodeErrors()  # type: ignore[assignment]

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[NIFTI1_MAGIC_OFFSET : NIFTI1_MAGIC_OFFSET + 4] in NIFTI1_MAGICS:
            return True
        if head[4:12] == NIFTI2_MAGIC:
            return True
        return head[:2] == GZIP_MAGIC and path.name.lower().endswith(".nii.gz")

    def read(self, path: Path, **options: Any) -> ImageSample:
        """Read a NIfTI file into an ImageSample in RAS orientation."""
        path = Path(path)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} for the NIfTI reader",
                path=path,
                field=unknown[0],
                hint=f"Options are: {', '.join(sorted(_OPTIONS))}",
            )
        nib = _import_nibabel(path)
        with open(path, "rb") as fh:
            head = fh.read(540)
        with _decoding(path, self.decode_errors), ExitStack() as stack:
            img = _load(nib, path, head, stack)
            _check_data_size(img, path)
            as_float = bool(options.get("as_float", False))
            return self._sample(nib, img, path, as_float, bool(options.get("canonical", True)))

    def _sample(self, nib: Any, img: Any, path: Path, as_float: bool, canonical: bool) -> ImageSample:
        header = img.header
        affine = np.asarray(img.affine, dtype=np.float64)
        if not np.all(np.isfinite(affine)):
            raise InvalidValueError(
                "the voxel-to-world affine holds NaN or inf",
                path=path,
                field="sform/qform",
                hint="Fix the header's qform/sform (e.g. with fslorient) and save again",
            )
        if np.isnan(nib.orientations.io_orientation(affine)).any():
            raise InvalidValueError(
                "the voxel-to-world affine is degenerate (a voxel axis has no direction)",
                path=path,
                field="sform/qform",
                hint="Fix the header's qform/sform or pixdim and save again",
            )
        original = tuple(str(c) for c in nib.aff2axcodes(affine))
        ndim = len(img.shape)
        reoriented = bool(canonical) and ndim >= 3
        out = nib.as_closest_canonical(img) if reoriented else img
        # nibabel moves scl_slope/scl_inter from the header into the array proxy on load
        slope = float(getattr(img.dataobj, "slope", 1.0))
        inter = float(getattr(img.dataobj, "inter", 0.0))
        scaled = slope != 1.0 or inter != 0.0
        data = _as_array(np.asarray(out.dataobj), scaled, as_float, path)

        zooms = tuple(float(z) for z in out.header.get_zooms())
        n_spatial = min(ndim, 3)
        try:
            space_unit, time_unit = header.get_xyzt_units()
        except KeyError:  # an undefined unit code: keep the data, report the units as unknown
            space_unit, time_unit = "unknown", "unknown"
        meta: dict[str, Any] = {
            "dim": [int(d) for d in header["dim"][: int(header["dim"][0]) + 1]],
            "zooms": list(zooms),
            "original_orientation": list(original),
            "reoriented": reoriented,
            "datatype": str(header.get_data_dtype()),
            "xyzt_units": [space_unit, time_unit],
            "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        }
        if scaled:
            meta.update(scl_slope=slope, scl_inter=inter)
        if ndim >= 4:
            tr = float(header.get_zooms()[3])
            meta["tr"] = tr
            if time_unit in _TIME_UNIT_SECONDS:
                meta["tr_s"] = tr * _TIME_UNIT_SECONDS[time_unit]
        for key in ("descrip", "intent_name", "aux_file"):
            value = header.get(key)
            if value is not None:
                text = bytes(np.asarray(value).tobytes()).split(b"\x00", 1)[0].decode("latin-1").strip()
                if text:
                    meta[key] = text
        for key in ("qform_code", "sform_code", "intent_code"):
            if key in header:
                meta[key] = int(header[key])
        if np.issubdtype(data.dtype, np.floating):
            meta["n_nonfinite"] = int(data.size - np.count_nonzero(np.isfinite(data)))
        orientation = tuple(str(c) for c in nib.aff2axcodes(out.affine)) if ndim >= 3 else original[:ndim]
        return ImageSample(
            path=path,
            format=self.name,
            meta=meta,
            array=data,
            spacing=zooms[:n_spatial],
            orientation=orientation,
            affine=np.asarray(out.affine, dtype=np.float64),
            modality=None,
            photometric=None,
        )


__all__ = ["NiftiReader"]
