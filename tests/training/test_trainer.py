"""Training options: resume, linear probe, gradual unfreezing, sampling, label fractions, transfer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meddx.exceptions import ConfigError
from meddx.models import create_model
from meddx.training import TrainConfig, fit, train
from meddx.training.trainer import head_module, subsample_labels
from tests._factories import make_labelled_pngs as _make_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("data") / "imgs", n=40)


def _arrays(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.random((n, 1, 16, 16)).astype(np.float32) * 0.3
    x[y == 1, :, 4:12, 4:12] += 0.6
    return x, y.astype(np.int64)


def test_resume_continues_where_it_stopped(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import meddx.evaluation.metrics as metrics

    real = metrics.compute_metrics
    calls = {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:  # the machine "dies" during epoch 3's validation
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(metrics, "compute_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(folder), model="cnn-tiny", epochs=4, patience=10, out=str(run)), progress=False)
    monkeypatch.setattr(metrics, "compute_metrics", real)
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    config = TrainConfig(**{**json.loads((run / "config.json").read_text()), "resume": str(run)})
    train(config, progress=False)
    epochs = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="same epochs"):
        train(TrainConfig(**{**config.__dict__, "epochs": 9}), progress=False)


def test_linear_probe_keeps_the_backbone(tmp_path: Path) -> None:
    x, y = _arrays()
    model = create_model("cnn-tiny", 2, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, x, y, x, y, TrainConfig(data="-", model="cnn-tiny", epochs=2, freeze="backbone", augment=False))
    after = model.state_dict()
    head_keys = {f"head.{k}" for k in head_module(model).state_dict()}
    changed = {k for k in before if not torch.equal(before[k], after[k]) and before[k].dtype.is_floating_point}
    assert changed and changed <= head_keys


@pytest.mark.parametrize(("epochs", "unfrozen"), [(2, False), (3, True)])
def test_gradual_unfreezing_trains_the_backbone_later(epochs: int, unfrozen: bool) -> None:
    x, y = _arrays()
    model = create_model("cnn-tiny", 2, 1)
    config = TrainConfig(data="-", model="cnn-tiny", epochs=epochs, unfreeze_epoch=2, augment=False, patience=10)
    result = fit(model, x, y, x, y, config)
    assert result.epochs_run == epochs
    assert model.features[0][0].weight.requires_grad is unfrozen
    assert head_module(model)[1].weight.requires_grad


def test_balanced_sampler_and_cosine_schedule_learn() -> None:
    x, y = _arrays(60)
    model = create_model("cnn-tiny", 2, 1)
    config = TrainConfig(data="-", model="cnn-tiny", epochs=8, lr=0.01, sampler="balanced", schedule="cosine",
                         patience=8)
    result = fit(model, x, y, x, y, config)
    assert result.best_val_auc > 0.9


def test_label_fraction_is_stratified_and_recorded(folder: Path, tmp_path: Path) -> None:
    run = train(TrainConfig(data=str(folder), model="cnn-tiny", epochs=1, label_fraction=0.5, out=str(tmp_path / "r")),
                progress=False)
    package = json.loads((run / "package.json").read_text())
    assert package["data"]["label_fraction"] == 0.5
    labels = np.array([0] * 30 + [1] * 10)
    keep = subsample_labels(labels, 0.1, seed=0)
    assert sorted(np.bincount(labels[keep]).tolist()) == [2, 3]


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="sampler"):
        TrainConfig(data="x", sampler="magic").validate()
    with pytest.raises(ConfigError, match="label_fraction"):
        TrainConfig(data="x", label_fraction=0).validate()


def test_pretrained_run_folder_transfers_the_trunk(folder: Path, tmp_path: Path) -> None:
    run = train(TrainConfig(data=str(folder), model="cnn-tiny", epochs=1, out=str(tmp_path / "src")), progress=False)
    target = create_model("cnn-tiny", 5, 1, pretrained=run)  # another task: 5 classes
    from safetensors.torch import load_file

    saved = load_file(str(run / "model.safetensors"))
    assert torch.equal(target.features[0][0].weight, saved["features.0.0.weight"])
    assert target.head[1].weight.shape[0] == 5  # the 2-class head was not forced in


def test_imagenet_weights_through_timm_from_a_state_dict_file(tmp_path: Path) -> None:
    """The ImageNet code path (timm pretrained_cfg file overlay), fed a saved state dict offline."""
    import timm

    rgb = timm.create_model("resnet18", num_classes=1000, in_chans=3)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(rgb.state_dict(), path)
    grey = create_model("resnet18", num_classes=2, in_chans=1, imagenet_file=str(path))
    expected = rgb.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(grey.conv1.weight, expected, atol=1e-6)  # RGB stem summed to one channel
    assert torch.equal(grey.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert grey.fc.out_features == 2


def test_ema_keeps_the_averaged_weights_and_step_schedule_decays() -> None:
    x, y = _arrays()
    torch.manual_seed(0)
    model = create_model("cnn-tiny", 2, 1)
    config = TrainConfig(data="-", model="cnn-tiny", epochs=4, lr=1e-2, schedule="step", ema=0.9, augment=False,
                         patience=10, label_smoothing=0.1)
    result = fit(model, x, y, x, y, config)
    assert result.best_val_auc > 0.9
    # lr is cut ×0.1 at 50% and ×0.01 at 75% of the steps
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(1e-2) and lrs[1] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)


def test_ema_model_differs_from_raw_weights() -> None:
    from meddx.training.trainer import predict_proba

    x, y = _arrays()
    results = {}
    for decay in (0.0, 0.95):
        torch.manual_seed(0)
        model = create_model("cnn-tiny", 2, 1)
        fit(model, x, y, x, y, TrainConfig(data="-", model="cnn-tiny", epochs=3, lr=1e-2, ema=decay, batch_size=8,
                                           augment=False, patience=10))
        results[decay] = predict_proba(model, x, 0.0, 1.0)
    assert np.abs(results[0.0] - results[0.95]).max() > 1e-3


@pytest.mark.parametrize(("field", "value"), [("ema", 1.0), ("label_smoothing", -0.1), ("schedule", "linear")])
def test_bad_training_options_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(data="-", **{field: value}).validate()
