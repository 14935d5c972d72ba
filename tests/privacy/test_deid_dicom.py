"""DICOM de-identification: the Basic Profile table, generated files, and the format-samples mirror."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_description

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.privacy import (
    PseudonymKey,
    basic_profile_tags,
    deidentify_dataset,
    deidentify_file,
    deidentify_path,
    effective_action,
)
from meddx.privacy.deid import ACTION_CODES, profile_entry, resolve_action
from tests.privacy._dicom import (
    PIXELS,
    SECRETS,
    UID_PATTERN,
    all_elements,
    check_profile_applied,
    write_identified_dicom,
)

STUDY, SERIES = "1.2.826.0.1.3680043.10.999.1", "1.2.826.0.1.3680043.10.999.1.1"
SOP_A, SOP_B = SERIES + ".1", SERIES + ".2"


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the table ----------------------------------------------------------------------------
def test_profile_table_is_large_valid_and_named_like_the_dictionary() -> None:
    table = basic_profile_tags()
    assert len(table) >= 100
    assert all(entry.code in ACTION_CODES for entry in table.values())
    for tag, entry in table.items():
        assert dictionary_description(tag).lower().replace(" ", "") in (
            entry.name.lower().replace(" ", ""), entry.name.lower().replace(" ", "").replace("(trial)", ""))
    expected = {
        "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z", "PatientAge": "X",
        "OtherPatientIDs": "X", "OtherPatientNames": "X", "PatientAddress": "X", "InstitutionName": "X/Z/D",
        "InstitutionAddress": "X", "ReferringPhysicianName": "Z", "PerformingPhysicianName": "X",
        "OperatorsName": "X/Z/D", "AccessionNumber": "Z", "StudyID": "Z", "StudyDate": "Z", "StudyTime": "Z",
        "SeriesDate": "X/D", "AcquisitionDate": "X/Z", "ContentDate": "Z/D", "InstanceCreationDate": "X/D",
        "DeviceSerialNumber": "X/Z/D", "StationName": "X/Z/D", "StudyDescription": "X", "StudyInstanceUID": "U",
        "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
        "MediaStorageSOPInstanceUID": "U", "ReferencedSOPInstanceUID": "U", "RequestAttributesSequence": "X",
        "ReferencedImageSequence": "X/Z/U*", "SourceImageSequence": "X/Z/U*",
    }
    by_keyword = {entry.keyword: entry.code for entry in table.values()}
    assert {k: by_keyword.get(k) for k in expected} == expected
    assert profile_entry(0x60023000).code == "X"  # overlay data, any of the repeating groups
    assert profile_entry(0x50100010).code == "X"  # curve data


@pytest.mark.parametrize(
    ("code", "attribute_type", "action"),
    [("X/Z", "3", "X"), ("X/Z", "2", "Z"), ("X/D", "3", "X"), ("X/D", "1", "D"), ("X/Z/D", "3", "X"),
     ("X/Z/D", "2", "Z"), ("X/Z/D", "1", "D"), ("Z/D", "3", "Z"), ("Z/D", "1", "D"), ("X/Z/U*", "3", "X"),
     ("X/Z/U*", "1", "U*"), ("U", "1", "U"), ("K", "3", "K")],
)
def test_composite_codes_resolve_to_the_strictest_valid_action(code: str, attribute_type: str, action: str) -> None:
    assert resolve_action(code, attribute_type) == action


def test_effective_actions_follow_type_and_options() -> None:
    assert effective_action(0x00181000, "LO") == "X"  # Device Serial Number, Type 3 in General Equipment
    assert effective_action(0x00181000, "LO", sop_class_uid="1.2.840.10008.5.1.4.1.1.2.1") == "D"  # Enhanced CT
    assert effective_action(0x00080023, "DA") == "S"  # dates shifted under the Modified Dates option
    assert effective_action(0x00080023, "DA", modified_dates=False) == "Z"
    assert effective_action(0x00100030, "DA") == "Z"  # birth date: not part of the option
    assert effective_action(0x00080030, "TM") == "C"  # times kept: whole-day shifts
    assert effective_action(0x00100010, "PN") == effective_action(0x00100020, "LO") == "P"
    assert effective_action(0x7FE00010, "OB") == "K"
    with pytest.raises(ConfigError):
        resolve_action("Q")


# -- generated files ------------------------------------------------------------------------
@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two images of one study; B's nested reference points at A."""
    root = tmp_path / "in"
    (root / "series1").mkdir(parents=True)
    write_identified_dicom(root / "series1" / "a.dcm", sop_uid=SOP_A)
    write_identified_dicom(root / "series1" / "b.dcm", sop_uid=SOP_B, referenced_sop_uid=SOP_A)
    (root / "notes.txt").write_text("Doe^Jane called on Tuesday")
    return root


def test_deidentify_file_applies_the_profile(study: Path, tmp_path: Path, key: PseudonymKey) -> None:
    src = study / "series1" / "b.dcm"
    before = src.read_bytes()
    report = deidentify_file(src, tmp_path / "b.dcm", key)
    assert src.read_bytes() == before
    original, new = pydicom.dcmread(src), pydicom.dcmread(tmp_path / "b.dcm")
    seen = check_profile_applied(original, new, key)
    assert seen["X"] >= 10 and seen["U"] >= 4 and seen["S"] >= 5 and seen["private"] >= 2

    pseudonym = key.pseudonym("MRN-0001")
    assert new.PatientID == str(new.PatientName) == pseudonym == report["patient"]
    assert report["date_shift_days"] == key.date_shift_days("MRN-0001")
    assert report["removed"] >= 10 and report["private_removed"] == 4 and report["uids_remapped"] >= 5
    assert not any(e.tag.is_private for e in all_elements(new))
    assert 0x60003000 not in new and "OtherPatientIDs" not in new and "RequestAttributesSequence" not in new
    assert new.PatientBirthDate == "" and new.StudyTime == "101500"
    assert new.StudyDate == new.SeriesDate == new.ContentDate != "20230115"
    # references: the nested Referenced SOP Instance UID is A's new SOP Instance UID
    ref = new.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == key.remap_uid(SOP_A)
    assert ref.ReferencedSOPClassUID == original.SOPClassUID  # SOP Classes are not identifying
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID == key.remap_uid(SOP_B)
    assert "SourceApplicationEntityTitle" not in new.file_meta
    assert new.file_meta.ImplementationVersionName == "MEDDX_DEID"
    assert new.preamble == b"\x00" * 128
    # marks
    assert new.PatientIdentityRemoved == "YES"
    assert new.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [i.CodeValue for i in new.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert {i.CodingSchemeDesignator for i in new.DeidentificationMethodCodeSequence} == {"DCM"}
    # pixels untouched, no original identifier anywhere in the file
    assert new.PixelData == original.PixelData == PIXELS.tobytes()
    data = (tmp_path / "b.dcm").read_bytes()
    assert [s for s in SECRETS if s.encode() in data] == []
    assert SOP_A.encode() not in data and STUDY.encode() not in data


def test_deidentify_dataset_works_in_place(study: Path, key: PseudonymKey) -> None:
    ds = pydicom.dcmread(study / "series1" / "a.dcm")
    assert deidentify_dataset(ds, key) is ds
    assert ds.PatientID == key.pseudonym("MRN-0001") and ds.StudyInstanceUID == key.remap_uid(STUDY)


def test_plain_basic_profile_without_the_dates_option(study: Path, key: PseudonymKey) -> None:
    ds = deidentify_dataset(pydicom.dcmread(study / "series1" / "a.dcm"), key, modified_dates=False)
    assert ds.StudyDate == "" and ds.StudyTime == "" and ds.ContentDate == ""
    assert "SeriesDate" not in ds and "AcquisitionDate" not in ds and "InstanceCreationDate" not in ds
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert "LongitudinalTemporalInformationModified" not in ds


def test_burned_in_annotation_is_refused_unless_allowed(tmp_path: Path, key: PseudonymKey) -> None:
    src = write_identified_dicom(tmp_path / "us.dcm", burned_in="YES", modality="US")
    with pytest.raises(InvalidValueError, match="burned-in") as info:
        deidentify_file(src, tmp_path / "out.dcm", key)
    assert "BurnedInAnnotation" in str(info.value.field) and "allow" in str(info.value.hint)
    assert not (tmp_path / "out.dcm").exists()
    report = deidentify_file(src, tmp_path / "out.dcm", key, allow_burned_in=True)
    assert any("burned-in" in w for w in report["warnings"])
    src2 = write_identified_dicom(tmp_path / "us2.dcm", modality="US")  # flag absent: a warning
    assert any("review" in w for w in deidentify_file(src2, tmp_path / "out2.dcm", key)["warnings"])


def test_consistent_across_files_and_deterministic(study: Path, tmp_path: Path, key: PseudonymKey,
                                                   other_key: PseudonymKey) -> None:
    before = _digest(study)
    summary = deidentify_path(study, tmp_path / "out1", key)
    deidentify_path(study, tmp_path / "out2", key)
    deidentify_path(study, tmp_path / "out3", other_key)
    assert _digest(study) == before  # the input is never touched
    assert sorted(summary["written"]) == ["series1/a.dcm", "series1/b.dcm"]
    assert summary["skipped"] == [{"file": "notes.txt", "reason": "not a DICOM, FHIR JSON or HL7 v2 file"}]
    assert not (tmp_path / "out1" / "notes.txt").exists()
    assert summary["patients"] == {key.pseudonym("MRN-0001"): 2} and summary["failed"] == []
    assert _digest(tmp_path / "out1") == _digest(tmp_path / "out2")  # same key: byte-identical

    a, b = (pydicom.dcmread(tmp_path / "out1" / "series1" / n) for n in ("a.dcm", "b.dcm"))
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.StudyDate == b.StudyDate
    c = pydicom.dcmread(tmp_path / "out3" / "series1" / "a.dcm")
    assert c.PatientID != a.PatientID and c.StudyInstanceUID != a.StudyInstanceUID


def test_dates_shift_by_patient(tmp_path: Path, key: PseudonymKey) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for i, (patient, date) in enumerate([("P1", "20200101"), ("P1", "20200301"), ("P2", "20200101")]):
        write_identified_dicom(root / f"{i}.dcm", patient_id=patient, sop_uid=f"1.2.3.{i}", study_uid=f"1.2.4.{i}",
                               study_date=date)
    deidentify_path(root, tmp_path / "out", key)
    dates = [pydicom.dcmread(tmp_path / "out" / f"{i}.dcm").StudyDate for i in range(3)]
    from datetime import date

    def parse(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))

    assert (parse(dates[1]) - parse(dates[0])).days == 60  # intervals of one patient survive
    assert (parse(dates[2]) - date(2020, 1, 1)).days == key.date_shift_days("P2")


def test_paths_are_guarded(study: Path, tmp_path: Path, key: PseudonymKey) -> None:
    with pytest.raises(ConfigError, match="inside the input"):
        deidentify_path(study, study / "out", key)
    with pytest.raises(ConfigError, match="inside the output"):
        deidentify_path(study, study.parent, key)
    with pytest.raises(ConfigError):
        deidentify_path(study, study, key)
    one = study / "series1" / "a.dcm"
    with pytest.raises(ConfigError, match="input file"):
        deidentify_file(one, one, key)
    with pytest.raises(ConfigError, match="input file"):
        deidentify_path(one, one.parent, key)  # an existing folder: the file would land on itself
    summary = deidentify_path(one, tmp_path / "single.dcm", key)
    assert summary["written"] == ["single.dcm"] and (tmp_path / "single.dcm").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken UID
def test_unreadable_files_fail_with_a_reason(tmp_path: Path, key: PseudonymKey) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"x" * 10)
    write_identified_dicom(root / "burned.dcm", burned_in="YES")
    summary = deidentify_path(root, tmp_path / "out", key)
    reasons = {f["file"]: f["reason"] for f in summary["failed"]}
    assert set(reasons) == {"broken.dcm", "burned.dcm"}
    assert "BurnedInAnnotation" in reasons["burned.dcm"]
    assert str(root) not in str(summary["failed"])  # reasons never carry the input path
    assert not (tmp_path / "out" / "burned.dcm").exists()
    assert list((tmp_path / "out").glob(".*tmp")) == []


# -- the format-samples mirror -----------------------------------------------------------
def _mirror_dicoms(format_samples: Path) -> list[Path]:
    from pydicom.errors import InvalidDicomError

    found = []
    for path in sorted(format_samples.rglob("*")):
        if not path.is_file():
            continue
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
            continue
        found.append(path)
    return found


@pytest.fixture(scope="module")
def mirror_run(format_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    files = _mirror_dicoms(format_samples)
    if not files:
        pytest.skip("no DICOM file in format-samples")
    root = tmp_path_factory.mktemp("mirror-in")
    for path in files:
        target = root / path.relative_to(format_samples)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    # a second image of the first file's study (another SOP Instance UID) to check consistency
    first = pydicom.dcmread(files[0])
    first.SOPInstanceUID = first.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID + ".2"
    twin = root / "twin" / files[0].name
    twin.parent.mkdir()
    first.save_as(twin)
    key = PseudonymKey(bytes(range(32)))
    out, again, other = (tmp_path_factory.mktemp(n) for n in ("mirror-out", "mirror-again", "mirror-other"))
    summary = deidentify_path(root, out, key)
    deidentify_path(root, again, key)
    deidentify_path(root, other, PseudonymKey(bytes(range(1, 33))))
    rels = [p.relative_to(format_samples) for p in files] + [twin.relative_to(root)]
    return {"files": files, "rels": rels, "root": root, "out": out, "again": again, "other": other, "key": key,
            "summary": summary, "twin": twin}


@pytest.mark.mirror
def test_mirror_dicom_files_lose_every_profile_attribute(mirror_run: dict) -> None:
    key, root, out = mirror_run["key"], mirror_run["root"], mirror_run["out"]
    summary = mirror_run["summary"]
    assert len(mirror_run["files"]) >= 5 and summary["failed"] == []
    assert summary["counts"]["removed"] > 0 and summary["counts"]["private_removed"] > 0
    for rel in mirror_run["rels"]:
        original, new = pydicom.dcmread(root / rel), pydicom.dcmread(out / rel)
        check_profile_applied(original, new, key, sop_class=str(original.get("SOPClassUID", "")))
        assert not any(e.tag.is_private for e in all_elements(new)), rel
        assert original.get("PixelData") == new.get("PixelData"), rel  # bytes identical (or both absent)
        assert original.get("WaveformSequence") is None or "WaveformSequence" in new
        for elem in all_elements(new):
            if elem.VR == "UI" and elem.value:
                values = elem.value if isinstance(elem.value, list) else [elem.value]
                assert all(UID_PATTERN.match(str(v)) and len(str(v)) <= 64 for v in values), (rel, elem)
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        data = (out / rel).read_bytes()
        for keyword in ("PatientName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(original.get(keyword, "") or "")
            if len(value) >= 8:  # short values could occur by chance in the pixel bytes
                assert value.encode() not in data, (rel, keyword)


@pytest.mark.mirror
def test_mirror_uids_and_dates_are_consistent(mirror_run: dict) -> None:
    key, root, out = mirror_run["key"], mirror_run["root"], mirror_run["out"]
    first_rel, twin_rel = mirror_run["rels"][0], mirror_run["rels"][-1]
    a, b = pydicom.dcmread(out / first_rel), pydicom.dcmread(out / twin_rel)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.PatientID == b.PatientID and a.StudyDate == b.StudyDate
    mapping: dict[str, str] = {}
    for rel in mirror_run["summary"]["written"]:
        original, new = pydicom.dcmread(root / rel), pydicom.dcmread(out / rel)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if keyword in original:
                assert mapping.setdefault(str(original.get(keyword)), str(new.get(keyword))) == str(new.get(keyword))
        report = next(r for r in mirror_run["summary"]["reports"] if r["file"] == rel)
        assert report["date_shift_days"] == key.date_shift_days(str(original.PatientID))
    assert len(set(mapping.values())) == len(mapping)  # one new UID per original UID


@pytest.mark.mirror
def test_mirror_runs_are_reproducible_per_key(mirror_run: dict) -> None:
    assert _digest(mirror_run["out"]) == _digest(mirror_run["again"])
    summary = mirror_run["summary"]
    for rel in summary["written"]:
        new, other = pydicom.dcmread(mirror_run["out"] / rel), pydicom.dcmread(mirror_run["other"] / rel)
        assert new.PatientID != other.PatientID and new.SOPInstanceUID != other.SOPInstanceUID
        assert new.get("PixelData") == other.get("PixelData")
