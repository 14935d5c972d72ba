"""FHIR and HL7 v2 de-identification: generated records and the format-samples mirror."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from meddx.privacy import PseudonymKey, deidentify_fhir, deidentify_hl7, deidentify_path
from meddx.privacy.records import validate_fhir
from tests.privacy._records import FHIR_SECRETS, HL7, MRN, make_bundle



def _days(before: str, after: str) -> int:
    def parse(text: str) -> date:
        digits = text.replace("-", "")
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))

    return (parse(after) - parse(before)).days


def _strings(node: Any) -> list[str]:
    out: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            out.append(item)
    return out


def _resources(node: Any) -> list[dict[str, Any]]:
    return [r for r in _walk_dicts(node) if isinstance(r.get("resourceType"), str)]


def _walk_dicts(node: Any) -> list[dict[str, Any]]:
    out, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def test_fhir_bundle_loses_identifiers_and_still_validates(key: PseudonymKey) -> None:
    bundle = make_bundle()
    original = copy.deepcopy(bundle)
    out = deidentify_fhir(bundle, key)
    assert bundle == original  # the input is not changed
    text = json.dumps(out)
    assert [s for s in FHIR_SECRETS if s in text] == []
    assert validate_fhir(original) == [] and validate_fhir(out) == []

    patient, observation, related = (e["resource"] for e in out["entry"])
    pseudonym, shift = key.pseudonym(MRN), key.date_shift_days(MRN)
    assert patient["name"] == [{"use": "anonymous", "text": pseudonym}]
    assert [i["value"] for i in patient["identifier"]] == [pseudonym]  # the SSN is dropped
    assert {"telecom", "address", "contact", "extension", "text", "_birthDate"}.isdisjoint(patient)
    assert _days("1970-01-01", patient["birthDate"]) == shift
    # dates of the patient's resources move together; the bundle's too
    assert _days("2023-01-15", observation["effectiveDateTime"]) == shift
    assert observation["effectiveDateTime"].endswith("T10:15:00+01:00")
    assert _days("2023-01-16", out["timestamp"]) == shift
    # references resolve to the rewritten ids
    assert observation["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert patient["id"] == key.pseudonym("Patient/pat-jane", "resource")
    assert related["patient"]["reference"] == out["entry"][0]["fullUrl"] != original["entry"][0]["fullUrl"]
    assert out["entry"][1]["fullUrl"] == f"http://example.org/fhir/Observation/{observation['id']}"
    assert observation["identifier"][0]["value"] == key.pseudonym("ACC-123", "identifier")
    assert "name" not in related and "telecom" not in related


def test_fhir_is_deterministic_per_key(key: PseudonymKey, other_key: PseudonymKey) -> None:
    assert deidentify_fhir(make_bundle(), key) == deidentify_fhir(make_bundle(), key)
    a, b = deidentify_fhir(make_bundle(), key), deidentify_fhir(make_bundle(), other_key)
    assert a["entry"][0]["resource"]["name"] != b["entry"][0]["resource"]["name"]


def test_hl7_pid_and_nk1_lose_identifiers(key: PseudonymKey) -> None:
    import hl7

    out = deidentify_hl7(HL7, key)
    assert [s for s in ("Doe", "Jane", "Quinn", "John", MRN, "ALT-77", "999-88", "1 Main Street", "Springfield",
                        "555-0100", "555-0199", "123-45-6789", "ACCT-9", "House", "VISIT-5", "19700101",
                        "20230115") if s in out] == []
    message = hl7.parse(out)
    pid, nk1 = message.segment("PID"), message.segment("NK1")
    pseudonym, shift = key.pseudonym(MRN), key.date_shift_days(MRN)
    assert str(pid[3]) == f"{pseudonym}^^^^MR~{key.pseudonym('999-88')}^^^^SS"
    assert str(pid[2]) == key.pseudonym("ALT-77")
    assert str(pid[5]) == pseudonym
    assert _days("19700101", str(pid[7])) == shift
    assert str(pid[8]) == "F"
    assert str(pid[11]) == str(pid[13]) == str(pid[14]) == str(pid[19]) == ""
    assert str(pid[18]) == key.pseudonym("ACCT-9", "account")
    assert str(nk1[2]) == str(nk1[4]) == str(nk1[5]) == "" and str(nk1[3]) == "FTH^Father"
    assert _days("20230115", str(message.segment("MSH")[7])) == shift
    assert str(message.segment("OBX")[5]) == "170"
    assert len(out.split("\r")) == len(HL7.split("\r"))
    # line ends are kept as they come
    assert "\r" not in deidentify_hl7(HL7.replace("\r", "\n"), key)
    assert deidentify_hl7(HL7.replace("\r", "\n"), key) == out.replace("\r", "\n")


def test_one_patient_one_pseudonym_across_formats(tmp_path: Path, key: PseudonymKey) -> None:
    import pydicom

    from tests.privacy._dicom import write_identified_dicom

    root = tmp_path / "in"
    root.mkdir()
    write_identified_dicom(root / "ct.dcm", patient_id=MRN)
    (root / "adt.hl7").write_text(HL7)
    (root / "bundle.json").write_text(json.dumps(make_bundle()))
    summary = deidentify_path(root, tmp_path / "out", key)
    assert summary["patients"] == {key.pseudonym(MRN): 3} and summary["failed"] == []
    ds = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    bundle = json.loads((tmp_path / "out" / "bundle.json").read_text())
    hl7_text = (tmp_path / "out" / "adt.hl7").read_text()
    assert ds.PatientID == bundle["entry"][0]["resource"]["identifier"][0]["value"] == key.pseudonym(MRN)
    assert f"|{key.pseudonym(MRN)}^^^^MR" in hl7_text
    shift = key.date_shift_days(MRN)
    assert _days("20230115", ds.StudyDate) == _days("2023-01-15", bundle["entry"][1]["resource"]["issued"]) == shift


# -- the format-samples mirror -------------------------------------------------------------
def _fhir_secrets(bundle: dict[str, Any]) -> set[str]:
    secrets: set[str] = set()
    for resource in _resources(bundle):
        if resource["resourceType"] not in ("Patient", "RelatedPerson"):
            continue
        for name in resource.get("name", []):
            secrets |= {name.get("family", ""), *name.get("given", [])}
        secrets |= {i.get("value", "") for i in resource.get("identifier", [])}
        for address in resource.get("address", []):
            secrets |= {*address.get("line", []), address.get("postalCode", "")}
        secrets |= {t.get("value", "") for t in resource.get("telecom", [])}
        for contact in resource.get("contact", []):
            secrets |= {t.get("value", "") for t in contact.get("telecom", [])}
        secrets |= {resource.get("birthDate", ""), resource.get("id", "")}
    return {s for s in secrets if len(s) >= 4}


@pytest.mark.mirror
def test_mirror_fhir_samples(format_samples: Path, key: PseudonymKey) -> None:
    files = sorted((format_samples / "fhir").glob("*.json"))
    assert files
    for path in files:
        original = json.loads(path.read_text())
        out = deidentify_fhir(original, key)
        secrets = _fhir_secrets(original)
        assert secrets, path.name
        text = json.dumps(out)
        assert [s for s in secrets if s in text] == [], path.name
        # still valid: no problem that the original did not already have
        def problems(obj: dict[str, Any]) -> set[str]:
            return {issue.split(": ", 1)[1] for issue in validate_fhir(obj)}

        assert problems(out) <= problems(original), path.name
        patients = [r for r in _resources(out) if r["resourceType"] == "Patient"]
        assert patients and all(p["name"][0]["use"] == "anonymous" for p in patients)
        # every relative reference that resolved inside the bundle still does
        ids = {f"{r['resourceType']}/{r['id']}" for r in _resources(out) if "id" in r}
        old_ids = {f"{r['resourceType']}/{r['id']}" for r in _resources(original) if "id" in r}
        before = [d["reference"] for d in _walk_dicts(original) if isinstance(d.get("reference"), str)]
        after = [d["reference"] for d in _walk_dicts(out) if isinstance(d.get("reference"), str)]
        assert sum(r in old_ids for r in before) == sum(r in ids for r in after), path.name
        # no compact timestamp (a raw HL7 copy) kept unshifted
        old_stamps = {s for s in _strings(original) if re.fullmatch(r"\d{12,14}([+-]\d{4})?", s)}
        assert not old_stamps & set(_strings(out)), path.name


@pytest.mark.mirror
def test_mirror_hl7_samples(format_samples: Path, tmp_path: Path, key: PseudonymKey) -> None:
    from meddx.data.readers.hl7v2 import Hl7v2Reader

    files = sorted((format_samples / "hl7v2").glob("*.hl7"))
    assert files
    summary = deidentify_path(format_samples / "hl7v2", tmp_path / "out", key)
    assert summary["failed"] == [] and len(summary["written"]) == len(files)
    reader = Hl7v2Reader()
    for path in files:
        before, after = reader.read(path), reader.read(tmp_path / "out" / path.name)
        assert len(before.observations) == len(after.observations), path.name
        text = (tmp_path / "out" / path.name).read_text(encoding="utf-8", errors="replace")
        for old, new in zip(before.patients.to_dict("records"), after.patients.to_dict("records"), strict=True):
            secrets = {old["id"], old["family"], *(str(old["given"] or "").split())} - {None, ""}
            assert [s for s in secrets if len(s) >= 4 and s in text] == [], path.name
            assert new["family"].startswith("P-") and new["given"] is None
            if old["id"]:
                assert new["id"] == key.pseudonym(old["id"])
            if old["birth_date"]:
                assert new["birth_date"] != old["birth_date"]
                patient = old["id"] or None
                if patient:
                    assert _days(old["birth_date"], new["birth_date"]) == key.date_shift_days(patient)
