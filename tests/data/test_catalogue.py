"""The catalogue covers every set in the mirror; counts equal the mirror README's."""

from __future__ import annotations

from pathlib import Path

import pytest

from meddx.cli import main
from meddx.data import catalogue
from meddx.exceptions import DatasetNotFoundError

# Counts as the mirror's README.md states them (summary table and notes).
README_COUNTS: dict[str, dict[str, int]] = {
    "breastmnist": {"train": 546, "val": 78, "test": 156, "train:label=0": 147, "train:label=1": 399,
                    "val:label=0": 21, "val:label=1": 57, "test:label=0": 42, "test:label=1": 114},
    "pneumoniamnist": {"train": 4708, "val": 524, "test": 624, "train:label=0": 1214, "train:label=1": 3494,
                       "val:label=0": 135, "val:label=1": 389, "test:label=0": 234, "test:label=1": 390},
    "brain-tumor-mri-navoneel": {"all": 253, "label=yes": 155, "label=no": 98},
    "covid-cxr-ieee8023-lungbbox": {"images": 609, "patients": 360, "boxes": 1218, "images_joined_to_metadata": 605},
    "bccd-blood-cell-detection": {"train": 205, "val": 87, "trainval": 292, "test": 72, "images": 364,
                                  "annotations": 364},
    "chase-db1-retina-vessel-seg": {"images": 28, "masks_1stHO": 28, "masks_2ndHO": 28, "children": 14},
    "ecg-mitbih-arrhythmia": {"records": 12, "beats": 25311, "beats:pvc": 2011},
    "ecg-cinc2017-af": {"records": 1600, "records_on_disk": 1600, "label=N": 750, "label=A": 375, "label=O": 375,
                        "label=~": 100},
    "ppg-heartpy": {"data.csv": 2483, "data2.csv": 15000, "data3.csv": 68476},
    "actigraphy-pyactigraphy-samples": {"test_sample_rpx_eng.csv:epochs": 20160,
                                        "sample-timeSeries.csv.gz:epochs": 16841,
                                        "example_01.AWD:epochs": 18401, "example_04.AWD:epochs": 31299},
    "heart-disease-uci": {"all": 597, "site=Cleveland": 304, "site=Hungary": 293, "num=0": 352, "num=1": 161,
                          "num=2": 36, "num=3": 35, "num=4": 13},
    "heart-failure-clinical-records": {"all": 299, "DEATH_EVENT=0": 203, "DEATH_EVENT=1": 96},
    "pima-indians-diabetes": {"all": 768, "Outcome=0": 500, "Outcome=1": 268},
    "breast-cancer-wisconsin-diagnostic": {"all": 569, "target=0": 212, "target=1": 357},
    "stroke-kaggle": {"all": 5110, "stroke=0": 4861, "stroke=1": 249},
    "format-samples": {"dicom": 6, "nifti": 3, "edf": 2, "wfdb": 7, "hl7v2": 7, "fhir": 3},
}


def test_catalogue_covers_every_mirror_folder(mirror: Path) -> None:
    folders = {p.name for p in mirror.iterdir() if p.is_dir()}
    assert folders == {s.name for s in catalogue.list_datasets()}
    assert set(README_COUNTS) == folders


@pytest.mark.parametrize("name", sorted(README_COUNTS))
def test_counts_match_readme(name: str) -> None:
    counts = catalogue.count_samples(name)
    for key, expected in README_COUNTS[name].items():
        assert counts[key] == expected, f"{name} {key}"


@pytest.mark.parametrize("name", sorted(README_COUNTS))
def test_data_info_verifies_checksums(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", name]) == 0
    out = capsys.readouterr().out
    assert "checksums: OK" in out
    spec = catalogue.get_dataset(name)
    assert spec.licence in out and spec.homepage in out


def test_every_entry_names_its_public_source() -> None:
    for spec in catalogue.list_datasets():
        assert spec.homepage.startswith("https://")
        assert spec.licence and spec.citation and spec.task and spec.modality
        assert spec.downloadable or spec.manual_download, spec.name
        for remote in spec.remotes:
            assert remote.url.startswith("https://"), remote.url


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(DatasetNotFoundError, match="Did you mean breastmnist"):
        catalogue.get_dataset("breastmnst")


def test_cli_unknown_dataset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "nope-set"]) == 2
    assert "no data set named 'nope-set'" in capsys.readouterr().err


def test_data_list_shows_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for spec in catalogue.list_datasets():
        assert spec.name in out


def test_data_fetch_prints_the_verified_folder(mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "breastmnist"]) == 0
    assert capsys.readouterr().out.strip() == str(mirror / "breastmnist")
