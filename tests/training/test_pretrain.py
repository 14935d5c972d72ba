"""`meddx pretrain`: task loaders on the mirror, a 1-epoch cnn-tiny package, and loading it with --pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.cli import main
from meddx.exceptions import ConfigError
from meddx.training.pretrain_data import (
    PRETRAIN_TARGETS,
    TASKS,
    balanced_cap,
    holdout_mask,
    load_task,
)

CAP = 64


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """One pretraining run through the CLI: cnn-tiny, 28 px, 1 epoch, 64 images per task."""
    base = tmp_path_factory.mktemp("pretrain")
    run = base / "backbone"
    with pytest.MonkeyPatch.context() as patch:  # module scope: the autouse per-test env is not set yet
        patch.setenv("MEDDX_DATA_MIRROR", str(mirror))
        patch.setenv("MEDDX_CACHE_DIR", str(base / "cache"))
        patch.setenv("MEDDX_HOME", str(base / "home"))
        code = main(["pretrain", "--model", "cnn-tiny", "--size", "28", "--epochs", "1", "--max-per-task", str(CAP),
                     "--batch-size", "60", "--out", str(run), "--no-progress"])
    assert code == 0
    return run


def test_package_is_complete(package: Path) -> None:
    for name in ("model.safetensors", "heads.safetensors", "package.json", "config.json", "history.jsonl",
                 "train.log"):
        assert (package / name).is_file(), name
    meta = json.loads((package / "package.json").read_text())
    assert meta["format"] == "meddx-model/1" and meta["kind"] == "backbone"
    assert meta["architecture"] == "cnn-tiny"
    assert meta["preprocess"]["in_chans"] == 1 and meta["preprocess"]["size"] == 28
    assert [t["name"] for t in meta["tasks"]] == list(TASKS)
    for task in meta["tasks"]:
        assert task["train"] + task["heldout"] == sum(task["counts"].values()) <= CAP
        assert 0.0 <= task["heldout_accuracy"] <= 1.0 and task["licence"]
        assert task["dataset"] not in PRETRAIN_TARGETS
    assert set(meta["excluded_datasets"]) == set(PRETRAIN_TARGETS)
    assert meta["training"]["seconds"] > 0
    history = [json.loads(line) for line in (package / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and "heldout_acc_bccd-cells" in history[0]


def test_pretrained_loads_trunk_not_head(package: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from meddx.models import create_model
    from meddx.models.registry import load_pretrained

    saved = load_file(str(package / "model.safetensors"))
    assert saved and not any(k.startswith("head.") for k in saved)
    torch.manual_seed(1)
    fresh_head = create_model("cnn-tiny", 2, 1).state_dict()["head.1.weight"]
    torch.manual_seed(1)
    model = create_model("cnn-tiny", 2, 1, pretrained=package)
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state["head.1.weight"], fresh_head)  # the new head keeps its initialisation
    report = load_pretrained(create_model("cnn-tiny", 5, 1), package)
    assert sorted(report["loaded"]) == sorted(saved) and not report["skipped"] and not report["adapted"]


def test_grey_stem_adapts_to_rgb_model(package: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from meddx.models import create_model
    from meddx.models.registry import load_pretrained

    stem = "features.0.0.weight"
    grey = load_file(str(package / "model.safetensors"))[stem]
    model = create_model("cnn-tiny", 2, 3)
    report = load_pretrained(model, package)
    assert report["adapted"] == [stem]
    assert torch.allclose(model.state_dict()[stem].sum(dim=1, keepdim=True), grey, atol=1e-6)


@pytest.mark.parametrize("name", list(TASKS))
def test_task_loader(name: str, mirror: Path) -> None:
    task = load_task(name, size=28, cap=CAP)
    assert task.images.dtype == np.uint8 and task.images.shape[1:] == (28, 28)
    assert task.labels.dtype == np.int64 and len(task.labels) == len(task.images) == len(task.groups) <= CAP
    assert set(np.unique(task.labels)) == set(range(len(task.class_names)))  # every class present
    assert task.dataset not in PRETRAIN_TARGETS
    assert task.images.std() > 5  # real pictures, not blank crops
    if name == "chase-vessels":  # groups are children: both eyes together, 14 children
        assert len(set(task.groups)) <= 14 and all(g.startswith("Image_") for g in task.groups)


def test_task_contents_follow_the_readme(mirror: Path) -> None:
    cells = load_task("bccd-cells", size=32, cap=300)
    assert cells.class_names == ["RBC", "WBC", "Platelets"] and cells.flip
    assert min(cells.counts().values()) == 100  # balanced cap: 300 // 3 each (361 platelets, 372 WBC)
    assert all(g.startswith("BloodImage_") for g in cells.groups)
    full = load_task("covid-finding", size=16, cap=None)
    assert full.counts() == {"other": 97, "COVID-19": 423}  # 609 images minus todo/Unknown/unjoined
    assert not full.flip
    pneumonia = load_task("pneumoniamnist", size=28, cap=None)
    assert pneumonia.counts() == {"normal": 1214, "pneumonia": 3494}  # the train split, and only it


def test_targets_are_refused(mirror: Path) -> None:
    for target in PRETRAIN_TARGETS:
        with pytest.raises(ConfigError, match="never used for pretraining"):
            load_task(target)
    with pytest.raises(ConfigError, match="excluded"):
        load_task("pneumoniamnist", exclude=["pneumoniamnist"])
    assert main(["pretrain", "--tasks", "breastmnist", "--no-progress"]) == 2


def test_balanced_cap_and_holdout() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    keep = balanced_cap(labels, 40, np.random.default_rng(0))
    assert len(keep) == 40 and np.sum(labels[keep] == 1) == 10
    groups = np.array([f"p{i // 3}" for i in range(300)])
    held = holdout_mask(groups, 0.15, "x")
    assert 0.05 < held.mean() < 0.3
    assert not set(groups[held]) & set(groups[~held])  # whole patients on one side
    assert np.array_equal(held, holdout_mask(groups, 0.15, "x"))  # stable


def test_a_backbone_cannot_predict_before_fine_tuning(tmp_path: Path) -> None:
    from meddx.exceptions import ModelError
    from meddx.inference import Pipeline

    (tmp_path / "package.json").write_text('{"format": "meddx-model/1", "kind": "backbone", "architecture": "cnn-tiny"}')
    with pytest.raises(ModelError, match="Fine-tune it first"):
        Pipeline.load(tmp_path)
