"""The near-duplicate finder on generated near-copies, and the retrieval metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.cli import main
from meddx.retrieval.duplicates import find_duplicates, pair_scores, pixel_vectors
from meddx.retrieval.metrics import average_precision_at_k, precision_at_k, recall_at_k, relevance


def _originals(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random 48×48 images (blobs), unlike one another."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (4, 4)).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((48, 48), Image.BICUBIC)))
    return out


def _near_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, a one-pixel shift and noise: the same picture saved again."""
    a = np.roll(image.astype(np.float64), 1, axis=1) * 0.9 + 12 + rng.normal(0, 2, image.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def test_near_copies_are_grouped_and_cross_split_pairs_flagged() -> None:
    rng = np.random.default_rng(1)
    images = _originals(40)
    truth = list(range(40))
    for source in (3, 3, 17, 25):  # image 3 twice, 17 and 25 once
        images.append(_near_copy(images[source], rng))
        truth.append(source)
    splits = ["train"] * 30 + ["test"] * 10 + ["test", "train", "train", "test"]
    found = find_duplicates(pixel_vectors(images), 0.95, splits=splits)
    scores = pair_scores(found.groups, np.array(truth))
    assert scores["true_pairs"] == 5 and scores["recall"] == 1.0 and scores["precision"] == 1.0
    assert sorted(found.multi_groups()) == [[3, 40, 41], [17, 42], [25, 43]]
    cross = {tuple(sorted((a, b))) for a, b, _ in found.cross_split}
    assert cross == {(3, 40), (40, 41), (25, 43)}  # 3 (train) / 40 (test), 40 / 41 (train), 25 (train) / 43 (test)


def test_threshold_controls_what_counts() -> None:
    rng = np.random.default_rng(2)
    images = _originals(10)
    images.append(_near_copy(images[0], rng))
    assert len(find_duplicates(pixel_vectors(images), 0.95).pairs) == 1
    assert len(find_duplicates(pixel_vectors(images), 0.99999).pairs) == 0


def test_pair_scores_count_missed_and_wrong_pairs() -> None:
    scores = pair_scores(np.array([0, 0, 1, 2, 2]), np.array([0, 0, 0, 1, 2]))
    assert scores == {"true_pairs": 3, "found_pairs": 2, "matched_pairs": 1, "recall": 1 / 3, "precision": 0.5}


def test_cli_duplicates_across_split_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    images = _originals(12, seed=3)
    for split, picks in (("train", range(0, 8)), ("test", range(8, 12))):
        (tmp_path / split).mkdir()
        for i in picks:
            Image.fromarray(images[i]).save(tmp_path / split / f"im{i}.png")
    Image.fromarray(_near_copy(images[2], rng)).save(tmp_path / "test" / "copy_of_2.png")
    assert main(["data", "duplicates", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 13 and out["splits"] == ["test", "train"]
    assert out["groups"] == [["test/copy_of_2.png", "train/im2.png"]]
    assert [(p["a"], p["b"]) for p in out["cross_split_pairs"]] in ([("test/copy_of_2.png", "train/im2.png")],
                                                                   [("train/im2.png", "test/copy_of_2.png")])


def test_map_and_precision_at_k() -> None:
    rel = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(average_precision_at_k(rel, 5), [(1 + 2 / 3) / 2, 0.0, 1.0])
    np.testing.assert_allclose(precision_at_k(rel, 5), [0.4, 0.0, 1.0])
    ids = np.array([[2, 0, -1]])
    assert relevance(ids, np.array([0, 0, 1]), np.array([1])).tolist() == [[True, False, False]]
    assert recall_at_k(np.array([[1, 2, 9]]), np.array([[1, 2, 3]]), 3) == pytest.approx(2 / 3)


@pytest.mark.mirror
def test_brain_groups_of_the_data_layer_are_recovered(mirror: Path) -> None:
    from meddx.data.datasets import load_images

    sample = load_images("brain-tumor-mri-navoneel", size=128)
    images, _ = sample.splits["all"]
    found = find_duplicates(pixel_vectors(images), 0.95)
    scores = pair_scores(found.groups, np.asarray(sample.meta["groups"]["all"]))
    assert scores["recall"] >= 0.9 and scores["precision"] >= 0.8, scores
