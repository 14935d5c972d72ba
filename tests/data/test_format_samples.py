"""Every file in the mirror's ``format-samples`` reads through ``meddx.data.read`` (format auto-detected)
with the metadata its README documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meddx.data import ImageSample, RecordSample, SignalSample, read
from meddx.data.fetch import read_manifest

# Companion files are read through their header (.hea) and are not entry points themselves.
COMPANIONS = {".dat", ".mat", ".xyz", ".txt"}

# file -> (reader options, expected sample type, checks on the sample), from the README.
EXPECTED: dict[str, tuple[dict[str, Any], type, dict[str, Any]]] = {
    "dicom/CT_small.dcm": ({}, ImageSample, {"shape": (128, 128), "modality": "CT"}),
    "dicom/MR_small.dcm": ({}, ImageSample, {"shape": (64, 64), "modality": "MR"}),
    "dicom/MR2_UNCR.dcm": ({}, ImageSample, {"shape": (1024, 1024), "modality": "MR"}),
    "dicom/US1_UNCR.dcm": ({}, ImageSample, {"shape": (480, 640, 3), "modality": "US"}),
    "dicom/nibabel_siemens_0.dcm": ({}, ImageSample, {"shape": (256, 256), "modality": "MR"}),
    "dicom/waveform_ecg.dcm": ({}, SignalSample, {"n_samples": 10_000, "n_channels": 12, "fs": 1000.0}),
    "nifti/anatomical.nii": ({}, ImageSample, {"shape": (33, 41, 25), "spacing": (2.0, 2.0, 2.0),
                                               "orientation": ("R", "A", "S")}),
    "nifti/functional.nii": ({}, ImageSample, {"shape": (17, 21, 3, 20), "spacing": (4.0, 4.0, 8.0)}),
    "nifti/example4d.nii.gz": ({}, ImageSample, {"shape": (128, 96, 24, 2)}),
    "edf/test_edfann.edf": ({}, SignalSample, {"n_annotations": 856}),
    "edf/pyedflib_test_generator_SYNTHETIC.edf": ({}, SignalSample, {"n_channels": 11, "fs": 200.0,
                                                                      "duration_s": 600.0}),
    "wfdb/a103l.hea": ({}, SignalSample, {"channel_names": ["II", "V", "PLETH"], "fs": 250.0}),
    # v102s marks 23 samples invalid (NaN in physical units): strict by default, so the option is needed.
    "wfdb/v102s.hea": ({"allow_nan": True}, SignalSample, {"fs": 250.0, "n_samples": 75_000}),
    "wfdb/s0010_re.hea": ({}, SignalSample, {"n_channels": 15, "fs": 1000.0}),
    "fhir/001_Patient_NBS.json": ({}, RecordSample, {"resource:Patient": 1}),
    "fhir/002_CA_ORU_R01_initial_translation.json": ({}, RecordSample, {"resource:Observation": 49,
                                                                         "resource:Patient": 1}),
    "fhir/003_AL_ORM_O01_NBS_Fully_Populated_1_hl7_translation.json": ({}, RecordSample, {"resource:Patient": 1}),
    "hl7v2/001_CA_OML_O21.hl7": ({}, RecordSample, {"message_type": "OML^O21"}),
    "hl7v2/001_Epic_ORM_O01.hl7": ({}, RecordSample, {"message_type": "ORM^O01"}),
    "hl7v2/001_LA_ORM_O01_NBS.hl7": ({}, RecordSample, {"message_type": "ORM^O01"}),
    "hl7v2/002_CA_ORU_R01.hl7": ({}, RecordSample, {"message_type": "ORU^R01"}),
    "hl7v2/002_Epic_ORU_R01.hl7": ({}, RecordSample, {"message_type": "ORU^R01"}),
    "hl7v2/003_AL_ORM_O01_NBS_Fully_Populated_0_initial_message.hl7": ({}, RecordSample,
                                                                       {"message_type": "ORM^O01"}),
    "hl7v2/005_MN_ADT_A01.hl7": ({}, RecordSample, {"message_type": "ADT^A01"}),
}


def test_expectations_cover_every_entry_point(format_samples: Path) -> None:
    listed = read_manifest(format_samples / "SHA256SUMS")
    entry_points = {n for n in listed if Path(n).suffix.lower() not in COMPANIONS and "/" in n}
    assert entry_points == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_sample_reads_with_documented_metadata(name: str, format_samples: Path) -> None:
    options, kind, checks = EXPECTED[name]
    sample = read(format_samples / name, **options)
    assert isinstance(sample, kind)
    for key, expected in checks.items():
        if key == "n_annotations":
            actual: Any = len(sample.annotations)
        elif key.startswith("resource:"):
            actual = sample.resources.get(key.split(":", 1)[1])
        elif key == "message_type":
            actual = str(sample.meta.get("message_type", ""))
        else:
            actual = getattr(sample, key)
        if isinstance(expected, float):
            assert actual == pytest.approx(expected), key
        elif isinstance(expected, tuple):
            assert tuple(actual) == expected, key
        elif key == "message_type":
            assert actual.startswith(expected), (key, actual)
        else:
            assert actual == expected, key
