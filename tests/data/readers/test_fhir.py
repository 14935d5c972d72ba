"""FHIR reader: the mirror's Bundles checked against the raw JSON, and bad inputs."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fhir.resources")

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.fhir import OBSERVATION_COLUMNS, PATIENT_COLUMNS, FhirReader  # noqa: E402
from meddx.exceptions import (  # noqa: E402
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    UnsupportedFormatError,
)

READER = FhirReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _entries(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text())["entry"]]


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


# -- the mirror's bundles -----------------------------------------------------------------


def test_every_fhir_sample_reads(format_samples: Path) -> None:
    files = sorted((format_samples / "fhir").glob("*.json"))
    assert len(files) == 3
    for path in files:
        assert READER.sniff(path, path.read_bytes()[:1024])
        sample = READER.read(path)
        raw = _entries(path)
        assert sample.resources == dict(Counter(r["resourceType"] for r in raw))
        assert list(sample.patients.columns) == list(PATIENT_COLUMNS)
        assert list(sample.observations.columns[: len(OBSERVATION_COLUMNS)]) == list(OBSERVATION_COLUMNS)
        assert len(sample.patients) == sample.resources.get("Patient", 0)


def test_oru_translation_49_observations_and_a_patient(format_samples: Path) -> None:
    path = format_samples / "fhir" / "002_CA_ORU_R01_initial_translation.json"
    sample = READER.read(path)
    raw = _entries(path)
    raw_patient = next(r for r in raw if r["resourceType"] == "Patient")
    raw_obs = [r for r in raw if r["resourceType"] == "Observation"]
    assert sample.format == "fhir"
    assert sample.resources["Observation"] == 49
    assert sample.resources["Patient"] == 1
    assert len(sample.observations) == 49
    assert sample.study_id == json.loads(path.read_text())["id"]
    patient = sample.patients.iloc[0]
    assert patient["id"] == raw_patient["id"] == sample.patient_id
    assert patient["family"] == "Smith" and patient["given"] == "John"
    assert patient["birth_date"] == raw_patient["birthDate"] == "2022-02-05"
    assert (sample.observations["patient_id"] == raw_patient["id"]).all()
    assert sample.observations["id"].tolist() == [r["id"] for r in raw_obs]
    assert sample.observations["status"].tolist() == [r.get("status") for r in raw_obs]
    assert sample.observations["time"].iloc[0] == raw_obs[0]["effectiveDateTime"]
    # The translation drops Observation.code, which R4 requires: reported, not fatal.
    assert sample.meta["validate"] == "warn"
    assert sample.meta["fhir_models"] == "R4B"
    assert sample.meta["n_validation_issues"] >= 47
    assert any(issue.startswith("Observation/") and ": code:" in issue for issue in sample.meta["validation_issues"])


def test_strict_validation_names_resource_and_field(format_samples: Path) -> None:
    path = format_samples / "fhir" / "002_CA_ORU_R01_initial_translation.json"
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, validate="strict")
    text = str(info.value)
    assert "002_CA_ORU_R01_initial_translation.json" in text
    assert info.value.field is not None and "." in info.value.field
    assert "validate='warn'" in text


def test_single_patient_bundle(format_samples: Path) -> None:
    path = format_samples / "fhir" / "001_Patient_NBS.json"
    sample = READER.read(path)
    raw = _entries(path)[0]
    assert sample.resources == {"Patient": 1}
    assert len(sample.patients) == 1 and len(sample.observations) == 0
    row = sample.patients.iloc[0]
    assert row["id"] == raw["id"] == sample.patient_id
    assert row["sex"] == raw["gender"]
    assert row["birth_date"] == raw["birthDate"]
    name = raw["name"][0]
    assert row["family"] == name["family"] and row["given"] == " ".join(name["given"])
    assert sample.meta["n_validation_issues"] == 0
    assert READER.read(path, validate="strict").resources == {"Patient": 1}


def test_orm_translation_numeric_values(format_samples: Path) -> None:
    path = format_samples / "fhir" / "003_AL_ORM_O01_NBS_Fully_Populated_1_hl7_translation.json"
    sample = READER.read(path)
    raw_obs = [r for r in _entries(path) if r["resourceType"] == "Observation"]
    assert len(sample.observations) == len(raw_obs) == 9
    for row, raw in zip(sample.observations.itertuples(), raw_obs, strict=True):
        if "valueQuantity" in raw:
            assert row.value == raw["valueQuantity"]["value"]
            assert row.unit == raw["valueQuantity"].get("unit")
        else:
            assert math.isnan(row.value)
        if "valueString" in raw:
            assert row.value_string == raw["valueString"]
    assert sample.observations["value"].notna().sum() == 2  # 3122 g and 38 wk


@pytest.mark.skipif(not _all_readers_present(), reason="other built-in reader modules are not there yet")
def test_read_dispatches_to_fhir(format_samples: Path) -> None:
    from meddx.data import read

    assert read(format_samples / "fhir" / "001_Patient_NBS.json").format == "fhir"


# -- generated resources -------------------------------------------------------------------


def _observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {
            "coding": [
                {"system": "urn:local", "code": "X1"},
                {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"},
            ]
        },
        "subject": {"reference": "urn:uuid:p-1"},
        "effectiveDateTime": "2024-01-02T08:00:00Z",
        **extra,
    }


def test_observation_values_codes_and_urn_references(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p-1", "resource": {"resourceType": "Patient", "id": "pat-9", "gender": "male"}},
            {"resource": _observation(valueQuantity={"value": 5.4, "unit": "mmol/L"})},
            {
                "resource": _observation(
                    id="bp",
                    code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                    component=[
                        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"}},
                    ],
                )
            },
        ],
    }
    sample = READER.read(_write(tmp_path / "bundle.json", bundle), validate="strict")
    obs = sample.observations
    assert obs["code"].tolist() == ["2339-0", "8480-6", "8462-4"]  # LOINC preferred; components expanded
    assert obs["system"].iloc[0] == "http://loinc.org" and obs["display"].iloc[0] == "Glucose"
    assert obs["value"].tolist() == [5.4, 120.0, 80.0]
    assert obs["unit"].tolist() == ["mmol/L", "mm[Hg]", "mm[Hg]"]
    assert (obs["patient_id"] == "pat-9").all()
    assert sample.resources == {"Patient": 1, "Observation": 2}


def test_single_resource_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "obs.fhir", _observation(valueString="negative"))
    sample = READER.read(path)
    assert sample.resources == {"Observation": 1}
    assert sample.observations["value_string"].tolist() == ["negative"]
    assert sample.observations["patient_id"].tolist() == ["urn:uuid:p-1"]  # unresolved: kept whole


def test_non_numeric_quantity_names_resource_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "badvalue.json", _observation(valueQuantity={"value": "high"}))
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, validate="off")
    text = str(info.value)
    assert "badvalue.json" in text and "Observation/obs-1" in text and "valueQuantity.value" in text


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"resourceType": "Bundle", "entry": [')
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "broken.json" in str(info.value) and "line 1" in str(info.value)


def test_json_without_resource_type_is_not_fhir(tmp_path: Path) -> None:
    path = _write(tmp_path / "coco.json", {"images": [], "annotations": []})
    assert not READER.sniff(path, path.read_bytes())
    with pytest.raises(UnsupportedFormatError) as info:
        READER.read(path)
    assert "coco.json" in str(info.value) and "resourceType" in str(info.value)
    with pytest.raises(UnsupportedFormatError):
        READER.read(_write(tmp_path / "list.json", [1, 2, 3]))


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"resourceType": "Patient", "extension": ' + "[" * 200 + "]" * 200 + "}")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "deep.json" in str(info.value) and "64" in str(info.value)
    very = tmp_path / "verydeep.json"
    very.write_text('{"resourceType": "Patient", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CorruptFileError) as info:
        READER.read(very)
    assert "verydeep.json" in str(info.value)


def test_size_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.json", {"resourceType": "Patient", "id": "p", "text": {"div": "x" * 5000}})
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, max_bytes=1000)
    assert "big.json" in str(info.value) and "max_bytes" in str(info.value)


def test_empty_file_and_empty_bundle(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(EmptyDataError) as info:
        READER.read(empty)
    assert "empty.json" in str(info.value)
    with pytest.raises(EmptyDataError) as info:
        READER.read(_write(tmp_path / "nothing.json", {"resourceType": "Bundle", "type": "searchset", "entry": []}))
    assert "nothing.json" in str(info.value)


def test_entry_that_is_not_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path / "entries.json", {"resourceType": "Bundle", "type": "collection", "entry": ["oops"]})
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "entries.json" in str(info.value) and "entry[0]" in str(info.value)


def test_unknown_resource_type_is_a_validation_issue(tmp_path: Path) -> None:
    path = _write(tmp_path / "odd.json", {"resourceType": "Spaceship", "id": "s1"})
    sample = READER.read(path)
    assert sample.resources == {"Spaceship": 1}
    assert "not an R4B resource type" in sample.meta["validation_issues"][0]
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, validate="strict")
    assert "odd.json" in str(info.value)


def test_bad_option_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", {"resourceType": "Patient", "id": "p"})
    with pytest.raises(ConfigError) as info:
        READER.read(path, validate="sometimes")
    assert "p.json" in str(info.value)


# -- issue 18: malformed primitive extensions and numbers that are not numbers ----------


@pytest.mark.parametrize("extension", ["5", "[1]", "null", "x", 5, [1], True])
def test_primitive_extension_that_is_not_an_object_is_named_not_a_raw_attribute_error(
    tmp_path: Path, extension: Any
) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"resourceType": "Patient", "id": "p", "birthDate": "2000-01-01",
                                "_birthDate": extension}))
    sample = READER.read(path)
    issues = sample.meta["validation_issues"]
    assert any(issue.startswith("Patient/p: _birthDate: primitive extension") for issue in issues)
    assert sample.patients.birth_date.tolist() == ["2000-01-01"]
    with pytest.raises(InvalidValueError, match="primitive extension") as info:
        READER.read(path, validate="strict")
    assert info.value.field == "Patient._birthDate"


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1_000", "0x10", " 12abc"])
@pytest.mark.parametrize("validate", ["warn", "off"])
def test_number_text_that_is_not_a_fhir_decimal_is_refused_naming_the_field(
    tmp_path: Path, value: str, validate: str
) -> None:
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"resourceType": "Observation", "id": "o", "status": "final",
                                "code": {"text": "x"}, "valueQuantity": {"value": value}}))
    with pytest.raises(InvalidValueError, match="not a FHIR decimal") as info:
        READER.read(path, validate=validate)
    assert info.value.field == "Observation/o.valueQuantity.value"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_non_finite_or_overflowing_json_numbers_are_refused_naming_the_field(tmp_path: Path, literal: str) -> None:
    path = tmp_path / "o.json"
    path.write_text('{"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}, '
                    f'"valueInteger": {literal}}}')
    with pytest.raises(InvalidValueError, match="not a finite number") as info:
        READER.read(path, validate="off")
    assert info.value.field == "Observation/o.valueInteger"


def test_decimal_text_in_fhir_syntax_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"resourceType": "Observation", "id": "o", "status": "final",
                                "code": {"text": "x"}, "valueQuantity": {"value": "-5.25e2"}}))
    assert READER.read(path, validate="off").observations.value.tolist() == [-525.0]
