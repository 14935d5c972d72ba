"""``meddx validate``: internal beside external rows, leave-one-source-out and user folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.cli import main
from meddx.evaluation.validate import auc_ci, block, format_validation
from tests._factories import make_labelled_pngs


def test_block_reports_auc_ci_prevalence_and_ece_beside_its_floor() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 400)
    y = (rng.random(400) < p).astype(int)  # perfectly calibrated by construction
    row = block("internal", "synthetic", y, p, n_boot=200)
    assert row["n"] == 400 and abs(row["prevalence"] - y.mean()) < 1e-12
    assert row["auc"]["low"] < row["auc"]["value"] < row["auc"]["high"]
    assert row["ece"] <= row["ece_floor"] * 1.5  # calibrated: the ECE is noise of the size of its floor
    worse = block("external", "shifted", y, np.clip(p + 0.3, 0, 1), n_boot=200)
    assert worse["ece"] > worse["ece_floor"]  # a 0.3 shift stands far above the noise
    three = auc_ci(np.arange(90) % 3, np.eye(3)[np.arange(90) % 3] * 0.8 + 0.1 / 3, n_boot=50)
    assert three["value"] == 1.0  # macro one-vs-rest for more classes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from meddx.training import TrainConfig, train

    base = tmp_path_factory.mktemp("validate")
    data = make_labelled_pngs(base / "two_hospitals", n=64)
    folder = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=5, lr=0.01, holdout_fraction=0.25, batch_size=8,
                               out=str(base / "run")), progress=False)
    return Path(folder), data


def test_validate_runs_leave_one_source_out_and_folders(run: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.data import sources

    folder, data = run
    # the two "hospitals": first and second half of the folder, as a catalogue set would declare them
    sources.register_sources(str(data), "test hospital")(
        lambda sample: {k: np.where(np.arange(len(v[1])) < len(v[1]) // 2, "north", "south")
                        for k, v in sample.splits.items()})
    unseen = make_labelled_pngs(tmp_path / "hospital_c", n=40, seed=7)
    out = tmp_path / "validate.json"
    try:
        assert main(["validate", str(folder), "--data", str(unseen), "--n-boot", "100", "--out", str(out)]) == 0
    finally:
        sources._SOURCES.pop(str(data), None)
    text = capsys.readouterr().out
    assert "internal vs external" in text and "leave-one-source-out: north" in text and "folder:" in text
    result = json.loads(out.read_text())
    assert result["internal"]["kind"] == "internal" and "holdout" in result["internal"]["source"]
    kinds = [r["kind"] for r in result["external"]]
    assert kinds.count("leave-one-source-out") == 2 and kinds.count("folder") == 1
    for row in [result["internal"], *result["external"]]:
        assert {"n", "prevalence", "auc", "ece", "ece_floor", "ood_flagged"} <= set(row)
    hospital_c = result["external"][-1]
    assert hospital_c["n"] == 40 and hospital_c["auc"]["value"] > 0.8  # the easy cue transfers
    assert "largest internal - external AUC gap" in format_validation(result)


def test_a_cross_validated_package_reports_its_out_of_fold_figure(run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from meddx.evaluation.validate import validate

    folder, _ = run
    copy = tmp_path / "cv"
    shutil.copytree(folder, copy)
    package = json.loads((copy / "package.json").read_text())
    package["cv"] = {"folds": 5, "n": 64, "note": "fold models on their held-out folds",
                     "oof_auc": {"value": 0.9, "low": 0.8, "high": 0.97}}
    (copy / "package.json").write_text(json.dumps(package))
    result = validate(copy, n_boot=50)
    assert "out-of-fold" in result["internal"]["source"] and result["internal"]["auc"]["value"] == 0.9
    assert "out-of-fold" in format_validation(result)
