"""Near-duplicate images within a set and across its splits, found with the retrieval index.

Every image becomes a unit vector (by default a standardised grey thumbnail, so the inner product of two
vectors is the normalised correlation of the images; or a model package's embedding), the vectors go into
an exact index (:class:`~meddx.retrieval.indexes.FlatIndex`) and each image's neighbours above
``threshold`` are its near-duplicates. Groups are the connected components of those pairs; a pair whose
images lie in different splits (train and test) is leakage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.retrieval.indexes import create_index, normalise

PIXEL_SIZE = 32
"""Side of the grey thumbnail the default (pixel) duplicate vectors are made from."""


def pixel_vectors(images: Sequence[np.ndarray] | np.ndarray, size: int = PIXEL_SIZE) -> np.ndarray:
    """Standardised ``size``×``size`` grey thumbnails, unit length: inner product = normalised correlation."""
    from PIL import Image

    rows = []
    for image in images:
        a = np.asarray(image, dtype=np.float32)
        if a.ndim == 3:
            a = a[..., :3].mean(axis=2)
        v = np.asarray(Image.fromarray(a, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float32).ravel()
        rows.append(v - v.mean())
    return normalise(np.stack(rows))


@dataclass
class Duplicates:
    """Pairs above the threshold, the groups they form, and the pairs that cross splits."""

    pairs: list[tuple[int, int, float]]
    groups: np.ndarray
    """Group id per image (images without a near-duplicate are alone in theirs)."""
    cross_split: list[tuple[int, int, float]] = field(default_factory=list)

    def multi_groups(self) -> list[list[int]]:
        """Groups of two or more images, as sorted index lists."""
        ids, counts = np.unique(self.groups, return_counts=True)
        return [sorted(np.flatnonzero(self.groups == g).tolist()) for g in ids[counts > 1]]


def find_duplicates(vectors: np.ndarray, threshold: float = 0.95, *, splits: Sequence[str] | None = None,
                    k: int = 16) -> Duplicates:
    """Near-duplicate pairs: each vector's ``k`` nearest neighbours (exact index) with similarity > ``threshold``."""
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold is a cosine similarity in [-1, 1], got {threshold}", field="threshold")
    x = normalise(vectors)
    n = len(x)
    index = create_index("flat", x.shape[1]).build(x)
    sims, ids = index.search(x, min(k + 1, n))
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    pairs: dict[tuple[int, int], float] = {}
    for i in range(n):
        for s, j in zip(sims[i], ids[i], strict=True):
            if j < 0 or j == i or s <= threshold:
                continue
            a, b = (i, int(j)) if i < j else (int(j), i)
            pairs[(a, b)] = float(s)
            parent[find(a)] = find(b)
    roots = np.array([find(i) for i in range(n)])
    _, groups = np.unique(roots, return_inverse=True)
    listed = sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda p: -p[2])
    cross = [p for p in listed if splits is not None and splits[p[0]] != splits[p[1]]]
    return Duplicates(pairs=listed, groups=groups.astype(np.int64), cross_split=cross)


def pair_scores(found: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Pairwise recall and precision of group ids ``found`` against ``truth`` (same-group pairs)."""
    found, truth = np.asarray(found), np.asarray(truth)
    same_found = found[:, None] == found[None]
    same_truth = truth[:, None] == truth[None]
    upper = np.triu(np.ones_like(same_found, dtype=bool), k=1)
    tp = int((same_found & same_truth & upper).sum())
    n_found, n_truth = int((same_found & upper).sum()), int((same_truth & upper).sum())
    return {"true_pairs": n_truth, "found_pairs": n_found, "matched_pairs": tp,
            "recall": tp / n_truth if n_truth else None, "precision": tp / n_found if n_found else None}


__all__ = ["PIXEL_SIZE", "Duplicates", "find_duplicates", "pair_scores", "pixel_vectors"]
