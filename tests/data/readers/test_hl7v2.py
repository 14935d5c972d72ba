"""HL7 v2 reader: the mirror's messages checked against python-hl7 directly, and bad messages."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest

hl7 = pytest.importorskip("hl7")

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.fhir import OBSERVATION_COLUMNS, PATIENT_COLUMNS  # noqa: E402
from meddx.data.readers.hl7v2 import Hl7v2Reader, parse_hl7_ts  # noqa: E402
from meddx.exceptions import (  # noqa: E402
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

READER = Hl7v2Reader()

MESSAGE_TYPES = {
    "001_CA_OML_O21.hl7": "OML^O21",
    "001_Epic_ORM_O01.hl7": "ORM^O01",
    "001_LA_ORM_O01_NBS.hl7": "ORM^O01^ORM_O01",
    "002_CA_ORU_R01.hl7": "ORU^R01^ORU_R01",
    "002_Epic_ORU_R01.hl7": "ORU^R01",
    "003_AL_ORM_O01_NBS_Fully_Populated_0_initial_message.hl7": "ORM^O01^ORM_O01",
    "005_MN_ADT_A01.hl7": "ADT^A01",
}

MESSAGE = (
    "MSH|^~\\&|LAB|HOSP^1.2.3^ISO|EHR|CLINIC|20240105083000+0100||ORU^R01|MSG0001|P|2.5.1\r"
    "PID|1||12345^^^HOSP^MR||Doe^Jane^Q||19800215|F\r"
    "OBR|1|||GLU^Glucose panel|||20240105070000\r"
    "OBX|1|NM|2345-7^Glucose^LN||{glucose}|mg/dL^milligram per deciliter^UCUM|70-99|N|||F|||20240105073000\r"
    "OBX|2|CWE|8480-6^Interpretation^LN||N^Normal^HL70078||||||F\r"
    "OBX|3|ST|^^^LOCAL1^Comment^L||a \\T\\ b||||||P\r"
)


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _write(path: Path, text: str, newline: str = "\r") -> Path:
    path.write_bytes(text.replace("\r", newline).encode("utf-8"))
    return path


# -- the mirror's messages ---------------------------------------------------------


def test_every_hl7_sample_reads_with_its_message_type(format_samples: Path) -> None:
    files = sorted((format_samples / "hl7v2").glob("*.hl7"))
    assert {f.name for f in files} == set(MESSAGE_TYPES)
    seen = set()
    for path in files:
        assert READER.sniff(path, path.read_bytes()[:1024])
        sample = READER.read(path)
        assert sample.format == "hl7v2"
        assert sample.meta["message_type"] == MESSAGE_TYPES[path.name]
        seen.add("^".join(sample.meta["message_type"].split("^")[:2]))
        # Independent parse: python-hl7 on the \r-normalised text.
        text = path.read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r").strip()
        message = hl7.parse(text)
        tags = Counter(str(segment[0]) for segment in message)
        assert sample.resources == dict(tags)
        assert len(sample.observations) == tags["OBX"]
        assert len(sample.patients) == tags["PID"]
        assert sample.study_id == sample.meta["control_id"] == str(message.segment("MSH")[10])
        assert list(sample.patients.columns) == list(PATIENT_COLUMNS)
        assert list(sample.observations.columns[: len(OBSERVATION_COLUMNS)]) == list(OBSERVATION_COLUMNS)
    assert seen == {"ORM^O01", "ORU^R01", "OML^O21", "ADT^A01"}


def test_oru_newborn_screening(format_samples: Path) -> None:
    sample = READER.read(format_samples / "hl7v2" / "002_CA_ORU_R01.hl7")
    obs = sample.observations
    assert len(obs) == 155
    assert sample.meta["sending_facility"] == "SISGDSP"
    assert sample.meta["version"] == "2.5.1"
    weight = obs[obs["code"] == "8339-4"].iloc[0]
    assert weight["value"] == 3035.0 and weight["unit"] == "grams"
    assert weight["system"] == "http://loinc.org"
    assert weight["status"] == "F" and weight["time"] == "2023-07-06T09:37:30"
    tsh = obs[obs["code"] == "29575-8"].iloc[0]
    assert tsh["value"] == 14.5 and tsh["unit"] == "mIU/L"
    coded = obs[obs["code"] == "57718-9"].iloc[0]
    assert coded["value_string"] == "Acceptable" and math.isnan(coded["value"])
    # Alternate identifier (OBX-3 components 4-6) when the first is empty.
    assert "99717-5" in obs["code"].tolist()
    patient = sample.patients.iloc[0]
    assert patient["family"] == "Smith" and patient["given"] == "John"
    assert patient["birth_date"] == "2022-02-05"
    # The same message translated to FHIR has the same patient.
    fhir_path = format_samples / "fhir" / "002_CA_ORU_R01_initial_translation.json"
    from meddx.data.readers.fhir import FhirReader

    fhir_patient = FhirReader().read(fhir_path, validate="off").patients.iloc[0]
    assert (fhir_patient["family"], fhir_patient["given"], fhir_patient["birth_date"]) == (
        patient["family"],
        patient["given"],
        patient["birth_date"],
    )


def test_orm_numeric_values_and_timezone(format_samples: Path) -> None:
    sample = READER.read(format_samples / "hl7v2" / "003_AL_ORM_O01_NBS_Fully_Populated_0_initial_message.hl7")
    obs = sample.observations
    weight = obs[obs["code"] == "58229-6"].iloc[0]
    assert weight["value"] == 3122.0 and weight["unit"] == "g"
    assert weight["time"] == "2024-02-22T18:54-05:00"
    patient = sample.patients.iloc[0]
    assert patient["id"] == "1300974" == sample.patient_id
    assert patient["sex"] == "female" and patient["birth_date"] == "2024-02-21"
    assert sample.meta["sending_facility"] == "BaptistEast"


def test_adt_a01(format_samples: Path) -> None:
    sample = READER.read(format_samples / "hl7v2" / "005_MN_ADT_A01.hl7")
    assert sample.meta["message_type"] == "ADT^A01"
    assert sample.patients.iloc[0].to_dict() == {
        "id": "11102779",
        "family": "SMITH",
        "given": "BB SARAH",
        "sex": "male",
        "birth_date": "2023-05-04",
    }
    obx = sample.observations.iloc[0]
    assert obx["code"] == "49051-6" and obx["value"] == 32.0 and obx["unit"] == "wk"


def test_template_placeholders_are_warnings_not_errors(format_samples: Path) -> None:
    sample = READER.read(format_samples / "hl7v2" / "001_Epic_ORM_O01.hl7")
    patient = sample.patients.iloc[0]
    assert patient["birth_date"] is None and patient["sex"] is None
    assert any("'DOB'" in w for w in sample.meta["warnings"])


@pytest.mark.skipif(not _all_readers_present(), reason="other built-in reader modules are not there yet")
def test_read_dispatches_to_hl7v2(format_samples: Path) -> None:
    from meddx.data import read

    assert read(format_samples / "hl7v2" / "005_MN_ADT_A01.hl7").format == "hl7v2"


# -- generated messages --------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r", "\n", "\r\n"])
def test_line_endings_bom_and_typed_values(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "oru.hl7"
    path.write_bytes(b"\xef\xbb\xbf\n" + MESSAGE.format(glucose="5.4").replace("\r", newline).encode())
    assert READER.sniff(path, path.read_bytes()[:1024])
    sample = READER.read(path)
    assert sample.meta["message_time"] == "2024-01-05T08:30:00+01:00"
    assert sample.meta["sending_facility"] == "HOSP"
    obs = sample.observations
    assert obs["value"].iloc[0] == 5.4 and obs["unit"].iloc[0] == "mg/dL"
    assert obs["time"].tolist()[0] == "2024-01-05T07:30:00"
    assert obs["time"].tolist()[1] == "2024-01-05T07:00:00"  # OBX-14 empty: OBR-7
    assert obs["value_string"].iloc[1] == "Normal"
    assert obs["code"].iloc[2] == "LOCAL1" and obs["system"].iloc[2] == "L"
    assert obs["value_string"].iloc[2] == "a & b"  # escape sequences decoded
    assert (obs["patient_id"] == "12345").all()
    assert sample.patients.iloc[0]["given"] == "Jane Q"


def test_several_messages_in_one_file(tmp_path: Path) -> None:
    second = MESSAGE.format(glucose="6.1").replace("MSG0001", "MSG0002").replace("12345^", "67890^")
    path = _write(tmp_path / "batch.hl7", "BHS|^~\\&|LAB\r" + MESSAGE.format(glucose="5.4") + second + "BTS|2\r")
    sample = READER.read(path)
    assert sample.meta["n_messages"] == 2
    assert [m["control_id"] for m in sample.meta["messages"]] == ["MSG0001", "MSG0002"]
    assert sample.patients["id"].tolist() == ["12345", "67890"]
    assert sample.patient_id is None
    glucose = sample.observations[sample.observations["code"] == "2345-7"]
    assert glucose["patient_id"].tolist() == ["12345", "67890"]
    assert glucose["value"].tolist() == [5.4, 6.1]


def test_non_numeric_nm_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "badnm.hl7", MESSAGE.format(glucose="high"))
    with pytest.raises(InvalidValueError) as info:
        READER.read(path)
    text = str(info.value)
    assert "badnm.hl7" in text and "OBX-5" in text and "'high'" in text and "segment 4" in text
    lenient = READER.read(path, strict=False)
    assert math.isnan(lenient.observations["value"].iloc[0])
    assert lenient.observations["value_string"].iloc[0] == "high"
    assert any("high" in w for w in lenient.meta["warnings"])


def test_without_msh(tmp_path: Path) -> None:
    path = _write(tmp_path / "nomsh.hl7", "PID|1||123||Doe^John\rOBX|1|NM|x||1\r")
    assert not READER.sniff(path, path.read_bytes())
    with pytest.raises(MissingFieldError) as info:
        READER.read(path)
    assert "nomsh.hl7" in str(info.value) and info.value.field == "MSH"


def test_text_before_msh(tmp_path: Path) -> None:
    path = _write(tmp_path / "junk.hl7", "hello\r" + MESSAGE.format(glucose="1"))
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "junk.hl7" in str(info.value) and "hello" in str(info.value)


def test_truncated_msh(tmp_path: Path) -> None:
    path = _write(tmp_path / "stub.hl7", "MSH\r")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "stub.hl7" in str(info.value)


def test_missing_message_type(tmp_path: Path) -> None:
    path = _write(tmp_path / "notype.hl7", "MSH|^~\\&|A|B|C|D|20240101||||P|2.5\rPID|1||1\r")
    with pytest.raises(MissingFieldError) as info:
        READER.read(path)
    assert "notype.hl7" in str(info.value) and info.value.field == "MSH-9"


def test_empty_files(tmp_path: Path) -> None:
    for name, content in (("empty.hl7", b""), ("blank.hl7", b"\n\r\n  \n")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(EmptyDataError) as info:
            READER.read(path)
        assert name in str(info.value)


def test_parse_hl7_ts() -> None:
    assert parse_hl7_ts("20230706093730") == ("2023-07-06T09:37:30", "2023-07-06")
    assert parse_hl7_ts("202402210152-0500") == ("2024-02-21T01:52-05:00", "2024-02-21")
    assert parse_hl7_ts("20240101120000.123+0100") == ("2024-01-01T12:00:00.123+01:00", "2024-01-01")
    assert parse_hl7_ts("202402") == ("2024-02", None)
    assert parse_hl7_ts("DOB") == (None, None)
    assert parse_hl7_ts("20241341") == (None, None)
    assert parse_hl7_ts("") == (None, None)


# -- issue 18: NM values that Python's float() takes but HL7 does not ------------------

_MSG = (
    "MSH|^~\\&|LAB|HOSP|||20240101||ORU^R01|1|P|2.5\rPID|||42||Doe^Jane||19700101|F\r"
    "OBX|1|{vt}|2345-7^Glucose^LN||{value}|mg/dL|||||F\r"
)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1_000", "1e5", "0x10"])
def test_nm_text_that_float_accepts_is_refused_naming_obx5(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m.hl7"
    path.write_text(_MSG.format(vt="NM", value=value))
    with pytest.raises(InvalidValueError, match="not an HL7 number") as info:
        READER.read(path)
    assert info.value.field.startswith("OBX-5")
    sample = READER.read(path, strict=False)
    assert math.isnan(sample.observations.value[0]) and sample.observations.value_string[0] == value
    assert any("OBX-5 NM value" in w for w in sample.meta["warnings"])


@pytest.mark.parametrize("value", ["nan", "1_000"])
def test_sn_number_that_is_not_nm_is_kept_as_text_with_a_warning(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m.hl7"
    path.write_text(_MSG.format(vt="SN", value=f"^{value}"))
    sample = READER.read(path)
    assert math.isnan(sample.observations.value[0])
    assert any("OBX-5 SN number" in w for w in sample.meta["warnings"])


@pytest.mark.parametrize(("value", "expected"), [("5.5", 5.5), ("-.5", -0.5), ("+12", 12.0), ("7.", 7.0)])
def test_nm_numbers_in_hl7_syntax_read(tmp_path: Path, value: str, expected: float) -> None:
    path = tmp_path / "m.hl7"
    path.write_text(_MSG.format(vt="NM", value=value))
    assert READER.read(path).observations.value[0] == expected
