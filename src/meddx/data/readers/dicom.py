"""DICOM reader: single images, multi-frame files, slice series (folders) and ECG waveforms.

What a model needs from a DICOM file is the pixel data in physical units, laid
out so that high values are bright, plus the geometry to interpret it. This
reader therefore:

* applies the Modality LUT (``RescaleSlope``/``RescaleIntercept`` -> float32
  Hounsfield units for CT, or a Modality LUT Sequence), optionally the VOI LUT
  (``voi=True``), and inverts ``MONOCHROME1`` so that high = bright;
* returns colour images as ``(H, W, 3)`` RGB (YBR is converted by pydicom,
  ``PALETTE COLOR`` through its lookup table) and multi-frame files as
  ``(F, H, W[, 3])``;
* stacks a folder of slices into ``(Z, H, W)`` sorted along the slice normal,
  with spacing ``(z, row, col)`` mm and a voxel-to-patient (LPS) affine;
* returns 12-lead ECG and other waveform objects as a
  :class:`~meddx.data.sample.SignalSample` in physical units.

Headers are checked before decoding so that a corrupt ``Rows``/``Columns``/
``NumberOfFrames`` cannot make the reader allocate absurd amounts of memory, and
every file is opened through :func:`open_dataset`, which counts how far a
Deflated data set inflates (streaming, nothing kept) before pydicom inflates it,
so a decompression bomb is refused at the limits of
:mod:`meddx.data.readers.limits`. pydicom is imported lazily: meddx works without the ``dicom`` extra until a
DICOM file is actually read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from meddx.data.readers._base import (
    DEFAULT_DECODE_ERRORS,
    Reader,
    check_options,
    decoding,
    import_optional,
    register_reader,
)
from meddx.data.readers.limits import DecodeLimits, check_expansion, decode_limits, inflate_counted
from meddx.data.sample import ImageSample, Sample, SignalSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

DICM_OFFSET = 128
"""The ``DICM`` prefix follows the 128-byte preamble of a DICOM Part 10 file."""

DEFLATED = "1.2.840.10008.1.2.1.99"
"""Deflated Explicit VR Little Endian: the whole data set after the file meta is deflated."""

FLOAT32_MAX = float(np.finfo(np.float32).max)

SPACING_TOLERANCE = 0.01
"""Relative deviation from the median slice distance still counted as even."""

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_OPTIONS = frozenset({"voi", "force", "series_uid", "strict", "waveform"})
_LPS_CODES = (("L", "R"), ("P", "A"), ("S", "I"))

_META_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "SeriesDate",
    "SeriesNumber",
    "SeriesDescription",
    "StudyDescription",
    "InstanceNumber",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PlanarConfiguration",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PatientSex",
    "PatientAge",
    "ViewPosition",
    "Laterality",
    "KVP",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
)
"""Header fields copied into ``meta``. Names and birth dates are left out on purpose."""


class _LazyDecodeErrors:
    """``decode_errors`` that adds pydicom's own exceptions on first use.

    Importing pydicom costs a fifth of a second and it is an optional extra, so
    the class attribute resolves the pydicom classes only when it is read.
    """

    def __get__(self, obj: object, owner: type | None = None) -> tuple[type[BaseException], ...]:
        base = DEFAULT_DECODE_ERRORS + (AttributeError, NotImplementedError, RuntimeError)
        try:
            from pydicom.errors import BytesLengthException, InvalidDicomError
        except ImportError:  # pragma: no cover - the dicom extra is not installed
            return base
        return base + (InvalidDicomError, BytesLengthException)


def _import_pydicom(path: Path) -> Any:
    return import_optional("pydicom", extra="dicom", purpose="reading DICOM", path=path)


def _decoding(path: Path, errors: tuple[type[BaseException], ...]) -> Any:
    """Turn pydicom's exceptions on malformed bytes into CorruptFileError naming ``path``."""
    return decoding(path, errors, what="as DICOM",
                    hint="The file is truncated or corrupt; re-export it from the PACS or modality")


def _check_options(options: dict[str, Any], path: Path) -> None:
    check_options(options, _OPTIONS, path, "DICOM")
    waveform = options.get("waveform", 0)
    if isinstance(waveform, bool) or not isinstance(waveform, int):
        raise ConfigError(
            f"waveform must be a group index (int), not {waveform!r}", path=path, field="waveform"
        )


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a pydicom value (MultiValue, DSfloat, IS, UID, PersonName)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _first(value: Any) -> Any:
    """The first value of a multi-valued element (WindowCenter may hold several)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _float_list(value: Any, n: int) -> list[float] | None:
    """``n`` finite floats from a multi-valued element, or None if absent/malformed."""
    if value is None:
        return None
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(items) != n or not all(math.isfinite(v) for v in items):
        return None
    return items


def _functional_item(ds: Dataset, sequence: str, frame: int | None = None) -> Dataset | None:
    """An item of an enhanced-multi-frame functional group (per-frame first, then shared)."""
    groups: list[Any] = []
    if frame is not None and ds.get("PerFrameFunctionalGroupsSequence"):
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            groups.append(per_frame[frame])
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        seq = group.get(sequence)
        if seq:
            return seq[0]
    return None


def _pixel_spacing(ds: Dataset, path: Path) -> tuple[float, float] | None:
    """(row, col) spacing in mm from PixelSpacing, ImagerPixelSpacing or the functional groups."""
    candidates = [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    item = _functional_item(ds, "PixelMeasuresSequence")
    if item is not None:
        candidates.append(item.get("PixelSpacing"))
    for value in candidates:
        if value is None:
            continue
        items = _float_list(value, 2)
        if items is None or min(items) <= 0:
            warnings.warn(
                f"{path}: ignoring malformed pixel spacing {_plain(value)!r}; spacing left unknown",
                UserWarning,
                stacklevel=4,
            )
            return None
        return (items[0], items[1])
    return None


def _orientation(ds: Dataset) -> np.ndarray | None:
    """ImageOrientationPatient as a (2, 3) array of unit vectors: along a row, down a column."""
    items = _float_list(ds.get("ImageOrientationPatient"), 6)
    if items is None:
        item = _functional_item(ds, "PlaneOrientationSequence")
        items = _float_list(item.get("ImageOrientationPatient") if item else None, 6)
    if items is None:
        return None
    iop = np.asarray(items, dtype=np.float64).reshape(2, 3)
    norms = np.linalg.norm(iop, axis=1)
    if np.any(norms < 1e-6):
        return None
    return iop / norms[:, None]


def _position(ds: Dataset) -> np.ndarray | None:
    items = _float_list(ds.get("ImagePositionPatient"), 3)
    if items is None:
        item = _functional_item(ds, "PlanePositionSequence", 0)
        items = _float_list(item.get("ImagePositionPatient") if item else None, 3)
    return None if items is None else np.asarray(items, dtype=np.float64)


def _axis_code(vector: np.ndarray) -> str:
    """The patient direction (L/R, P/A, S/I) a voxel axis mostly points to, in LPS."""
    axis = int(np.argmax(np.abs(vector)))
    positive, negative = _LPS_CODES[axis]
    return positive if vector[axis] > 0 else negative


def lps_affine(slice_vector: np.ndarray, iop: np.ndarray, row_col: tuple[float, float],
               origin: np.ndarray) -> np.ndarray:
    """The (slice, row, col) voxel index -> patient LPS mm affine of a slice stack.

    ``iop`` holds the row and column direction cosines (ImageOrientationPatient), ``row_col``
    the PixelSpacing (between rows, between columns), ``origin`` the first slice's position.
    """
    affine = np.eye(4)
    affine[:3, 0] = slice_vector
    affine[:3, 1] = iop[1] * row_col[0]
    affine[:3, 2] = iop[0] * row_col[1]
    affine[:3, 3] = origin
    return affine


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest stored pixel value from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _rescale(ds: Dataset, n_frames: int, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame (slope, intercept), from the top level or the functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = _number(ds, "RescaleSlope", 1.0, path)
        intercept = _number(ds, "RescaleIntercept", 0.0, path)
        return np.full(n_frames, slope), np.full(n_frames, intercept)
    if not (ds.get("SharedFunctionalGroupsSequence") or ds.get("PerFrameFunctionalGroupsSequence")):
        return None
    slopes, intercepts, found = np.ones(n_frames), np.zeros(n_frames), False
    for frame in range(n_frames):
        item = _functional_item(ds, "PixelValueTransformationSequence", frame)
        if item is not None and ("RescaleSlope" in item or "RescaleIntercept" in item):
            slopes[frame] = _number(item, "RescaleSlope", 1.0, path)
            intercepts[frame] = _number(item, "RescaleIntercept", 0.0, path)
            found = True
    return (slopes, intercepts) if found else None


def _positive_int(ds: Dataset, keyword: str, path: Path, *, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is not None:
            return default
        raise MissingFieldError(
            f"the image has no {keyword}",
            path=path,
            field=keyword,
            hint="The header is incomplete or corrupt",
        )
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 1:
        raise CorruptFileError(
            f"{keyword} is {_plain(value)!r}, not a positive integer",
            path=path,
            field=keyword,
            hint="The header is corrupt",
        )
    return number


def _check_pixel_header(ds: Dataset, path: Path, keyword: str) -> int:
    """Validate the image pixel module against the bytes present; return the frame count.

    Rows x Columns x Frames x Samples x Bits must fit in the Pixel Data element
    (native data) or be a plausible expansion of it (compressed data), so that a
    corrupt header is reported before any large buffer is allocated.
    """
    rows = _positive_int(ds, "Rows", path)
    cols = _positive_int(ds, "Columns", path)
    frames = _positive_int(ds, "NumberOfFrames", path, default=1)
    samples = _positive_int(ds, "SamplesPerPixel", path, default=1)
    bits = _positive_int(ds, "BitsAllocated", path, default=32 if keyword == "FloatPixelData" else 16)
    if keyword == "DoubleFloatPixelData":
        bits = 64
    if bits not in (1, 8, 16, 32, 64) or samples not in (1, 3):
        raise UnsupportedFormatError(
            f"unsupported pixel layout: BitsAllocated={bits}, SamplesPerPixel={samples}",
            path=path,
            field="BitsAllocated" if bits not in (1, 8, 16, 32, 64) else "SamplesPerPixel",
            hint="meddx decodes 1/8/16/32/64-bit pixels with 1 or 3 samples",
        )
    n_values = rows * cols * frames * samples
    expected = (n_values + 7) // 8 if bits == 1 else n_values * (bits // 8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected // 3 * 2
    element = ds[keyword]
    present = len(element.value or b"")
    compressed = bool(ds.file_meta.get("TransferSyntaxUID") and ds.file_meta.TransferSyntaxUID.is_compressed)
    declared = (
        f"Rows {rows} x Columns {cols} x NumberOfFrames {frames} x SamplesPerPixel {samples} "
        f"x BitsAllocated {bits}"
    )
    size_field = "NumberOfFrames" if frames > 1 else "Rows"
    if not compressed and present < expected:
        raise CorruptFileError(
            f"{keyword} holds {present:,} bytes but the header declares {declared} = {expected:,} bytes",
            path=path,
            field=keyword,
            hint="The file is truncated or its header is corrupt; re-export it",
        )
    if not compressed and present - expected > 1:  # one byte pads an odd length to even
        frame_bytes = max(expected // frames, 1)
        if present - expected >= frame_bytes:
            raise CorruptFileError(
                f"{keyword} holds {present:,} bytes, enough for {present // frame_bytes} frames, but the header "
                f"declares {declared} = {expected:,} bytes",
                path=path,
                field=size_field,
                hint="Rows, Columns or NumberOfFrames is wrong; the pixels cannot be laid out safely. "
                "Re-export the file",
            )
        warnings.warn(
            f"{path}: {keyword} holds {present - expected} byte(s) more than {declared} = {expected:,} "
            "bytes; the excess is ignored as padding",
            UserWarning,
            stacklevel=4,
        )
    check_expansion(expected, present if compressed else None, path=path, field=size_field,
                    what=f"{keyword} ({declared})")
    return frames


def _check_truncation(ds: Dataset, path: Path, inflated: int | None = None) -> None:
    """Raise CorruptFileError if the last element read runs past the end of the file.

    pydicom stops quietly at the end of a file, so a file cut in the middle of an
    element (or of a tag) otherwise looks like a shorter, valid dataset. In a
    Deflated file the data set's positions count in the ``inflated`` bytes.
    """
    size = path.stat().st_size if inflated is None else inflated
    where = "file" if inflated is None else "inflated data set"
    if not list(ds.keys()):
        raise CorruptFileError(
            "the file holds no data elements after its file meta information",
            path=path,
            field="data set",
            hint="The file is truncated or empty; copy or download it again",
        )
    last_tell, last_length, last_tag = -1, 0, None
    sources = [ds, ds.file_meta] if getattr(ds, "file_meta", None) is not None and inflated is None else [ds]
    for source in sources:
        for tag in list(source.keys()):
            elem = source.get_item(tag, keep_deferred=True)
            tell = getattr(elem, "value_tell", None)
            if tell is not None and tell > last_tell:
                last_tell, last_length, last_tag = tell, int(getattr(elem, "length", 0)), tag
    if last_tell < 0 or last_length == _UNDEFINED_LENGTH:
        return
    end = last_tell + last_length
    if end > size:
        raise CorruptFileError(
            f"the {where} ends at byte {size:,}, inside an element that needs {end:,} bytes",
            path=path,
            field=_tag_name(last_tag),
            hint="The file is truncated; copy or download it again",
        )
    if 0 < size - end < 8:
        raise CorruptFileError(
            f"the {where} ends with {size - end} stray byte(s) after its last element, a cut-off tag",
            path=path,
            field=f"the element after {_tag_name(last_tag)}",
            hint="The file is truncated; copy or download it again",
        )


def _tag_name(tag: Any) -> str:
    """``PixelData (7FE0,0010)``, or the bare tag for one pydicom does not know."""
    if tag is None:
        return "data set"
    from pydicom.datadict import keyword_for_tag
    from pydicom.tag import Tag

    tag = Tag(tag)
    text = f"({tag.group:04X},{tag.element:04X})"
    keyword = keyword_for_tag(tag)
    return f"{keyword} {text}" if keyword else text


def _window(ds: Dataset) -> tuple[float, float] | None:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        item = _functional_item(ds, "FrameVOILUTSequence", 0)
        if item is not None:
            center, width = _first(item.get("WindowCenter")), _first(item.get("WindowWidth"))
    try:
        window = (float(center), float(width))
    except (TypeError, ValueError):
        return None
    return window if all(math.isfinite(v) for v in window) else None


def _pixels(ds: Dataset, path: Path, voi: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, rescale, optionally VOI-transform and un-invert the pixel data of ``ds``."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    frames = _check_pixel_header(ds, path, keyword)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    arr = _decode(ds, path, keyword, frames)
    info: dict[str, Any] = {"photometric": photometric, "inverted": False, "window": _window(ds)}
    monochrome = photometric in ("MONOCHROME1", "MONOCHROME2")
    low, high = _stored_range(ds)

    if monochrome:
        rescale = _rescale(ds, frames, path)
        if rescale is not None:
            slope, intercept = rescale
            low, high = _checked_rescale(slope, intercept, low, high, path)
            out = arr.astype(np.float32)
            if frames > 1 and arr.shape[0] == frames:
                shape = (frames,) + (1,) * (arr.ndim - 1)
                out *= slope.reshape(shape).astype(np.float32)
                out += intercept.reshape(shape).astype(np.float32)
            else:
                out *= np.float32(slope[0])
                out += np.float32(intercept[0])
            arr = out
        elif ds.get("ModalityLUTSequence"):
            arr = apply_modality_lut(arr, ds)
            low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        window_low, window_high = low, high  # the window is expressed in modality units
        if voi:
            if ds.get("VOILUTSequence"):
                arr = apply_voi_lut(arr, ds)
                low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
                info["voi"] = "VOILUTSequence"
            elif info["window"] is not None:
                arr = apply_voi_lut(arr, ds).astype(np.float32)
                info["voi"] = "window"
        if photometric == "MONOCHROME1":
            arr = _invert(arr, low, high)
            info.update(photometric="MONOCHROME2", inverted=True)
            if info["window"] is not None:
                center, width = info["window"]
                info["window"] = (window_low + window_high - center, width)
    elif photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        info["photometric"] = "RGB"
    elif photometric.startswith("YBR") and arr.shape[-1] == 3:
        info["photometric"] = "RGB"  # pydicom converts YBR to RGB while decoding (as_rgb)
    info["source_photometric"] = photometric
    info["frames"] = frames
    return arr, info


def _decode(ds: Dataset, path: Path, keyword: str, frames: int) -> np.ndarray:
    """``ds.pixel_array``, with a missing decoder, corrupt compressed data and missing frames told apart."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    compressed = syntax is not None and syntax.is_compressed
    try:
        return ds.pixel_array
    except StopIteration as exc:  # the decoder ran out of fragments
        raise CorruptFileError(
            f"NumberOfFrames is {frames} but the compressed {keyword} holds fewer frames",
            path=path,
            field="NumberOfFrames",
            hint="The file is truncated or NumberOfFrames is wrong; re-export it",
        ) from exc
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        if not compressed:
            raise
        name = getattr(syntax, "name", str(syntax))
        if not _complete_decoder(syntax):
            raise UnsupportedFormatError(
                f"no installed decoder can decode this {name} pixel data: {exc}",
                path=path,
                field="TransferSyntaxUID",
                hint="Install a decoder plugin (pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg), or decompress the file with dcmdjpeg/gdcmconv",
            ) from exc
        raise CorruptFileError(
            f"the {name} {keyword} cannot be decoded: {exc}",
            path=path,
            field=keyword,
            hint="The compressed pixel data is corrupt or truncated; re-export the file",
        ) from exc


_PARTIAL_PLUGINS = frozenset({"pillow"})
"""Decoder plugins that cover only part of their syntaxes (Pillow: no 12-bit JPEG, some J2K streams):
when only these fail, the data may be fine and another plugin needed."""


def _complete_decoder(syntax: Any) -> bool:
    """True if a decoder plugin that handles every valid stream of ``syntax`` is installed.

    Then a failure means corrupt data (e.g. RLE, which pydicom decodes itself);
    otherwise a missing plugin is the likelier cause.
    """
    try:
        from pydicom.pixels.decoders.base import get_decoder

        plugins = set(get_decoder(syntax).available_plugins)
    except Exception:  # noqa: BLE001 - no decoder class at all for this syntax
        return False
    return bool(plugins - _PARTIAL_PLUGINS)


def _checked_rescale(
    slope: np.ndarray, intercept: np.ndarray, low: float, high: float, path: Path
) -> tuple[float, float]:
    """The modality-unit range of stored values ``low..high``; NaN/inf or float32 overflow is an error."""
    for name, values in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if not np.all(np.isfinite(values)):
            raise InvalidValueError(
                f"{name} is {values[~np.isfinite(values)][0]}, not a finite number",
                path=path,
                field=name,
                hint="The header is corrupt; the image would be all NaN or inf. Fix the tag and re-export",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        ends = np.concatenate([low * slope + intercept, high * slope + intercept])
    if not np.all(np.isfinite(ends)) or float(np.max(np.abs(ends))) > FLOAT32_MAX:
        raise InvalidValueError(
            f"RescaleSlope {slope[0]:g} and RescaleIntercept {intercept[0]:g} take stored values "
            f"{low:g}..{high:g} beyond the float32 range",
            path=path,
            field="RescaleSlope",
            hint="The header is corrupt; the image would overflow to inf. Fix the tag and re-export",
        )
    return float(ends.min()), float(ends.max())


def _number(item: Any, keyword: str, default: float, path: Path) -> float:
    """A numeric header value (DS) as float; a malformed one is a CorruptFileError naming it."""
    value = item.get(keyword, default)
    try:
        return float(value or default)
    except (TypeError, ValueError, OverflowError):
        raise CorruptFileError(
            f"{keyword} is {_plain(value)!r}, not a number", path=path, field=keyword, hint="The header is corrupt"
        ) from None


def _invert(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2: mirror values inside the range they can take."""
    if np.issubdtype(arr.dtype, np.integer):
        out = (np.int64(low + high) - arr.astype(np.int64)).clip(low, high)
        return out.astype(arr.dtype)
    return (np.asarray(low + high, dtype=arr.dtype) - arr).astype(arr.dtype, copy=False)


def _meta(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for keyword in _META_KEYWORDS:
        if keyword in ds:
            value = _plain(ds.get(keyword))
            if value not in (None, ""):
                meta[keyword] = value
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None:
        meta["TransferSyntaxUID"] = str(syntax)
    if "SOPClassUID" in ds:
        meta["SOPClassName"] = getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
    return meta


def _ids(ds: Dataset) -> tuple[str | None, str | None]:
    patient = str(ds.get("PatientID") or "").strip() or None
    study = str(ds.get("StudyInstanceUID") or "").strip() or None
    return patient, study


def _code_meaning(item: Any, sequence: str) -> str | None:
    seq = item.get(sequence)
    if seq:
        code = seq[0]
        return str(code.get("CodeMeaning") or code.get("CodeValue") or "").strip() or None
    return None


def _code_value(item: Any, sequence: str) -> str | None:
    seq = item.get(sequence)
    if seq:
        code = seq[0]
        return str(code.get("CodeValue") or code.get("CodeMeaning") or "").strip() or None
    return None


def _deflated_size(path: Path, force: bool, limits: DecodeLimits) -> int | None:
    """For a Deflated file, the size its data set inflates to (counted, not kept); else None.

    The inflation streams and stops at the allowance of ``limits``, so a
    decompression bomb is refused before pydicom inflates it in one piece.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as fh:
        try:
            read_preamble(fh, force)
            meta = _read_file_meta_info(fh)
        except Exception:  # noqa: BLE001 - not parseable here: dcmread reports it properly
            return None
        if str(meta.get("TransferSyntaxUID") or "").strip("\x00 ") != DEFLATED:
            return None
        encoded = path.stat().st_size - fh.tell()
        return inflate_counted(fh, encoded=encoded, path=path, field="TransferSyntaxUID",
                               what="Deflated data set", limits=limits)


def open_dataset(
    path: str | Path,
    *,
    force: bool = False,
    stop_before_pixels: bool = False,
    limits: DecodeLimits | None = None,
) -> Dataset:
    """Open a DICOM file with pydicom, guarded: the one way meddx opens DICOM.

    The reader, the upload check and de-identification all come through here.
    A Deflated data set is first inflated in bounded steps and counted (nothing
    kept): past the allowance of ``limits`` (default :func:`decode_limits`) it
    is an InvalidValueError, a broken stream a CorruptFileError. Only then does
    pydicom read it. Truncated files are refused (:func:`_check_truncation`);
    not DICOM is a CorruptFileError, other pydicom failures too, each naming
    the file.
    """
    path = Path(path)
    pydicom = _import_pydicom(path)
    errors = DicomReader.decode_errors
    with _decoding(path, errors):
        inflated = _deflated_size(path, force, limits or decode_limits())
        try:
            ds = pydicom.dcmread(path, force=force, stop_before_pixels=stop_before_pixels)
        except pydicom.errors.InvalidDicomError as exc:
            raise CorruptFileError(
                "not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble)",
                path=path,
                field="preamble",
                hint="If it is a raw DICOM data set without preamble, pass force=True",
            ) from exc
        if not stop_before_pixels:
            _check_truncation(ds, path, inflated)
        if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
            # force=True on a preamble-less file: pydicom guessed the encoding
            from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

            ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
            )
    return ds


@register_reader
class DicomReader(Reader):
    """DICOM Part 10 files (images, multi-frame, waveforms) and folders holding a slice series.

    Options:
        voi: apply the VOI LUT or window (pydicom ``apply_voi_lut``) after rescaling.
        force: read files without the 128-byte preamble and ``DICM`` prefix.
        series_uid: in a folder holding several series, the SeriesInstanceUID to read.
        strict: raise instead of warning when a series is unevenly spaced.
        waveform: index of the waveform multiplex group to read (default 0).
    """

    name: ClassVar[str] = "dicom"
    suffixes: ClassVar[tuple[str, ...]] = (".dcm", ".dicom")
    directories: ClassVar[bool] = True
    decode_errors = _LazyDecodeErrors()  # type: ignore[assignment]

    def sniff(self, path: Path, head: bytes) -> bool:
        return head[DICM_OFFSET : DICM_OFFSET + 4] == b"DICM"

    def accepts_directory(self, path: Path) -> bool:
        if (path / "labels.csv").is_file():
            return False  # an image folder, not a series
        return any(True for _ in self._series_candidates(path, limit=1))

    def read(self, path: Path, **options: Any) -> Sample:
        """Read a DICOM file or a folder holding one slice series."""
        path = Path(path)
        _check_options(options, path)
        _import_pydicom(path)
        if path.is_dir():
            return self._read_series(path, **options)
        ds = self._dataset(path, force=bool(options.get("force", False)))
        with _decoding(path, self.decode_errors):
            if any(k in ds for k in _PIXEL_KEYWORDS):
                return self._image(ds, path, voi=bool(options.get("voi", False)))
            if ds.get("WaveformSequence"):
                return self._waveform(ds, path, int(options.get("waveform", 0)))
            sop = _plain(ds.get("SOPClassUID"))
            sop_name = getattr(ds.get("SOPClassUID"), "name", sop)
        raise MissingFieldError(
            f"no PixelData and no WaveformSequence (SOP class {sop_name or 'unknown'})",
            path=path,
            field="PixelData",
            hint="This DICOM object holds no image (a report, presentation state or "
            "DICOMDIR?). If it should hold one, the file may be truncated",
        )

    # -- single files ---------------------------------------------------------------

    def _dataset(self, path: Path, *, force: bool = False, stop_before_pixels: bool = False) -> Dataset:
        """:func:`open_dataset`: dcmread with bombs, corrupt and truncated files refused."""
        return open_dataset(path, force=force, stop_before_pixels=stop_before_pixels)

    def _image(self, ds: Dataset, path: Path, *, voi: bool) -> ImageSample:
        arr, info = _pixels(ds, path, voi)
        spacing = _pixel_spacing(ds, path)
        meta = _meta(ds)
        meta.update(
            source_photometric=info["source_photometric"],
            inverted=info["inverted"],
            NumberOfFrames=info["frames"],
        )
        if info.get("voi"):
            meta["voi"] = info["voi"]
        iop = _orientation(ds)
        orientation = affine = None
        spatial_ndim = arr.ndim - (1 if info["photometric"] == "RGB" else 0)
        if iop is not None and spatial_ndim == 2:  # one frame: rows and columns are in patient space
            orientation = (_axis_code(iop[1]), _axis_code(iop[0]))
            position = _position(ds)
            if position is not None and spacing is not None:
                affine = _affine_2d(iop, position, spacing, ds)
                meta["coordinate_system"] = "LPS"
        patient_id, study_id = _ids(ds)
        return ImageSample(
            path=path,
            format=self.name,
            patient_id=patient_id,
            study_id=study_id,
            meta=meta,
            array=arr,
            spacing=spacing,
            orientation=orientation,
            affine=affine,
            modality=str(ds.get("Modality") or "").strip() or None,
            photometric=info["photometric"],
            window=info["window"],
        )

    def _waveform(self, ds: Dataset, path: Path, index: int) -> SignalSample:
        """A SignalSample from one multiplex group, in the units of ChannelSensitivityUnits."""
        groups = ds.WaveformSequence
        if not 0 <= index < len(groups):
            raise ConfigError(
                f"waveform group {index} does not exist (the file has {len(groups)})",
                path=path,
                field="waveform",
                hint=f"Pass waveform=0..{len(groups) - 1}",
            )
        group = groups[index]
        for keyword in ("NumberOfWaveformChannels", "NumberOfWaveformSamples", "WaveformData"):
            if keyword not in group:
                raise MissingFieldError(
                    f"waveform group {index} has no {keyword}",
                    path=path,
                    field=keyword,
                    hint="The waveform module is incomplete",
                )
        n_channels = _positive_int(group, "NumberOfWaveformChannels", path)
        n_samples = _positive_int(group, "NumberOfWaveformSamples", path)
        bits = _positive_int(group, "WaveformBitsAllocated", path)
        expected = n_channels * n_samples * max(bits // 8, 1)
        present = len(group.WaveformData or b"")
        if present < expected:
            raise CorruptFileError(
                f"WaveformData holds {present:,} bytes but {n_channels} channels x {n_samples} "
                f"samples x {bits} bits need {expected:,}",
                path=path,
                field="WaveformData",
                hint="The file is truncated or its header is corrupt",
            )
        fs = float(group.get("SamplingFrequency") or 0.0)
        if not (math.isfinite(fs) and fs > 0):
            raise InvalidValueError(
                f"SamplingFrequency is {_plain(group.get('SamplingFrequency'))!r}",
                path=path,
                field="SamplingFrequency",
                hint="A waveform needs a positive sampling frequency",
            )
        data = np.asarray(ds.waveform_array(index), dtype=np.float64)
        channels = list(group.get("ChannelDefinitionSequence") or [])
        names, units = [], []
        for number in range(n_channels):
            item = channels[number] if number < len(channels) else None
            name = None
            if item is not None:
                name = _code_meaning(item, "ChannelSourceSequence")
                name = name or str(item.get("ChannelLabel") or "").strip()
            names.append(name or f"channel {number + 1}")
            unit = _code_value(item, "ChannelSensitivityUnitsSequence") if item is not None else None
            units.append(unit or "")
        meta = _meta(ds)
        meta.update(
            waveform_group=index,
            waveform_groups=[
                {
                    "label": str(g.get("MultiplexGroupLabel") or "").strip() or None,
                    "channels": _plain(g.get("NumberOfWaveformChannels")),
                    "samples": _plain(g.get("NumberOfWaveformSamples")),
                    "fs": _plain(g.get("SamplingFrequency")),
                    "originality": _plain(g.get("WaveformOriginality")),
                }
                for g in groups
            ],
            Modality=str(ds.get("Modality") or "").strip() or None,
        )
        findings, measurements, annotations = _waveform_annotations(ds, index, fs)
        if findings:
            meta["findings"] = findings
        if measurements:
            meta["measurements"] = measurements
        patient_id, study_id = _ids(ds)
        return SignalSample(
            path=path,
            format=self.name,
            patient_id=patient_id,
            study_id=study_id,
            meta=meta,
            data=data,
            fs=fs,
            channel_names=names,
            units=units,
            annotations=annotations,
        )

    # -- series (folders) -------------------------------------------------------------

    def _series_candidates(self, folder: Path, limit: int | None = None) -> Iterator[Path]:
        """Files of ``folder`` that look like DICOM (suffix or ``DICM`` prefix)."""
        found = 0
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR" or not entry.is_file():
                continue
            if not self.accepts_suffix(entry):
                try:
                    with open(entry, "rb") as fh:
                        if not self.sniff(entry, fh.read(DICM_OFFSET + 4)):
                            continue
                except OSError:
                    continue
            yield entry
            found += 1
            if limit is not None and found >= limit:
                return

    def _read_series(self, folder: Path, **options: Any) -> ImageSample:
        """Stack the slices of one series, sorted along the slice normal, into (Z, H, W)."""
        force = bool(options.get("force", False))
        files = list(self._series_candidates(folder))
        if not files:
            raise EmptyDataError(
                "the folder holds no DICOM files", path=folder, hint="Point to a folder of .dcm slices"
            )
        headers: dict[str, list[tuple[Path, Dataset]]] = {}
        skipped: list[str] = []
        for file in files:
            ds = self._dataset(file, force=force, stop_before_pixels=True)
            with _decoding(file, self.decode_errors):
                if "Rows" not in ds or ds.get("WaveformSequence"):
                    skipped.append(file.name)  # reports, presentation states, waveforms
                    continue
                uid = str(ds.get("SeriesInstanceUID") or "").strip()
            headers.setdefault(uid, []).append((file, ds))
        if not headers:
            raise EmptyDataError(
                f"none of the {len(files)} DICOM files holds an image",
                path=folder,
                field="PixelData",
                hint="The folder holds only reports, presentation states or waveforms",
            )
        uid = self._pick_series(folder, headers, options.get("series_uid"))
        slices = headers[uid]
        if len(slices) == 1 and int(slices[0][1].get("NumberOfFrames") or 1) > 1:
            sample = self.read(slices[0][0], **{k: v for k, v in options.items() if k in ("voi", "force")})
            sample.meta["series_folder"] = str(folder)
            return sample  # type: ignore[return-value]
        with _decoding(folder, self.decode_errors):
            strict = bool(options.get("strict"))
            order, positions, iop, z_spacing, gaps = self._sort_slices(folder, slices, strict)
        ordered = [slices[i] for i in order]

        arrays: list[np.ndarray] = []
        first_info: dict[str, Any] = {}
        first_ds: Dataset | None = None
        for file, _ in ordered:
            ds = self._dataset(file, force=force)
            with _decoding(file, self.decode_errors):
                if not any(k in ds for k in _PIXEL_KEYWORDS):
                    raise MissingFieldError(
                        "a slice of the series has no PixelData",
                        path=file,
                        field="PixelData",
                        hint="The file may be truncated; remove it or re-export the series",
                    )
                if int(ds.get("NumberOfFrames") or 1) > 1:
                    raise UnsupportedFormatError(
                        "the series mixes multi-frame files",
                        path=file,
                        field="NumberOfFrames",
                        hint="Read multi-frame files one by one",
                    )
                arr, info = _pixels(ds, file, bool(options.get("voi", False)))
            if arrays and arr.shape != arrays[0].shape:
                raise InvalidValueError(
                    f"slice shape {arr.shape} differs from {arrays[0].shape} of {ordered[0][0].name}",
                    path=file,
                    field="Rows",
                    hint="The folder mixes images of different sizes; keep one series per folder",
                )
            if first_ds is None:
                first_ds, first_info = ds, info
            arrays.append(arr)
        assert first_ds is not None
        volume = np.stack(arrays)
        if any(np.issubdtype(a.dtype, np.floating) for a in arrays):
            volume = volume.astype(np.float32, copy=False)

        row_col = _pixel_spacing(first_ds, ordered[0][0])
        spacing = (z_spacing, *row_col) if row_col is not None else None
        orientation = affine = None
        meta = _meta(first_ds)
        meta.update(
            n_slices=len(ordered),
            files=[f.name for f, _ in ordered],
            source_photometric=first_info["source_photometric"],
            inverted=first_info["inverted"],
            uneven_spacing=bool(gaps),
        )
        for keyword in ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient"):
            meta.pop(keyword, None)
        if gaps:
            meta["slice_distances"] = gaps
        if skipped:
            meta["skipped"] = skipped
        if positions is not None and iop is not None:
            normal = np.cross(iop[0], iop[1])
            if len(positions) > 1:
                slice_vector = (positions[-1] - positions[0]) / (len(positions) - 1)
            else:
                slice_vector = normal * z_spacing
            orientation = (_axis_code(slice_vector), _axis_code(iop[1]), _axis_code(iop[0]))
            if row_col is not None:
                affine = lps_affine(slice_vector, iop, row_col, positions[0])
                meta["coordinate_system"] = "LPS"
            meta["ImagePositionPatient"] = [float(v) for v in positions[0]]
        patient_id, study_id = _ids(first_ds)
        return ImageSample(
            path=folder,
            format=self.name,
            patient_id=patient_id,
            study_id=study_id,
            meta=meta,
            array=volume,
            spacing=spacing,
            orientation=orientation,
            affine=affine,
            modality=str(first_ds.get("Modality") or "").strip() or None,
            photometric=first_info["photometric"],
            window=first_info["window"],
        )

    @staticmethod
    def _pick_series(folder: Path, headers: dict[str, list[Any]], wanted: Any) -> str:
        if wanted is not None:
            if str(wanted) not in headers:
                raise ConfigError(
                    f"series {wanted!r} is not in the folder",
                    path=folder,
                    field="series_uid",
                    hint=f"Series found: {', '.join(sorted(headers))}",
                )
            return str(wanted)
        if len(headers) > 1:
            listing = "; ".join(
                f"{uid or '<none>'} ({len(files)} files)" for uid, files in sorted(headers.items())
            )
            raise InvalidValueError(
                f"the folder holds {len(headers)} series: {listing}",
                path=folder,
                field="SeriesInstanceUID",
                hint="Pass series_uid=UID to choose one, or keep one series per folder",
            )
        return next(iter(headers))

    @staticmethod
    def _sort_slices(
        folder: Path, slices: list[tuple[Path, Dataset]], strict: bool
    ) -> tuple[list[int], np.ndarray | None, np.ndarray | None, float, list[float]]:
        """Order slices along the normal of ImageOrientationPatient; return spacing and gaps.

        Falls back to InstanceNumber (with a warning) when positions are missing.
        Duplicated positions are an error: they mean several acquisitions or time
        points share the folder. Uneven distances are a warning (an error if ``strict``).
        """
        first_ds = slices[0][1]
        iop = _orientation(first_ds)
        positions = [_position(ds) for _, ds in slices]
        if iop is None or any(p is None for p in positions):
            warnings.warn(
                f"{folder}: slices lack ImagePositionPatient/ImageOrientationPatient; "
                "ordering by InstanceNumber, z spacing from SliceThickness",
                UserWarning,
                stacklevel=4,
            )
            order = sorted(range(len(slices)), key=lambda i: int(slices[i][1].get("InstanceNumber") or 0))
            thickness = float(first_ds.get("SpacingBetweenSlices") or first_ds.get("SliceThickness") or 1.0)
            return order, None, None, abs(thickness) or 1.0, []
        for file, ds in slices[1:]:
            other = _orientation(ds)
            if other is None or not np.allclose(other, iop, atol=1e-3):
                raise InvalidValueError(
                    "slice orientation differs from the rest of the series",
                    path=file,
                    field="ImageOrientationPatient",
                    hint="The series mixes orientations (a localizer?); remove the odd slices",
                )
        normal = np.cross(iop[0], iop[1])
        points = np.stack([p for p in positions if p is not None])
        distance = points @ normal
        order = [int(i) for i in np.argsort(distance, kind="stable")]
        ordered = distance[order]
        if len(order) == 1:
            thickness = float(first_ds.get("SpacingBetweenSlices") or first_ds.get("SliceThickness") or 1.0)
            return order, points[order], iop, abs(thickness) or 1.0, []
        steps = np.diff(ordered)
        median = float(np.median(steps))
        duplicate = np.flatnonzero(steps < max(1e-3, SPACING_TOLERANCE * median))
        if duplicate.size:
            i = int(duplicate[0])
            a, b = slices[order[i]][0].name, slices[order[i + 1]][0].name
            raise InvalidValueError(
                f"{a} and {b} lie at the same position ({ordered[i]:.3f} mm along the slice normal); "
                f"{duplicate.size} duplicated position(s)",
                path=folder,
                field="ImagePositionPatient",
                hint="The folder holds several acquisitions or time points; keep one per folder",
            )
        uneven = np.abs(steps - median) > max(1e-3, SPACING_TOLERANCE * median)
        gaps: list[float] = []
        if uneven.any():
            gaps = [round(float(s), 4) for s in steps]
            message = (
                f"slices are unevenly spaced: distances {min(gaps):.3f} to {max(gaps):.3f} mm "
                f"(median {median:.3f} mm); missing slices?"
            )
            if strict:
                raise InvalidValueError(
                    message,
                    path=folder,
                    field="ImagePositionPatient",
                    hint="Complete the series, or pass strict=False to read it with the median spacing",
                )
            warnings.warn(f"{folder}: {message}", UserWarning, stacklevel=4)
        return order, points[order], iop, median, gaps


def _affine_2d(
    iop: np.ndarray, position: np.ndarray, spacing: tuple[float, float], ds: Dataset
) -> np.ndarray:
    """Voxel (row, col, slice) -> patient LPS mm for a single slice."""
    thickness = ds.get("SliceThickness")
    try:
        depth = float(thickness) if thickness not in (None, "") else 1.0
    except (TypeError, ValueError):
        depth = 1.0
    affine = np.eye(4)
    affine[:3, 0] = iop[1] * spacing[0]
    affine[:3, 1] = iop[0] * spacing[1]
    affine[:3, 2] = np.cross(iop[0], iop[1]) * (depth if math.isfinite(depth) and depth > 0 else 1.0)
    affine[:3, 3] = position
    return affine


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _waveform_annotations(
    ds: Dataset, index: int, fs: float
) -> tuple[list[str], dict[str, Any], list[tuple[float, float, str]]]:
    """Free-text findings, numeric measurements and timed events of WaveformAnnotationSequence.

    Timed events (ReferencedSamplePositions) are kept only for the multiplex group
    read; ReferencedWaveformChannels holds (group number, channel) pairs, 1-based.
    """
    findings: list[str] = []
    measurements: dict[str, Any] = {}
    events: list[tuple[float, float, str]] = []
    for item in ds.get("WaveformAnnotationSequence") or []:
        text = str(item.get("UnformattedTextValue") or "").strip()
        concept = _code_meaning(item, "ConceptNameCodeSequence")
        label = text or concept or _code_meaning(item, "ConceptCodeSequence") or ""
        points = [int(p) for p in _as_list(item.get("ReferencedSamplePositions"))]
        if points:
            channels = [int(c) for c in _as_list(item.get("ReferencedWaveformChannels"))]
            groups = channels[0::2]
            if label and (not groups or index + 1 in groups):
                onset = (points[0] - 1) / fs
                duration = (points[-1] - points[0]) / fs if len(points) > 1 else 0.0
                events.append((onset, duration, label))
            continue
        if "NumericValue" in item and concept:
            value = _plain(_first(item.NumericValue))
            unit = _code_value(item, "MeasurementUnitsCodeSequence")
            measurements[concept] = {"value": value, "unit": unit}
        elif text:
            findings.append(text)
    return findings, measurements, events


__all__ = ["DicomReader", "open_dataset"]
