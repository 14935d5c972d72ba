"""evaluate_model and `meddx evaluate`: CIs, group bootstrap, label mapping by name, plots, --out, --record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.data.datasets import load_images
from meddx.evaluation.report import evaluate_model, map_labels
from meddx.exceptions import ConfigError, InvalidValueError
from meddx.inference import Pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _make_folder(root: Path, n: int, seed: int, *, patients: int | None = None,
                 labels: tuple[str, str] = ("normal", "lesion")) -> Path:
    """Bright centre = lesion; optional patient_id column (several images per patient)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,label" + (",patient_id" if patients else "")]
    for i in range(n):
        label = labels[i % 2]
        img = rng.integers(0, 80, (16, 16)).astype(np.uint8)
        if label == labels[1]:
            img[4:12, 4:12] += 150
        Image.fromarray(img).save(root / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{label}" + (f",p{i % patients}" if patients else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meddx.training import TrainConfig, train

    base = tmp_path_factory.mktemp("eval")
    data = _make_folder(base / "train", n=32, seed=0)
    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, lr=0.01, out=str(base / "run"),
                             threads=1), progress=False)


@pytest.fixture(scope="module")
def pipe(run: Path) -> Pipeline:
    return Pipeline.load(run)


def test_binary_report_with_patient_bootstrap(pipe: Pipeline, tmp_path: Path) -> None:
    sample = load_images(_make_folder(tmp_path / "hospital", n=30, seed=3, patients=6))
    images, labels = sample.splits["all"]
    out = tmp_path / "report"
    result = evaluate_model(pipe, images, labels, groups=sample.meta["groups"]["all"],
                            class_names=sample.class_names, out_dir=out, n_boot=100)
    assert result["n"] == 30 and result["n_groups"] == 6 and result["resampling"] == "groups"
    assert result["class_counts"] == {"lesion": 15, "normal": 15}
    assert result["positive_class"] == "normal"  # class 1 unless told otherwise
    for name in ("acc", "auc", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_acc"):
        m = result["metrics"][name]
        if m["value"] is not None and m["low"] is not None:
            assert m["low"] - 1e-9 <= m["value"] <= m["high"] + 1e-9, name
    assert np.asarray(result["confusion_matrix"]).sum() == 30
    for file in ("roc.png", "pr.png", "confusion.png"):
        assert (out / file).read_bytes()[:8] == PNG_MAGIC, file
    saved = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert saved["metrics"].keys() == result["metrics"].keys()


def test_labels_are_matched_by_name_not_by_index(pipe: Pipeline) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (12, 16, 16)).astype(np.uint8)
    names = np.array(["lesion", "normal"] * 6)
    by_name = evaluate_model(pipe, images, names, n_boot=5)
    # the same labels as indices into a data set that orders its classes the other way round
    flipped = evaluate_model(pipe, images, (names == "lesion").astype(int), class_names=["normal", "lesion"], n_boot=5)
    assert by_name["confusion_matrix"] == flipped["confusion_matrix"]
    assert by_name["metrics"]["auc"] == flipped["metrics"]["auc"]
    assert map_labels(["normal", "lesion"], ["lesion", "normal"]).tolist() == [1, 0]


def test_unknown_label_names_the_label_and_the_models_classes(pipe: Pipeline) -> None:
    images = np.zeros((3, 16, 16), dtype=np.uint8)
    with pytest.raises(InvalidValueError) as err:
        evaluate_model(pipe, images, ["lesion", "tumour", "normal"], n_boot=5)
    assert "'tumour'" in str(err.value) and "'lesion'" in str(err.value) and "'normal'" in str(err.value)
    with pytest.raises(ConfigError, match="positive class"):
        evaluate_model(pipe, images, ["lesion", "normal", "normal"], positive="benign", n_boot=5)


class _FixedPipeline:
    """A stand-in model with fixed, informative probabilities for three classes."""

    def __init__(self, labels: np.ndarray) -> None:
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(len(labels), 3)) + 2.0 * np.eye(3)[labels]
        self.proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        self.class_names = ["a", "b", "c"]
        self.package: dict[str, Any] = {"name": "fixed", "version": "1"}

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.proba[: len(images)]


def test_multiclass_macro_metrics_and_plots(tmp_path: Path) -> None:
    labels = np.arange(60) % 3
    fixed = _FixedPipeline(labels)
    result = evaluate_model(fixed, np.zeros((60, 4, 4), np.uint8), labels, out_dir=tmp_path, n_boot=50)
    assert result["positive_class"] is None and result["averaging"].startswith("macro")
    assert 0.7 < result["metrics"]["auc"]["value"] <= 1.0
    assert set(result["per_class"]) == {"a", "b", "c"}
    assert np.asarray(result["confusion_matrix"]).shape == (3, 3)
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("roc.png", "pr.png", "confusion.png"))
    with pytest.raises(ConfigError, match="binary"):
        evaluate_model(fixed, np.zeros((60, 4, 4), np.uint8), labels, positive="a", n_boot=5)


def test_cli_out_folder_and_json_file(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hospital = _make_folder(tmp_path / "hospital", n=20, seed=5, patients=5)
    out = tmp_path / "report"
    assert main(["evaluate", str(run), str(hospital), "--n-boot", "50", "--out", str(out),
                 "--positive", "lesion"]) == 0
    text = capsys.readouterr().out
    assert "| auc |" in text and "95% CI" in text and "5 patients/groups" in text and "positive class: lesion" in text
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "metrics.json", "pr.png", "roc.png"]
    assert json.loads((out / "metrics.json").read_text())["positive_class"] == "lesion"
    single = tmp_path / "only.json"
    assert main(["evaluate", str(run), str(hospital), "--n-boot", "20", "--out", str(single)]) == 0
    assert json.loads(single.read_text())["n"] == 20 and not (tmp_path / "roc.png").exists()


def test_cli_errors_name_the_problem(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _make_folder(tmp_path / "other", n=6, seed=2, labels=("normal", "tumour"))
    assert main(["evaluate", str(run), str(other), "--n-boot", "5"]) == 2
    err = capsys.readouterr().err
    assert "labels.csv" in err and "'tumour'" in err and "'lesion'" in err
    assert main(["evaluate", str(run), str(other), "--record"]) == 2
    assert "--record" in capsys.readouterr().err
    assert main(["evaluate", str(run), str(other), "--split", "test"]) == 2
    assert "no split 'test'" in capsys.readouterr().err


def test_record_on_catalogue_test_split_updates_package_and_card(tmp_path: Path, mirror: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The real path: BreastMNIST, 1 epoch of cnn-tiny, test metrics recorded into the package."""
    from meddx.training import TrainConfig, train

    run = train(TrainConfig(data="breastmnist", model="cnn-tiny", epochs=1, out=str(tmp_path / "bm"), threads=1),
                progress=False)
    assert main(["evaluate", str(run), "breastmnist", "--split", "val", "--record", "--n-boot", "5"]) == 2
    assert "test split" in capsys.readouterr().err
    assert main(["evaluate", str(run), "breastmnist", "--record", "--n-boot", "50", "--positive", "malignant"]) == 0
    package = json.loads((run / "package.json").read_text())
    recorded = package["metrics"]
    assert recorded["split"] == "test" and recorded["n"] == 156 and recorded["positive_class"] == "malignant"
    assert recorded["values"]["auc"]["low"] <= recorded["values"]["auc"]["value"] <= recorded["values"]["auc"]["high"]
    card = (run / "MODEL_CARD.md").read_text()
    assert "| AUC (ROC) |" in card and "n = 156" in card and "MedMNIST" in card
