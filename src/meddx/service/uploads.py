"""Upload safety: size and decompression limits, content sniffing, no names from the client.

Every upload is streamed into a private temporary file with a random name while
its size is counted (over the limit: 413, nothing kept), its type is decided by
its first bytes, never by the client's file name or content type, and images are
opened with a pixel budget so that a small file that decompresses into a huge
image (a decompression bomb) is refused before it is decoded. A rejected upload
leaves nothing behind.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64_000_000  # per image or slice stack: 8k × 8k
MAX_GZIP_RATIO = 200


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
        kind = _kind(path)
        path = _named(path, kind)
        _check_content(path, kind, max_pixels)
        return Upload(path, kind, size, digest.hexdigest())
    except UploadRejected:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # anything unexpected while checking: reject, keep nothing
        path.unlink(missing_ok=True)
        raise UploadRejected(422, f"the file could not be checked: {type(exc).__name__}") from exc


def _kind(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(1024)
    kind = sniff(head)
    if kind is None and head.startswith(b"\x1f\x8b"):
        inner = _bounded_gunzip_head(path)
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


def _bounded_gunzip_head(path: Path) -> bytes:
    size = path.stat().st_size
    with gzip.open(path, "rb") as fh:
        head = fh.read(1024)
        total = len(head)
        while chunk := fh.read(1 << 20):
            total += len(chunk)
            if total > MAX_GZIP_RATIO * size or total > 4 * MAX_BYTES:
                raise UploadRejected(413, "the compressed file expands beyond the decompression limit")
    return head


def _check_content(path: Path, kind: str, max_pixels: int) -> None:
    CHECKS[kind](path, max_pixels)


def _image_check(path: Path, max_pixels: int) -> None:
    from PIL import Image

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow's own limit (over 2 × MAX_IMAGE_PIXELS) is ours too
        raise UploadRejected(413, f"the image declares too many pixels (above the {max_pixels:,} pixel limit)") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise UploadRejected(413, f"the image has {width}×{height} pixels, above the {max_pixels:,} pixel limit")
        image.verify()


def _dicom_check(path: Path, max_pixels: int) -> None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise UploadRejected(422, f"the DICOM file cannot be parsed ({type(exc).__name__})") from exc
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols * frames > max_pixels:
        raise UploadRejected(413, f"the DICOM holds {frames}×{rows}×{cols} pixels, above the {max_pixels:,} limit")
    if not rows or not cols:
        raise UploadRejected(422, "the DICOM file has no image (Rows/Columns missing)")


def _nifti_check(path: Path, max_pixels: int) -> None:
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        raise UploadRejected(422, f"the NIfTI file cannot be parsed ({type(exc).__name__})") from exc
    count = 1
    for n in shape:
        count *= int(n)
    if count > max_pixels:
        raise UploadRejected(413, f"the volume has {count:,} voxels, above the {max_pixels:,} limit")


CHECKS = {"png": _image_check, "jpeg": _image_check, "dicom": _dicom_check, "nifti": _nifti_check}
