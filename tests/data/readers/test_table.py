"""Table reader: the mirror's tabular sets with their built-in schemas, and bad CSVs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from meddx.data.readers._base import _BUILTIN_MODULES
from meddx.data.readers.table import (
    BUILTIN_SCHEMA_FILES,
    BUILTIN_SCHEMAS,
    ColumnSpec,
    TableReader,
    TableSchema,
)
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

READER = TableReader()

ROWS = {
    "heart-disease-uci": 597,
    "heart-failure-clinical-records": 299,
    "pima-indians-diabetes": 768,
    "breast-cancer-wisconsin-diagnostic": 569,
    "stroke-kaggle": 5110,
}


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _file(mirror: Path, name: str) -> Path:
    return mirror / name / BUILTIN_SCHEMA_FILES[name]


# -- the mirror's tables --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROWS))
def test_builtin_schema_reads_its_data_set(mirror: Path, name: str) -> None:
    schema = BUILTIN_SCHEMAS[name]
    sample = READER.read(_file(mirror, name), schema=name)
    assert sample.format == "table"
    assert sample.n_rows == ROWS[name]
    assert list(sample.frame.columns) == list(schema.columns)
    assert sample.meta["schema"] == name
    assert sample.meta["target"] == schema.target
    assert sample.frame[schema.target].notna().all()
    assert sample.units == schema.units
    # The same file read independently has the same shape.
    assert pd.read_csv(_file(mirror, name)).shape == sample.frame.shape


def test_pima_zero_codes_become_na(mirror: Path) -> None:
    path = _file(mirror, "pima-indians-diabetes")
    sample = READER.read(path, schema="pima-indians-diabetes")
    frame = sample.frame
    assert frame.isna().sum()[["Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI"]].to_dict() == {
        "Glucose": 5,
        "BloodPressure": 35,
        "SkinThickness": 227,
        "Insulin": 374,
        "BMI": 11,
    }
    raw = pd.read_csv(path)
    assert frame["Pregnancies"].isna().sum() == 0  # 0 pregnancies is a real value
    assert (frame["Pregnancies"] == 0).sum() == (raw["Pregnancies"] == 0).sum() == 111
    measured = raw["Glucose"] != 0
    pd.testing.assert_series_equal(
        frame.loc[measured, "Glucose"], raw.loc[measured, "Glucose"].astype("float64")
    )
    assert str(frame["Outcome"].dtype) == "Int64"
    assert frame["Outcome"].value_counts().to_dict() == {0: 500, 1: 268}
    assert sample.units["Glucose"] == "mg/dL"


def test_stroke_bmi_na(mirror: Path) -> None:
    sample = READER.read(_file(mirror, "stroke-kaggle"), schema="stroke-kaggle")
    frame = sample.frame
    assert frame["bmi"].isna().sum() == 201
    assert sample.meta["n_missing"] == {"bmi": 201}
    assert frame["bmi"].dtype == "float64"
    assert frame["stroke"].value_counts().to_dict() == {0: 4861, 1: 249}
    assert frame["ever_married"].dtype == "boolean"
    assert set(frame["smoking_status"].cat.categories) == {"formerly smoked", "never smoked", "smokes", "Unknown"}


def test_heart_failure_thousands_separator(mirror: Path) -> None:
    frame = READER.read(_file(mirror, "heart-failure-clinical-records"), schema="heart-failure-clinical-records").frame
    raw = pd.read_csv(_file(mirror, "heart-failure-clinical-records"), thousands=",")
    assert frame["platelets"].tolist() == raw["platelets"].astype(float).tolist()
    assert frame["platelets"].iloc[0] == 265000.0
    assert frame["DEATH_EVENT"].value_counts().to_dict() == {0: 203, 1: 96}


def test_heart_disease_categories_and_missing(mirror: Path) -> None:
    frame = READER.read(_file(mirror, "heart-disease-uci"), schema="heart-disease-uci").frame
    assert frame["num"].value_counts().to_dict() == {0: 352, 1: 161, 2: 36, 3: 35, 4: 13}
    assert frame["dataset"].value_counts().to_dict()["Cleveland"] == 304
    assert frame["ca"].isna().sum() == 295
    assert frame["fbs"].dtype == "boolean"
    assert str(frame["ca"].dtype) == "Int64"


def test_wdbc_targets(mirror: Path) -> None:
    frame = READER.read(_file(mirror, "breast-cancer-wisconsin-diagnostic"), schema="breast-cancer-wisconsin-diagnostic").frame
    assert frame["target"].value_counts().to_dict() == {1: 357, 0: 212}
    assert (frame.loc[frame["target"] == 0, "target_name"] == "malignant").all()
    assert frame.shape[1] == 32


def test_without_schema_dtypes_are_inferred(mirror: Path) -> None:
    sample = READER.read(_file(mirror, "pima-indians-diabetes"))
    assert sample.n_rows == 768
    assert sample.frame["Glucose"].isna().sum() == 0  # no schema: 0 stays 0
    assert sample.meta.get("schema") is None


@pytest.mark.skipif(not _all_readers_present(), reason="other built-in reader modules are not there yet")
def test_read_dispatches_to_table(mirror: Path) -> None:
    from meddx.data import read

    sample = read(_file(mirror, "stroke-kaggle"), schema="stroke-kaggle")
    assert sample.format == "table" and sample.n_rows == 5110


# -- schemas ---------------------------------------------------------------------------


SCHEMA = TableSchema(
    columns={
        "age": ColumnSpec("int", unit="years", min=0, max=120),
        "glucose": ColumnSpec("float", unit="mg/dL", missing=["?", 0]),
        "sex": ColumnSpec("category", categories=["F", "M"]),
        "smoker": ColumnSpec("bool", required=False),
        "seen": ColumnSpec("datetime", required=False),
    },
    target="sex",
)


def test_schema_types_and_missing_codes(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("age,glucose,sex,smoker,seen\n40,?,F,yes,2024-01-02\n51,99.5,M,no,2024-02-03T10:00\n60,0,F,,\n")
    frame = READER.read(path, schema=SCHEMA).frame
    assert frame["glucose"].isna().tolist() == [True, False, True]
    assert frame["age"].tolist() == [40, 51, 60]
    assert frame["smoker"].tolist()[:2] == [True, False] and pd.isna(frame["smoker"].iloc[2])
    assert frame["seen"].iloc[0] == pd.Timestamp("2024-01-02")
    assert pd.isna(frame["seen"].iloc[2])
    assert list(frame["sex"].cat.categories) == ["F", "M"]


def test_schema_from_dict_and_optional_column(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("a\tb\n1\tx\n2\ty\n")
    schema = {"columns": {"a": "int", "b": {"dtype": "str"}, "c": {"dtype": "float", "required": False}}}
    sample = READER.read(path, schema=schema)
    assert sample.meta["delimiter"] == "\t"
    assert sample.frame["a"].tolist() == [1, 2]
    assert sample.frame["c"].isna().all()


def test_extra_columns_policy(tmp_path: Path) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("a,z\n1,5\n2,6\n")
    keep = READER.read(path, schema={"a": "int"}).frame
    assert list(keep.columns) == ["a", "z"] and keep["z"].tolist() == [5, 6]
    strict = TableSchema(columns={"a": ColumnSpec("int")}, extra_columns="error")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=strict)
    assert "extra.csv" in str(info.value) and info.value.field == "z"


def test_unknown_builtin_schema_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ConfigError) as info:
        READER.read(path, schema="no-such-set")
    assert "a.csv" in str(info.value) and "pima-indians-diabetes" in str(info.value)


def test_bad_dtype_in_spec() -> None:
    with pytest.raises(ConfigError):
        ColumnSpec("number")


# -- bad files -------------------------------------------------------------------------


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(EmptyDataError) as info:
        READER.read(path)
    assert "empty.csv" in str(info.value)


def test_header_only_csv(tmp_path: Path) -> None:
    path = tmp_path / "header_only.csv"
    path.write_text("age,glucose,sex\n")
    for schema in (None, SCHEMA):
        with pytest.raises(EmptyDataError) as info:
            READER.read(path, schema=schema)
        assert "header_only.csv" in str(info.value)


def test_missing_required_column(tmp_path: Path) -> None:
    path = tmp_path / "nosex.csv"
    path.write_text("age,glucose\n40,100\n")
    with pytest.raises(MissingFieldError) as info:
        READER.read(path, schema=SCHEMA)
    assert "nosex.csv" in str(info.value) and "'sex'" in str(info.value)
    assert info.value.field == "sex"


def test_bad_value_names_row_column_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("age,glucose,sex\n40,100,F\n41,lots,M\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    text = str(info.value)
    assert "bad.csv" in text and "[glucose]" in text and "row 2" in text and "'lots'" in text


def test_non_integer_in_int_column(tmp_path: Path) -> None:
    path = tmp_path / "frac.csv"
    path.write_text("age,glucose,sex\n40.5,100,F\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    assert "frac.csv" in str(info.value) and "row 1" in str(info.value) and "whole number" in str(info.value)


def test_out_of_range_value(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text("age,glucose,sex\n40,100,F\n30,90,M\n200,80,F\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    assert "old.csv" in str(info.value) and "row 3" in str(info.value) and "maximum 120" in str(info.value)


def test_category_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "cat.csv"
    path.write_text("age,glucose,sex\n40,100,X\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    assert "cat.csv" in str(info.value) and "'X'" in str(info.value) and "Allowed: F, M" in str(info.value)


def test_bad_boolean(tmp_path: Path) -> None:
    path = tmp_path / "bool.csv"
    path.write_text("age,glucose,sex,smoker\n40,100,F,sometimes\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    assert "bool.csv" in str(info.value) and "sometimes" in str(info.value)


def test_infinite_number_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "inf.csv"
    path.write_text("age,glucose,sex\n40,inf,F\n")
    with pytest.raises(InvalidValueError) as info:
        READER.read(path, schema=SCHEMA)
    assert "inf.csv" in str(info.value) and "infinite" in str(info.value)


def test_duplicate_header_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("age,age\n1,2\n")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path, schema={"age": "int"})
    assert "dup.csv" in str(info.value)


def test_ragged_rows_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path, schema={"a": "int", "b": "int"})
    assert "ragged.csv" in str(info.value)


def test_undecodable_text_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name\nJosé\n".encode("latin-1"))
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "latin.csv" in str(info.value) and "latin-1" in str(info.value)
    assert READER.read(path, encoding="latin-1").frame["name"].tolist() == ["José"]


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_inferred_float_column_with_infinite_text_is_refused_naming_column_and_row(tmp_path: Path, cell: str) -> None:
    """Issue 18: pandas reads 'inf' as infinity; without a schema that was a silent infinite measurement."""
    from meddx.data.readers import read
    from meddx.exceptions import InvalidValueError

    path = tmp_path / "t.csv"
    path.write_text(f"age,glucose\n61,5.5\n72,{cell}\n")
    with pytest.raises(InvalidValueError, match="row 2") as info:
        read(path)
    assert info.value.field == "glucose"
