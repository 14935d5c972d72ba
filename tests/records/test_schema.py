"""Feature schemas: declared columns, missing-value codes, units, labels and type errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meddx.exceptions import InvalidValueError
from meddx.records.schema import TASKS, get_task, infer_task, load_table
from meddx.records.transform import MissingCodes, UnitHarmoniser, feature_groups, preprocessor


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_reads_its_table(mirror, name):
    task, frame, _ = load_table(name)
    assert task.target not in task.names
    for excluded in task.excluded:
        assert excluded not in task.names
    y = task.label(frame[task.target])
    assert set(np.unique(y)) == {0, 1}
    pre = preprocessor(task).fit(frame)
    assert pre.transform(frame).shape[1] == len(feature_groups(pre, task))


def test_declared_exclusions_and_labels(mirror):
    assert "time" in get_task("heart-failure-clinical-records").excluded
    assert "time" not in get_task("heart-failure-clinical-records").names
    heart = get_task("heart-disease-uci")
    assert heart.label([0, 1, 2, 4]).tolist() == [0, 1, 1, 1]
    wdbc = get_task("breast-cancer-wisconsin-diagnostic")
    assert wdbc.label([0, 1]).tolist() == [1, 0]  # 0 = malignant is the positive class
    assert wdbc.class_names[1] == "malignant"


def test_missing_codes_become_nan(mirror):
    task, frame, _ = load_table("pima-indians-diabetes")
    raw = pd.read_csv(mirror / "pima-indians-diabetes" / "diabetes.csv")
    clean = MissingCodes(task.to_dict()).transform(raw)
    # Pima's zeros mean "not measured" (README counts: Glucose 5, BloodPressure 35, Insulin 374, BMI 11)
    assert clean["Glucose"].isna().sum() == 5
    assert clean["BloodPressure"].isna().sum() == 35
    assert clean["Insulin"].isna().sum() == 374
    assert clean["BMI"].isna().sum() == 11
    assert clean["Pregnancies"].isna().sum() == 0  # zero pregnancies is a real value
    heart = get_task("heart-disease-uci")
    rows = pd.DataFrame({"chol": [0.0, 240.0, 5000.0], "cp": ["asymptomatic", "banana", None]})
    out = MissingCodes(heart.to_dict()).transform(rows)
    assert out["chol"].isna().tolist() == [True, False, True]  # 0 = not measured, 5000 implausible
    assert out["cp"].isna().tolist() == [False, True, True]


def test_unit_harmoniser_converts_and_names_unknown_units():
    heart = get_task("heart-disease-uci")
    frame = pd.DataFrame({"chol": [5.0]})
    frame.attrs["units"] = {"chol": "mmol/L"}
    out = UnitHarmoniser(heart.to_dict()).transform(frame)
    assert out["chol"].iloc[0] == pytest.approx(5.0 * 38.67)
    frame.attrs["units"] = {"chol": "furlongs"}
    with pytest.raises(InvalidValueError) as err:
        UnitHarmoniser(heart.to_dict()).transform(frame)
    assert err.value.field == "chol"


def test_wrong_type_names_the_column():
    heart = get_task("heart-disease-uci")
    frame = pd.DataFrame({"age": [60, 61], "chol": ["240", "high"]})
    with pytest.raises(InvalidValueError) as err:
        heart.frame(frame)
    assert err.value.field == "chol"
    assert "'chol'" in str(err.value) and "row 2" in str(err.value)


def test_infer_task_for_any_csv():
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "bp": [120.0, 130.5, 110.0, 140.0], "smoker": [0, 1, 0, 1],
                          "ward": ["a", "b", "a", "c"], "outcome": [0, 1, 0, 1]})
    task = infer_task(frame, "mine")
    assert task.target == "outcome"
    kinds = {f.name: f.kind for f in task.features}
    assert kinds == {"bp": "numeric", "smoker": "binary", "ward": "categorical"}
