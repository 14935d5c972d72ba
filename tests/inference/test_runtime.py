"""The ONNX export a package carries, and predictions that run on it without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.exceptions import ConfigError, ModelError
from meddx.inference import Pipeline
from meddx.inference.runtime import ONNX_FILE, onnx_status
from tests._factories import make_labelled_pngs, write_dicom


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled_pngs(tmp_path_factory.mktemp("rt") / "data", n=16, size=20)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meddx.training import TrainConfig, train

    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, size=24, threads=1,
                             out=str(tmp_path_factory.mktemp("rt") / "run")), progress=False)


def _images(data: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(data / f"img{i:03d}.png")) for i in range(8)])


def test_training_writes_a_checked_export(run: Path) -> None:
    package = json.loads((run / "package.json").read_text())
    info = package["runtime"]["onnx"]
    assert (run / ONNX_FILE).is_file() and package["extra_files"] == ["ood.npz", ONNX_FILE]
    assert package["runtime"]["onnx"]["outputs"] == ["logits", "features"]  # features feed the OOD gate
    assert info["max_abs_logit_gap"] < 1e-4 and len(info["sha256"]) == 64 and info["weights_sha256"]
    assert onnx_status(run, package) is None


def test_onnx_and_torch_predictions_agree(run: Path, data: Path) -> None:
    onnx, torch_ = Pipeline.load(run), Pipeline.load(run, runtime="torch")
    assert onnx.runtime == "onnx" and onnx._members is None  # no torch model built for plain predictions
    assert torch_.runtime == "torch"
    images = _images(data)  # 20 px files, resized to the package's 24 px
    np.testing.assert_allclose(onnx.predict_logits(images), torch_.predict_logits(images), atol=1e-4)
    assert onnx._members is None  # still not built
    a, b = onnx.predict(data / "img001.png")[0], torch_.predict(data / "img001.png")[0]
    assert a["prediction"] == b["prediction"]
    assert a["calibrated_probabilities"] == pytest.approx(b["calibrated_probabilities"], abs=1e-5)


def test_methods_that_need_layers_build_the_torch_model(run: Path, data: Path) -> None:
    pipe = Pipeline.load(run)
    primary, draws = pipe.run_uncertainty(_images(data), "tta", samples=4)
    assert draws.shape == (4, 8, 2) and pipe._members is not None and pipe.runtime == "onnx"
    np.testing.assert_allclose(primary, pipe.predict_logits(_images(data)), atol=1e-4)


def test_a_stale_or_damaged_export_is_not_used(run: Path, data: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run, tmp_path / "copy")
    package = json.loads((copy / "package.json").read_text())
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes: still valid
    assert Pipeline.load(copy).runtime == "onnx"
    from safetensors.numpy import load_file, save_file

    state = load_file(str(weights))
    state = {k: v * 0.5 if v.dtype.kind == "f" else v for k, v in state.items()}
    save_file(state, str(weights))  # new weights, old export
    assert "stale" in onnx_status(copy, package)
    assert Pipeline.load(copy).runtime == "torch"
    with pytest.raises(ModelError, match="stale") as err:
        Pipeline.load(copy, runtime="onnx")
    assert err.value.field == "runtime"
    (copy / ONNX_FILE).write_bytes(b"not onnx")
    assert "sha256" in onnx_status(copy, package)


def test_export_command_backfills_an_older_package(data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main
    from meddx.training import TrainConfig, train

    old = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=1, threads=1, export="none",
                            out=str(tmp_path / "old")), progress=False)
    assert not (old / ONNX_FILE).exists() and Pipeline.load(old).runtime == "torch"
    with pytest.raises(ModelError, match="no ONNX export"):
        Pipeline.load(old, runtime="onnx")
    assert main(["models", "export", str(old)]) == 0
    assert "max |Δlogit|" in capsys.readouterr().out and (old / ONNX_FILE).is_file()
    assert Pipeline.load(old).runtime == "onnx"
    assert "Inference export: `model.onnx`" in (old / "MODEL_CARD.md").read_text()


def test_runtime_setting_is_checked(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_RUNTIME", "torch")
    assert Pipeline.load(run).runtime == "torch"
    monkeypatch.setenv("MEDDX_RUNTIME", "tensorrt")
    with pytest.raises(ConfigError, match="MEDDX_RUNTIME"):
        Pipeline.load(run)
    with pytest.raises(ConfigError, match="runtime"):
        Pipeline.load(run, runtime="gpu")


def _predict_without_torch(*argv: str) -> subprocess.CompletedProcess[str]:
    """``meddx ARGV`` in a new process where importing torch or timm fails, as in a ``meddx[runtime]`` install."""
    code = ("import sys\nsys.modules['torch'] = sys.modules['timm'] = None  # import raises ImportError\n"
            f"from meddx.cli import main\nsys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_predict_runs_without_torch(run: Path, data: Path, tmp_path: Path) -> None:
    dcm = write_dicom(tmp_path / "1.dcm", np.asarray(Image.open(data / "img003.png")))
    proc = _predict_without_torch("predict", str(run), str(data / "img001.png"), str(dcm))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [str(data / "img001.png"), str(dcm)]
    expected = Pipeline.load(run, runtime="torch").predict([data / "img001.png", dcm])
    for got, want in zip(results, expected, strict=True):
        assert got["calibrated_probabilities"] == pytest.approx(want["calibrated_probabilities"], abs=1e-5)
    # what does need the torch model says so, in one line, instead of a traceback
    for extra in (["--uncertainty", "tta"], ["--explain", "gradcam"]):
        proc = _predict_without_torch("predict", str(run), str(data / "img001.png"), *extra)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "pip install 'meddx[train]'" in proc.stderr


def test_ensemble_members_carry_exports_and_register_whole(data: Path, tmp_path: Path) -> None:
    from meddx.packaging import register
    from meddx.training import TrainConfig, train

    ens = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=1, ensemble=2, threads=1,
                            out=str(tmp_path / "ens")), progress=False)
    top = json.loads((ens / "package.json").read_text())
    assert "runtime" not in top and "extra_files" not in top  # the exports belong to the members
    pipe = Pipeline.load(ens)
    assert pipe.runtime == "onnx" and len(pipe.networks) == 2
    images = _images(data)
    np.testing.assert_allclose(pipe.predict_logits(images), Pipeline.load(ens, runtime="torch").predict_logits(images),
                               atol=1e-4)
    assert pipe._members is None and pipe.default_uncertainty() == "ensemble"
    registered = register(ens)
    for member in ("members/m0", "members/m1"):
        assert (registered / member / ONNX_FILE).is_file() and (registered / member / "model.safetensors").is_file()
    assert Pipeline.load(registered).runtime == "onnx"
    assert Pipeline.load(registered).predict(data / "img001.png")[0]["uncertainty"]["method"] == "ensemble"


def test_resizing_matches_torch_antialiased_bilinear() -> None:
    import torch
    from torch.nn import functional as F

    from meddx.training.trainer import prepare_arrays

    rng = np.random.default_rng(0)
    for shape, size in (((2, 48, 64), 28), ((1, 20, 20), 64), ((2, 30, 30, 3), 24)):
        images = rng.integers(0, 256, shape).astype(np.uint8)
        ours = prepare_arrays(images, size)
        x = images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)
        expected = F.interpolate(torch.from_numpy(x.astype(np.float32) / 255), size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True).numpy()
        assert ours.shape == expected.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, atol=2e-5)
    same = rng.integers(0, 65535, (1, 8, 8)).astype(np.uint16)
    np.testing.assert_array_equal(prepare_arrays(same, 8)[0, 0], same[0].astype(np.float32) / 65535)
