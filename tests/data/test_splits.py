"""Group-aware splits keep every patient/record/near-duplicate group on one side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.data.splits import group_kfold, group_train_val_test_split, near_duplicate_groups
from meddx.exceptions import ConfigError, InvalidValueError


def _data(n_groups: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = np.repeat(rng.integers(0, 2, n_groups), sizes)
    return labels, groups


def test_kfold_never_splits_a_group() -> None:
    labels, groups = _data()
    seen = np.zeros(len(labels), dtype=int)
    for train, test in group_kfold(labels, groups, n_splits=5, seed=1):
        assert not set(groups[train]) & set(groups[test])
        seen[test] += 1
    assert (seen == 1).all()


def test_train_val_test_split_is_group_disjoint_and_complete() -> None:
    labels, groups = _data(60)
    parts = group_train_val_test_split(labels, groups, val=0.2, test=0.2, seed=3)
    sets = [set(groups[idx]) for idx in parts.values()]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(labels)))
    assert all(len(idx) > 0 for idx in parts.values())
    assert 0.1 < len(parts["test"]) / len(labels) < 0.3


def test_mismatched_lengths_and_bad_fractions() -> None:
    with pytest.raises(InvalidValueError, match="groups"):
        group_train_val_test_split([0, 1], [0])
    with pytest.raises(ConfigError):
        group_train_val_test_split([0, 1], [0, 1], val=0.6, test=0.5)
    with pytest.raises(ConfigError, match="folds"):
        list(group_kfold([0, 1, 0], [0, 0, 1], n_splits=5))


def test_near_duplicates_share_a_group() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (80, 80)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 5, a.shape), 0, 255).astype(np.uint8)  # a, slightly noisy
    c = rng.integers(0, 255, (64, 64)).astype(np.uint8)
    groups = near_duplicate_groups([a, c, b])
    assert groups[0] == groups[2] != groups[1]


def test_brain_tumor_near_duplicates_are_grouped(mirror: Path) -> None:
    from PIL import Image

    folder = mirror / "brain-tumor-mri-navoneel"
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    groups = near_duplicate_groups([np.asarray(Image.open(f).convert("L")) for f in files])
    _, counts = np.unique(groups, return_counts=True)
    in_groups = int((counts[groups] > 1).sum())
    # The mirror README reports 78 images with a near-duplicate (its exact resize unstated);
    # meddx's bilinear 64×64 grey correlation finds 77 (one pair sits at the 0.95 threshold).
    assert 70 <= in_groups <= 85
    labels = np.array([f.parent.name == "yes" for f in files], dtype=int)
    for train, test in group_kfold(labels, groups, n_splits=5):
        assert not set(groups[train]) & set(groups[test])
