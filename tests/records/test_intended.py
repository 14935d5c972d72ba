"""Intended input of record models: units, plausible ranges and categories reject a record by name."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from meddx.records.intended import RecordRow, check_record, intended_input, typed_row
from meddx.records.schema import TASKS, get_task, load_table
from meddx.trust.intended import IntendedInput, check_sample

HEART = get_task("heart-disease-uci")


def _reasons(values: dict, units: dict | None = None, task=HEART) -> list[str]:
    return check_sample(RecordRow("r", values, units or {}), intended_input(task))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_row_of_every_training_table_is_accepted(mirror, name):
    """The plausible ranges are wide enough for every real row (else training rows would be rejected)."""
    task, frame, _ = load_table(name)
    spec = intended_input(task)
    rejected = [check_sample(RecordRow(str(i), {f: rec[f] for f in task.names}), spec)
                for i, rec in enumerate(frame.to_dict("records"))]
    assert [r for r in rejected if r] == []


def test_intended_input_declares_units_ranges_codes_and_categories():
    spec = intended_input(HEART, sites=["Cleveland"], n=240)
    assert spec["kind"] == "record" and spec["population"] == {"sites": ["Cleveland"], "n": 240}
    chol = spec["extra"]["features"]["chol"]
    assert chol["unit"] == "mg/dL" and chol["conversions"]["mmol/L"] == pytest.approx(38.67)
    assert chol["min"] == 50 and chol["missing_codes"] == [0.0]
    assert spec["extra"]["features"]["cp"]["categories"][0] == "typical angina"
    assert IntendedInput.from_dict(spec).extra == spec["extra"]  # survives package.json


def test_an_unknown_unit_is_rejected_naming_the_field_and_the_units_it_takes():
    (reason,) = _reasons({"chol": 5.2}, {"chol": "mmol/mol"})
    assert reason.startswith("chol is given in 'mmol/mol'") and "give chol in mg/dL or mmol/L" in reason


def test_a_known_unit_is_converted_before_the_range_check():
    assert _reasons({"chol": "5.2"}, {"chol": "mmol/L"}) == []
    assert _reasons({"chol": 5.2}, {"chol": "MG/DL"}) == [f"chol=5.2 MG/DL is outside the plausible range 50–1000 "
                                                          "mg/dL: check the value for a typo, or leave chol empty "
                                                          "if not measured"]


def test_a_value_in_another_unit_without_its_unit_is_rejected_with_the_unit_fix():
    (reason,) = _reasons({"chol": 5.2})
    assert "chol=5.2 mg/dL is outside the plausible range 50–1000 mg/dL" in reason
    assert "a value in mmol/L" in reason and "'chol_unit' column" in reason


@pytest.mark.parametrize("values, expected", [
    ({"age": 640}, "age=640 years is outside the plausible range 0–120 years"),
    ({"age": "sixty"}, "age='sixty' is not a number: give age in years"),
    ({"age": "inf"}, "age='inf' is not a finite number"),
    ({"cp": "banana"}, "cp='banana' is not a category this model knows: use one of 'typical angina'"),
    ({"fbs": "maybe"}, "fbs='maybe' is not a yes/no value: give 0/1 or true/false"),
    ({"fbs": 2}, "fbs=2 is not 0 or 1"),
    ({"trestbps": 12}, "trestbps=12 mmHg is outside the plausible range 40–300 mmHg"),
])
def test_implausible_or_unparseable_values_are_rejected_by_name(values, expected):
    reasons = _reasons(values)
    assert len(reasons) == 1 and reasons[0].startswith(expected), reasons


def test_several_bad_fields_give_one_reason_each():
    reasons = _reasons({"age": 640, "cp": "banana", "chol": 240})
    assert [r.split("=")[0] for r in reasons] == ["age", "cp"]


@pytest.mark.parametrize("value", [None, "", "NA", " n/a ", float("nan"), pd.NA, "?", 0, "0"])
def test_genuinely_missing_values_and_missing_codes_are_not_rejections(value):
    assert _reasons({"chol": value}) == []  # chol = 0 is the data set's "not measured" code


def test_typed_row_keeps_units_for_the_harmoniser_and_missing_as_nan():
    row = typed_row(RecordRow("r", {"chol": "5.2", "cp": "asymptomatic", "fbs": "yes", "age": ""},
                              {"chol": "mmol/L"}), HEART)
    assert row.attrs["units"] == {"chol": "mmol/L"}
    assert row["chol"].iloc[0] == 5.2 and row["fbs"].iloc[0] == 1.0 and row["cp"].iloc[0] == "asymptomatic"
    assert math.isnan(row["age"].iloc[0]) and math.isnan(row["thalch"].iloc[0])


def test_the_check_is_registered_for_record_samples_only():
    spec = intended_input(HEART)
    assert check_record(RecordRow("r", {"age": 640}), IntendedInput.from_dict(spec))
    assert check_sample(RecordRow("r", {"age": 640}), None) == []  # packages without a declaration

    class Table:
        kind = "table"

    assert check_sample(Table(), spec) == ["this model reads records; the file holds a table"]


def test_heart_failure_sodium_in_the_wrong_scale_is_rejected():
    task = get_task("heart-failure-clinical-records")
    assert _reasons({"serum_sodium": 1370}, task=task)[0].startswith("serum_sodium=1370 mEq/L is outside")
    assert _reasons({"serum_creatinine": 97}, {"serum_creatinine": "umol/L"}, task=task) == []


@pytest.mark.parametrize("feature, unit", [("trestbps", "mm[Hg]"), ("thalch", "/min"), ("age", "a"),
                                           ("chol", "MMOL/L"), ("thalch", "{beats}/min")])
def test_ucum_codes_of_fhir_observations_are_the_schema_units(feature, unit):
    from meddx.records.schema import unit_factor

    assert _reasons({feature: 60 if feature != "chol" else 5.0}, {feature: unit}) == []
    assert unit_factor(HEART.feature(feature), unit) in (1.0, pytest.approx(38.67))
