"""Fusion models: clinical preparation, leakage guard, and train -> evaluate -> predict through the CLI.

Synthetic data made in tmp_path: each patient has one 32 px image (a bright blob whose
strength carries half of the signal) and clinical values (age and a lab value carry the
other half; a third of the patients have no clinical value at all). Either modality alone
is informative but noisy, so a fusion model must beat both single-modality models on a
second, independently drawn set. The image backbone is an untrained ``cnn-tiny`` trunk
(``MEDDX_FUSION_BACKBONE=random:cnn-tiny``) so the tests need no pretraining.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.exceptions import ConfigError


def make_folder(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    y = rng.integers(0, 2, n)
    latent_img = y + rng.normal(0, 0.9, n)
    latent_cli = y + rng.normal(0, 0.9, n)
    rows = []
    yy, xx = np.mgrid[:48, :48]
    for i in range(n):
        base = rng.normal(90, 12, (48, 48))
        blob = np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / 120.0) * 60 * latent_img[i]
        Image.fromarray(np.clip(base + blob, 0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
        no_clinical = rng.random() < 0.33
        age = "" if no_clinical or rng.random() < 0.1 else f"{55 + 12 * latent_cli[i]:.1f}"
        lab = "" if no_clinical or rng.random() < 0.3 else f"{5 + 2 * latent_cli[i] + rng.normal(0, 0.5):.2f}"
        sex = "" if no_clinical else str(rng.choice(["M", "F"]))
        rows.append({"image": f"img{i:03d}.png", "patientid": f"p{seed}-{i}", "label": ["neg", "pos"][y[i]],
                     "age": age, "lab": lab, "sex": sex})
    with open(folder / "clinical.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def fusion_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fusion")
    return {"train": make_folder(root / "train", 260, 1), "external": make_folder(root / "external", 300, 2),
            "root": root}


@pytest.fixture(autouse=True)
def _backbone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDDX_FUSION_BACKBONE", "random:cnn-tiny")
    monkeypatch.setenv("MEDDX_FUSION_SIZE", "32")
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "home"))
    import torch

    torch.set_num_threads(1)


def test_clinical_cleaning_and_indicators() -> None:
    import pandas as pd

    from meddx.fusion.clinical import ClinicalPrep, clean_clinical

    raw = pd.DataFrame({"temperature": ["101.3", "37.2", "?", None], "pO2_saturation": ["95", "340", "", "88"],
                        "sex": ["M", "F", None, "M"]})
    cleaned, report = clean_clinical(raw)
    assert cleaned["temperature"].round(1).tolist()[:2] == [38.5, 37.2]  # 101.3 °F -> 38.5 °C
    assert report["temperature"]["fahrenheit"] == 1
    assert report["pO2_saturation"]["implausible"] == 1 and np.isnan(cleaned["pO2_saturation"][1])
    prep = ClinicalPrep().fit(cleaned)
    X, present = prep.transform(cleaned)
    names = prep.feature_names
    assert X[:, names.index("temperature_missing")].tolist() == [0, 0, 1, 1]
    assert X[:, names.index("sex_missing")].tolist() == [0, 0, 1, 0]
    assert present.tolist() == [True, True, False, True]  # row 3 has no clinical value at all


def test_backbone_pretrained_on_the_same_data_is_refused(tmp_path: Path) -> None:
    from meddx.fusion.embed import resolve_backbone

    (tmp_path / "package.json").write_text(json.dumps(
        {"architecture": "cnn-small", "tasks": [{"name": "covid-finding", "dataset": "covid-cxr-ieee8023-lungbbox"}]}))
    with pytest.raises(ConfigError, match="pretrained on covid-cxr"):
        resolve_backbone(str(tmp_path), "covid-cxr-ieee8023-lungbbox")
    assert resolve_backbone(str(tmp_path), "other-set")["pretrained_on"] == ["covid-cxr-ieee8023-lungbbox"]


def _train_eval(kind: str, env: dict[str, Path]) -> tuple[Path, dict]:
    run = env["root"] / f"run-{kind}"
    extra = ["--epochs", "100"] if kind == "intermediate" else []  # fixed steps: skips the inner-CV choice
    assert main(["train", f"fusion:{env['train']}", "--model", kind, "--out", str(run), "--no-progress", *extra]) == 0
    out = env["root"] / f"eval-{kind}.json"
    assert main(["evaluate", str(run), str(env["external"]), "--split", "all", "--n-boot", "50",
                 "--out", str(out)]) == 0
    return run, json.loads(out.read_text())


@pytest.fixture(scope="module")
def trained(fusion_env: dict[str, Path]) -> dict[str, tuple[Path, dict]]:
    """The four models trained on the training folder and evaluated on the external one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDX_FUSION_BACKBONE", "random:cnn-tiny")
        mp.setenv("MEDDX_FUSION_SIZE", "32")
        mp.setenv("MEDDX_HOME", str(fusion_env["root"] / "home"))
        return {kind: _train_eval(kind, fusion_env) for kind in ("image", "clinical", "late", "intermediate")}


def test_fusion_beats_each_modality_and_survives_missing_clinical(trained) -> None:
    results = trained
    auc = {k: r[1]["metrics"]["auc"]["value"] for k, r in results.items()}
    print("external AUC", {k: round(v, 3) for k, v in auc.items()},
          {k: round(results[k][1]["clinical_withheld"]["auc"]["value"], 3) for k in ("late", "intermediate")})
    package = json.loads((results["late"][0] / "package.json").read_text())
    assert package["modality"] == "fusion" and package["class_names"] == ["neg", "pos"]
    assert results["late"][1]["n"] == 300
    # each modality carries a real but partial signal
    assert 0.65 < auc["image"] < 0.9, auc
    assert 0.6 < auc["clinical"] < 0.9, auc
    # fusion uses both: clearly better than the best single modality on an independent set
    best_single = max(auc["image"], auc["clinical"])
    assert auc["late"] > best_single + 0.03, auc
    assert auc["intermediate"] > best_single + 0.02, auc
    # clinical withheld at prediction time: falls back to about the image-only level, not to chance
    for kind in ("late", "intermediate"):
        withheld = results[kind][1]["clinical_withheld"]["auc"]["value"]
        assert withheld > 0.6 and abs(withheld - auc["image"]) < 0.1, (kind, withheld, auc)


def test_predict_with_whichever_inputs_exist(fusion_env, trained, tmp_path, capsys) -> None:
    run = trained["late"][0]
    capsys.readouterr()
    cases = tmp_path / "cases"
    cases.mkdir()
    src = fusion_env["external"]
    for name in ("img000.png", "img001.png"):
        (cases / name).write_bytes((src / name).read_bytes())
    (cases / "img000.json").write_text(json.dumps({"age": 80, "lab": 9.5, "sex": "F", "extra": 1}))
    (cases / "only.json").write_text(json.dumps({"age": 30, "lab": 1.0}))
    assert main(["predict", str(run), str(cases / "img000.png"), str(cases / "img001.png"),
                 str(cases / "only.json")]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["modality"] for p in preds] == ["fusion"] * 3
    both, image_only, clinical_only = preds
    assert "inputs used: image, clinical" in both["warnings"]
    assert not any("missing" in w for w in both["warnings"]), both["warnings"]
    assert any("extra" in w for w in both["warnings"])
    assert any("missing modality: clinical" in w for w in image_only["warnings"])
    assert "inputs used: image" in image_only["warnings"]
    assert any("missing modality: image" in w for w in clinical_only["warnings"])
    # the clinical-only case: old age / high lab -> higher risk than young age / low lab
    (cases / "old.json").write_text(json.dumps({"age": 85, "lab": 10.0}))
    assert main(["predict", str(run), str(cases / "old.json"), str(cases / "only.json")]) == 0
    old, young = json.loads(capsys.readouterr().out)
    assert old["probabilities"]["pos"] > young["probabilities"]["pos"] + 0.2, (old, young)
    assert any("missing clinical features" in w and "sex" in w for w in old["warnings"])
    for p in preds:
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-6


def test_report_for_a_fusion_package(fusion_env, trained, tmp_path) -> None:
    run = trained["late"][0]
    out = tmp_path / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDX_FUSION_BACKBONE", "random:cnn-tiny")
        mp.setenv("MEDDX_FUSION_SIZE", "32")
        assert main(["report", str(run), str(fusion_env["external"]), "--split", "all", "--n-boot", "50",
                     "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Validation report" in page and "<td>auc</td>" in page and "clinical values withheld" in page
    saved = json.loads((out / "report.json").read_text())
    assert saved["result"]["n"] == 300 and saved["package"]["modality"] == "fusion"
