"""train -> evaluate -> predict -> report through the meddx CLI, FHIR/HL7 inputs, the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from meddx.cli import main
from meddx.exceptions import InvalidValueError, ModelError

FHIR = "fhir/003_AL_ORM_O01_NBS_Fully_Populated_1_hl7_translation.json"
HL7 = "hl7v2/002_CA_ORU_R01.hl7"


@pytest.fixture(scope="module")
def heart_run(tmp_path_factory, mirror):
    import os

    os.environ["MEDDX_DATA_MIRROR"] = str(mirror)
    run = tmp_path_factory.mktemp("run") / "heart"
    assert main(["train", "heart-disease-uci", "--model", "logreg", "--out", str(run), "--no-progress"]) == 0
    return run


def _predict(capsys, model, *files):
    capsys.readouterr()
    assert main(["predict", str(model), *map(str, files)]) == 0
    out = json.loads(capsys.readouterr().out)
    return out if isinstance(out, list) else [out]


def test_package_contents(heart_run):
    package = json.loads((heart_run / "package.json").read_text())
    assert package["modality"] == "tabular"
    assert package["extra_files"] == ["records.joblib", "ood.npz"]
    assert package["intended_input"]["kind"] == "record"
    assert package["ood"]["method"] == "mahalanobis" and package["ood"]["n_threshold"] == package["data"]["n_train"] == 477
    assert package["ood"]["range_check"]["ranges"]["age"] == [28.0, 77.0]
    assert (heart_run / "model.safetensors").is_file()
    assert [f["name"] for f in package["feature_schema"]["features"]][:3] == ["age", "sex", "cp"]
    assert len(package["data"]["split"]["test_rows"]) == package["data"]["n_test"] == 120


def test_evaluate_on_held_out_rows_and_a_site(heart_run, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", str(heart_run), "heart-disease-uci", "--n-boot", "100", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["n"] == 120
    assert result["metrics"]["auc"]["low"] <= result["metrics"]["auc"]["value"] <= result["metrics"]["auc"]["high"]
    assert result["metrics"]["auc"]["value"] > 0.8
    assert 0 <= result["metrics"]["ece"]["value"] < 0.2
    assert main(["evaluate", str(heart_run), "heart-disease-uci", "--n-boot", "50", "--split", "Hungary",
                 "--out", str(out)]) == 0
    hungary = json.loads(out.read_text())
    assert hungary["split"] == "test:Hungary" and 0 < hungary["n"] < 120


def test_csv_rows_with_absent_columns_are_flagged(heart_run, tmp_path, capsys, mirror):
    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[:2]
    full = tmp_path / "full.csv"
    rows.to_csv(full, index=False)
    partial = tmp_path / "partial.csv"
    rows.drop(columns=["ca", "thal", "slope"]).to_csv(partial, index=False)
    a, b = _predict(capsys, heart_run, full)[0], _predict(capsys, heart_run, partial)[0]
    assert a["missing_features"] == []
    assert b["missing_features"] == ["slope", "ca", "thal"]
    assert any("slope, ca, thal" in w for w in b["warnings"])
    for p in (a, b):
        logit = math.log(p["calibrated_probabilities"]["disease"] / p["calibrated_probabilities"]["no disease"])
        assert p["attribution_base"] + sum(p["attributions"].values()) == pytest.approx(logit, abs=1e-3)
    assert a["input"].endswith("#row1") and a["decision"]["decision"] in ("positive", "negative")


def test_fhir_bundle_and_hl7_message_predict_with_missing_flagged(heart_run, capsys, format_samples):
    fhir, hl7 = _predict(capsys, heart_run, format_samples / FHIR, format_samples / HL7)
    assert fhir["modality"] == "tabular"
    assert fhir["features"]["sex"] == "Female"  # Patient.gender
    assert fhir["features"]["age"] is not None  # from Patient.birthDate
    assert "chol" in fhir["missing_features"] and "sex" not in fhir["missing_features"]
    assert fhir["decision"]["decision"] == "refer"  # 11 of 13 features missing
    assert any("extrapolation" in w for w in fhir["warnings"])  # a newborn is outside the training ages
    assert "sex" in hl7["missing_features"] and "age" not in hl7["missing_features"]


def test_a_bad_cell_rejects_its_row_not_the_file(heart_run, tmp_path, capsys, mirror):
    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[:3]
    rows["chol"] = rows["chol"].astype(object)
    rows.loc[1, "chol"] = "high"
    bad = tmp_path / "bad.csv"
    rows.to_csv(bad, index=False)
    a, b, c = _predict(capsys, heart_run, bad)
    assert b["decision"]["decision"] == "rejected" and b["prediction"] is None and b["probabilities"] == {}
    assert "chol='high' is not a number" in b["decision"]["reason"] and b["input_check"]["passed"] is False
    assert a["decision"]["decision"] in ("positive", "negative", "refer") and a["input_check"]["passed"] is True
    assert a["ood"]["method"] == "mahalanobis" and c["ood"] is not None


def test_risk_assessment_is_valid_fhir(heart_run, tmp_path, capsys, format_samples, mirror):
    from meddx.records.fhir import risk_assessment

    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[:1]
    rows.to_csv(tmp_path / "one.csv", index=False)
    p = _predict(capsys, heart_run, tmp_path / "one.csv")[0]
    assert p["ood"]["flagged"] is False
    resource = risk_assessment(p, subject="example")
    assert resource["resourceType"] == "RiskAssessment" and resource["status"] == "final"
    assert resource["prediction"][0]["probabilityDecimal"] == pytest.approx(
        p["calibrated_probabilities"]["disease"], abs=1e-6)
    with pytest.raises(InvalidValueError, match="not valid FHIR"):
        risk_assessment(p, subject="example", when="yesterday-ish")  # not a FHIR dateTime
    newborn = _predict(capsys, heart_run, format_samples / FHIR)[0]  # flagged: age far below the training range
    resource = risk_assessment(newborn, subject="example")
    assert resource["status"] == "preliminary" and "probabilityDecimal" not in resource["prediction"][0]
    assert resource["prediction"][0]["qualitativeRisk"]["text"].startswith("not assessed")
    assert resource["note"][0]["text"].startswith("not a risk estimate: outside the model's training data")
    assert any("missing features" in n["text"] for n in resource["note"])


def test_predict_fhir_flag_prints_risk_assessments(heart_run, capsys, format_samples):
    capsys.readouterr()
    assert main(["predict", str(heart_run), str(format_samples / FHIR), "--fhir", "--subject", "p-7"]) == 0
    resource = json.loads(capsys.readouterr().out)
    assert resource["resourceType"] == "RiskAssessment" and resource["subject"] == {"reference": "Patient/p-7"}
    assert sum(n["text"].startswith("missing features") for n in resource["note"]) == 1


def test_registry_round_trip_and_hash_check(heart_run, capsys, tmp_path, mirror):
    from meddx.packaging.registry import read_package, register
    from meddx.records.package import load

    folder = register(heart_run, name="heart-lr")
    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[:1]
    rows.to_csv(tmp_path / "one.csv", index=False)
    by_name = _predict(capsys, "heart-lr", tmp_path / "one.csv")[0]
    by_path = _predict(capsys, heart_run, tmp_path / "one.csv")[0]
    assert by_name["calibrated_probabilities"] == pytest.approx(by_path["calibrated_probabilities"])
    package = read_package(folder)
    assert "records.joblib" in package["files"]
    with open(folder / "records.joblib", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        load(folder, package)


def test_csv_subsample_round_trip_with_an_mlp(tmp_path, capsys, mirror):
    data = pd.read_csv(mirror / "pima-indians-diabetes" / "diabetes.csv").sample(240, random_state=0)
    csv = tmp_path / "pima_small.csv"
    data.to_csv(csv, index=False)
    run = tmp_path / "mlp"
    assert main(["train", str(csv), "--model", "mlp", "--epochs", "30", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "m.json"
    assert main(["evaluate", str(run), str(csv), "--n-boot", "50", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["n"] == 48
    assert result["metrics"]["auc"]["value"] > 0.6
    one = tmp_path / "one.csv"
    data.iloc[:1].assign(Insulin=0).to_csv(one, index=False)  # 0 = not measured
    p = _predict(capsys, run, one)[0]
    assert "Insulin" in p["missing_features"]
    assert p["attribution_method"] == "sampled-shapley"
    z = math.log(p["calibrated_probabilities"]["diabetes"] / p["calibrated_probabilities"]["no diabetes"])
    assert p["attribution_base"] + sum(p["attributions"].values()) == pytest.approx(z, abs=1e-3)
    html = main(["report", str(run), str(csv), "--out", str(tmp_path / "rep"), "--n-boot", "50"])
    assert html == 0 and "Global feature importance" in (tmp_path / "rep" / "report.html").read_text()
    assert np.isfinite(json.loads((tmp_path / "rep" / "report.json").read_text())["metrics"]["ece"]["value"])
