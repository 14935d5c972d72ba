"""Issue 17, records: missing values across sites, external validation, site recalibration."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from meddx.cli import main

HEART = ("heart-disease-uci", "heart_disease_uci_cleveland_hungary.csv")


@pytest.fixture(scope="module")
def heart(mirror):
    from meddx.records.schema import load_table

    return load_table("heart-disease-uci")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, mirror):
    """``meddx train heart-disease-uci`` with the default recipe."""
    import os

    os.environ["MEDDX_DATA_MIRROR"] = str(mirror)
    run = tmp_path_factory.mktemp("run") / "heart-default"
    assert main(["train", "heart-disease-uci", "--out", str(run), "--no-progress"]) == 0
    return run


def test_heart_default_is_the_site_robust_recipe(default_run):
    package = json.loads((default_run / "package.json").read_text())
    assert package["architecture"] == "blend"
    robust = package["site_robustness"]
    assert robust["imputation"] == "conditional"
    assert robust["recalibration"]["method"] == "intercept" and robust["recalibration"]["local_cases"] >= 10
    assert package["metrics"]["values"]["auc"] > 0.85


def test_impossible_zeros_become_missing_with_the_reason(heart, mirror, tmp_path):
    from meddx.records.models import make_pipeline
    from meddx.records.transform import missing_reasons

    task, frame, _ = heart
    raw = pd.read_csv(mirror / HEART[0] / HEART[1], dtype=str, keep_default_na=False).iloc[:6].copy()
    raw.loc[raw.index[:2], "chol"] = "0"
    raw.loc[raw.index[2], "trestbps"] = "0"
    raw = raw.drop(columns=["ca"])
    reasons = missing_reasons(raw, task)
    assert reasons["chol"] == {"code 0 (not measured)": 2}
    assert reasons["trestbps"] == {"code 0 (not measured)": 1}
    assert reasons["ca"] == {"column absent": 6}
    # chol = 0 predicts exactly like a blank cholesterol
    y = task.label(frame[task.target])
    pipe = make_pipeline(task, "logreg", 0).fit(frame, y)
    rows = frame.iloc[:3].copy()
    zero, blank = rows.assign(chol=0.0), rows.assign(chol=np.nan)
    assert np.allclose(pipe.predict_proba(zero)[:, 1], pipe.predict_proba(blank)[:, 1])


def test_a_column_absent_at_a_whole_site_does_not_shift_the_risk(heart):
    """Conditional imputation keeps the mean risk when ca/thal/slope vanish; indicators learned the site."""
    from sklearn.model_selection import train_test_split

    from meddx.records.models import make_pipeline
    from meddx.records.sites import simulate

    task, frame, _ = heart
    y = task.label(frame[task.target])
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    test = frame.iloc[te]
    absent = simulate(test, "switzerland-va")
    shift = {}
    for imputation in ("conditional", "indicator"):
        pipe = make_pipeline(replace(task, imputation=imputation), "logreg", 0).fit(frame.iloc[tr], y[tr])
        shift[imputation] = abs(pipe.predict_proba(absent)[:, 1].mean() - pipe.predict_proba(test)[:, 1].mean())
    assert shift["conditional"] < 0.03
    assert shift["conditional"] < shift["indicator"]


def test_recalibration_improves_ece_on_a_shifted_prevalence_site(heart):
    from meddx.records.models import make_pipeline
    from meddx.records.sites import recalibrate_proba, recalibration_curve, site_splits, with_prevalence
    from meddx.records.stats import ece

    task, frame, _ = heart
    y = task.label(frame[task.target])
    site, tr, te = next(s for s in site_splits(task, frame) if s[0] == "Hungary")
    pipe = make_pipeline(task, "logreg", 0).fit(frame.iloc[tr], y[tr])
    keep = with_prevalence(y[te], 0.8, seed=0)
    yy, p = y[te][keep], pipe.predict_proba(frame.iloc[te].iloc[keep])[:, 1]
    assert yy.mean() == pytest.approx(0.8, abs=0.01)
    order = np.random.default_rng(0).permutation(len(yy))
    loc, rest = order[:50], order[50:]
    after, params = recalibrate_proba(p[loc], yy[loc], p[rest])
    assert params["n_local"] == 50 and params["b"] > 0  # risks moved up toward the site's prevalence
    assert ece(after, yy[rest]) < ece(p[rest], yy[rest]) - 0.05
    curve = recalibration_curve(yy, p, ks=(10, 50), repeats=5, seed=0)
    assert [r["k"] for r in curve["rows"]] == [10, 50]
    assert all(r["ece_after"] < r["ece_before"] for r in curve["rows"])


def test_validate_gives_both_leave_one_site_out_rows_and_a_user_csv(default_run, mirror, tmp_path):
    from meddx.evaluation.validate import format_validation, validate

    raw = pd.read_csv(mirror / HEART[0] / HEART[1])
    hungary = raw[raw["dataset"] == "Hungary"].drop(columns=["ca", "thal"]).assign(
        chol=lambda d: d["chol"].fillna(0))  # the UCI originals' "0 = not measured"
    hungary.to_csv(tmp_path / "hungary.csv", index=False)
    result = validate(default_run, folders=[str(tmp_path / "hungary.csv")], n_boot=50, seed=0)
    loso = [r for r in result["external"] if r["kind"] == "leave-one-site-out"]
    assert sorted(r["source"] for r in loso) == ["Cleveland", "Hungary"]
    assert [r["kind"] for r in result["external"]].count("simulated other site") == 2
    for row in [result["internal"], *result["external"]]:
        assert row["auc"]["low"] <= row["auc"]["value"] <= row["auc"]["high"]
        assert row["ece_floor"] > 0 and row["ece_positive_floor"] > 0
    cleveland = next(r for r in loso if r["source"] == "Cleveland")
    assert cleveland["n"] == 304 and cleveland["auc"]["value"] > 0.8
    rec = cleveland["recalibrated"]
    assert rec["k"] == result["recalibration_cases"] and rec["after"]["n"] == 304 - rec["k"]
    user = next(r for r in result["external"] if r["kind"] == "user data")
    assert user["missing_reasons"]["ca"] == {"column absent": user["n"]}
    assert "code 0 (not measured)" in user["missing_reasons"]["chol"]
    assert "leave-one-site-out: Cleveland" in format_validation(result)


def test_validate_without_sites_says_so(tmp_path, mirror):
    from meddx.evaluation.validate import validate

    run = tmp_path / "wdbc"
    assert main(["train", "breast-cancer-wisconsin-diagnostic", "--model", "logreg", "--out", str(run),
                 "--no-progress"]) == 0
    result = validate(run, n_boot=20)
    assert result["external"] == [] and "no site column" in result["internal"]["note"]


def test_evaluate_json_has_ece_and_its_noise_floor(default_run, tmp_path):
    out = tmp_path / "x.json"
    assert main(["evaluate", str(default_run), "heart-disease-uci", "--n-boot", "50", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["ece"] < 0.3 and 0 < result["ece_noise_floor"] < 0.3
    assert result["ece"] == result["metrics"]["ece"]["value"]
    assert result["missing_reasons"]["ca"]["blank"] > 0


def test_recalibrated_package_applies_the_map(default_run, mirror, tmp_path, capsys):
    from meddx.records.package import recalibrate

    raw = pd.read_csv(mirror / HEART[0] / HEART[1])
    local = raw[raw["dataset"] == "Hungary"].sample(frac=1.0, random_state=0)
    local.to_csv(tmp_path / "local.csv", index=False)
    run = recalibrate(default_run, str(tmp_path / "local.csv"), n_local=60, out=tmp_path / "recal")
    package = json.loads((run / "package.json").read_text())
    assert package["recalibration"]["n_local"] == 60 and package["recalibration"]["method"] == "intercept"
    one = tmp_path / "one.csv"
    raw.iloc[1:2].to_csv(one, index=False)
    capsys.readouterr()
    assert main(["predict", str(default_run), str(one)]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), str(one)]) == 0
    after = json.loads(capsys.readouterr().out)
    before, after = (x[0] if isinstance(x, list) else x for x in (before, after))
    b = package["recalibration"]["b"]
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    assert logit(after["calibrated_probabilities"]["disease"]) == pytest.approx(
        logit(before["calibrated_probabilities"]["disease"]) + b, abs=1e-6)
    assert after["attribution_base"] + sum(after["attributions"].values()) == pytest.approx(
        logit(after["calibrated_probabilities"]["disease"]), abs=1e-3)
    with pytest.raises(Exception, match="local cases"):
        recalibrate(default_run, str(tmp_path / "local.csv"), n_local=1, out=tmp_path / "bad")
