"""train -> evaluate -> predict -> report through the meddx CLI, FHIR/HL7 inputs, the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from meddx.cli import main
from meddx.exceptions import InvalidValueError, ModelError

# Row 2 of the mirror's heart table is a typical patient; row 1 (typical angina, downsloping ST, fixed thal
# defect) is rare enough that the OOD gate may flag it, so tests that need an in-distribution record use row 2.
TYPICAL = slice(1, 2)

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
    assert package["ood"]["method"] == "mahalanobis"
    assert package["ood"]["n_threshold"] == package["data"]["n_train"] == 477
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
    assert a["input"].endswith("#row1") and a["decision"]["decision"] in ("positive", "negative", "refer")
    assert b["decision"]["decision"] in ("positive", "negative", "refer")


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

    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[TYPICAL]
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


def _bundle(path, patients):
    """A FHIR R4 bundle: ``patients`` = [(id, gender, birthDate, [(loinc, value, unit)])]."""
    entries = []
    for pid, gender, born, observations in patients:
        entries.append({"fullUrl": f"urn:uuid:{pid}",
                        "resource": {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born}})
        for k, (code, value, unit) in enumerate(observations):
            obs = {"resourceType": "Observation", "id": f"{pid}-{k}", "status": "final",
                   "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2024-05-01",
                   "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}
            obs.update({"valueString": value} if isinstance(value, str) else
                       {"valueQuantity": {"value": value, **({"unit": unit} if unit else {})}})
            entries.append({"fullUrl": f"urn:uuid:{pid}-{k}", "resource": obs})
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def test_a_bundle_rejects_only_the_patient_with_an_unknown_unit_or_a_text_value(heart_run, tmp_path, capsys):
    bundle = _bundle(tmp_path / "b.json", [
        ("good", "male", "1964-03-01", [("2093-3", 5.8, "mmol/L"), ("8480-6", 130, "mm[Hg]"), ("8867-4", 150, "/min")]),
        ("unit", "female", "1960-01-01", [("2093-3", 5.8, "mmol/mol")]),
        ("text", "female", "1960-01-01", [("2093-3", "borderline high", None)]),
    ])
    good, unit, text = _predict(capsys, heart_run, bundle)
    assert good["input"].endswith("#patient=good") and good["input_check"]["passed"]
    assert good["features"]["chol"] == pytest.approx(5.8 * 38.67)  # this patient's own unit, converted
    assert unit["decision"]["decision"] == "rejected"
    assert unit["decision"]["reason"].startswith("chol is given in 'mmol/mol'")
    assert "mmol/L" in unit["decision"]["reason"]
    assert text["decision"]["decision"] == "rejected" and "chol='borderline high' is not a number" in \
        text["decision"]["reason"]


def test_risk_assessment_of_a_rejected_record_states_no_risk(heart_run, tmp_path, capsys):
    from meddx.records.fhir import risk_assessment

    bundle = _bundle(tmp_path / "b.json", [("p1", "male", "1964-03-01", [("2093-3", 5.8, "mmol/mol")])])
    p = _predict(capsys, heart_run, bundle)[0]
    resource = risk_assessment(p, subject="p1")
    assert resource["status"] == "cancelled" and "prediction" not in resource
    assert resource["note"][0]["text"].startswith("not assessed: this record is not an input the model was made for")
    assert "mmol/mol" in resource["note"][0]["text"]


def test_an_unreadable_file_is_one_rejection_and_the_batch_goes_on(heart_run, tmp_path, capsys, mirror):
    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[TYPICAL]
    rows.to_csv(tmp_path / "one.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    missing, empty, one = _predict(capsys, heart_run, tmp_path / "nope.csv", tmp_path / "empty.csv",
                                   tmp_path / "one.csv")
    assert missing["decision"]["decision"] == empty["decision"]["decision"] == "rejected"
    assert "input not found" in missing["decision"]["reason"] and "empty" in empty["decision"]["reason"]
    assert one["decision"]["decision"] in ("positive", "negative")


def test_a_record_far_outside_the_training_data_is_referred(heart_run, tmp_path, capsys, mirror):
    rows = pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").iloc[:1]
    rows.assign(age=99, chol=950, oldpeak=9.5).to_csv(tmp_path / "far.csv", index=False)
    p = _predict(capsys, heart_run, tmp_path / "far.csv")[0]
    assert p["ood"]["flagged"] and p["ood"]["score"] > p["ood"]["threshold"]
    assert p["decision"]["decision"] == "refer"
    assert p["decision"]["reason"].startswith("outside the model's training data")
    assert "age=99 years is far outside the training range 28-77 years" in p["decision"]["reason"]
    assert p["calibrated_probabilities"]  # the number stays in the JSON; the decision says not to use it


def test_evaluate_reports_shift_and_never_calls_training_rows_a_validation(heart_run, tmp_path, capsys, mirror):
    out = tmp_path / "m.json"
    assert main(["evaluate", str(heart_run), "heart-disease-uci", "--n-boot", "50", "--out", str(out)]) == 0
    test = json.loads(out.read_text())
    assert test["validation"] is True and test["seen_in_training"]["rows"] == 0
    shift = test["shift"]
    assert shift["flagged"]["share"]["low"] <= shift["flagged"]["share"]["value"] <= shift["flagged"]["share"]["high"]
    assert shift["ks_ood_scores"]["n_reference"] == 477 and 0 <= shift["ks_ood_scores"]["p_value"] <= 1
    assert 0 < shift["prevalence"]["estimated_unlabelled"] < 1
    assert shift["ece"]["noise_floor"]["p95"] > shift["ece"]["noise_floor"]["mean"] > 0
    assert shift["recommendation"]["action"] in ("use as is", "recalibrate on local labelled cases")
    capsys.readouterr()
    assert main(["evaluate", str(heart_run), "heart-disease-uci", "--split", "train", "--n-boot", "20",
                 "--out", str(out)]) == 0
    assert "[train: the model's own training rows, not a validation]" in capsys.readouterr().out
    train = json.loads(out.read_text())
    assert train["validation"] is False and train["seen_in_training"] == {"rows": 477, "of": 477}
    assert "overstate" in train["shift"]["warning"]
    # another file holding training rows: by default only the rows the model never saw are evaluated
    copy = tmp_path / "copy.csv"
    pd.read_csv(mirror / "heart-disease-uci" / "heart_disease_uci_cleveland_hungary.csv").to_csv(copy, index=False)
    assert main(["evaluate", str(heart_run), str(copy), "--n-boot", "20", "--out", str(out)]) == 0
    unseen = json.loads(out.read_text())
    assert unseen["validation"] is True and unseen["split"].startswith("all rows not used in training")
    assert unseen["n"] == 119  # the 120 test rows, less one whose values duplicate a training row
    assert main(["evaluate", str(heart_run), str(copy), "--split", "all", "--n-boot", "20", "--out", str(out)]) == 0
    everything = json.loads(out.read_text())
    assert everything["validation"] is False and "not a validation" in everything["split"]


def test_report_on_training_rows_is_not_titled_a_validation(heart_run, tmp_path):
    assert main(["report", str(heart_run), "--split", "train", "--out", str(tmp_path / "r"), "--n-boot", "20"]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Evaluation on rows the model trained on (not a validation)" in page and "Validation report" not in page
    assert "Is this data like the training data?" in page and "Recommendation:" in page
