"""Every synthetic image is marked as derived, wherever it goes.

- pictures (PNG for the page, the CLI and reports) carry a banner burnt into the pixels,
  ``SYNTHETIC - <kind> by <method>, not acquired``, so a screenshot cannot lose it;
- DICOM files are new instances (new SOP Instance and Series UIDs, the source referenced in
  Source Image Sequence) with ImageType ``DERIVED\\SECONDARY``, a Derivation Description and a
  Derivation Code (:data:`DERIVATION`), a series description starting ``SYNTHETIC`` and Burned In
  Annotation ``NO`` (the banner is not in the DICOM pixels; viewers show the series description
  and the ImageType instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BANNER = "SYNTHETIC - {kind} by {method}, not acquired"
DERIVATION = {
    "restoration": ("123102", "DCM", "Adaptive Filtering"),
    "translation": ("SYNTH-XLATE", "99MEDDX", "Cross-modality image synthesis"),
}
"""Derivation codes per synthesis kind: DCM 123102 (CID 7203 Image Derivation) for restoration; CID 7203 has
no code for cross-modality synthesis, so a private one (coding scheme ``99MEDDX``) for translation."""


def banner_text(kind: str, method: str) -> str:
    return BANNER.format(kind=kind, method=method)


def with_banner(image: np.ndarray, text: str) -> np.ndarray:
    """An 8-bit RGB copy of a [0, 1] grey (or RGB) image with a red band and ``text`` across its top."""
    from PIL import Image, ImageDraw, ImageFont

    x = np.asarray(image, np.float32)
    grey = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey[..., :3]
    height, width = rgb.shape[:2]
    scale = max(1, int(np.ceil(480 / max(width, 1))))  # small images are enlarged so the text stays legible
    picture = Image.fromarray(rgb).resize((width * scale, height * scale), Image.NEAREST)
    band = max(14, picture.height // 14)
    canvas = Image.new("RGB", (picture.width, picture.height + band), (170, 0, 0))
    canvas.paste(picture, (0, band))
    draw = ImageDraw.Draw(canvas)
    size = max(10, band - 4)
    while True:  # the largest font whose text fits the width
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: one bitmap size
            font = ImageFont.load_default()
            break
        if draw.textlength(text, font=font) <= canvas.width - 8 or size <= 8:
            break
        size -= 1
    draw.text((4, max(0, (band - size) // 2 - 1)), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: Path, *, kind: str, method: str) -> tuple[Path, Path]:
    """Write ``path`` (8-bit RGB with the banner) and ``path``'s ``.raw.png`` twin (16-bit grey, no banner)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(with_banner(image, banner_text(kind, method))).save(path)
    raw = path.with_suffix(".raw.png")
    x = np.clip(np.asarray(image, np.float64), 0, 1)
    if x.ndim == 2:
        Image.fromarray((x * 65535 + 0.5).astype(np.uint16)).save(raw)
    else:
        Image.fromarray((x * 255 + 0.5).astype(np.uint8)).save(raw)
    return path, raw


def derived_dicom(source: Any, image: np.ndarray, out: Path, *, kind: str, method: str,
                  description: str) -> Path:
    """Write ``image`` ([0, 1], the source's grid) as a new DICOM instance derived from ``source``.

    The pixels are mapped back to the source's stored range (its rescale kept), so a viewer windows the
    synthetic image like the original. Returns the path written.
    """
    import copy

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from meddx.exceptions import LabelShapeError

    src = source if isinstance(source, Dataset) else pydicom.dcmread(str(source))
    rows, cols = int(src.Rows), int(src.Columns)
    if image.shape != (rows, cols):
        raise LabelShapeError(f"synthetic image {image.shape} does not match the source grid {(rows, cols)}",
                              path=getattr(src, "filename", None), field="Rows/Columns",
                              hint="Restore the source's own pixel grid (one frame)")
    stored = src.pixel_array.astype(np.float64)
    low, high = float(stored.min()), float(stored.max())
    signed = int(getattr(src, "PixelRepresentation", 0)) == 1
    bits = int(getattr(src, "BitsStored", 16))
    values = np.round(np.clip(image, 0, 1) * (high - low) + low)
    dtype = (np.int16 if signed else np.uint16) if bits > 8 else (np.int8 if signed else np.uint8)
    ds = copy.deepcopy(src)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = values.astype(dtype).tobytes()
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = min(bits, ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = src.PhotometricInterpretation if src.PhotometricInterpretation in (
        "MONOCHROME1", "MONOCHROME2") else "MONOCHROME2"
    for keyword in ("NumberOfFrames", "PlanarConfiguration", "LossyImageCompression"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.ImageType = ["DERIVED", "SECONDARY"] + [str(v) for v in list(getattr(src, "ImageType", []))[2:3]]
    code_value, scheme, meaning = DERIVATION.get(kind, DERIVATION["translation"])
    ds.DerivationDescription = f"SYNTHETIC {kind} by meddx {method}: {description}"[:1024]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = code_value, scheme, meaning
    ds.DerivationCodeSequence = Sequence([code])
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ds.SourceImageSequence = Sequence([ref])
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = f"SYNTHETIC {kind} ({method})"[:64]
    ds.BurnedInAnnotation = "NO"
    ds.SeriesNumber = int(getattr(src, "SeriesNumber", 0) or 0) + 1000
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(out), enforce_file_format=True)
    return out


def is_marked_derived(path: Path) -> bool:
    """True when the DICOM file at ``path`` says it is derived and synthetic (what meddx writes)."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return (str(list(ds.get("ImageType", ["?"]))[0]).upper() == "DERIVED"
            and str(ds.get("SeriesDescription", "")).startswith("SYNTHETIC"))
