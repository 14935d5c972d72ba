"""Group-aware splits: by patient, record or near-duplicate group, never by image or beat.

A model validated on images of patients it was trained on looks better than it
is. Every helper here takes a ``groups`` array (patient id, record id, or the
near-duplicate groups computed by :func:`near_duplicate_groups`) and keeps each
group on one side of every split, stratifying by label where it can.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError


def _check(labels: np.ndarray, groups: np.ndarray) -> None:
    if len(labels) != len(groups):
        raise InvalidValueError(
            f"{len(labels)} labels but {len(groups)} groups", field="groups",
            hint="Pass one group id (patient, record) per sample",
        )


def group_kfold(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    n_splits: int = 5,
    *,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold that keeps every group inside one fold.

    Yields ``(train_index, test_index)`` pairs, like scikit-learn's splitters.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    groups = np.asarray(groups)
    _check(labels, groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ConfigError(
            f"{n_splits} folds need at least {n_splits} groups, got {n_groups}", field="n_splits",
            hint="Use fewer folds",
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    yield from splitter.split(np.zeros(len(labels)), labels, groups)


def group_train_val_test_split(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split indices into train/val/test with whole groups on each side, stratified by label.

    Fractions are reached as closely as group sizes allow. Returns
    ``{"train": idx, "val": idx, "test": idx}``.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val={val} and test={test} must be in [0, 1) with a sum below 1", field="val/test")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    _check(labels, groups)
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    # Stratify groups by their majority label, then deal them out per stratum.
    majority = {}
    for g in unique:
        values, counts = np.unique(labels[groups == g], return_counts=True)
        majority[g] = values[np.argmax(counts)]
    assignment: dict[object, str] = {}
    for stratum in np.unique(list(majority.values())):
        members = [g for g in unique if majority[g] == stratum]
        rng.shuffle(members)
        sizes = np.array([np.sum(groups == g) for g in members])
        total = sizes.sum()
        cum = np.cumsum(sizes) / total
        for g, c in zip(members, cum, strict=True):
            assignment[g] = "test" if c <= test else "val" if c <= test + val else "train"
        # guarantee non-empty val/test when asked for and possible
        for split, frac in (("test", test), ("val", val)):
            if frac > 0 and split not in {assignment[g] for g in members} and len(members) > 2:
                candidates = [g for g in members if assignment[g] == "train"]
                assignment[candidates[0]] = split
    return {
        split: np.flatnonzero(np.array([assignment[g] == split for g in groups]))
        for split in ("train", "val", "test")
    }


def near_duplicate_groups(
    images: Sequence[np.ndarray], *, size: int = 64, threshold: float = 0.95
) -> np.ndarray:
    """Group ids such that images with normalised correlation > ``threshold`` share a group.

    Each image is converted to grey, resized to ``size``×``size``, standardised,
    and compared with every other (O(n²) correlations, fine for a few thousand
    images). Groups are the connected components of the "near-duplicate" graph.
    """
    from PIL import Image

    vectors = []
    for image in images:
        array = np.asarray(image)
        if array.ndim == 3:
            array = array[..., :3].mean(axis=2)
        pil = Image.fromarray(array.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
        v = np.asarray(pil, dtype=np.float64).ravel()
        v = v - v.mean()
        norm = np.linalg.norm(v)
        vectors.append(v / norm if norm > 0 else v)
    matrix = np.stack(vectors)
    corr = matrix @ matrix.T
    parent = list(range(len(vectors)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(corr > threshold, k=1))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(vectors))]
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


__all__ = ["group_kfold", "group_train_val_test_split", "near_duplicate_groups"]
