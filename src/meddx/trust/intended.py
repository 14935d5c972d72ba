"""A package's intended input, declared at training time and checked before the model runs.

A chest X-ray model handed a CT slice should answer "this model reads chest radiographs
(CR/DX); this file is CT", not "normal, 82%". Each package records what it accepts in
``package.json["intended_input"]`` (see :class:`IntendedInput`), filled from the
catalogue's description of the training data and from the training arrays themselves;
:func:`check_sample` compares a sample read from a file against it and returns the reasons
it contradicts the declaration (empty when nothing does).

Only what the input itself states is checked: a DICOM header's Modality, BodyPartExamined,
ViewPosition and PhotometricInterpretation, an image's channels and size. A PNG says none
of this, so it passes the header checks and is left to the out-of-distribution detector
(:mod:`meddx.trust.ood`), which looks at the pixels.

Checks are registered per sample kind (:data:`CHECKS`), so signal and record models declare
and check their own fields (sampling rate, lead and length; units and value ranges).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DICOM_MODALITY_NAMES = {
    "CR": "computed radiography", "DX": "digital radiography", "CT": "CT", "MR": "MR", "US": "ultrasound",
    "MG": "mammography", "NM": "nuclear medicine", "PT": "PET", "XA": "angiography", "RF": "fluoroscopy",
    "OP": "ophthalmic photography", "XC": "external-camera photography", "SM": "slide microscopy",
    "ECG": "ECG waveform", "OT": "other",
}


@dataclass
class IntendedInput:
    """What a model was made to read. Empty fields are not checked.

    Attributes:
        description: in words, for the card and for rejection messages ("chest radiographs").
        kind: the sample kind the model takes (``image``, ``signal``, ``table``).
        dicom_modalities: accepted DICOM Modality codes (``("CR", "DX")``).
        body_parts: accepted DICOM BodyPartExamined values (upper case).
        views: accepted DICOM ViewPosition values (``("PA", "AP")``).
        photometric: accepted PhotometricInterpretation values.
        channels: 1 (grey) or 3 (colour) as trained; a colour photograph given to a grey
            model is rejected only when its three channels differ (a grey image saved as RGB passes).
        min_size / max_size: accepted range of the shorter image side in pixels.
        population: what is known of the training population (``{"age": ..., "sites": ...}``).
        extra: modality-specific fields (signals: ``fs``, ``leads``, ``min_seconds``; records:
            units and ranges), read by that modality's registered check.
    """

    description: str = ""
    kind: str = "image"
    dicom_modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    views: tuple[str, ...] = ()
    photometric: tuple[str, ...] = ()
    channels: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    population: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items() if v not in ((), None, {}, "")}

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> IntendedInput:
        block = dict(block or {})
        for key in ("dicom_modalities", "body_parts", "views", "photometric"):
            if key in block:
                block[key] = tuple(str(v).upper() for v in block[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in block.items() if k in known})


CheckFn = Callable[[Any, IntendedInput], list[str]]
CHECKS: dict[str, CheckFn] = {}


def register_check(kind: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(sample, intended) -> reasons`` for samples of ``kind`` (``image``, ``signal``, ...)."""

    def deco(fn: CheckFn) -> CheckFn:
        CHECKS[kind] = fn
        return fn

    return deco


def _name(code: str) -> str:
    name = DICOM_MODALITY_NAMES.get(code, code)
    return code if name == code else f"{code} ({name})"


def _reads(intended: IntendedInput) -> str:
    what = intended.description or "its training images"
    if intended.dicom_modalities:
        what += f" ({'/'.join(intended.dicom_modalities)})"
    return f"this model reads {what}"


@register_check("image")
def check_image(sample: Any, intended: IntendedInput) -> list[str]:
    """Reasons an :class:`~meddx.data.sample.ImageSample` contradicts ``intended`` (header and shape)."""
    import numpy as np

    reasons: list[str] = []
    meta = sample.meta or {}
    modality = (sample.modality or "").strip().upper()
    if sample.format == "dicom" and intended.dicom_modalities and modality \
            and modality not in intended.dicom_modalities:
        reasons.append(f"{_reads(intended)}; this file is {_name(modality)}")
    body = str(meta.get("BodyPartExamined") or "").strip().upper()
    if sample.format == "dicom" and intended.body_parts and body and body not in intended.body_parts:
        reasons.append(f"{_reads(intended)} of the {'/'.join(b.lower() for b in intended.body_parts)}; "
                       f"this file shows the {body.lower()} (BodyPartExamined)")
    view = str(meta.get("ViewPosition") or "").strip().upper()
    if sample.format == "dicom" and intended.views and view and view not in intended.views:
        reasons.append(f"{_reads(intended)} in {'/'.join(intended.views)} views; this file's ViewPosition is {view}")
    photometric = (sample.photometric or "").strip().upper()
    if sample.format == "dicom" and intended.photometric and photometric \
            and photometric not in intended.photometric:
        reasons.append(f"{_reads(intended)} with photometric interpretation {'/'.join(intended.photometric)}; "
                       f"this file is {photometric}")
    array = np.asarray(sample.array)
    colour = array.ndim == 3 and array.shape[-1] in (3, 4) and sample.format != "nifti"
    if intended.channels == 1 and colour:
        rgb = array[..., :3].astype(np.float64)
        if float(np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).mean()) > 2.0:  # real colour, not grey-as-RGB
            reasons.append(f"{_reads(intended)}, which are greyscale; this file is a colour image")
    if array.ndim >= 2 and array.size:
        side = min(array.shape[:2]) if sample.format != "dicom" or array.ndim == 2 or colour else min(array.shape[-2:])
        if intended.min_size and side < intended.min_size:
            reasons.append(f"the image is {side} px on its shorter side; this model needs at least "
                           f"{intended.min_size} px")
        if intended.max_size and side > intended.max_size:
            reasons.append(f"the image is {side} px on its shorter side; this model takes at most "
                           f"{intended.max_size} px")
    return reasons


def check_sample(sample: Any, intended: IntendedInput | dict[str, Any] | None) -> list[str]:
    """Why ``sample`` is not an input the model was made for (an empty list: no contradiction found)."""
    if intended is None:
        return []
    spec = intended if isinstance(intended, IntendedInput) else IntendedInput.from_dict(intended)
    kind = getattr(sample, "kind", None)
    if spec.kind and kind and kind != spec.kind:
        return [f"this model reads {spec.kind}s; the file holds a {kind}"]
    check = CHECKS.get(kind or spec.kind)
    return check(sample, spec) if check is not None else []
