"""The signal modality end to end: `meddx train/evaluate/predict` on a synthetic WFDB folder.

A tiny folder of synthetic ECG-like records (regular RR = normal, irregular RR = AF) is written
with ``wfdb.wrsamp``; the feature model must learn it, and the CNN package must round-trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

wfdb = pytest.importorskip("wfdb")
pytest.importorskip("sklearn")
pytest.importorskip("torch")

from meddx.exceptions import MeddxError  # noqa: E402
from meddx.signals import package as SP  # noqa: E402

FS = 250  # not the models' 300 Hz: the package must resample


def _ecg(rr: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    t_peaks = np.cumsum(np.concatenate([[0.4], rr]))
    n = int((t_peaks[-1] + 0.4) * fs)
    t = np.arange(n) / fs
    x = np.zeros(n)
    for tp in t_peaks:
        x += 1.2 * np.exp(-0.5 * ((t - tp) / 0.012) ** 2)          # R
        x -= 0.15 * np.exp(-0.5 * ((t - tp - 0.04) / 0.015) ** 2)  # S
        x += 0.25 * np.exp(-0.5 * ((t - tp - 0.25) / 0.05) ** 2)   # T
    return x + rng.normal(0, 0.02, n) + 0.1 * np.sin(2 * np.pi * 0.2 * t)


def _record(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n_beats = int(seconds / 0.8) + 2
    rr = 0.8 + rng.normal(0, 0.01, n_beats) if kind == "N" else rng.uniform(0.4, 1.2, n_beats)
    x = _ecg(rr, FS, rng)
    return x[: int(seconds * FS)]


def _write(folder: Path, name: str, x: np.ndarray) -> None:
    wfdb.wrsamp(name, fs=FS, units=["mV"], sig_name=["ECG"], p_signal=x[:, None], fmt=["16"],
                adc_gain=[1000.0], baseline=[0], write_dir=str(folder))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wfdb-af")
    rng = np.random.default_rng(0)
    rows = ["record,label"]
    for i in range(28):
        kind = "N" if i % 2 == 0 else "A"
        name = f"r{i:03d}"
        _write(base, name, _record(kind, float(rng.uniform(12, 16)), rng))
        rows.append(f"{name},{'normal' if kind == 'N' and i % 4 == 0 else kind}")
    (base / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return base


def _run(args: list[str]) -> str:
    from typer.testing import CliRunner

    from meddx.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def features_run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "feat"
    return SP.train(str(folder), model="features", seed=0, epochs=None, out=out, progress=False)


def test_folder_is_routed_to_the_signal_modality(folder: Path) -> None:
    from meddx.modalities import modality_of_data

    assert modality_of_data(str(folder)) == "signal"
    signals, labels, names = SP.load_folder(folder)
    assert len(signals) == 28 and set(labels) == {"N", "A"} and names[0] == "r000"
    assert abs(signals[0].size / SP.FEATURE_FS - 12) < 4.5  # resampled 250 -> 300 Hz, 12-16 s


def test_train_features_package(features_run: Path) -> None:
    pkg = json.loads((features_run / "package.json").read_text())
    assert pkg["modality"] == "signal" and pkg["model"] == "features"
    assert pkg["class_names"] == ["N", "A", "O", "~"] and pkg["num_classes"] == 4
    assert pkg["extra_files"] == [SP.FEATURES_FILE, "ood.npz"] and (features_run / SP.FEATURES_FILE).is_file()
    assert pkg["intended_input"]["kind"] == "signal" and pkg["ood"]["method"] == "mahalanobis"
    assert (features_run / "model.safetensors").is_file()
    assert pkg["trust"]["calibration"]["name"] == "temperature"
    assert pkg["trust"]["calibration"]["state"]["temperature"] > 0
    splits = pkg["splits"]
    assert sum(len(v) for v in splits.values()) == 28
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    # regular vs irregular RR is easy: the held-out test records are classified well
    assert pkg["metrics"]["values"]["f1_A"]["value"] >= 0.8
    assert pkg["metrics"]["values"]["acc"]["value"] >= 0.8


def test_signal_model_predict_proba_windows(features_run: Path) -> None:
    model = SP.SignalModel.load(features_run)
    rng = np.random.default_rng(5)
    fs = 200.0  # yet another rate
    n = int(10 * fs)
    reg = [_ecg(0.8 + rng.normal(0, 0.01, 16), fs, rng)[:n] for _ in range(3)]
    irr = [_ecg(rng.uniform(0.4, 1.2, 20), fs, rng)[:n] for _ in range(3)]
    p = model.predict_proba(np.stack(reg + irr), fs)
    assert p.shape == (6, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    a = model.class_names.index("A")
    assert np.all(p[3:, a] > p[:3, a].max())
    assert np.all(p[:3].argmax(axis=1) == 0) and np.all(p[3:].argmax(axis=1) == a)
    # a list of windows of different lengths works too
    q = model.predict_proba([reg[0], irr[0][: int(7 * fs)]], fs)
    assert q.shape == (2, 4) and q[1, a] > q[0, a]
    with pytest.raises(MeddxError, match="at least"):
        model.predict_proba(np.zeros((1, int(2 * fs))), fs)


def test_cnn_stream_package_learns_from_short_onset_mixed_crops(folder: Path, tmp_path: Path) -> None:
    run = SP.train(str(folder), model="cnn-stream", seed=0, epochs=1, out=tmp_path / "stream", progress=False)
    pkg = json.loads((run / "package.json").read_text())
    cfg = pkg["cnn"]["config"]
    assert pkg["model"] == "cnn-stream" and pkg["architecture"] == "rhythm-resnet-se-stream"
    assert (cfg["min_window_s"], cfg["window_s"], cfg["onset_mix"], cfg["epochs"]) == (6.0, 12.0, 0.3, 1)
    assert pkg["extra_files"] == ["ood.npz"] and pkg["window_s"] == 12.0
    assert "CNN pooled penultimate features" in pkg["ood"]["features"]
    model = SP.SignalModel.load(run)
    assert model.cnn.meddx_config.onset_mix == 0.3 and model.features_model is None
    p = model.predict_proba(np.random.default_rng(0).normal(0, 0.2, (3, 7 * 300)), 300.0)
    assert p.shape == (3, 4) and np.allclose(p.sum(axis=1), 1.0)


def test_cli_train_evaluate_predict_ensemble_and_registry(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "ens-run"
    _run(["train", folder, "--epochs", "2", "--out", run, "--no-progress"])  # default model: ensemble
    pkg = json.loads((run / "package.json").read_text())
    assert pkg["model"] == "ensemble" and pkg["architecture"] == "rhythm-ensemble(gbm-features+resnet-se)"
    assert pkg["cnn"]["config"]["epochs"] == 2 and pkg["extra_files"] == [SP.FEATURES_FILE, "ood.npz"]
    assert pkg["fs"] == 300.0 and pkg["window_s"] == 30.0 and pkg["trust"]["calibration"]["name"] == "temperature"

    out = _run(["evaluate", run, folder, "--n-boot", "50", "--out", tmp_path / "ev"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 28 and metrics["split"] == "all"
    for key in ("challenge_score", "f1_N", "f1_A", "auc_A", "acc"):
        v = metrics["metrics"][key]
        assert v["low"] <= v["value"] <= v["high"], key
    assert "| acc |" in out

    rec = folder / "r001"
    res = json.loads(_run(["predict", run, str(rec) + ".hea", str(folder / "r002")]))
    assert [r["input"] for r in res] == [str(rec) + ".hea", str(folder / "r002")]
    for r in res:
        assert r["modality"] == "signal" and r["uncertainty"]["method"] == "none"
        assert abs(sum(r["calibrated_probabilities"].values()) - 1) < 1e-6
        assert r["prediction"] in ("N", "A", "O", "~")
        assert any("resampled" in w for w in r["warnings"])

    # registered packages keep their sha256 and predict by name
    from meddx.packaging.registry import register

    target = register(run, name="ecg-test", version="1")
    files = json.loads((target / "package.json").read_text())["files"]
    assert set(files) == {"model.safetensors", SP.FEATURES_FILE, "ood.npz"} and (target / SP.FEATURES_FILE).is_file()
    by_name = json.loads(_run(["predict", "ecg-test", str(rec) + ".dat"]))
    assert by_name["calibrated_probabilities"] == pytest.approx(res[0]["calibrated_probabilities"], abs=1e-9)
    original = (target / SP.FEATURES_FILE).read_bytes()
    (target / SP.FEATURES_FILE).write_bytes(original + b"tampered")
    with pytest.raises(MeddxError, match="sha256"):
        SP.SignalModel.load(target)
    (target / SP.FEATURES_FILE).write_bytes(original)
    assert SP.SignalModel.load("ecg-test:1").kind == "ensemble"


def test_evaluate_features_on_folder_has_high_scores(features_run: Path, folder: Path) -> None:
    pkg = json.loads((features_run / "package.json").read_text())
    res = SP.evaluate(features_run, pkg, str(folder), n_boot=100)
    m = res["metrics"]
    assert res["n"] == 28 and m["f1_A"]["value"] >= 0.85 and m["auc_A"]["value"] >= 0.9
    assert m["f1_O"]["value"] is None or np.isnan(m["f1_O"]["value"]) or m["f1_O"]["value"] == 0


def test_predict_warnings_and_errors(features_run: Path, folder: Path, tmp_path: Path) -> None:
    pkg = json.loads((features_run / "package.json").read_text())
    rng = np.random.default_rng(1)
    short = _record("N", 7.0, rng)
    _write(tmp_path, "short", short)
    flat = _record("N", 12.0, rng)
    flat[FS * 3: FS * 7] = flat[FS * 3]
    _write(tmp_path, "flat", flat)
    res = SP.predict(features_run, pkg, [str(tmp_path / "short"), str(tmp_path / "flat.hea")])
    assert any("shorter than 9 s" in w for w in res[0]["warnings"])
    assert any("flat line" in w for w in res[1]["warnings"])
    assert not any("flat line" in w for w in res[0]["warnings"])
    bad = tmp_path / "broken.hea"
    bad.write_text("this is not a header\n")
    # one bad file never aborts a batch: it is rejected with the file's name, the others are predicted
    res = SP.predict(features_run, pkg, [str(bad), str(tmp_path / "short"), str(tmp_path / "missing.hea")])
    assert [r["decision"]["decision"] for r in res][::2] == ["rejected", "rejected"]
    assert "broken.hea" in res[0]["decision"]["reason"] and "missing.hea" in res[2]["decision"]["reason"]
    assert res[0]["prediction"] is None and res[0]["input_check"]["passed"] is False
    assert res[1]["prediction"] in ("N", "A", "O", "~") and res[1]["ood"] is not None


def test_bad_labels_are_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(6):
        _write(tmp_path, f"x{i}", _record("N", 10.0, rng))
    (tmp_path / "labels.csv").write_text("record,label\n" + "".join(f"x{i},sinus\n" for i in range(6)))
    with pytest.raises(MeddxError, match="unknown label 'sinus'"):
        SP.load_folder(tmp_path)


ROW_KEYS = {"kind", "source", "n", "prevalence", "auc", "ece", "ece_floor", "note", "challenge_score", "auc_af",
            "af_called_when_not_af", "af_found_when_af", "class_counts", "n_groups", "ood_flagged", "recall",
            "confusion"}


def test_evaluate_json_has_ece_beside_its_noise_floor(features_run: Path, folder: Path, tmp_path: Path) -> None:
    _run(["evaluate", features_run, folder, "--n-boot", "20", "--out", tmp_path / "ev.json"])
    res = json.loads((tmp_path / "ev.json").read_text())
    assert 0 <= res["ece"] <= 1 and 0 < res["ece_noise_floor"] <= 1
    assert res["ece"] == res["shift"]["calibration"]["ece"]


def test_validate_internal_beside_collections_and_folders(features_run: Path, mirror: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal = the package's own test split; then every registered collection (here MIT-BIH record 100,
    registered for folder-trained packages) and every user folder, each a block row with the rhythm figures."""
    from meddx.signals import external as SE

    rng = np.random.default_rng(7)
    other = tmp_path / "other-site"
    other.mkdir()
    rows = ["record,label,patient"]
    for i in range(8):
        kind = "N" if i % 2 else "A"
        _write(other, f"s{i}", _record(kind, 14.0, rng))
        rows.append(f"s{i},{kind},p{i // 2}")
    (other / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setitem(SE._COLLECTIONS, "", [SE.Collection(
        "mitbih-100", lambda: SE.load_mitbih(mirror / "ecg-mitbih-arrhythmia", records=["100"]))])

    pkg = json.loads((features_run / "package.json").read_text())
    res = SP.validate(features_run, pkg, folders=[str(other)], n_boot=30, seed=0)
    assert res["set"] == pkg["data"]["source"].split("/")[-1] and res["leave_one_source_out"]["applicable"] is False
    internal, (mitbih, site) = res["internal"], res["external"]
    for row in (internal, mitbih, site):
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
    assert internal["kind"] == "internal" and internal["n"] == len(pkg["splits"]["test"])
    assert internal["auc_af"]["value"] >= 0.9 and internal["challenge_score"]["value"] is not None
    assert mitbih["kind"] == "other collection" and mitbih["n"] == 60 and mitbih["n_groups"] == 1
    assert mitbih["auc"]["value"] is None and mitbih["class_counts"]["N"] == 60  # one class: no AUC, no made-up one
    assert mitbih["collection"]["leads"] == {"100": "MLII"} and 0 <= mitbih["af_called_when_not_af"]["value"] <= 1
    assert mitbih["af_called_when_not_af"]["low"] is None  # one record: no CI over patients
    assert set(mitbih["recall"]) == {"N"} and sum(mitbih["confusion"][0]) == 60
    assert site["kind"] == "folder" and site["source"] == "other-site" and site["n"] == 8 and site["n_groups"] == 4
    assert site["auc_af"]["low"] <= site["auc_af"]["value"] <= site["auc_af"]["high"]
    assert site["ece_floor"] > 0 and site["prevalence"] == [0.5, 0.5, 0.0, 0.0]

    monkeypatch.setitem(SE._COLLECTIONS, "", [])
    # a folder of WFDB records with rhythm annotations and no labels.csv is cut and labelled like MIT-BIH
    holter = tmp_path / "holter"
    holter.mkdir()
    for ext in ("hea", "dat", "atr"):
        (holter / f"100.{ext}").symlink_to(mirror / "ecg-mitbih-arrhythmia" / "wfdb_record_100" / f"100.{ext}")
    row = SP.validate(features_run, pkg, folders=[str(holter)], n_boot=0)["external"][-1]
    assert row["source"] == "holter" and row["n"] == 60 and row["collection"]["leads"] == {"100": "MLII"}

    # the training folder itself: only the records the model never learnt from are scored
    seen = SP.validate(features_run, pkg, folders=[pkg["data"]["source"]], n_boot=0)["external"][-1]
    assert seen["n"] == len(pkg["splits"]["test"]) and "left out" in seen["note"]
