"""train → evaluate → predict on tiny generated data, through the CLI, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from tests._factories import make_labelled_pngs, write_dicom


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("train")
    data = make_labelled_pngs(base / "train_images")
    run = base / "run"
    assert main(["train", str(data), "--model", "cnn-tiny", "--epochs", "6", "--lr", "0.01",
                 "--out", str(run), "--no-progress"]) == 0
    return run, data


def test_run_folder_is_complete(trained: tuple[Path, Path]) -> None:
    run, _ = trained
    for name in ("config.json", "history.jsonl", "model.safetensors", "package.json", "train.log", "MODEL_CARD.md"):
        assert (run / name).is_file(), name
    package = json.loads((run / "package.json").read_text())
    assert package["class_names"] == ["lesion", "normal"]
    assert package["preprocess"]["in_chans"] == 1
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) in range(1, 7)
    assert all("val_auc" in h for h in history)


def test_evaluate_on_unseen_folder_has_cis(trained: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = trained
    unseen = make_labelled_pngs(tmp_path / "hospital", n=40, seed=7)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(run), str(unseen), "--n-boot", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| auc |" in text and "95% CI" in text
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["auc"]["low"] <= metrics["auc"]["value"] <= metrics["auc"]["high"]
    assert metrics["auc"]["value"] > 0.8  # the brightness cue is easy: the model did learn it


def test_predict_png_and_dicom(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, data = trained
    dcm = write_dicom(tmp_path / "img001.dcm", np.asarray(Image.open(data / "img001.png")))
    assert main(["predict", str(run), str(data / "img001.png"), str(dcm)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    for r in results:
        assert set(r["probabilities"]) == {"lesion", "normal"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["model_version"]


def test_predict_rejects_a_signal(trained: tuple[Path, Path], format_samples: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = trained
    assert main(["predict", str(run), str(format_samples / "wfdb" / "a103l.hea")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decision"]["decision"] == "rejected" and "reads images" in result["decision"]["reason"]


def test_predict_volume_needs_a_slice(trained: tuple[Path, Path], format_samples: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = trained
    volume = format_samples / "nifti" / "anatomical.nii"
    assert main(["predict", str(run), str(volume)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decision"]["decision"] == "rejected" and "--slice" in result["decision"]["reason"]
    assert main(["predict", str(run), str(volume), "--slice", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"]["decision"] != "rejected"


def test_unknown_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_labelled_pngs(tmp_path / "d", n=8)
    assert main(["train", str(data), "--model", "resnet19", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_breastmnist_catalogue_training_smoke(tmp_path: Path) -> None:
    """The demo's path on the real data set (28-px images: the standard recipe), one epoch of the tiny model."""
    run = tmp_path / "b"
    assert main(["train", "breastmnist", "--model", "cnn-tiny", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    package = json.loads((run / "package.json").read_text())
    assert package["data"]["train"] == 546 and package["data"]["val"] == 78
    assert package["class_names"] == ["malignant", "normal, benign"]
    assert "n=78" in package["trust"]["warnings"][0]  # 78 < 200 validation cases: said in the package


def test_small_data_recipe_on_breastmnist(tmp_path: Path) -> None:
    run = tmp_path / "s"
    assert main(["train", "breastmnist", "--model", "cnn-tiny", "--epochs", "1", "--recipe", "small-data",
                 "--out", str(run), "--no-progress"]) == 0
    package = json.loads((run / "package.json").read_text())
    assert package["training"]["recipe"] == "small-data" and len(package["members"]) == 5
    assert package["data"]["val"] == 546 + 78 == package["trust"]["n"]  # trust fitted out of fold on all
    assert package["architecture"] == "cnn-tiny" and package["preprocess"]["size"] == 28  # light images: no crop
