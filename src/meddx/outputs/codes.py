"""Coded concepts for segment and finding classes: class name -> (category, type).

DICOM SEG and SR describe what a segment or finding *is* with coded concepts
(SNOMED CT, scheme ``SCT``), not free text. :func:`concepts_for` maps a meddx
class name (``"vessel"``, ``"RBC"``, ``"lesion"``) to a pair of codes:

* the *segmented property category* (CID 7150: tissue, anatomical structure,
  morphologically abnormal structure, cell, ...);
* the *segmented property type* (the thing itself: blood vessel, erythrocyte, ...).

Names are matched case-insensitively, ignoring spaces, ``_``, ``-`` and a
plural ``s``. A name not in :data:`CLASS_CODES` falls back to
(Tissue, Tissue) so the object stays valid; the class name itself is kept
verbatim as the segment label and the SR tracking identifier. Pass
``codes={"name": (category, type)}`` to the writers for your own classes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydicom.sr.coding import Code

SCT = "SCT"

TISSUE = Code("85756007", SCT, "Tissue")
ANATOMICAL_STRUCTURE = Code("91723000", SCT, "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("49755003", SCT, "Morphologically Abnormal Structure")
CELL = Code("4421005", SCT, "Cell")

_ANATOMY = {
    "vessel": Code("59820001", SCT, "Blood vessel"),
    "bloodvessel": Code("59820001", SCT, "Blood vessel"),
    "artery": Code("51114001", SCT, "Artery"),
    "vein": Code("29092000", SCT, "Vein"),
    "organ": Code("91772007", SCT, "Organ"),
    "retina": Code("5665001", SCT, "Retina"),
    "liver": Code("10200004", SCT, "Liver"),
    "brain": Code("12738006", SCT, "Brain"),
    "lung": Code("39607008", SCT, "Lung"),
    "kidney": Code("64033007", SCT, "Kidney"),
    "heart": Code("80891009", SCT, "Heart"),
    "bone": Code("272673000", SCT, "Bone"),
}
_ABNORMAL = {
    "lesion": Code("52988006", SCT, "Lesion"),
    "tumor": Code("108369006", SCT, "Neoplasm"),
    "tumour": Code("108369006", SCT, "Neoplasm"),
    "neoplasm": Code("108369006", SCT, "Neoplasm"),
    "mass": Code("4147007", SCT, "Mass"),
    "nodule": Code("27925004", SCT, "Nodule"),
    "cyst": Code("367643001", SCT, "Cyst"),
    "hemorrhage": Code("50960005", SCT, "Hemorrhage"),
    "haemorrhage": Code("50960005", SCT, "Hemorrhage"),
    "edema": Code("79654002", SCT, "Edema"),
    "necrosis": Code("6574001", SCT, "Necrosis"),
}
_CELLS = {
    "cell": Code("4421005", SCT, "Cell"),
    "rbc": Code("41898006", SCT, "Erythrocyte"),
    "redbloodcell": Code("41898006", SCT, "Erythrocyte"),
    "erythrocyte": Code("41898006", SCT, "Erythrocyte"),
    "wbc": Code("52501007", SCT, "Leukocyte"),
    "whitebloodcell": Code("52501007", SCT, "Leukocyte"),
    "leukocyte": Code("52501007", SCT, "Leukocyte"),
    "platelet": Code("16378004", SCT, "Platelet"),
}

CLASS_CODES: dict[str, tuple[Code, Code]] = {
    "tissue": (TISSUE, TISSUE),
    **{name: (ANATOMICAL_STRUCTURE, code) for name, code in _ANATOMY.items()},
    **{name: (ABNORMAL_STRUCTURE, code) for name, code in _ABNORMAL.items()},
    **{name: (CELL, code) for name, code in _CELLS.items()},
}
"""Normalised class name -> (segmented property category, segmented property type)."""

DEFAULT_CODES: tuple[Code, Code] = (TISSUE, TISSUE)
"""What a class name not in :data:`CLASS_CODES` is coded as."""


def normalise(name: str) -> str:
    """``"Red blood cells"`` -> ``"redbloodcell"``: the key :data:`CLASS_CODES` uses."""
    key = re.sub(r"[\s_\-]+", "", name.strip().lower())
    return key[:-1] if key.endswith("s") and key[:-1] in CLASS_CODES else key


def concepts_for(name: str, codes: Mapping[str, tuple[Any, Any]] | None = None) -> tuple[Code, Code]:
    """(category, type) codes for class ``name``: ``codes`` first, then :data:`CLASS_CODES`, then the default."""
    if codes:
        if name in codes:
            return codes[name]
        by_key = {normalise(k): v for k, v in codes.items()}
        if normalise(name) in by_key:
            return by_key[normalise(name)]
    return CLASS_CODES.get(normalise(name), DEFAULT_CODES)


__all__ = ["CLASS_CODES", "DEFAULT_CODES", "concepts_for", "normalise"]
