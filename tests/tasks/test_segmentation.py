"""Vessel segmentation task: FOV, metrics, data errors, sliding window, and a tiny train → evaluate → predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.exceptions import ConfigError, CorruptFileError, DataFileNotFoundError, EmptyDataError, InvalidValueError
from meddx.tasks.segmentation import data as D
from meddx.tasks.segmentation import metrics as M
from meddx.tasks.segmentation.fov import field_of_view
from meddx.tasks.segmentation.inference import numpy_logits

REPO = Path(__file__).resolve().parents[2]


def phantom(seed: int, shape: tuple[int, int] = (96, 88)) -> tuple[np.ndarray, np.ndarray]:
    """A fundus-like RGB image (bright disc on black, dark lines = vessels) and its vessel mask."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    cv2.circle(image, (w // 2, h // 2), min(h, w) // 2 - 4, (190, 100, 45), -1)
    lines = np.zeros((h, w), np.uint8)
    for _ in range(5):
        p0 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        cv2.line(lines, p0, p1, 1, int(rng.integers(1, 4)))
    inside = image[..., 0] > 0
    mask = (lines > 0) & inside
    image[mask] = (120, 35, 20)
    noise = rng.normal(0, 4, image.shape)
    image = np.where(inside[..., None], np.clip(image + noise, 0, 255), 0).astype(np.uint8)
    return image, mask


def write_folder(folder: Path, n: int, shape: tuple[int, int] = (96, 88)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = phantom(i, shape)
        Image.fromarray(image).save(folder / f"case{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"case{i:02d}_mask.png")
    return folder


# --------------------------------------------------------------------------- field of view
def test_fov_is_the_bright_disc_with_its_dark_vessels_inside():
    import cv2

    image, mask = phantom(0, (120, 120))
    cv2.circle(image, (60, 60), 8, (5, 5, 5), -1)   # a black blot inside the disc stays in the FOV
    mask[52:69, 52:69] = False
    fov = field_of_view(image)
    assert fov[60, 60]
    disc = image[..., 0] > 0
    assert fov.sum() > 0.9 * disc.sum() and not (fov & ~disc).any()
    # dark vessel pixels well inside the disc stay in the FOV (holes are filled)
    yy, xx = np.mgrid[:120, :120]
    core = (yy - 60) ** 2 + (xx - 60) ** 2 < 45 ** 2
    assert fov[mask & core].all()
    assert not fov[0, 0] and not fov[-1, -1]


def test_fov_of_a_black_image_is_everything():
    assert field_of_view(np.zeros((10, 12, 3), np.uint8)).all()


# --------------------------------------------------------------------------- metrics
def test_metrics_on_masks_with_known_answers():
    ref = np.zeros((10, 10), bool)
    ref[:, :4] = True                      # 40 vessel pixels
    pred = np.zeros((10, 10), bool)
    pred[:, 2:6] = True                    # tp 20, fp 20, fn 20, tn 40
    fov = np.ones((10, 10), bool)
    score = M.score_image("a", pred.astype(float), ref, fov, binary=True)
    assert score.counts.tolist() == [20, 20, 20, 40]
    m = M.from_counts(score.counts)
    assert m["f1"] == pytest.approx(0.5) and m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(40 / 60) and m["acc"] == pytest.approx(0.6)
    # outside the FOV nothing counts
    fov[:, 5:] = False
    assert M.score_image("a", pred.astype(float), ref, fov, binary=True).counts.tolist() == [20, 10, 20, 0]


def test_auc_from_histograms_matches_sklearn_and_pooling():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    ref = rng.random((60, 60)) < 0.1
    prob = np.clip(0.3 * ref + rng.random((60, 60)) * 0.7, 0, 1)
    fov = np.ones_like(ref)
    s = M.score_image("x", prob, ref, fov, 0.5)
    assert s.auc == pytest.approx(roc_auc_score(ref.ravel(), prob.ravel()))
    assert M.pooled([s])["auc"] == pytest.approx(s.auc, abs=1e-3)
    perfect = M.score_image("p", ref.astype(float) * 0.9 + 0.05, ref, fov)
    assert M.pooled([perfect])["auc"] == pytest.approx(1.0) and M.pooled([perfect])["f1"] == pytest.approx(1.0)
    boot = M.bootstrap([s, s, s], n_boot=50)
    assert boot["f1"]["low"] == pytest.approx(boot["f1"]["value"]) == pytest.approx(boot["f1"]["high"])
    spread = M.spread([M.per_image(s), M.per_image(perfect)])
    assert spread["f1"]["max"] == pytest.approx(1.0) and spread["f1"]["sd"] > 0


def test_temperature_threshold_and_ece():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, 50_000)
    y = rng.random(50_000) < 1 / (1 + np.exp(-z / 2))   # true temperature 2
    assert M.fit_temperature(z, y) == pytest.approx(2.0, rel=0.1)
    p = 1 / (1 + np.exp(-z / 2))
    assert M.ece(p, y) < 0.02 < M.ece(1 / (1 + np.exp(-z)), y)
    ref = rng.random(10_000) < 0.2
    prob = np.where(ref, 0.7, 0.3) + rng.normal(0, 0.05, 10_000)
    assert 0.35 < M.best_threshold(prob, ref) < 0.65


# --------------------------------------------------------------------------- data errors
def test_mask_of_another_size_names_the_file(tmp_path):
    write_folder(tmp_path, 2)
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "case01_mask.png")
    sample = [s for s in D.folder_samples(tmp_path) if s.name == "case01"][0]
    with pytest.raises(InvalidValueError) as err:
        D.load(sample)
    assert "case01_mask.png" in str(err.value) and err.value.field == "shape" and err.value.hint
    assert "40×30" in str(err.value) and "96×88" in str(err.value)


def test_folder_errors(tmp_path):
    with pytest.raises(EmptyDataError):
        D.folder_samples(tmp_path)
    with pytest.raises(DataFileNotFoundError):
        D.split(str(tmp_path / "missing"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "lonely.png")
    with pytest.raises(DataFileNotFoundError, match="lonely_mask.png"):
        D.folder_samples(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CorruptFileError, match="bad.png"):
        D.read_image(tmp_path / "bad.png")
    masks = tmp_path / "sub" / "masks"
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "sub" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "a.png")
    assert D.folder_samples(tmp_path / "sub")[0].mask == masks / "a.png"


# --------------------------------------------------------------------------- sliding window
def test_sliding_window_shape_on_a_non_multiple_size_matches_monai():
    torch = pytest.importorskip("torch")
    from meddx.tasks.segmentation.inference import torch_logits

    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = np.random.default_rng(0).normal(size=(1, 70, 45)).astype(np.float32)

    def run(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return conv(torch.from_numpy(windows)).numpy()

    ours = numpy_logits(run, x, roi=32, overlap=0.25)
    small = numpy_logits(run, x[:, :20, :17], roi=32)
    assert ours.shape == (70, 45) and small.shape == (20, 17)
    monai = torch_logits(conv, x, roi=32, overlap=0.25)
    assert monai.shape == (70, 45)
    assert np.abs(ours - monai)[4:-4, 4:-4].max() < 0.05


# --------------------------------------------------------------------------- train → evaluate → predict
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("monai")
    from meddx.tasks.segmentation import package as P

    base = tmp_path_factory.mktemp("seg")
    data = write_folder(base / "phantoms", 6)
    run = P.train(str(data), model="unet-small", out=base / "run", steps=4, eval_every=2, patch=32, batch=4, roi=32,
                  n_boot=20, progress=False)
    return data, run


def test_flip_tta_is_chosen_on_validation(tiny_run, tmp_path):
    from meddx.packaging.registry import read_package
    from meddx.tasks.segmentation import package as P

    data, run = tiny_run
    package = read_package(run)
    choice = package["segmentation"]["tta_choice"]
    assert package["segmentation"]["tta"] == (choice["val_auc_tta"] > choice["val_auc_plain"])
    val = P._prepare(P.D.split(str(data))["train"][-1:], "green-clahe")
    assert P.choose_tta(run, package, val, False)["tta"] is False
    assert P.choose_tta(run, package, val, "true")["tta"] is True
    with pytest.raises(ConfigError, match="tta must be"):
        P.choose_tta(run, package, val, "sometimes")


def test_train_writes_a_package(tiny_run):
    from meddx.packaging.registry import read_package

    data, run = tiny_run
    package = read_package(run)
    assert package["modality"] == "image" and package["task"] == "segmentation"
    assert package["class_names"] == ["background", "vessel"]
    seg = package["segmentation"]
    assert seg["patch"] == 32 and 0 < seg["threshold"] < 1 and seg["temperature"] > 0
    assert set(package["metrics"]["values"]) >= {"f1", "auc", "sensitivity", "specificity", "acc"}
    assert package["splits"]["test"] == ["case04", "case05"] and len(package["splits"]["train"]) == 3
    assert package["training"]["seconds"] > 0
    for name in ("model.safetensors", "model.onnx", "model_mc.onnx", "metrics.json"):
        assert (run / name).is_file()


def test_unknown_option_is_named(tiny_run):
    from meddx.tasks.segmentation import package as P

    with pytest.raises(ConfigError) as err:
        P.train(str(tiny_run[0]), steps=1, pach=32)
    assert err.value.field == "pach"
    with pytest.raises(ConfigError, match="patch 128") as err:
        P.train(str(tiny_run[0]), steps=1, patch=128)
    assert err.value.field == "patch"


def test_evaluate_default_is_the_test_split(tiny_run):
    from meddx.packaging.registry import read_package
    from meddx.tasks.segmentation import package as P

    data, run = tiny_run
    result = P.evaluate(run, read_package(run), str(data), n_boot=20)
    assert result["split"] == "test" and result["n"] == 2
    assert [r["image"] for r in result["per_image"]] == ["case04", "case05"]
    for m in result["metrics"].values():
        assert m["low"] <= m["value"] + 1e-9 and m["value"] <= m["high"] + 1e-9
    every = P.evaluate(run, read_package(run), str(data), split="all", n_boot=0)
    assert every["n"] == 6


PREDICT = """
import json, sys
from pathlib import Path
from meddx.packaging.registry import read_package
from meddx.tasks.segmentation import package as P
run = Path(sys.argv[1])
out = P.predict(run, read_package(run), sys.argv[3:], out_dir=sys.argv[2], samples=2)
print(json.dumps({"torch": "torch" in sys.modules, "predictions": out}))
"""


def test_predict_with_onnx_without_torch_and_a_broken_file(tiny_run, tmp_path):
    data, run = tiny_run
    big, _ = phantom(9, (70, 45))
    Image.fromarray(big).save(tmp_path / "odd.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    inputs = [str(data / "case04.png"), str(tmp_path / "broken.png"), str(tmp_path / "odd.png")]
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PREDICT, str(run), str(tmp_path / "out"), *inputs],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["torch"] is False
    first, broken, odd = answer["predictions"]
    assert broken["decision"]["decision"] == "rejected" and "broken.png" in broken["decision"]["reason"]
    assert broken["task"] == "segmentation"
    for pred, shape in ((first, (96, 88)), (odd, (70, 45))):
        assert pred["task"] == "segmentation" and pred["decision"]["decision"] != "rejected"
        mask = pred["mask"]
        assert mask["shape"] == list(shape) and mask["classes"] == ["background", "vessel"]
        for key in ("mask", "probability_map", "uncertainty_map", "overlay"):
            assert Path(mask[key]).is_file()
            assert np.asarray(Image.open(mask[key])).shape[:2] == shape
        assert set(np.unique(np.asarray(Image.open(mask["mask"])))) <= {0, 1}
        assert sum(mask["fraction"].values()) == pytest.approx(1.0)
        assert pred["uncertainty"]["method"] == "mc-dropout" and pred["uncertainty"]["samples"] == 2


def test_predict_torch_backend_matches_onnx(tiny_run, tmp_path):
    from meddx.packaging.registry import read_package
    from meddx.tasks.segmentation.model import SegModel

    data, run = tiny_run
    package = read_package(run)
    package["segmentation"]["tta"] = False
    image = D.read_image(data / "case05.png")
    maps = []
    for backend in ("onnx", "torch"):
        seg = SegModel(run, package, backend=backend)
        maps.append(seg.probability(*seg.prepare(image)))
    assert np.abs(maps[0] - maps[1]).max() < 1e-3
    flipped = dict(package, segmentation={**package["segmentation"], "tta": True})
    seg = SegModel(run, flipped)
    tta = seg.probability(*seg.prepare(image))
    assert tta.shape == maps[0].shape and 0 < np.abs(tta - maps[0]).max() < 0.5


@pytest.mark.mirror
def test_chase_split_and_second_observer(mirror):
    parts = D.split(D.CHASE)
    assert [s.name for s in parts["test"]][0] == "Image_11L" and len(parts["train"]) == 20
    image, mask = D.load(parts["test"][0])
    fov = field_of_view(image)
    assert 0.6 < fov.mean() < 0.75 and mask[fov].mean() > 0.05
    other = D.read_mask(parts["test"][0].second, image.shape[:2])
    f1 = M.from_counts(M.score_image("x", other, mask, fov, binary=True).counts)["f1"]
    assert 0.7 < f1 < 0.9
