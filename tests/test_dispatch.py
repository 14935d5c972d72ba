"""One dispatch for every model: (modality, task) handlers looked up by data and by package."""

from __future__ import annotations

from pathlib import Path

import pytest

from meddx.exceptions import ConfigError
from meddx.modalities import (
    CLASSIFICATION,
    DETECTION,
    IMAGE,
    SEGMENTATION,
    call,
    get_handler,
    handler_for_data,
    handler_for_package,
    task_of_package,
)


@pytest.mark.parametrize(("data", "task", "expected"), [
    ("breastmnist", None, (IMAGE, CLASSIFICATION)),
    ("chase-db1-retina-vessel-seg", None, (IMAGE, SEGMENTATION)),
    ("bccd-blood-cell-detection", None, (IMAGE, DETECTION)),
    ("covid-cxr-ieee8023-lungbbox", None, (IMAGE, CLASSIFICATION)),
    ("covid-cxr-ieee8023-lungbbox", "detection", (IMAGE, DETECTION)),
    ("ecg-cinc2017-af", None, ("signal", CLASSIFICATION)),
    ("heart-disease-uci", None, ("tabular", CLASSIFICATION)),
    ("fusion:covid-cxr-ieee8023-lungbbox", None, ("fusion", CLASSIFICATION)),
])
def test_training_data_picks_its_handler(data: str, task: str | None, expected: tuple[str, str]) -> None:
    assert handler_for_data(data, task).key == expected


def test_a_task_no_handler_has_is_refused_naming_what_exists() -> None:
    with pytest.raises(ConfigError, match="no signal segmentation models") as err:
        handler_for_data("ecg-cinc2017-af", "segmentation")
    assert "image/segmentation" in str(err.value)
    with pytest.raises(ConfigError, match="unknown task 'masks'"):
        handler_for_data("breastmnist", "masks")


@pytest.mark.parametrize(("package", "key"), [
    ({}, (IMAGE, CLASSIFICATION)),  # packages older than the field
    ({"task": "binary classification"}, (IMAGE, CLASSIFICATION)),
    ({"modality": "signal", "task": "single-lead ECG rhythm classification (multi-class)"}, ("signal", CLASSIFICATION)),
    ({"modality": "image", "task": "segmentation"}, (IMAGE, SEGMENTATION)),
    ({"modality": "image", "task": "detection"}, (IMAGE, DETECTION)),
])
def test_a_package_names_its_handler(package: dict, key: tuple[str, str]) -> None:
    assert handler_for_package(package).key == key
    assert task_of_package(package) == key[1]


def test_every_handler_module_has_the_interface() -> None:
    from meddx.modalities import list_handlers

    for handler in list_handlers():
        module = handler.handler()
        for name in ("train", "evaluate", "predict"):
            assert callable(getattr(module, name, None)), f"{handler.module} lacks {name}"


def test_call_refuses_an_option_the_handler_does_not_take_by_name() -> None:
    def train(data: str, *, model: str | None = None, seed: int = 0) -> str:
        return f"{data}:{model}:{seed}"

    assert call(train, "x", seed=3) == "x:None:3"
    with pytest.raises(ConfigError, match="--batch-size does not apply to signal classification models"):
        call(train, "x", what="signal classification", batch_size=8)


def test_cli_train_refuses_image_options_for_a_record_model(capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    assert main(["train", "heart-disease-uci", "--lr", "0.1"]) != 0
    assert "--lr does not apply to tabular classification models" in capsys.readouterr().err


def test_cli_commands_do_not_branch_on_the_image_modality() -> None:
    cli = Path(__file__).resolve().parents[1] / "src" / "meddx" / "cli"
    for name in ("train.py", "evaluate.py", "predict.py", "report.py", "validate.py", "models.py"):
        text = (cli / name).read_text(encoding="utf-8")
        assert "!= IMAGE" not in text and "== IMAGE" not in text, name


def test_a_voc_folder_trains_a_detector_by_default(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation/>")
    assert handler_for_data(str(tmp_path)).key == (IMAGE, DETECTION)
    assert handler_for_data(str(tmp_path), "classification").key == (IMAGE, CLASSIFICATION)
