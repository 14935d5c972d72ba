"""Cross-modality translation (issue 21): phantoms, pix2pix and CycleGAN code paths, derived marking, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.exceptions import ConfigError
from meddx.packaging.files import read_package
from meddx.synthesis.translation import checks as C
from meddx.synthesis.translation import package as P
from meddx.synthesis.translation import phantoms as PH

FAST = {"eval_every": 2, "n_boot": 50, "batch": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return P.train("phantom-pairs:12", steps=4, out=tmp_path_factory.mktemp("p2p") / "run", progress=False, **FAST)


def test_phantoms_are_paired_deterministic_and_differ_where_ct_and_mr_differ():
    ct, mr, labels = PH.pair(64, seed=3)
    ct2, mr2, labels2 = PH.pair(64, seed=3)
    assert np.array_equal(ct, ct2) and np.array_equal(mr, mr2) and np.array_equal(labels, labels2)
    assert not np.array_equal(PH.pair(64, seed=4)[2], labels)
    assert ct.shape == mr.shape == labels.shape == (64, 64)
    assert ct.dtype == mr.dtype == np.float32 and 0 <= ct.min() and ct.max() <= 1 and mr.max() <= 1
    bone, fat = labels == PH.TISSUES.index("bone"), labels == PH.TISSUES.index("fat")
    assert bone.any() and fat.any()
    assert ct[bone].mean() > 0.7 and mr[bone].mean() < 0.2  # bone: bright in CT, dark in MR
    assert mr[fat].mean() > 0.6 and ct[fat].mean() < 0.4  # fat: dark-grey in CT, bright in T1 MR
    background = labels == 0
    assert ct[background].mean() < 0.1 and mr[background].mean() < 0.1  # same anatomy, same grid


def test_structure_checks_count_added_and_removed_edge_regions():
    base = np.zeros((64, 64), np.float32)
    base[10:30, 10:30] = 1.0
    extra = base.copy()
    extra[40:55, 40:55] = 0.6
    assert C.structures(base, base) == {"added": 0, "removed": 0}
    assert C.structures(extra, base)["added"] >= 1 and C.structures(extra, base)["removed"] == 0
    assert C.structures(base, extra)["removed"] >= 1
    assert C.structure_ssim(1 - base, base) > 0.9  # contrast inverted, structure kept
    assert C.structures(np.zeros((32, 32)), base[:32, :32])["added"] == 0


@pytest.mark.mirror
def test_pix2pix_package_round_trips_through_evaluate_and_predict(pix2pix_run: Path, tmp_path: Path,
                                                                  format_samples: Path):
    from meddx.synthesis.derived import is_marked_derived

    package = read_package(pix2pix_run)
    assert package["modality"] == "image" and package["task"] == "translation" and package["model"] == "pix2pix"
    spec = package["translation"]
    assert spec["mode"] == "paired" and spec["direction"] == "a2b" and spec["size"] == 64
    assert package["splits"]["test"]["a"] and package["metrics"]["held_out"]
    values = package["metrics"]["values"]
    assert {"psnr", "ssim", "psnr_input_copied", "structures_added_vs_reference"} <= set(values)
    assert values["psnr"]["low"] <= values["psnr"]["value"] <= values["psnr"]["high"]
    assert (pix2pix_run / "model.safetensors").is_file()
    result = P.evaluate(pix2pix_run, package, "phantom-pairs:12", n_boot=20)
    assert result["n"] == len(package["splits"]["test"]["a"]) and result["held_out"]
    assert set(result["metrics"]["psnr"]) == {"value", "low", "high"}

    png = tmp_path / "slice.png"
    Image.fromarray((PH.pair(80, seed=9)[0] * 255).astype(np.uint8)).save(png)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    ct = format_samples / "dicom" / "CT_small.dcm"
    out = tmp_path / "out"
    preds = P.predict(pix2pix_run, package, [str(png), str(ct), str(bad)], out_dir=out)
    assert len(preds) == 3
    p_png, p_ct, p_bad = preds
    for p in (p_png, p_ct):
        assert p["task"] == "translation"
        syn = p["synthetic"]
        assert syn["derived"] and syn["kind"] == "translation" and syn["banner"].startswith("SYNTHETIC")
        assert {"structures_added", "structures_removed", "structure_ssim"} <= set(syn["checks"])
        with Image.open(syn["image"]) as banner, Image.open(syn["image_raw"]) as raw:
            assert banner.mode == "RGB" and raw.mode.startswith("I")
            top = np.asarray(banner)[2, :, :]
            assert (top[:, 0] > 150).mean() > 0.5 and (top[:, 1] < 60).mean() > 0.5  # the red banner band
    with Image.open(p_png["synthetic"]["image_raw"]) as raw:
        assert raw.size == (80, 80)  # back on the input's grid
    assert p_png["synthetic"]["dicom"] is None
    dcm = p_ct["synthetic"]["dicom"]
    assert dcm and is_marked_derived(dcm)
    import pydicom

    ds = pydicom.dcmread(dcm)
    src = pydicom.dcmread(str(ct))
    assert ds.ImageType[0] == "DERIVED" and ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.pixel_array.shape == src.pixel_array.shape
    assert p_bad["decision"]["decision"] == "rejected" and p_bad["task"] == "translation"
    assert "notes.txt" in p_bad["input_check"]["reasons"][0]


def test_cyclegan_trains_on_unpaired_folders_and_translates_both_ways(tmp_path: Path):
    folder = tmp_path / "xray"
    for sub, seeds in (("source", range(6)), ("target", range(10, 16))):
        (folder / sub).mkdir(parents=True)
        for s in seeds:
            ct, mr, _ = PH.pair(48, seed=s)
            Image.fromarray(((ct if sub == "source" else mr) * 255).astype(np.uint8)).save(folder / sub / f"{sub}{s}.png")
    run = P.train(str(folder), steps=3, out=tmp_path / "cyc", progress=False, size=32, **FAST)
    package = read_package(run)
    spec = package["translation"]
    assert package["model"] == "cyclegan" and spec["mode"] == "unpaired" and spec["generators"] == ["g_ab", "g_ba"]
    values = package["metrics"]["values"]
    assert {"cycle_psnr_a", "cycle_ssim_b", "domain_share_a2b", "structure_ssim_a2b", "structures_added_a2b"} <= set(values)
    assert 0 <= values["domain_share_a2b"]["value"] <= 1
    result = P.evaluate(run, package, str(folder), n_boot=20)
    assert result["n"] == result["n_a"] + result["n_b"] > 0
    for direction in ("a2b", "b2a"):
        (pred,) = P.predict(run, package, [str(folder / "target" / "target10.png")], out_dir=tmp_path / direction,
                            direction=direction)
        checks = pred["synthetic"]["checks"]
        assert "cycle_psnr" in checks and 0 <= checks["target_domain_probability"] <= 1
        assert Path(pred["synthetic"]["image"]).is_file()


def test_errors_name_the_field_and_the_fix(pix2pix_run: Path, tmp_path: Path):
    package = read_package(pix2pix_run)
    with pytest.raises(ConfigError) as exc:
        P.train("no-such-source", progress=False)
    assert exc.value.field == "data" and "phantom-pairs" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        P.train("phantom-pairs:12", progress=False, size=50)
    assert exc.value.field == "size"
    with pytest.raises(ConfigError) as exc:
        P.train("phantom-pairs:12", progress=False, colour="red")
    assert exc.value.field == "colour"
    with pytest.raises(ConfigError) as exc:
        P.predict(pix2pix_run, package, ["x.png"], direction="b2a")
    assert exc.value.field == "direction" and "cyclegan" in str(exc.value)
    folder = tmp_path / "mixed"
    (folder / "source").mkdir(parents=True)
    (folder / "target").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "source" / f"{name}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "target" / f"other_{name}.png")
    with pytest.raises(ConfigError) as exc:
        P.train(str(folder), progress=False, mode="paired", steps=1)
    assert exc.value.field == "mode"
    with pytest.raises(ConfigError) as exc:
        P.train(str(folder), model="pix2pix", progress=False, steps=1)
    assert exc.value.field == "model"
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny)
    (pred,) = P.predict(pix2pix_run, package, [str(tiny)], out_dir=tmp_path / "o")
    assert pred["decision"]["decision"] == "rejected" and "too small" in pred["input_check"]["reasons"][0]


@pytest.mark.mirror
def test_cli_train_dispatches_translation_and_synthesize_translate(tmp_path: Path, format_samples: Path,
                                                                   capsys: pytest.CaptureFixture[str]):
    from meddx.cli import main

    run = tmp_path / "cli-run"
    assert main(["train", "phantom-pairs:16", "--task", "translation", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    package = read_package(run)
    assert package["task"] == "translation" and package["training"]["steps"] == 2  # 12 pairs / batch 8
    capsys.readouterr()
    out = tmp_path / "translated"
    assert main(["synthesize", "translate", str(run), str(format_samples / "dicom" / "CT_small.dcm"),
                 "--out", str(out)]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["task"] == "translation" and pred["synthetic"]["dicom"].startswith(str(out))
    assert main(["train", "phantom-pairs:16", "--task", "translation", "--patience", "3"]) == 2  # refused by name
