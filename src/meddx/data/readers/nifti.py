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
never a huge allocation. A ``.nii.gz`` whose declared size is beyond the
decompression limits (:mod:`meddx.data.readers.limits`) is refused before
anything is decompressed, and the voxels are streamed into one preallocated
array (never the whole decompressed file plus a copy). Zero or negative
dimensions, a single file whose ``vox_offset`` points into its own header,
scaling that overflows float32 and CIFTI-2 files (unsupported) are errors.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
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
from meddx.data.readers.limits import HINT as LIMITS_HINT
from meddx.data.readers.limits import LimitExceededError, check_expansion, decode_limits
from meddx.data.sample import ImageSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    UnsupportedFormatError,
)

NIFTI1_MAGIC_OFFSET = 344
NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
MAX_DEFLATE_RATIO = 1032
"""Deflate cannot expand data by more than about 1032:1; more means a corrupt header."""

READ_CHUNK = 1 << 22
"""Bytes read (and decompressed) per step while filling the voxel array."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
SINGLE_FILE_HEADER = {1: 352, 2: 544}
"""Smallest vox_offset of a single-file NIfTI-1/-2: the header plus the 4-byte extension flag."""

CIFTI_INTENTS = range(3000, 3100)
"""NIFTI_INTENT_CONNECTIVITY_* codes: the file is CIFTI-2, a NIfTI-2 container for surface data."""
CIFTI_EXTENSION = 32

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
    if not shape:
        raise CorruptFileError(
            f"dim[0] is {int(header['dim'][0])}: the header declares no dimensions",
            path=path,
            field="dim[0]",
            hint="The header is corrupt; dim[0] must be 1 to 7",
        )
    if len(shape) == 1:
        raise UnsupportedFormatError(
            f"dim[0] is 1: the file holds a 1-D vector of {shape[0]:,} values, not an image",
            path=path,
            field="dim[0]",
            hint="meddx reads 2-D to 7-D NIfTI images; if the data is an image, dim[0] is corrupt",
        )
    if 0 in shape:
        axis = shape.index(0)
        raise EmptyDataError(
            f"dim[{axis + 1}] is 0: the volume {list(shape)} holds no voxels",
            path=path,
            field=f"dim[{axis + 1}]",
            hint="The file is empty or its header is corrupt; re-export it",
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
    version = 2 if header.sizeof_hdr == 540 else 1
    single = bytes(np.asarray(header["magic"]).tobytes())[:3] in (b"n+1", b"n+2")
    if single and data_path == path and offset < SINGLE_FILE_HEADER[version]:
        raise CorruptFileError(
            f"vox_offset is {raw_offset:g}, inside the {SINGLE_FILE_HEADER[version]}-byte header of this "
            "single-file NIfTI: the header would be read as voxels",
            path=path,
            field="vox_offset",
            hint=f"The header is corrupt; a .nii file's vox_offset is at least {SINGLE_FILE_HEADER[version]}",
        )
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
        size = data_path.stat().st_size
        if offset + needed <= MAX_DEFLATE_RATIO * size + 1024:  # else no gzip file could hold it: corrupt
            check_expansion(offset + needed, size, path=path, field="dim",
                            what=f"the compressed volume ({declared})")
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


def _check_cifti(img: Any, path: Path) -> None:
    """CIFTI-2 (a NIfTI-2 container for surface/grayordinate data) is UnsupportedFormatError."""
    header = getattr(img, "nifti_header", None) or img.header  # nib.load gives a Cifti2Image for CIFTI-2
    intent = int(header["intent_code"]) if "intent_code" in header else 0
    codes = [int(getattr(e, "get_code", lambda: -1)()) for e in getattr(header, "extensions", [])]
    if type(img).__name__ == "Cifti2Image" or intent in CIFTI_INTENTS or CIFTI_EXTENSION in codes:
        raise UnsupportedFormatError(
            f"this is a CIFTI-2 file (intent_code {intent}), not a volume",
            path=path,
            field="intent_code",
            hint="meddx reads NIfTI volumes only; read CIFTI-2 with nibabel (nib.load gives a Cifti2Image) "
            "or convert it to a volume with wb_command -cifti-separate",
        )


def _read_voxels(img: Any, path: Path) -> np.ndarray:
    """The unscaled voxels, streamed from the file into one preallocated array.

    nibabel reads a ``.nii.gz`` into one bytes object and then copies it into
    the array (twice the volume at the peak); this reads and decompresses
    :data:`READ_CHUNK` bytes at a time straight into the array.
    """
    proxy = img.dataobj
    shape = tuple(int(n) for n in proxy.shape)
    dtype = np.dtype(proxy.dtype)
    order = str(getattr(proxy, "order", "F"))
    offset = int(float(proxy.offset))
    holder = img.file_map.get("image")
    data_path = Path(holder.filename) if holder is not None and holder.filename else path
    with open(data_path, "rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC
    buffer = np.empty(math.prod(shape) * dtype.itemsize, dtype=np.uint8)
    view = memoryview(buffer)
    opened = gzip.open(data_path, "rb") if gzipped else open(data_path, "rb")  # noqa: SIM115
    with opened as stream:
        stream.seek(offset)
        filled = 0
        while filled < buffer.size:
            count = stream.readinto(view[filled : filled + READ_CHUNK])
            if not count:
                raise CorruptFileError(
                    f"the voxel data ends after {filled:,} of {buffer.size:,} bytes",
                    path=path,
                    field="dim",
                    hint="The file is truncated or its header is corrupt; re-export or re-download it",
                )
            filled += count
        if gzipped:
            _drain_to_crc(stream, data_path, offset + filled, path)
    return buffer.view(dtype).reshape(shape, order=order)  # type: ignore[call-overload]


def _drain_to_crc(stream: Any, data_path: Path, used: int, path: Path) -> None:
    """Read a gzip stream to its end (nothing kept) so that its CRC-32 and length are checked.

    nibabel stops after the voxels, so a damaged ``.nii.gz`` read with changed
    voxels and no error. What follows the voxels may not decompress past the
    limits either.
    """
    allowed = decode_limits().allowed(data_path.stat().st_size)
    total = used
    try:
        while chunk := stream.read(READ_CHUNK):
            total += len(chunk)
            if total > allowed:
                raise LimitExceededError(
                    f"the gzip stream goes on past the voxels to more than {allowed:,} bytes",
                    path=path, field="gzip", hint=LIMITS_HINT,
                )
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile: CRC or length check failed, or cut short
        raise CorruptFileError(
            f"the gzip stream is damaged: {exc}", path=path, field="gzip",
            hint="The voxels would be wrong; re-export or re-download the file",
        ) from exc


def _scaled(raw: np.ndarray, slope: float, inter: float, path: Path) -> np.ndarray:
    """``raw * slope + inter`` as float32; scaling that leaves the float32 range is InvalidValueError."""
    if raw.size and np.issubdtype(raw.dtype, np.number):
        finite = raw if np.issubdtype(raw.dtype, np.integer) else raw[np.isfinite(raw)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            ends = (low * slope + inter, high * slope + inter)
            if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in ends):
                raise InvalidValueError(
                    f"scl_slope {slope:g} and scl_inter {inter:g} take stored values {low:g}..{high:g} beyond "
                    "the float32 range",
                    path=path,
                    field="scl_slope",
                    hint="The header is corrupt; the volume would overflow to inf. Fix scl_slope/scl_inter",
                )
    out = raw.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if inter != 0.0:
        out += np.float32(inter)
    return out


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
            _check_cifti(img, path)
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
        # nibabel moves scl_slope/scl_inter from the header into the array proxy on load
        slope = float(getattr(img.dataobj, "slope", 1.0))
        inter = float(getattr(img.dataobj, "inter", 0.0))
        for name, value in (("scl_slope", slope), ("scl_inter", inter)):
            if not math.isfinite(value):
                raise InvalidValueError(
                    f"{name} is {value}", path=path, field=name,
                    hint="The header is corrupt; set scl_slope 1 and scl_inter 0 (or the true scaling)",
                )
        scaled = slope != 1.0 or inter != 0.0
        raw = _read_voxels(img, path)
        if scaled and not raw.dtype.fields:
            raw = _scaled(raw, slope, inter, path)
        loaded = type(img)(raw, img.affine, img.header)  # voxels in memory: reorienting reads nothing again
        try:
            out = nib.as_closest_canonical(loaded) if reoriented else loaded
        except nib.orientations.OrientationError as exc:
            raise InvalidValueError(
                f"cannot reorient to RAS: {exc}",
                path=path,
                field="sform/qform",
                hint="Fix the header's qform/sform, or pass canonical=False to keep the stored order",
            ) from exc
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
