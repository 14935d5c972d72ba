"""3-D segmentation through the one CLI: train on phantoms, evaluate, predict a NIfTI file and a DICOM series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
nib = pytest.importorskip("nibabel")

from meddx.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("volume") / "run"
    assert main(["train", "phantom-volumes:20", "--epochs", "25", "--seed", "1", "--out", str(out)]) == 0
    return out


def test_training_writes_a_volume_segmentation_package(run: Path) -> None:
    package = json.loads((run / "package.json").read_text())
    assert (package["modality"], package["task"]) == ("volume", "segmentation")
    assert len(package["splits"]["test"]) == 4 and not set(package["splits"]["test"]) & set(package["splits"]["train"])
    assert package["metrics"]["dice"]["value"] > 0.6, package["metrics"]


def test_evaluate_scores_the_held_out_phantoms(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(run), "phantom-volumes:20", "--n-boot", "50", "--out", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["n"] == 4 and result["split"] == "test"
    assert result["metrics"]["dice"]["value"] > 0.6
    assert "dice" in capsys.readouterr().out


def test_predict_a_nifti_volume_and_a_dicom_series(run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.outputs import read_seg
    from meddx.tasks.volume.phantoms import make_phantom, write_dicom_series

    volume, truth = make_phantom((24, 24, 24), n_lesions=1, rng=123)
    nifti = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.0, 1.0])), str(nifti))
    series = tmp_path / "series"
    write_dicom_series(volume * 100, series, spacing=(2.0, 1.0, 1.0))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    assert main(["predict", str(run), str(nifti), str(series), str(broken), "--explain-dir", str(out)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in results] == ["segmentation"] * 3
    on_nifti, on_series, on_broken = results
    saved = nib.load(on_nifti["mask"]["mask"])
    assert saved.shape == volume.shape and np.allclose(saved.affine, np.diag([1.5, 1.5, 2.0, 1.0]))
    dice = 2 * ((np.asarray(saved.dataobj) > 0) & (truth > 0)).sum() / ((np.asarray(saved.dataobj) > 0).sum() + truth.sum())
    assert dice > 0.6
    mask, classes, geometry = read_seg(on_series["mask"]["dicom_seg"])
    stored = np.asarray(nib.load(on_series["mask"]["mask"]).dataobj)
    assert classes == ["lesion"] and mask.shape == stored.shape == (24, 24, 24)
    assert np.array_equal(mask, stored)
    assert on_broken["decision"]["decision"] == "rejected" and on_broken["input_check"]["reasons"]
