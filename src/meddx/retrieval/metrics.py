"""Retrieval quality: mAP@k and precision@k (relevant = same label), recall@k against exact search, CIs."""

from __future__ import annotations

import numpy as np


def average_precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per query from a boolean ``(n_queries, >=k)`` relevance matrix in rank order.

    ``AP@k = Σ_{i<=k} P@i · rel_i / (number of relevant among the top k)``, 0 when none is relevant.
    """
    rel = np.asarray(relevant, dtype=np.float64)[:, :k]
    hits = np.cumsum(rel, axis=1)
    precision_at_i = hits / np.arange(1, rel.shape[1] + 1)
    found = rel.sum(axis=1)
    return np.where(found > 0, (precision_at_i * rel).sum(axis=1) / np.maximum(found, 1), 0.0)


def precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Share of relevant hits among the top ``k``, per query."""
    return np.asarray(relevant, dtype=np.float64)[:, :k].mean(axis=1)


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of the exact top-``k`` ids that an approximate search also returned in its top ``k``."""
    found, exact = np.asarray(found)[:, :k], np.asarray(exact)[:, :k]
    return float(np.mean([len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum())
                          for f, e in zip(found, exact, strict=True)]))


def relevance(neighbour_ids: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Boolean ``(n_queries, k)``: does each hit share its query's label (missing hits are not relevant)."""
    ids = np.asarray(neighbour_ids)
    labels = np.asarray(gallery_labels)[np.clip(ids, 0, None)]
    return (labels == np.asarray(query_labels)[:, None]) & (ids >= 0)


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-query ``values``."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


__all__ = ["average_precision_at_k", "bootstrap_ci", "precision_at_k", "recall_at_k", "relevance"]
