"""`meddx pretrain --objective simclr`: a tiny self-supervised run on the mirror, its package and its use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meddx.cli import main
from meddx.exceptions import ConfigError
from meddx.training.pretrain import PretrainConfig
from meddx.training.pretrain_data import PRETRAIN_TARGETS

CAP = 48


@pytest.fixture(scope="module")
def ssl_package(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """cnn-tiny, 28 px, 6 epochs over 48 images per task plus 48 unlabelled PneumoniaMNIST images."""
    base = tmp_path_factory.mktemp("simclr")
    run = base / "backbone"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDDX_DATA_MIRROR", str(mirror))
        patch.setenv("MEDDX_CACHE_DIR", str(base / "cache"))
        patch.setenv("MEDDX_HOME", str(base / "home"))
        code = main(["pretrain", "--objective", "simclr", "--model", "cnn-tiny", "--size", "28", "--epochs", "6",
                     "--max-per-task", str(CAP), "--batch-size", "24", "--lr", "0.01",
                     "--tasks", "pneumoniamnist,bccd-cells", "--unlabelled", "pneumoniamnist",
                     "--out", str(run), "--no-progress"])
    assert code == 0
    return run


def test_simclr_package_is_a_backbone(ssl_package: Path) -> None:
    for name in ("model.safetensors", "package.json", "config.json", "history.jsonl", "train.log"):
        assert (ssl_package / name).is_file(), name
    meta = json.loads((ssl_package / "package.json").read_text())
    assert meta["kind"] == "backbone" and meta["architecture"] == "cnn-tiny"
    assert "SimCLR" in meta["objective"] and "labels unused" in meta["objective"]
    assert [p["source"] for p in meta["pool"]] == ["task:pneumoniamnist", "task:bccd-cells", "unlabelled:pneumoniamnist"]
    assert all(p["images"] == CAP for p in meta["pool"])
    assert set(meta["excluded_datasets"]) == set(PRETRAIN_TARGETS)
    for task in meta["tasks"]:
        assert 0.0 <= task["probe_balanced_accuracy"] <= 1.0 and task["probe_heldout"] > 0


def test_simclr_loss_falls(ssl_package: Path) -> None:
    """The contrastive loss must fall: views of one image become easier to match than the other images."""
    history = [json.loads(line) for line in (ssl_package / "history.jsonl").read_text().splitlines()]
    assert len(history) == 6
    assert history[-1]["loss"] < history[0]["loss"] - 0.1


def test_simclr_trunk_fine_tunes(ssl_package: Path) -> None:
    """`--pretrained` loads every trunk weight into the cropping variant (same keys) and leaves its head new."""
    import torch
    from safetensors.torch import load_file

    from meddx.models import create_model
    from meddx.models.registry import load_pretrained

    model = create_model("cnn-tiny-crop", num_classes=2, in_chans=1)
    report = load_pretrained(model, ssl_package)
    trunk = load_file(str(ssl_package / "model.safetensors"))
    assert len(report["loaded"]) == len(trunk) and not report["skipped"]
    for key, value in trunk.items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize(("changes", "field"), [
    ({"objective": "mae"}, "objective"),
    ({"unlabelled": ["pneumoniamnist"]}, "unlabelled"),
    ({"objective": "simclr", "ssl_temperature": 0.0}, "ssl_temperature"),
])
def test_config_errors_name_the_field(changes: dict, field: str) -> None:
    from meddx.training.pretrain import _check

    with pytest.raises(ConfigError) as info:
        _check(PretrainConfig(**changes))
    assert info.value.field == field


def test_targets_stay_out_of_the_unlabelled_pool(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.training.selfsupervised import unlabelled_pool

    monkeypatch.setenv("MEDDX_DATA_MIRROR", str(mirror))
    config = PretrainConfig(objective="simclr", tasks=["bccd-cells"], unlabelled=["breastmnist"], size=28,
                            max_per_task=8)
    with pytest.raises(ConfigError, match="excluded") as info:
        unlabelled_pool(config)
    assert info.value.field == "unlabelled"
