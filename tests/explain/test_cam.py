"""compute_cam / default_target_layer: right layer, right place, model left as found."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from meddx.exceptions import InvalidValueError, ModelError
from tests.explain.conftest import SQUARE, SQUARE_SHARE

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")
nn = torch.nn

from meddx.explain import (  # noqa: E402 - after the importorskip
    CAM_METHODS,
    compute_cam,
    default_target_layer,
    energy_in_boxes,
    list_cam_methods,
    pointing_game,
)
from meddx.models import create_model  # noqa: E402

HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
)


def _hooks(model: nn.Module) -> dict[str, int]:
    """Number of registered hooks per (module, kind), non-empty ones only."""
    found = {}
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                found[f"{name or '<root>'}.{attr}"] = len(hooks)
    return found


def test_trained_model_detects_the_square(trained) -> None:
    assert trained.accuracy >= 0.9


def test_gradcam_energy_lies_in_the_square(trained) -> None:
    positives = trained.x[trained.y == 1]
    cams = compute_cam(trained.model, positives, "gradcam", targets=1)
    energy = float(np.mean([energy_in_boxes(c, SQUARE) for c in cams]))
    hits = float(np.mean([pointing_game(c, SQUARE, tolerance=4) for c in cams]))
    print(f"\nGrad-CAM energy in the square (class-1 images): {energy:.3f} "
          f"= {energy / SQUARE_SHARE:.2f}x its area share {SQUARE_SHARE:.4f}; pointing game (4 px) {hits:.2f}")
    assert energy > 1.5 * SQUARE_SHARE
    assert hits >= 0.75


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_every_registered_method_runs_on_cnn_tiny(trained, method: str) -> None:
    assert method in list_cam_methods()
    x = trained.x[:4]
    cams = compute_cam(trained.model, x, method)
    assert cams.shape == (4, 24, 24) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert np.allclose(cams.max(axis=(1, 2)), 1.0, atol=1e-3)  # min-max scaled, not all-zero


def test_package_exports_resolve() -> None:
    import meddx.explain

    for name in meddx.explain.__all__:
        assert getattr(meddx.explain, name) is not None, name
    assert callable(meddx.explain.overlay)  # the function, not the submodule of the same name


def test_registry_lists_the_three_methods() -> None:
    assert {"gradcam", "gradcam++", "scorecam"} <= set(list_cam_methods())
    assert CAM_METHODS["gradcam"].__name__ == "GradCAM"
    assert CAM_METHODS["gradcam++"].__name__ == "GradCAMPlusPlus"
    from pytorch_grad_cam import ScoreCAM

    assert issubclass(CAM_METHODS["scorecam"], ScoreCAM)  # the library's, minus its progress bar


def test_quiet_scorecam_matches_the_library_and_prints_nothing(trained, capfd) -> None:
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = copy.deepcopy(trained.model), trained.x[:2]
    ours = compute_cam(model, x, "scorecam", targets=[1, 0])
    assert capfd.readouterr().err == ""
    from meddx.explain.cam import small_work_threads

    with small_work_threads(0), ScoreCAM(model=model, target_layers=[default_target_layer(model)]) as cam:
        cam.batch_size = 8
        theirs = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(0)])
    assert np.allclose(ours, theirs, atol=1e-5)


def test_unknown_method_lists_the_known_ones(trained) -> None:
    with pytest.raises(InvalidValueError) as info:
        compute_cam(trained.model, trained.x[:1], "gradcm")
    text = str(info.value)
    assert "gradcm" in text and "Did you mean gradcam" in text
    for name in list_cam_methods():
        assert name in text


def test_default_targets_are_the_predicted_classes(trained) -> None:
    x = trained.x[:6]
    with torch.no_grad():
        predicted = trained.model(x).argmax(1).numpy()
    assert np.array_equal(compute_cam(trained.model, x), compute_cam(trained.model, x, targets=predicted))
    other = compute_cam(trained.model, x, targets=1 - predicted)
    assert not np.allclose(other, compute_cam(trained.model, x))


def test_batching_does_not_change_the_maps(trained) -> None:
    x = trained.x[:7]
    whole = compute_cam(trained.model, x, batch_size=32)
    assert np.allclose(compute_cam(trained.model, x, batch_size=3), whole, atol=1e-6)
    assert np.allclose(compute_cam(trained.model, x.numpy()), whole, atol=1e-6)  # numpy input


@pytest.mark.parametrize("targets", [2, [0, 1, 5], [0, 1], [[0], [1], [0]], [0.5, 1, 0]])
def test_bad_targets_raise(trained, targets) -> None:
    with pytest.raises(InvalidValueError, match="targets|target class"):
        compute_cam(trained.model, trained.x[:3], targets=targets)


@pytest.mark.parametrize("x", [np.zeros((24, 24), np.float32), np.full((1, 1, 24, 24), np.nan, np.float32)])
def test_bad_inputs_raise(trained, x) -> None:
    with pytest.raises(InvalidValueError):
        compute_cam(trained.model, x)


def test_model_is_left_as_found(trained) -> None:
    """Train mode, partial freezing and existing gradients survive; no hook stays; CAM uses eval mode."""
    model = copy.deepcopy(trained.model)
    x = trained.x[:4]
    reference = compute_cam(model, x, targets=1)  # model in eval mode
    model.train()
    model.features[0].eval()  # a mixed state, as with frozen BatchNorm in fine-tuning
    for p in model.features[0].parameters():
        p.requires_grad_(False)
    sentinel = {name: torch.full_like(p, 7.0) for name, p in model.named_parameters() if p.requires_grad}
    for name, p in model.named_parameters():
        p.grad = sentinel.get(name)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}

    for method in list_cam_methods():
        cams = compute_cam(model, x, method, targets=1)
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        for name, p in model.named_parameters():
            assert p.grad is sentinel.get(name), name
            assert torch.equal(p, weights[name]), name
        assert _hooks(model) == {}
        layer = default_target_layer(model)
        assert not layer._forward_hooks and not layer._backward_hooks and not layer._forward_pre_hooks
        if method == "gradcam":
            assert np.allclose(cams, reference, atol=1e-6)  # BatchNorm used its running stats


def test_works_on_a_fully_frozen_model(trained) -> None:
    model = copy.deepcopy(trained.model)
    expected = compute_cam(model, trained.x[:4], "gradcam++")
    for p in model.parameters():
        p.requires_grad_(False)
    cams = compute_cam(model, trained.x[:4], "gradcam++")
    assert np.allclose(cams, expected, atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_works_inside_no_grad_and_inference_mode(trained) -> None:
    expected = compute_cam(trained.model, trained.x[:2])
    with torch.no_grad():
        assert np.allclose(compute_cam(trained.model, trained.x[:2]), expected, atol=1e-6)
    with torch.inference_mode():
        assert np.allclose(compute_cam(trained.model, trained.x[:2]), expected, atol=1e-6)


def test_non_spatial_layer_fails_cleanly_without_leaving_hooks(trained) -> None:
    model = copy.deepcopy(trained.model)
    model.train()
    with pytest.raises(ModelError, match="target layer must output"):
        compute_cam(model, trained.x[:2], target_layer=model.head[1])  # a Linear: (N, C) output
    assert _hooks(model) == {}
    assert model.training


# --------------------------------------------------------------------------- target layers


def _forward_shape(model: nn.Module, layer: nn.Module, x) -> tuple[int, ...]:
    seen = {}

    def record(module, args, output) -> None:
        seen["shape"] = tuple(output.shape)

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    return seen["shape"]


@pytest.mark.parametrize("name", ["cnn-tiny", "cnn-small"])
def test_default_layer_of_the_small_cnns(name: str) -> None:
    model = create_model(name, 2, 1)
    layer = default_target_layer(model)
    assert layer is model.features[4]  # the third conv block, before global pooling
    assert any(isinstance(m, nn.Conv2d) for m in layer.modules())
    assert _forward_shape(model, layer, torch.zeros(1, 1, 24, 24)) == (1, model.num_features, 6, 6)


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18-28", lambda m: m.layer4),
    ("mobilenetv3-small", lambda m: m.blocks[-1]),
])
def test_default_layer_of_timm_backbones(name: str, expected) -> None:
    pytest.importorskip("timm")
    model = create_model(name, 2, 1)
    layer = default_target_layer(model)
    assert layer is expected(model)
    shape = _forward_shape(model, layer, torch.zeros(1, 1, 32, 32))
    assert len(shape) == 4 and shape[0] == 1 and shape[2] >= 1 and shape[3] >= 1


def test_fallback_is_the_last_conv() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    assert default_target_layer(model) is model[2]
    cams = compute_cam(model, torch.randn(2, 1, 16, 16))
    assert cams.shape == (2, 16, 16)


def test_model_without_conv_raises_naming_its_class() -> None:
    class TinyMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ModelError, match="TinyMLP"):
        default_target_layer(TinyMLP())
