"""Small files the tests generate: labelled PNG folders and DICOM images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_labelled_pngs(root: Path, n: int = 48, size: int = 20, seed: int = 0) -> Path:
    """A folder of grey PNGs with ``labels.csv``: ``lesion`` images have a bright centre, ``normal`` ones do not.

    The cue is easy, so a tiny model learns it in a few epochs.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(n):
        label = "lesion" if i % 2 else "normal"
        img = rng.integers(0, 80, (size, size)).astype(np.uint8)
        if label == "lesion":
            img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 150
        Image.fromarray(img).save(root / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def write_dicom(path: Path, pixels: np.ndarray, modality: str = "OT") -> Path:
    """Save an 8-bit grey image as a minimal, valid DICOM file (Secondary Capture)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = modality, int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, tuple[float, ...]]]) -> str:
    """A Pascal VOC annotation file for ``objects`` ``(name, (xmin, ymin, xmax, ymax))``."""
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"</size>{objs}</annotation>")


def voc_shapes(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Grey images with bright squares ("dot") and dark wide bars ("bar"), in VOC layout."""
    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), 128, np.uint8)
        objects = []
        for _ in range(2):
            x, y = (int(v) for v in rng.integers(4, size - 36, 2))
            img[y:y + 20, x:x + 20] = 240
            objects.append(("dot", (x, y, x + 20, y + 20)))
        x, y = int(rng.integers(2, size - 50)), int(rng.integers(2, size - 14))
        img[y:y + 12, x:x + 44] = 20
        objects.append(("bar", (x, y, x + 44, y + 12)))
        Image.fromarray(img).save(root / "JPEGImages" / f"img{i:02d}.png")
        (root / "Annotations" / f"img{i:02d}.xml").write_text(voc_xml(f"img{i:02d}.png", (size, size), objects))
    return root
