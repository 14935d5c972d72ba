"""Model cards and the local registry: register, list, get latest, resolve name[:version], `meddx models`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.exceptions import ConfigError, ModelError
from meddx.inference import Pipeline
from meddx.packaging import (
    get,
    list_models,
    read_package,
    register,
    registry_dir,
    render_card,
    resolve,
)
from tests._factories import make_labelled_pngs


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained package (cnn-tiny, 2 epochs on 24 generated 16 px PNGs)."""
    from meddx.training import TrainConfig, train

    base = tmp_path_factory.mktemp("pkg")
    data = make_labelled_pngs(base / "scans", n=24, size=16)
    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, out=str(base / "run"), threads=1),
                 progress=False)


def _copy_with_version(run: Path, target: Path, version: str, *, new_weights: bool = False) -> Path:
    shutil.copytree(run, target)
    package = read_package(target)
    package["version"] = version
    (target / "package.json").write_text(json.dumps(package))
    if new_weights:
        with open(target / "model.safetensors", "ab") as handle:  # other bytes, same loadable file
            handle.write(b" ")
    return target


def test_register_copies_the_package_with_card_and_checksum(run: Path) -> None:
    package = read_package(run)
    target = register(run)
    assert target == registry_dir() / package["name"] / package["version"]
    for name in ("package.json", "model.safetensors", "config.json", "history.jsonl", "MODEL_CARD.md"):
        assert (target / name).is_file(), name
    registered = read_package(target)
    assert len(registered["files"]["model.safetensors"]) == 64
    assert registered["registry"]["source"] == str(run.resolve())
    assert "not for primary diagnosis" in (target / "MODEL_CARD.md").read_text().lower()
    assert register(run) == target  # same weights again: the same entry
    assert read_package(run) == package


def test_taken_version_with_other_weights_is_refused(run: Path, tmp_path: Path) -> None:
    register(run)
    changed = _copy_with_version(run, tmp_path / "changed", read_package(run)["version"], new_weights=True)
    with pytest.raises(ModelError, match="already registered") as err:
        register(changed)
    assert "--overwrite" in str(err.value)
    target = register(changed, overwrite=True)
    assert read_package(target)["registry"]["source"] == str(changed.resolve())


def test_latest_version_is_numeric_aware_and_names_resolve(run: Path, tmp_path: Path) -> None:
    name = read_package(run)["name"]
    for version in ("2", "10", "9"):
        register(_copy_with_version(run, tmp_path / version, version))
    assert get(name) == registry_dir() / name / "10"
    assert get(name, "9") == registry_dir() / name / "9"
    rows = [r for r in list_models() if r["name"] == name]
    assert [r["version"] for r in rows] == ["2", "9", "10"] and rows[-1]["latest"]
    assert resolve(f"{name}:2") == registry_dir() / name / "2"
    assert resolve(run) == run  # a path always wins
    with pytest.raises(ModelError, match="no version '3'") as err:
        resolve(f"{name}:3")
    assert "2, 9, 10" in str(err.value)
    with pytest.raises(ModelError, match="no folder 'unknown-model'"):
        resolve("unknown-model")
    with pytest.raises(ModelError, match="no such model folder"):
        resolve(tmp_path / "missing")


def test_pipeline_loads_by_name_and_predicts(run: Path, tmp_path: Path) -> None:
    target = register(run, name="lesion-detector", version="1.0")
    image = tmp_path / "x.png"
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(image)
    pipe = Pipeline.load("lesion-detector:1.0")
    assert pipe.folder == target
    [result] = pipe.predict(image)
    assert result["model"] == "lesion-detector" and result["model_version"] == "1.0"
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert Pipeline.load("lesion-detector").folder == target


def test_names_unsafe_for_the_registry_are_refused(run: Path) -> None:
    with pytest.raises(ConfigError, match="--name"):
        register(run, name="../escape")
    with pytest.raises(ConfigError):
        register(run, version="1/2")


def test_card_from_a_minimal_package_and_with_metrics() -> None:
    bare = render_card({})
    assert "not for primary diagnosis" in bare.lower() and "No held-out test metrics" in bare
    package = {
        "name": "breastmnist-cnn-tiny", "version": "7", "architecture": "cnn-tiny", "num_classes": 2,
        "class_names": ["malignant", "normal, benign"],
        "preprocess": {"in_chans": 1, "size": 28, "mean": 0.33, "std": 0.2},
        "data": {"source": "breastmnist", "dataset": "breastmnist", "licence": "CC BY 4.0", "train": 546, "val": 78},
        "metrics": {"data": "breastmnist", "split": "test", "n": 156, "n_boot": 1000, "positive_class": "malignant",
                    "values": {"auc": {"value": 0.8, "low": 0.7, "high": 0.9},
                               "npv": {"value": None, "low": None, "high": None}}},
    }
    card = render_card(package)
    assert "| AUC (ROC) | 0.800 | 0.700 – 0.900 |" in card and "| NPV | n/a | n/a – n/a |" in card
    assert "CC BY 4.0" in card and "train 546, validation 78" in card and "28×28" in card
    assert "MedMNIST v2" in card  # citation taken from the catalogue
    nc = render_card({"data": {"licence": "CC BY-NC-SA 4.0"}})
    assert "may restrict commercial" in nc


def test_models_cli(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    assert "no models registered" in capsys.readouterr().out
    assert main(["models", "register", str(run), "--name", "demo", "--version", "3"]) == 0
    assert capsys.readouterr().out.strip() == "demo:3"
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "demo:3 *" in listed and "cnn-tiny" in listed and "lesion, normal" in listed
    assert main(["models", "show", "demo"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# Model card: demo") and "## Intended use" in shown
    assert main(["models", "show", "demo:4"]) == 2
    assert "no version '4'" in capsys.readouterr().err
