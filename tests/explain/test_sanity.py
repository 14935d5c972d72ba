"""Sanity checks: parameter randomisation, deletion/insertion against random maps."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from meddx.exceptions import InvalidValueError

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")
nn = torch.nn

from meddx.explain import (  # noqa: E402 - after the importorskip
    CAM_METHODS,
    compute_cam,
    deletion_insertion,
    faithfulness,
    random_map_baseline,
    randomisation_test,
    randomize_weights,
    register_cam_method,
)
from meddx.explain import sanity  # noqa: E402
from meddx.models import create_model  # noqa: E402

# --------------------------------------------------------------------------- randomize_weights


class WithLooseParameter(nn.Module):
    """A parameter that no module's reset_parameters() covers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.bn(self.conv(x)).mean((2, 3)) * self.scale


def test_randomize_weights_changes_every_parameter_and_keeps_the_original(trained) -> None:
    model = trained.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    clone = randomize_weights(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert clone is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # original untouched
    for (name, p), (_, q) in zip(model.named_parameters(), clone.named_parameters()):
        if p.ndim > 1:  # conv / linear weights: freshly drawn
            assert not torch.allclose(p, q), name
    for m in clone.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert torch.equal(m.weight, torch.ones_like(m.weight))  # BatchNorm's own initialisation
    for m in model.modules():  # the trained model's statistics are learned ones
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_randomize_weights_is_deterministic_per_seed() -> None:
    model = create_model("cnn-tiny", 2, 1)
    a, b, c = randomize_weights(model, 1), randomize_weights(model, 1), randomize_weights(model, 2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_parameters_without_reset_get_a_normal_init() -> None:
    model = WithLooseParameter()
    clone = randomize_weights(model, seed=0)
    assert torch.equal(model.scale, torch.ones(2))
    assert not torch.equal(clone.scale, torch.ones(2))
    assert clone.scale.abs().max() < 0.2  # normal(0, 0.02)


# --------------------------------------------------------------------------- randomisation test


def test_randomised_model_maps_do_not_resemble_the_trained_ones(trained) -> None:
    rho = randomisation_test(trained.model, trained.x, "gradcam")
    positives = rho[trained.y == 1].mean()
    print(f"\nSpearman(trained, randomised) Grad-CAM: mean {rho.mean():.3f} "
          f"(class-1 images {positives:.3f}, class-0 images {rho[trained.y == 0].mean():.3f})")
    assert rho.shape == (len(trained.x),) and np.all(np.abs(rho) <= 1.0)
    assert rho.mean() < 0.5


def test_randomisation_test_flags_a_weight_agnostic_method(trained) -> None:
    """Positive control: a 'CAM' that only shows the input intensity gets rho = 1 and fails the check."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    class InputIntensity(GradCAM):
        def forward(self, input_tensor, targets, eigen_smooth=False):
            return scale_cam_image(input_tensor.detach()[:, 0].cpu().numpy())

    register_cam_method("input-intensity")(InputIntensity)
    try:
        rho = randomisation_test(trained.model, trained.x[:6], "input-intensity")
    finally:
        del CAM_METHODS["input-intensity"]
    assert np.allclose(rho, 1.0)


def test_randomisation_test_uses_the_trained_models_targets(trained, monkeypatch) -> None:
    seen = []
    real = sanity.compute_cam

    def spy(model, x, method, targets, *args, **kwargs):
        seen.append(np.asarray(targets).copy())
        return real(model, x, method, targets, *args, **kwargs)

    monkeypatch.setattr(sanity, "compute_cam", spy)
    with torch.no_grad():
        predicted = trained.model(trained.x[:5]).argmax(1).numpy()
    randomisation_test(trained.model, trained.x[:5])
    assert len(seen) == 2 and all(np.array_equal(t, predicted) for t in seen)


def test_constant_maps_count_as_zero_correlation() -> None:
    rng = np.random.default_rng(0)
    assert sanity._spearman(np.zeros((8, 8)), rng.random((8, 8))) == 0.0
    assert sanity._spearman(np.arange(64.0), np.arange(64.0)) == pytest.approx(1.0)
    assert sanity._spearman(np.arange(64.0), -np.arange(64.0)) == pytest.approx(-1.0)  # signed


# --------------------------------------------------------------------------- deletion / insertion


class SquareSum(nn.Module):
    """Logits (0, s * sum of the 6x6 square at rows/cols 4-9): class 1 lives exactly in the square."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        score = self.s * x[:, 0, 4:10, 4:10].sum(dim=(1, 2))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_deletion_of_the_true_evidence_drops_the_probability_at_once() -> None:
    x = torch.zeros(1, 1, 24, 24)
    x[0, 0, 4:10, 4:10] = 1.0  # logit 18: probability ~1
    truth = np.zeros((1, 24, 24), np.float32)
    truth[0, 4:10, 4:10] = 1.0
    result = deletion_insertion(SquareSum(), x, truth, targets=1, steps=16, baseline="zero")
    fractions = result["fractions"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and np.all(np.diff(fractions) > 0)
    deleted = fractions >= 36 / 576  # from the step where the whole square is gone
    assert result["deletion_curve"][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(result["deletion_curve"][0, deleted], 0.5)  # logit 0 -> softmax 0.5
    assert np.allclose(result["insertion_curve"][0, deleted], 1.0, atol=1e-6)
    assert result["insertion_curve"][0, 0] == pytest.approx(0.5)
    for kind in ("deletion", "insertion"):
        assert result[f"{kind}_auc"][0] == pytest.approx(np.trapezoid(result[f"{kind}_curve"][0], fractions))
    rand = random_map_baseline(SquareSum(), x, targets=1, steps=16, n_maps=3, baseline="zero")
    assert result["deletion_auc"][0] < rand["deletion_auc"][0] - 0.2
    assert result["insertion_auc"][0] > rand["insertion_auc"][0]


@pytest.mark.parametrize("baseline", ["blur", "mean", "zero"])
def test_curve_end_points_are_the_image_and_the_baseline(trained, baseline: str) -> None:
    x = trained.x[:3]
    cams = compute_cam(trained.model, x)
    result = deletion_insertion(trained.model, x, cams, steps=5, baseline=baseline)
    with torch.no_grad():
        probs = torch.softmax(trained.model(x), 1).numpy()
    picked = probs[np.arange(3), result["targets"]]
    assert np.array_equal(result["targets"], probs.argmax(1))
    assert np.allclose(result["deletion_curve"][:, 0], picked, atol=1e-5)
    assert np.allclose(result["insertion_curve"][:, -1], picked, atol=1e-5)
    assert np.allclose(result["deletion_curve"][:, -1], result["insertion_curve"][:, 0], atol=1e-5)
    auc = result["deletion_auc"]
    assert auc.shape == (3,) and np.all((auc >= 0) & (auc <= 1))


def test_deletion_insertion_leaves_the_model_mode(trained) -> None:
    model = copy.deepcopy(trained.model).train()
    deletion_insertion(model, trained.x[:2], np.random.default_rng(0).random((2, 24, 24)), steps=4)
    assert all(m.training for m in model.modules())


def test_maps_of_another_size_are_resized(trained) -> None:
    x = trained.x[:2]
    small = np.zeros((2, 6, 6), np.float32)
    small[:, 1:3, 1:3] = 1.0
    result = deletion_insertion(trained.model, x, small, steps=4)
    assert result["deletion_curve"].shape == (2, 5)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"baseline": "noise"}, "baseline"), ({"steps": 0}, "steps"), ({"cams": np.zeros((3, 24, 24))}, "cams"),
])
def test_bad_arguments_raise(trained, kwargs, field) -> None:
    args = {"cams": np.zeros((2, 24, 24)), **kwargs}
    with pytest.raises(InvalidValueError) as info:
        deletion_insertion(trained.model, trained.x[:2], **args)
    assert info.value.field == field
    if field == "baseline":
        assert "blur, mean, zero" in str(info.value)


def test_random_map_baseline_is_seeded(trained) -> None:
    x = trained.x[:2]
    a = random_map_baseline(trained.model, x, steps=4, n_maps=2, seed=5)
    b = random_map_baseline(trained.model, x, steps=4, n_maps=2, seed=5)
    assert np.array_equal(a["deletion_auc"], b["deletion_auc"])
    with pytest.raises(InvalidValueError):
        random_map_baseline(trained.model, x, n_maps=0)


def test_gradcam_beats_random_maps_on_deletion(trained) -> None:
    cams = compute_cam(trained.model, trained.x)
    summary = faithfulness(trained.model, trained.x, cams, steps=20, n_maps=5)
    print(f"\ndeletion AUC Grad-CAM {summary['deletion_auc']:.3f} vs random {summary['random_deletion_auc']:.3f} "
          f"(below random on {summary['deletion_below_random']:.0%} of images); insertion AUC "
          f"{summary['insertion_auc']:.3f} vs random {summary['random_insertion_auc']:.3f}")
    assert summary["n_images"] == len(trained.x)
    assert summary["deletion_auc"] < summary["random_deletion_auc"]
    assert summary["deletion_below_random"] > 0.5
