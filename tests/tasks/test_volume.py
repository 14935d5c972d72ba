"""3-D models on phantoms: the segmenter and classifier learn, the slice-wise fallback stacks right,
and NIfTI files and DICOM series run end to end through the data layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from meddx.exceptions import ConfigError  # noqa: E402
from meddx.tasks.volume.inference import is_2d, load_volume, predict_volume, slicewise  # noqa: E402
from meddx.tasks.volume.networks import classifier_3d, segmenter_2d, segmenter_3d  # noqa: E402
from meddx.tasks.volume.phantoms import make_phantom, phantom_dataset, write_dicom_series  # noqa: E402
from meddx.tasks.volume.training import (  # noqa: E402
    dice,
    fit_classifier,
    fit_segmenter,
    predict_mask,
    predict_proba,
)

SHAPE = (16, 16, 16)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def segmenter() -> Any:
    volumes, masks, _ = phantom_dataset(32, SHAPE, positive_fraction=1.0, seed=0)
    return fit_segmenter(volumes, masks, epochs=12, seed=0, time_limit_s=20)


def test_phantom_masks_are_exact_and_labels_follow_lesions() -> None:
    volume, mask = make_phantom(SHAPE, n_lesions=1, noise=0.0, rng=3)
    assert mask.sum() > 0
    assert np.all(volume[mask == 1] > volume[mask == 0].max())  # without noise the lesion is the bright part
    _, masks, labels = phantom_dataset(20, SHAPE, seed=1)
    assert set(labels) == {0, 1}
    assert np.array_equal(labels, (masks.reshape(20, -1).max(axis=1) > 0).astype(int))


def test_segmenter_3d_learns_phantoms(segmenter: Any) -> None:
    volumes, masks, _ = phantom_dataset(8, SHAPE, positive_fraction=1.0, seed=11)
    predicted = predict_mask(segmenter, volumes)
    scores = [dice(p, m[0]) for p, m in zip(predicted, masks, strict=True)]
    untrained = predict_mask(segmenter_3d(2), volumes)
    assert float(np.mean(scores)) > 0.7
    assert float(np.mean(scores)) > np.mean([dice(p, m[0]) for p, m in zip(untrained, masks, strict=True)]) + 0.3


def test_classifier_3d_separates_phantoms() -> None:
    from sklearn.metrics import roc_auc_score

    volumes, _, labels = phantom_dataset(48, SHAPE, seed=2, contrast=0.8, noise=0.5)
    model = fit_classifier(volumes, labels, epochs=12, seed=0, time_limit_s=15)
    test_volumes, _, test_labels = phantom_dataset(32, SHAPE, seed=12, contrast=0.8, noise=0.5)
    scores = predict_proba(model, test_volumes)[:, 1]
    assert roc_auc_score(test_labels, scores) > 0.9


def test_slicewise_is_the_2d_model_on_each_slice_stacked() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1))
    volume = np.random.default_rng(0).normal(size=(5, 12, 10)).astype(np.float32)
    prob = slicewise(model, volume, batch_size=2)
    assert prob.shape == (3, 5, 12, 10)
    for k in (0, 4):
        plane = volume[k]
        x = torch.from_numpy(((plane - plane.mean()) / plane.std())[None, None])
        expected = torch.softmax(model(x), dim=1).detach().numpy()[0]
        np.testing.assert_allclose(prob[:, k], expected, atol=1e-5)


def test_predict_volume_falls_back_to_slices_for_2d_models_and_large_volumes(segmenter: Any) -> None:
    volumes, masks, _ = phantom_dataset(24, SHAPE, positive_fraction=1.0, seed=4)
    slices = volumes.transpose(0, 2, 1, 3, 4).reshape(-1, 1, *SHAPE[1:])  # every axial slice as a 2-D sample
    slice_masks = masks.transpose(0, 2, 1, 3, 4).reshape(-1, 1, *SHAPE[1:])
    model_2d = fit_segmenter(slices, slice_masks, model=segmenter_2d(2), epochs=4, batch_size=32, seed=0,
                             time_limit_s=15)
    assert is_2d(model_2d) and not is_2d(segmenter)

    volume, mask = make_phantom(SHAPE, n_lesions=2, rng=21)
    predicted, prob, mode = predict_volume(model_2d, volume)
    assert mode == "slicewise" and prob.shape == (2, *SHAPE)
    assert dice(predicted, mask) > 0.7
    _, _, mode = predict_volume(segmenter, volume)
    assert mode == "3d"
    _, _, mode = predict_volume(segmenter, volume, model_2d=model_2d, max_voxels=1000)
    assert mode == "slicewise"
    with pytest.raises(ConfigError, match="max_voxels"):
        predict_volume(segmenter, volume, max_voxels=1000)


def test_dicom_series_of_a_phantom_runs_end_to_end(segmenter: Any, tmp_path: Path) -> None:
    volume, mask = make_phantom(SHAPE, n_lesions=1, rng=5)
    write_dicom_series(volume * 100.0, tmp_path / "series", spacing=(2.0, 0.5, 0.5),
                       names=[f"{k:02d}.dcm" for k in (7, 3, 11, 0, 15, 1, 9, 4, 13, 2, 8, 5, 12, 6, 14, 10)])
    loaded = load_volume(tmp_path / "series")
    assert loaded.array.shape == SHAPE and loaded.spacing == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_allclose(loaded.array, np.round(volume * 100.0), atol=0.5)
    predicted, _, mode = predict_volume(segmenter, loaded)
    assert mode == "3d" and dice(predicted, mask) > 0.7


@pytest.mark.mirror
@pytest.mark.parametrize(
    ("name", "shape"),
    [("anatomical.nii", (33, 41, 25)), ("functional.nii", (17, 21, 3)), ("example4d.nii.gz", (128, 96, 24))],
)
def test_nifti_format_samples_run_end_to_end(name: str, shape: tuple[int, ...]) -> None:
    from meddx.data.catalogue import fetch

    loaded = load_volume(fetch("format-samples") / "nifti" / name)
    assert loaded.array.shape == shape and loaded.meta["format"] == "nifti"
    model = segmenter_3d(2)
    mask, prob, mode = predict_volume(model, loaded, model_2d=segmenter_2d(2), max_voxels=200_000)
    assert mask.shape == shape and prob.shape == (2, *shape)
    assert mode == ("slicewise" if np.prod(shape) > 200_000 else "3d")
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)


def test_networks_refuse_a_single_class() -> None:
    with pytest.raises(ConfigError, match="n_classes"):
        classifier_3d(1)
    with pytest.raises(ConfigError, match="n_classes"):
        segmenter_3d(1)
