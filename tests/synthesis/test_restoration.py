"""Low-dose restoration: dose models, baselines, hallucination checks, the handler, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.synthesis import baselines as B
from meddx.synthesis import dose as D
from meddx.synthesis import hallucination as H
from meddx.synthesis import metrics as M


def phantom(size: int = 64, seed: int = 0) -> np.ndarray:
    """A head-like phantom: an ellipse of soft tissue, a bright rim, darker ventricles and a lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    a, b = 0.38 + 0.04 * rng.random(), 0.30 + 0.04 * rng.random()
    r = (xx / b) ** 2 + (yy / a) ** 2
    x = np.where(r < 1, 0.45, 0.05) + np.where((r < 1) & (r > 0.8), 0.4, 0)
    for _ in range(3):
        cx, cy, s = rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.03, 0.08)
        x = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < s**2, rng.uniform(0.1, 0.9), x)
    return np.clip(x, 0, 1).astype(np.float32)


def write_phantoms(folder: Path, n: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((phantom(size, i) * 255).astype(np.uint8)).save(folder / f"case{i:02d}.png")
    return folder


# ------------------------------------------------------------------------------------------- dose models
@pytest.mark.parametrize("name", ["xray-poisson", "mri-rician"])
def test_noise_grows_as_dose_falls_and_the_map_predicts_it(name):
    model, x = D.get(name), phantom(96)
    errors = []
    for dose in (0.25, 0.1, 0.05):
        y = model.degrade(x, dose, 0)
        true = float(np.sqrt(np.mean((y - model.expected(x, dose)) ** 2)))
        mapped = float(np.sqrt(np.mean(model.noise_map(y, dose) ** 2)))
        assert 0.6 < mapped / true < 1.5, (dose, true, mapped)
        errors.append(true)
    assert errors[0] < errors[1] < errors[2]
    assert np.array_equal(model.degrade(x, 0.1, 3), model.degrade(x, 0.1, 3))  # seeded


def test_rician_noise_lifts_the_dark_background_as_its_mean_says():
    model = D.get("mri-rician")
    x = np.zeros((128, 128), np.float32)
    y = model.degrade(x, 0.05, 0)
    assert y.mean() == pytest.approx(float(model.expected(x, 0.05).mean()), rel=0.05)


def test_resolution_loss_blurs_before_the_noise():
    x = phantom(64)
    y = D.lower_resolution(x, 0.5)
    assert y.shape == x.shape and np.abs(np.diff(y, axis=1)).mean() < np.abs(np.diff(x, axis=1)).mean()
    assert D.get("xray-poisson").degrade(x, 1.0, 0, resolution=0.5).shape == x.shape


@pytest.mark.parametrize("dose", [0, -0.1, 1.5, "0.1"])
def test_a_dose_outside_0_1_is_refused(dose):
    with pytest.raises(InvalidValueError, match="dose fraction"):
        D.get("xray-poisson").degrade(phantom(), dose, 0)


def test_bad_images_and_unknown_models_name_the_problem():
    with pytest.raises(InvalidValueError, match="outside"):
        D.get("xray-poisson").degrade(phantom() * 300, 0.1, 0)
    with pytest.raises(InvalidValueError, match="2-D"):
        D.get("xray-poisson").degrade(np.zeros((4, 4, 4)), 0.1, 0)
    with pytest.raises(ConfigError, match="unknown dose model"):
        D.get("pet")
    with pytest.raises(ConfigError, match="no parameter"):
        D.get("mri-rician").degrade(phantom(), 0.1, 0, photons=3)


@pytest.mark.mirror
def test_ct_noise_is_made_on_the_sinogram_of_a_real_ct_slice(format_samples):
    from meddx.synthesis.data import read_file

    x, _ = read_file(format_samples / "dicom" / "CT_small.dcm")
    model = D.get("ct-poisson")
    full = model.degrade(x, 1.0, 0)
    low = model.degrade(x, 0.05, 0)
    assert M.psnr(x, low) < M.psnr(x, full) - 3
    assert model.noise_map(low, 0.05).mean() > model.noise_map(full, 1.0).mean()


# --------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", ["xray-poisson", "mri-rician"])
@pytest.mark.parametrize("method", ["bm3d", "nlm"])
def test_classical_baselines_improve_on_the_low_dose_image(name, method):
    model, x = D.get(name), phantom(96)
    y = model.degrade(x, 0.05, 0)
    assert M.psnr(x, B.restore(method, y, model, 0.05)) > M.psnr(x, y) + 1.0


def test_metrics_and_their_intervals():
    x = phantom()
    assert M.psnr(x, np.clip(x + 0.01, 0, 1)) == pytest.approx(40, abs=0.5)
    assert M.ssim(x, x) == pytest.approx(1.0)
    ci = M.mean_ci(np.array([1.0, 2.0, 3.0, 4.0]), n_boot=200)
    assert ci["low"] <= ci["value"] == 2.5 <= ci["high"]
    assert M.paired(np.array([2.0, 3.0]), np.array([1.0, 1.0]))["wins"] == 1.0


# ----------------------------------------------------------------------------------------- hallucination
def test_structures_find_what_the_output_adds():
    x = phantom(128)
    y = x.copy()
    y[94:100, 60:66] = np.clip(y[94:100, 60:66] + 0.3, 0, 1)
    found = H.structures(x, y)
    assert found["added"] == 1 and found["removed"] == 0
    assert H.structures(x, x)["added"] == 0
    smooth = H.structures(y, x)
    assert smooth["removed"] == 1


@pytest.mark.parametrize("name", ["xray-poisson", "mri-rician"])
def test_residual_check_passes_pure_denoising_and_flags_an_invented_lesion(name):
    model, x = D.get(name), phantom(128)
    y = model.degrade(x, 0.1, 1)
    level = model.noise_map(y, 0.1)
    assert H.residual(y, x, level, expected=model.expected(x, 0.1))["regions"] == 0
    fake = x.copy()
    fake[40:50, 40:50] = np.clip(fake[40:50, 40:50] + 0.25, 0, 1)
    assert H.residual(y, fake, level, expected=model.expected(fake, 0.1))["regions"] >= 1


def test_downstream_agreement():
    assert H.decisions(np.array([0.9, 0.1, 0.6]), np.array([0.8, 0.7, 0.4]))["disagreement"] == pytest.approx(2 / 3)
    ref = [{"label": "lung", "box": [0, 0, 10, 10]}]
    out = [{"label": "lung", "box": [1, 1, 10, 10]}, {"label": "lung", "box": [50, 50, 60, 60]}]
    assert H.boxes(ref, out) == {"matched": 1, "added": 1, "removed": 0}
    a = np.zeros((32, 32), bool)
    a[2:8, 2:8] = True
    b = a.copy()
    b[20:26, 20:26] = True
    assert H.masks(a, b)["added"] == 1 and H.masks(a, b)["dice"] < 1


# -------------------------------------------------------------------------------------- marked derived
def test_banner_is_burnt_into_the_picture(tmp_path):
    from meddx.synthesis import derived

    png, raw = derived.save_png(phantom(28), tmp_path / "x.png", kind="restoration", method="m")
    picture = np.asarray(Image.open(png))
    assert picture.shape[0] > picture.shape[1]  # the band sits above the (enlarged) image
    assert tuple(picture[2, 300]) == (170, 0, 0) or picture[:10, :, 0].mean() > picture[:10, :, 1].mean() + 50
    assert np.asarray(Image.open(raw)).dtype == np.uint16


# ------------------------------------------------------------------------------------- handler and CLI
@pytest.fixture(scope="module")
def tiny_restorer(tmp_path_factory):
    pytest.importorskip("monai")
    from meddx.synthesis import package as P

    base = tmp_path_factory.mktemp("restore")
    data = write_phantoms(base / "phantoms", 10)
    run = P.train(str(data), noise="xray-poisson", out=base / "run", steps=30, patch=32, batch=4, eval_every=15,
                  n_boot=50, progress=False, model="dncnn-small", threads=1)
    return data, run


def test_train_writes_a_restoration_package(tiny_restorer):
    from meddx.modalities import handler_for_package
    from meddx.packaging.registry import read_package

    _, run = tiny_restorer
    package = read_package(run)
    assert package["task"] == "restoration" and package["restoration"]["noise"] == "xray-poisson"
    assert handler_for_package(package).module == "meddx.synthesis.package"
    assert set(package["metrics"]["values"]) >= {"psnr@0.1", "ssim@0.05", "low_psnr@0.25", "gain_psnr@0.1"}
    assert (Path(run) / "model.safetensors").is_file()


def test_evaluate_names_training_images_in_its_title(tiny_restorer):
    from meddx.packaging.registry import read_package
    from meddx.synthesis import package as P

    data, run = tiny_restorer
    package = read_package(run)
    report = P.evaluate(run, package, str(data), n_boot=50)
    assert report["split"] == "test" and "trained" not in report["title"]
    seen = P.evaluate(run, package, str(data), split="train", n_boot=50)
    assert "trained or tuned on" in seen["title"]
    with pytest.raises(ConfigError, match="unknown evaluate option"):
        P.evaluate(run, package, str(data), n_boot=50, lr=3)


def test_predict_writes_marked_images_and_rejects_bad_files(tiny_restorer, tmp_path):
    from meddx.packaging.registry import read_package
    from meddx.synthesis import package as P

    data, run = tiny_restorer
    noisy = D.get("xray-poisson").degrade(phantom(64, 99), 0.1, 0)
    Image.fromarray((noisy * 255).astype(np.uint8)).save(tmp_path / "low.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    results = P.predict(run, read_package(run), [str(tmp_path / "low.png"), str(tmp_path / "broken.png")],
                        dose=0.1, out_dir=tmp_path / "out")
    ok, bad = results
    assert ok["task"] == "restoration" and ok["synthetic"]["derived"] is True
    assert ok["synthetic"]["banner"].startswith("SYNTHETIC") and Path(ok["synthetic"]["image"]).is_file()
    assert "regions" in ok["synthetic"]["checks"]["residual"] and ok["decision"]["decision"] in ("restored", "review")
    assert bad["decision"]["decision"] == "rejected" and "broken.png" in bad["input_check"]["reasons"][0]
    assumed = P.predict(run, read_package(run), [str(tmp_path / "low.png")], out_dir=tmp_path / "o2")[0]
    assert any("no dose given" in w for w in assumed["warnings"])


@pytest.mark.mirror
def test_a_dicom_input_gives_a_dicom_marked_derived(tiny_restorer, tmp_path, format_samples):
    import pydicom

    from meddx.packaging.registry import read_package
    from meddx.synthesis import derived
    from meddx.synthesis import package as P

    _, run = tiny_restorer
    source = format_samples / "dicom" / "CT_small.dcm"
    result = P.predict(run, read_package(run), [str(source)], dose=0.1, out_dir=tmp_path)[0]
    path = Path(result["synthetic"]["dicom"])
    assert derived.is_marked_derived(path)
    ds, src = pydicom.dcmread(path), pydicom.dcmread(source)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.Rows == src.Rows and ds.Columns == src.Columns
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.PatientID == src.PatientID and ds.DerivationCodeSequence[0].CodeValue == "123102"
    assert ds.pixel_array.shape == src.pixel_array.shape


def test_cli_denoise_and_train_with_set(tiny_restorer, tmp_path, capsys):
    from meddx.cli import main

    data, run = tiny_restorer
    noisy = D.get("xray-poisson").degrade(phantom(64, 7), 0.05, 0)
    Image.fromarray((noisy * 255).astype(np.uint8)).save(tmp_path / "low.png")
    assert main(["synthesize", "denoise", str(run), str(tmp_path / "low.png"), "--dose", "0.05",
                 "--out", str(tmp_path / "o")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["synthetic"]["dose"] == 0.05 and Path(out["synthetic"]["image"]).is_file()
    assert main(["synthesize", "translate", str(run), str(tmp_path / "low.png")]) == 2
    assert "not a translation model" in capsys.readouterr().err
    rc = main(["train", str(data), "--task", "restoration", "--model", "dncnn-small", "--set", "noise=mri-rician",
               "--set", "steps=6", "--set", "patch=32", "--set", "batch=2", "--set", "eval_every=3",
               "--out", str(tmp_path / "r2")])
    assert rc == 0
    assert json.loads((tmp_path / "r2" / "package.json").read_text())["restoration"]["noise"] == "mri-rician"
    assert main(["train", str(data), "--task", "restoration", "--set", "oops"]) == 2
    assert main(["train", str(data), "--task", "restoration", "--model", "dncnn-small", "--out", str(tmp_path / "r3")]) == 2
    assert "which acquisition noise" in capsys.readouterr().err


def test_precise_batch_norm_uses_population_statistics():
    import torch

    from meddx.synthesis.networks import build
    from meddx.synthesis.training import precise_batch_norm

    net = build("dncnn-small")
    rng = np.random.default_rng(0)
    fixed = [(rng.random((4, 1, 16, 16), dtype=np.float32), np.full((4, 1, 16, 16), 0.02, np.float32),
              np.zeros((4, 1, 16, 16), np.float32)) for _ in range(3)]
    it = iter(fixed * 4)
    precise_batch_norm(net, lambda: next(it), n=6)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    first = [m.running_mean.clone() for m in norms]
    assert all(m.momentum == 0.1 and int(m.num_batches_tracked) == 6 for m in norms)
    precise_batch_norm(net, lambda: next(it), n=6)  # the same batches again: the same statistics
    assert all(torch.allclose(a, m.running_mean, atol=1e-6) for a, m in zip(first, norms))
