"""DICOM files full of identifiers, and the check that the Basic Profile was applied."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from meddx.privacy import PseudonymKey, effective_action

PIXELS = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).astype(np.uint8)
SECRETS = ("Doe^Jane", "MRN-0001", "ALT-77", "1 Main Street", "General Hospital", "House^Gregory",
           "ACC-123", "SN-9", "Jane Doe", "SECRET-AE", "ACME secret")
UID_PATTERN = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")


def write_identified_dicom(
    path: Path,
    *,
    patient_id: str = "MRN-0001",
    patient_name: str = "Doe^Jane",
    study_uid: str = "1.2.826.0.1.3680043.10.999.1",
    series_uid: str = "1.2.826.0.1.3680043.10.999.1.1",
    sop_uid: str = "1.2.826.0.1.3680043.10.999.1.1.1",
    referenced_sop_uid: str | None = None,
    study_date: str = "20230115",
    burned_in: str | None = None,
    modality: str = "CT",
) -> Path:
    """An 8x8 CT-like image with identifiers, dates, private tags, an overlay and nested references."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "SECRET-AE"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19700101", "F", "053Y"
    ds.OtherPatientIDs, ds.PatientAddress = "ALT-77", "1 Main Street"
    ds.InstitutionName, ds.InstitutionAddress = "General Hospital", "2 Hospital Road"
    ds.ReferringPhysicianName, ds.PerformingPhysicianName = "House^Gregory", "Cuddy^Lisa"
    ds.OperatorsName, ds.AccessionNumber, ds.StudyID = "Chase^Robert", "ACC-123", "S-42"
    ds.StudyDate, ds.StudyTime = study_date, "101500"
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.InstanceCreationDate = study_date
    ds.AcquisitionDateTime = study_date + "101530.123"
    ds.DeviceSerialNumber, ds.StationName = "SN-9", "CT01"
    ds.StudyDescription, ds.SeriesDescription = "Chest of Jane Doe", "Axial"
    ds.ImageComments = "Jane Doe, room 12"

    instance = Dataset()
    instance.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    instance.ReferencedSOPInstanceUID = referenced_sop_uid or sop_uid
    instance.add_new(0x00210010, "LO", "ACME")
    instance.add_new(0x00211001, "LO", "ACME secret")  # a private tag inside a sequence
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([series])
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = "RP-1", "SPS-1"
    ds.RequestAttributesSequence = Sequence([request])

    block = ds.private_block(0x0011, "ACME", create=True)
    block.add_new(0x01, "LO", "ACME secret")
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # overlay data
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in

    ds.Rows, ds.Columns = PIXELS.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = PIXELS.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _days_between(before: str, after: str) -> int:
    a, b = before.strip()[:8], after.strip()[:8]
    return (dt.date(int(b[:4]), int(b[4:6]), int(b[6:8])) - dt.date(int(a[:4]), int(a[4:6]), int(a[6:8]))).days


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == b"" or (hasattr(value, "__len__") and len(value) == 0)


def check_profile_applied(original: Any, new: Any, key: PseudonymKey, *, sop_class: str = "") -> Counter:
    """Assert, attribute by attribute (sequences included), that ``new`` is ``original`` de-identified.

    Returns how many attributes each effective action touched.
    """
    seen: Counter = Counter()
    patient = str(original.get("PatientID", "") or "").strip() or str(original.get("PatientName", "") or "").strip()
    days = key.date_shift_days(patient)

    def walk(a: Any, b: Any, where: str) -> None:
        for elem in a:
            name = f"{where}{elem.keyword or elem.tag}"
            if elem.tag.is_private:
                assert elem.tag not in b, f"private {name} kept"
                seen["private"] += 1
                continue
            if elem.tag.element == 0:  # group length
                continue
            action = effective_action(int(elem.tag), elem.VR, sop_class_uid=sop_class)
            seen[action] += 1
            kept = b.get(elem.tag)
            if action == "X":
                assert kept is None, f"{name} not removed"
            elif action == "Z":
                assert kept is not None and _empty(kept.value), f"{name} not emptied"
            elif action == "D" and not _empty(elem.value):
                assert kept is not None and kept.value != elem.value, f"{name} kept its value"
            elif action == "U" and not _empty(elem.value):
                values = kept.value if isinstance(kept.value, list) else [kept.value]
                olds = elem.value if isinstance(elem.value, list) else [elem.value]
                assert [str(v) for v in values] == [key.remap_uid(str(v)) for v in olds], name
                assert all(UID_PATTERN.match(str(v)) and len(str(v)) <= 64 for v in values), name
            elif action == "P":
                assert str(kept.value) == key.pseudonym(patient), name
            elif action == "S" and not _empty(elem.value):
                olds = elem.value if isinstance(elem.value, list) else [elem.value]
                news = kept.value if isinstance(kept.value, list) else [kept.value]
                for old, value in zip(olds, news, strict=True):
                    assert _days_between(str(old), str(value)) == days, f"{name}: {old} -> {value}"
            elif action in ("K", "C", "U*") and elem.VR == "SQ":
                assert kept is not None and len(kept.value) == len(elem.value), name
                for i, (x, y) in enumerate(zip(elem.value, kept.value, strict=True)):
                    walk(x, y, f"{name}[{i}].")
            elif action in ("K", "C"):
                assert kept is not None and kept.value == elem.value, f"{name} changed"

    walk(original, new, "")
    return seen


def all_elements(ds: Any) -> list[Any]:
    """Every element of ``ds``, sequence items included."""
    out = []
    for elem in ds:
        out.append(elem)
        if elem.VR == "SQ":
            for item in elem.value:
                out.extend(all_elements(item))
    return out
