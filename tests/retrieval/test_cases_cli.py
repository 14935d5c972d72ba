"""Case indexes on a tiny trained package: CLI build/search/info, filters, model versioning, resumable embedding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.exceptions import ModelError
from meddx.retrieval import CaseIndex, Embedder, similar_cases
from meddx.retrieval.cases import check_model
from meddx.retrieval.embed import penultimate_columns
from tests._factories import make_labelled_pngs

pytestmark = pytest.mark.slow  # trains a tiny package (about 10 s; longer on a busy machine)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_labelled_pngs(tmp_path_factory.mktemp("ret") / "data", n=24, size=20)
    rows = (root / "labels.csv").read_text().splitlines()  # add filterable metadata columns
    extra = ["file,label,site,sex,age"] + [f"{r},{'A' if i % 3 else 'B'},{'F' if i % 2 else 'M'},{30 + i}"
                                           for i, r in enumerate(rows[1:])]
    (root / "labels.csv").write_text("\n".join(extra) + "\n")
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meddx.training import TrainConfig, train

    # no ONNX export (the slowest step of a tiny run): the embeddings then come from the torch model
    return train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, size=24, threads=1, export="none",
                             out=str(tmp_path_factory.mktemp("ret") / "run")), progress=False)


@pytest.fixture(scope="module")
def built(run: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ret") / "index"
    assert main(["index", "build", str(run), str(data), "--out", str(out), "--no-progress", "--chunk-size", "5"]) == 0
    return out


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_embeddings_are_the_ood_gates_penultimate_features(run: Path, data: Path) -> None:
    embedder = Embedder.load(run)
    package = embedder.pipeline.package
    start, end = penultimate_columns(embedder.pipeline)
    assert package["ood"]["groups"][0] == ["penultimate", start, end] and embedder.dim == end - start
    images = np.stack([np.asarray(Image.open(data / f"img{i:03d}.png")) for i in range(4)])
    vectors = embedder.embed_images(images)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    features = embedder.pipeline.logits_and_features(images)[1][:, start:end]
    np.testing.assert_allclose(vectors, features / np.linalg.norm(features, axis=1, keepdims=True), atol=1e-5)


def test_cli_build_search_info(built: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not (built / ".chunks").exists()  # checkpoint chunks are removed after a finished build
    assert main(["index", "info", str(built)]) == 0
    info = _json(capsys)
    assert info["count"] == 24 and info["kind"] == "flat" and info["labels"] == {"normal": 12, "lesion": 12}
    assert len(info["model"]["weights_sha256"]) == 64 and info["filters"]["sex"] == ["F", "M"]
    assert main(["index", "search", str(built), str(data / "img003.png"), "-k", "5"]) == 0
    hits = _json(capsys)["hits"]
    assert len(hits) == 5 and hits[0]["case_id"] == "img003.png" and hits[0]["similarity"] == pytest.approx(1, abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all({"case_id", "label", "similarity"} <= set(h) for h in hits)
    assert all(a["similarity"] >= b["similarity"] for a, b in zip(hits, hits[1:], strict=False))


def test_cli_filters_apply_inside_the_search(built: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "search", str(built), str(data / "img003.png"), "-k", "30",
                 "--filter", "site=B", "--filter", "sex=M"]) == 0
    hits = _json(capsys)["hits"]
    # site B is every third image, sex M the even ones: 4 cases; k=30 still returns only those
    assert len(hits) == 4 and all(h["site"] == "B" and h["sex"] == "M" for h in hits)
    assert main(["index", "search", str(built), str(data / "img003.png"), "--filter", "age_band=30-39",
                 "--filter", "label=lesion"]) == 0
    assert {h["age_band"] for h in _json(capsys)["hits"]} == {"30-39"}
    assert main(["index", "search", str(built), str(data / "img003.png"), "--filter", "hospital=X"]) == 2
    assert "cannot filter by ['hospital']" in capsys.readouterr().err


def test_a_mismatched_model_is_refused(built: Path, run: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "retrained"
    shutil.copytree(run, other)
    package = json.loads((other / "package.json").read_text())
    package["version"] = "20990101000000"
    (other / "package.json").write_text(json.dumps(package))
    with pytest.raises(ModelError, match="version"):
        CaseIndex.load(built, other)
    assert main(["index", "search", str(built), str(run / "package.json"), "--model", str(other)]) == 2
    assert "rebuild the index" in capsys.readouterr().err
    recorded = json.loads((built / "index.json").read_text())["model"]
    with pytest.raises(ModelError, match="weights_sha256"):
        check_model(recorded, {**recorded, "weights_sha256": "0" * 64})
    with pytest.raises(ModelError, match="embedding"):
        check_model(recorded, {**recorded, "embedding": {"members": "first", "flips": True}})


def test_similar_cases_for_the_service(built: Path, data: Path, run: Path) -> None:
    from meddx.inference import Pipeline

    index = CaseIndex.load(built, Pipeline.load(run))
    image = np.asarray(Image.open(data / "img004.png"))
    hits = similar_cases(index, image, k=3, filters={"sex": "M"})
    assert hits[0]["case_id"] == "img004.png" and len(hits) == 3 and "file" not in hits[0]
    assert similar_cases(built, image, k=1)[0]["case_id"] == "img004.png"


@pytest.mark.mirror
def test_build_from_a_catalogue_set(run: Path, mirror: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bm"
    assert main(["index", "build", str(run), "breastmnist", "--out", str(out), "--kind", "hnsw", "--no-progress"]) == 0
    capsys.readouterr()
    index = CaseIndex.load(out)
    assert index.info["count"] == 546 and index.info["split"] == "train" and index.info["kind"] == "hnsw"
    assert {c["label"] for c in index.cases} == {"malignant", "normal, benign"}
    assert index.cases[0]["case_id"] == "train:0" and index.cases[0]["modality"]
    hits = index.search_vectors(index.vectors.reconstruct(np.array([5])), 3, {"label": "malignant"})[0]
    assert all(h["label"] == "malignant" for h in hits) and len(hits) == 3
