"""Detection task: VOC/COCO readers and their errors, mAP, numpy decoding, and a tiny
train -> package -> evaluate -> predict (ONNX, without torch) round trip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.exceptions import ConfigError, CorruptFileError, DataFileNotFoundError, EmptyDataError, InvalidValueError
from meddx.tasks.detection.data import load_detection_data, looks_like_detection, read_coco, read_voc, split_items
from meddx.tasks.detection.decode import decode, nms
from meddx.tasks.detection.metrics import best_threshold, bootstrap_map, detection_map

from tests._factories import voc_shapes, voc_xml  # noqa: E402

CLASSES = ["dot", "bar"]
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- readers
def test_voc_parsing_reads_boxes_and_clips_slightly_outside(tmp_path: Path) -> None:
    root = voc_shapes(tmp_path / "voc", n=3)
    xml = root / "Annotations" / "img00.xml"
    xml.write_text(voc_xml("img00.png", (96, 96), [("dot", (-2, 10, 30, 40)), ("bar", (50, 60, 97, 70))]))
    assert looks_like_detection(str(root)) and not looks_like_detection(str(root / "JPEGImages"))
    ds = read_voc(root, CLASSES)
    assert ds.classes == CLASSES and len(ds.items) == 3
    item = ds.items[0]
    np.testing.assert_allclose(item.boxes, [[0, 10, 30, 40], [50, 60, 96, 70]])
    assert item.labels.tolist() == [0, 1] and (item.width, item.height) == (96, 96)


def test_coco_parsing_groups_by_patient_and_splits_by_group(tmp_path: Path) -> None:
    images, anns = [], []
    for i in range(20):
        Image.new("RGB", (64, 48)).save(tmp_path / f"x{i}.png")
        images.append({"id": i, "file_name": f"x{i}.png", "width": 64, "height": 48,
                       "metadata": {"patientid": str(i // 2)}})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [5, 6, 20, 10]})
    cats = [{"id": 1, "name": "Right Lung"}, {"id": 2, "name": "Left Lung"}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    assert looks_like_detection(str(tmp_path)) and looks_like_detection(str(path))
    ds = load_detection_data(str(tmp_path))
    assert ds.classes == ["Right Lung", "Left Lung"] and len(ds.items) == 20
    np.testing.assert_allclose(ds.items[0].boxes, [[5, 6, 25, 16]])
    parts = split_items(ds, seed=3)
    group = {it.name: it.group for it in ds.items}
    seen = [{group[n] for n in parts[k]} for k in ("train", "val", "test")]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(v) for v in parts.values()) == 20


@pytest.mark.parametrize("box, fragment", [((200, 10, 230, 40), "outside"), ((30, 10, 30, 40), "degenerate"),
                                           ((-30, 10, 20, 40), "outside")])
def test_bad_box_is_an_error_naming_file_and_field(tmp_path: Path, box: tuple, fragment: str) -> None:
    root = voc_shapes(tmp_path / "voc", n=2)
    xml = root / "Annotations" / "img01.xml"
    xml.write_text(voc_xml("img01.png", (96, 96), [("dot", (1, 1, 20, 20)), ("dot", box)]))
    with pytest.raises(InvalidValueError, match=fragment) as info:
        read_voc(root, CLASSES)
    assert info.value.path == str(xml) and info.value.field == "object[1].bndbox" and info.value.hint


def test_empty_malformed_unknown_class_and_missing_image(tmp_path: Path) -> None:
    root = voc_shapes(tmp_path / "voc", n=4)
    ann = root / "Annotations"
    (ann / "img00.xml").write_text("")
    (ann / "img01.xml").write_text("<annotation><object>")
    (ann / "img02.xml").write_text(voc_xml("img02.png", (96, 96), [("cat", (1, 1, 20, 20))]))
    (root / "JPEGImages" / "img03.png").unlink()
    with pytest.raises(EmptyDataError, match="empty"):
        read_voc(root, CLASSES)
    (ann / "img00.xml").unlink()
    with pytest.raises(CorruptFileError, match="malformed"):
        read_voc(root, CLASSES)
    (ann / "img01.xml").unlink()
    with pytest.raises(InvalidValueError, match="unknown class 'cat'") as info:
        read_voc(root, CLASSES)
    assert info.value.field == "object[0].name"
    (ann / "img02.xml").unlink()
    with pytest.raises(DataFileNotFoundError, match="image not found"):
        read_voc(root, CLASSES)


def test_skip_mode_collects_bad_files_and_keeps_the_rest(tmp_path: Path) -> None:
    root = voc_shapes(tmp_path / "voc", n=4)
    (root / "Annotations" / "img00.xml").write_text("")
    ds = read_voc(root, CLASSES, errors="skip")
    assert len(ds.items) == 3 and [n for n, _ in ds.rejected] == ["img00.xml"]


def test_coco_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("")
    with pytest.raises(EmptyDataError):
        read_coco(tmp_path / "a.json")
    (tmp_path / "a.json").write_text('{"images": []')
    with pytest.raises(CorruptFileError):
        read_coco(tmp_path / "a.json")
    Image.new("RGB", (50, 40)).save(tmp_path / "x.png")
    doc = {"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1, "name": "a"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 5, 10, 10]}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidValueError, match="outside") as info:
        read_coco(tmp_path / "a.json")
    assert info.value.field == "annotations[0].bbox"


# --------------------------------------------------------------------------- metrics and decoding
def _gts() -> list:
    return [(np.array([[10, 10, 50, 50], [60, 60, 100, 90]], float), np.array([0, 1])) for _ in range(4)]


def test_map_is_one_for_perfect_boxes_and_lower_for_shifted_ones() -> None:
    gts = _gts()
    perfect = [(b, np.array([0.9, 0.8]), lab) for b, lab in gts]
    assert detection_map(gts, perfect, ["a", "b"])["map50"] == pytest.approx(1.0)
    assert detection_map(gts, perfect, ["a", "b"])["map50_95"] == pytest.approx(1.0)
    shifted = [(b + np.array([4, 0, 4, 0]), s, lab) for b, s, lab in perfect]  # IoU 0.82: fine at 0.5, not at 0.9
    r = detection_map(gts, shifted, ["a", "b"])
    assert r["map50"] == pytest.approx(1.0) and 0.3 < r["map50_95"] < 0.9
    far = [(b + np.array([30, 0, 30, 0]), s, lab) for b, s, lab in perfect]
    assert detection_map(gts, far, ["a", "b"])["map50"] == pytest.approx(0.0)
    half = [(b[:1], s[:1], lab[:1]) for b, s, lab in perfect]  # class b never found
    r = detection_map(gts, half, ["a", "b"])
    assert r["per_class"]["a"]["ap50"] == pytest.approx(1.0) and r["per_class"]["b"]["ap50"] == pytest.approx(0.0)
    ci = bootstrap_map(gts, half, ["a", "b"], n_boot=20)
    assert ci["map50"]["value"] == pytest.approx(0.5) and ci["map50"]["low"] <= 0.5 <= ci["map50"]["high"]
    thr, f1 = best_threshold(gts, perfect)
    assert f1 == pytest.approx(1.0) and thr <= 0.8


def test_bootstrap_resamples_match_pycocotools_on_the_same_images() -> None:
    from meddx.tasks.detection import metrics as M

    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(15):
        b = rng.uniform(0, 300, (6, 2))
        b = np.concatenate([b, b + 40], 1)
        lab = rng.integers(0, 3, 6)
        gts.append((b, lab))
        d = np.concatenate([b + rng.normal(0, 6, b.shape), rng.uniform(0, 300, (4, 4))])
        d[:, 2:] = d[:, :2] + 40
        dets.append((d, rng.uniform(0, 1, 10), np.concatenate([lab, rng.integers(0, 3, 4)])))
    names = ["a", "b", "c"]
    ev = M._coco_eval(gts, dets, 3)
    rows = M._per_image(ev, len(gts), 3)
    idx = np.random.default_rng(1).integers(0, len(gts), len(gts))  # with repeats
    ref = detection_map([gts[i] for i in idx], [dets[i] for i in idx], names)
    ap = np.array([M._ap_of(rows[k], idx, np.asarray(ev.params.recThrs)) for k in range(3)])
    assert ap[:, 0].mean() == pytest.approx(ref["map50"]) and ap.mean() == pytest.approx(ref["map50_95"])
    assert ap[1, 0] == pytest.approx(ref["per_class"]["b"]["ap50"])


def test_nms_and_decode() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    h, w, n_cls = 64, 64, 2
    outs = []
    for stride in (8, 16, 32):
        n = (h // stride) * (w // stride)
        cls, reg, ctr = np.full((1, n, n_cls), -10.0, np.float32), np.ones((1, n, 4), np.float32), np.zeros((1, n, 1))
        if stride == 8:
            k = 3 * (w // 8) + 2  # the location at x=16, y=24
            cls[0, k, 1] = 10.0
            reg[0, k] = [1, 2, 3, 1]  # left, top, right, bottom in strides
        outs += [cls, reg, ctr.astype(np.float32)]
    b, s, lab = decode(outs, h, w, score_thresh=0.3)
    assert lab.tolist() == [1] and s[0] == pytest.approx(np.sqrt(1 / (1 + np.exp(-10)) * 0.5), rel=1e-4)
    np.testing.assert_allclose(b[0], [16 - 8, 24 - 16, 16 + 24, 24 + 8])


def test_unknown_option_is_a_config_error_naming_it() -> None:
    from meddx.tasks.detection.package import train

    with pytest.raises(ConfigError) as info:
        train("bccd-blood-cell-detection", learning_rat=0.1)
    assert info.value.field == "learning_rat"


def test_user_imagenet_state_dict_loads_into_the_resnet18_trunk(tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    from meddx.exceptions import ModelError
    from meddx.tasks.detection.model import DetectorConfig, build_detector

    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    det = build_detector(DetectorConfig(arch="resnet18", num_classes=2), imagenet=tmp_path / "r18.pth")
    assert torch.equal(det.backbone.s32[0].conv1.weight, state["layer4.0.conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="does not fit"):
        build_detector(DetectorConfig(arch="resnet18", num_classes=2), imagenet=tmp_path / "bad.pth")
    with pytest.raises(ConfigError):
        build_detector(DetectorConfig(arch="slim", num_classes=2), imagenet=tmp_path / "r18.pth")


# --------------------------------------------------------------------------- train -> package -> predict
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from meddx.tasks.detection.package import train

    base = tmp_path_factory.mktemp("det")
    data = voc_shapes(base / "voc", n=12)
    run = train(str(data), epochs=1, out=base / "run", progress=False, long_side=96, n_boot=5, threads=1,
                batch_size=4)
    return run, data


def test_tiny_train_writes_a_detection_package(tiny_run: tuple[Path, Path]) -> None:
    from meddx.packaging.registry import read_package
    from meddx.tasks.detection.package import evaluate

    run, data = tiny_run
    package = read_package(run)
    assert package["modality"] == "image" and package["task"] == "detection"
    assert package["class_names"] == ["dot", "bar"] and package["preprocess"]["long_side"] == 96
    assert (run / "model.onnx").is_file() and (run / "model.safetensors").is_file()
    assert set(package["metrics"]["values"]) >= {"map50", "map50_95", "ap50_dot", "ap50_bar"}
    split = package["splits"]
    assert not set(split["train"]) & set(split["test"]) and len(split["train"]) + len(split["val"]) + len(
        split["test"]) == 12
    result = evaluate(run, package, str(data), n_boot=5)
    assert result["split"] == "test" and result["n"] == len(split["test"])
    assert {"value", "low", "high"} <= set(result["metrics"]["map50"]) and "dot" in result["per_class"]


def test_predict_runs_without_torch_and_survives_a_broken_file(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = tiny_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    good = data / "JPEGImages" / "img00.png"
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        from meddx.packaging.registry import read_package
        from meddx.tasks.detection.package import predict
        run = {str(run)!r}
        out = predict(run, read_package(run), [{str(good)!r}, {str(broken)!r}, {str(good)!r}],
                      out_dir={str(tmp_path / "ov")!r}, score_threshold=0.01)
        print(json.dumps(out))
        assert "torch" not in sys.modules
    """)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "MEDDX_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert [p["decision"]["decision"] == "rejected" for p in out] == [False, True, False]
    assert "broken.png" in out[1]["decision"]["reason"] and out[1]["task"] == "detection"
    first = out[0]
    assert first["task"] == "detection" and first["boxes"], "a 0.01 threshold keeps some boxes"
    scores = [b["score"] for b in first["boxes"]]
    assert scores == sorted(scores, reverse=True)
    for b in first["boxes"]:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and b["label"] in CLASSES
    assert sum(first["counts"].values()) == len(first["boxes"])
    assert Path(first["explanation"]["overlay"]).is_file()


# --------------------------------------------------------------------------- the mirror
@pytest.mark.mirror
def test_mirror_sets_and_their_splits(mirror: Path) -> None:
    bccd = load_detection_data("bccd-blood-cell-detection")
    parts = split_items(bccd)
    assert {k: len(v) for k, v in parts.items()} == {"train": 205, "val": 87, "test": 72}
    assert bccd.classes == ["RBC", "WBC", "Platelets"]
    lungs = load_detection_data("covid-cxr-ieee8023-lungbbox", errors="skip")
    parts = split_items(lungs, seed=0)
    group = {it.name: it.group for it in lungs.items}
    assert not {group[n] for n in parts["train"]} & {group[n] for n in parts["test"]}
