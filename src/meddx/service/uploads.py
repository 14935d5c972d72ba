"""Upload safety: size and decompression limits, content sniffing, no names from the client.

Every upload is streamed into a private temporary file with a random name while
its size is counted (over the limit: 413, nothing kept), its type is decided by
its first bytes, never by the client's file name or content type, and images are
opened with a pixel budget so that a small file that decompresses into a huge
image (a decompression bomb) is refused before it is decoded. A rejected upload
leaves nothing behind.

Decompression is bounded the way the readers bound it
(:mod:`meddx.data.readers.limits`), with an upload's own allowance
(:func:`upload_limits`: at most 4 × ``max_bytes`` decoded): a Deflated DICOM is
opened through :func:`meddx.data.readers.dicom.open_dataset`, which counts its
inflation in bounded steps before pydicom inflates it; a gzip NIfTI is counted
the same way and its header's declared size checked; a PNG/JPEG's declared size
too, and a PNG's rows against its header. Each refusal costs kilobytes, not the
inflated size. A CMYK (or other non-RGB) JPEG is converted to RGB here, so the
rest of the service only sees images it can store.

The request itself is limited before this runs: :mod:`meddx.service.limits`
refuses unauthenticated uploads before reading their body and stops reading at
the limit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from meddx.data.readers.limits import DecodeLimits, LimitExceededError, check_expansion, inflate_counted
from meddx.exceptions import MeddxError, UnsupportedFormatError

MAX_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64_000_000  # per image or slice stack: 8k × 8k
MAX_GZIP_RATIO = 200
DECODED_FACTOR = 4
"""An upload may decode (inflate, decompress) to at most this many times the upload size limit."""
PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
"""Pillow modes a PNG can hold; a JPEG in another mode (CMYK, YCbCr...) is converted to RGB on arrival."""


class UploadRejected(Exception):
    """An upload meddx will not take; ``status`` is the HTTP status, ``reason`` the explanation."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    path: Path
    kind: str  # dicom | png | jpeg | nifti
    size: int
    sha256: str

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


Sniffer = Callable[[bytes], bool]
SNIFFERS: dict[str, Sniffer] = {}


def sniffer(kind: str) -> Callable[[Sniffer], Sniffer]:
    """Register a test on a file's first bytes for ``kind``."""

    def decorator(func: Sniffer) -> Sniffer:
        SNIFFERS[kind] = func
        return func

    return decorator


@sniffer("dicom")
def _dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


@sniffer("png")
def _png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


@sniffer("jpeg")
def _jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


@sniffer("nifti")
def _nifti(head: bytes) -> bool:
    if head.startswith(b"\x1f\x8b"):
        return False  # decided after bounded decompression
    return len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00") and \
        int.from_bytes(head[:4], "little") in (348, 540)


def sniff(head: bytes) -> str | None:
    """The file type from its first bytes (at least 348), or None."""
    for kind, test in SNIFFERS.items():
        if test(head):
            return kind
    return None


def upload_limits(max_bytes: int = MAX_BYTES) -> DecodeLimits:
    """How far an upload of at most ``max_bytes`` may decode: :data:`DECODED_FACTOR` × ``max_bytes`` in all,
    at most :data:`MAX_GZIP_RATIO`:1 beyond 64 MiB."""
    cap = DECODED_FACTOR * max_bytes
    return DecodeLimits(max_bytes=cap, free_bytes=min(cap, 64 << 20), max_ratio=MAX_GZIP_RATIO)


def _rejected(exc: MeddxError, path: Path) -> UploadRejected:
    """The HTTP refusal for a reader's error: 413 over the limits, 415 unsupported, else 422; no server path."""
    status = 413 if isinstance(exc, LimitExceededError) else 415 if isinstance(exc, UnsupportedFormatError) else 422
    return UploadRejected(status, str(exc).replace(str(path), "the upload"))


def receive(stream: BinaryIO, folder: Path, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Upload:
    """Stream ``stream`` into ``folder`` under a random name, then check it; raise UploadRejected."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=".bin")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRejected(413, f"the file is larger than the {max_bytes // (1 << 20)} MiB limit")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise UploadRejected(400, "the file is empty")
        kind = _kind(path, max_bytes)
        path = _named(path, kind)
        try:
            _check_content(path, kind, max_pixels, upload_limits(max_bytes))
        except MeddxError as exc:
            raise _rejected(exc, path) from exc
        return Upload(path, kind, size, digest.hexdigest())
    except UploadRejected:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # anything unexpected while checking: reject, keep nothing
        path.unlink(missing_ok=True)
        raise UploadRejected(422, f"the file could not be checked: {type(exc).__name__}") from exc


def _kind(path: Path, max_bytes: int = MAX_BYTES) -> str:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    kind = sniff(head)
    if kind is None and head.startswith(b"\x1f\x8b"):
        inner = _bounded_gunzip_head(path, upload_limits(max_bytes))
        if _nifti(inner):
            return "nifti"
    if kind is None:
        raise UploadRejected(415, "unsupported content: send DICOM (with the DICM preamble), PNG, JPEG or NIfTI")
    return kind


def _named(path: Path, kind: str) -> Path:
    """Give the private file the suffix its readers go by (nibabel picks its format from ``.nii``/``.nii.gz``)."""
    if kind != "nifti":
        return path
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    target = path.with_name(path.stem + (".nii.gz" if gzipped else ".nii"))
    path.rename(target)
    return target


def _bounded_gunzip_head(path: Path, limits: DecodeLimits | None = None) -> bytes:
    """The first 1024 decompressed bytes of a gzip file, after counting (streaming) that it all stays
    within ``limits``; 413 past them, 422 for a broken stream."""
    limits = limits or upload_limits()
    size = path.stat().st_size
    head = bytearray()

    def keep(chunk: bytes) -> None:
        if len(head) < 1024:
            head.extend(chunk[: 1024 - len(head)])

    try:
        with open(path, "rb") as fh:
            inflate_counted(fh, encoded=size, path=path, field="gzip", what="gzip stream", wbits=31,
                            limits=limits, sink=keep)
    except MeddxError as exc:
        raise _rejected(exc, path) from exc
    return bytes(head)


def _check_content(path: Path, kind: str, max_pixels: int, limits: DecodeLimits | None = None) -> None:
    CHECKS[kind](path, max_pixels, limits or upload_limits())


def _image_check(path: Path, max_pixels: int, limits: DecodeLimits) -> None:
    from PIL import Image

    from meddx.data.readers.image import check_png_rows

    try:
        image = Image.open(path, formats=("PNG", "JPEG"))
    except Image.DecompressionBombError as exc:  # Pillow's own limit (over 2 × MAX_IMAGE_PIXELS) is ours too
        raise UploadRejected(413, f"the image declares too many pixels (above the {max_pixels:,} pixel limit)") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise UploadRejected(413, f"the image has {width}×{height} pixels, above the {max_pixels:,} pixel limit")
        check_expansion(width * height * len(image.getbands()) * (2 if image.mode.startswith("I;16") else 1),
                        path.stat().st_size, path=path, field="size", what=f"the {image.format} image",
                        limits=limits)
        mode = image.mode
        image.verify()
    if image.format == "PNG":
        check_png_rows(path)
    if mode not in PNG_MODES:
        _to_rgb(path)


def _to_rgb(path: Path) -> None:
    """Replace an image in a mode the service cannot store (CMYK, YCbCr, LAB JPEG) by its RGB conversion (PNG)."""
    from PIL import Image

    with Image.open(path, formats=("JPEG",)) as image:
        image.load()
        rgb = image.convert("RGB")
    rgb.save(path, format="PNG")


def _dicom_check(path: Path, max_pixels: int, limits: DecodeLimits) -> None:
    from meddx.data.readers.dicom import open_dataset

    ds = open_dataset(path, stop_before_pixels=True, limits=limits)  # Deflated: inflation counted and bounded
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError) as exc:
        raise UploadRejected(422, f"the DICOM image header is corrupt ({type(exc).__name__})") from exc
    if min(rows, cols, frames, samples, bits) < 0:
        raise UploadRejected(422, "the DICOM image header is corrupt (negative Rows/Columns/NumberOfFrames)")
    if rows * cols * frames > max_pixels:
        raise UploadRejected(413, f"the DICOM holds {frames}×{rows}×{cols} pixels, above the {max_pixels:,} limit")
    if not rows or not cols:
        raise UploadRejected(422, "the DICOM file has no image (Rows/Columns missing)")
    declared = rows * cols * frames * samples * max(bits, 8) // 8
    if declared > limits.max_bytes:
        raise UploadRejected(413, f"the DICOM pixel data decodes to {declared:,} bytes, above the "
                                  f"{limits.max_bytes:,} byte limit")


def _nifti_check(path: Path, max_pixels: int, limits: DecodeLimits) -> None:
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        itemsize = np.dtype(img.get_data_dtype()).itemsize
    except Exception as exc:
        raise UploadRejected(422, f"the NIfTI file cannot be parsed ({type(exc).__name__})") from exc
    count = 1
    for n in shape:
        count *= n
    if count > max_pixels:
        raise UploadRejected(413, f"the volume has {count:,} voxels, above the {max_pixels:,} limit")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    check_expansion(count * itemsize, path.stat().st_size if gzipped else None, path=path, field="dim",
                    what=f"the volume {list(shape)} of {itemsize}-byte voxels", limits=limits)


CHECKS = {"png": _image_check, "jpeg": _image_check, "dicom": _dicom_check, "nifti": _nifti_check}
