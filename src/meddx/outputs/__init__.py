"""DICOM outputs of meddx models: Segmentation (SEG) and Structured Report (SR, TID 1500).

Two writers and their readers, imported lazily so that ``import meddx.outputs``
costs nothing until a DICOM object is written::

    from meddx.outputs import write_seg, write_sr
    seg = write_seg([ct], mask, classes=["lesion"], out=Path("seg.dcm"), algorithm="unet3d", version="1.0")
    sr = write_sr(ct, findings=[{"label": "lesion", "area_px": 120, "fraction": 0.01}],
                  out=Path("sr.dcm"), algorithm="unet3d", version="1.0", seg=seg)

``read_seg`` and ``read_sr`` re-read them for checks. Needs the ``dicom`` extra
(pydicom and highdicom).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "write_seg": "meddx.outputs.dicom_seg",
    "read_seg": "meddx.outputs.dicom_seg",
    "write_sr": "meddx.outputs.dicom_sr",
    "read_sr": "meddx.outputs.dicom_sr",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'meddx.outputs' has no attribute {name!r}")


__all__ = ["read_seg", "read_sr", "write_seg", "write_sr"]
