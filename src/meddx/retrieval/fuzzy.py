"""Fuzzy c-means clustering and the cluster index that probes a query's clusters by membership.

Fuzzy c-means (Bezdek 1981) gives every vector a membership in every cluster (each row sums to 1):
``u_ij = 1 / Σ_k (d_ij / d_ik)^(2/(m-1))`` with fuzzifier ``m > 1``, and centres are the
``u^m``-weighted means. The retrieval systems built on it (fuzzy-clustering CBIR for MRI) search the
clusters a query belongs to rather than the single nearest one, so a case near a cluster border is
still found. :class:`FuzzyIndex` does that: each stored vector sits in the list of its top cluster
(and, optionally, of any further cluster where its membership is at least ``spill``); a query probes its clusters
in order of membership until their memberships add up to ``coverage`` (at most ``max_probe``), then
scores the candidates exactly. This is a short implementation (no scikit-fuzzy dependency), tested
in ``tests/retrieval``; clustering runs on at most ``train_size`` vectors, as FAISS's IVF does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.retrieval.indexes import VectorIndex, register_index


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    return np.maximum(d, 0.0)


def memberships(x: np.ndarray, centres: np.ndarray, m: float = 2.0) -> np.ndarray:
    """Fuzzy memberships ``(n, c)`` of ``x`` in the clusters around ``centres``; each row sums to 1.

    A vector on a centre belongs to it fully (shared equally between coinciding centres).
    """
    if m <= 1:
        raise ConfigError(f"the fuzzifier m must be above 1, got {m}", field="m")
    x = np.asarray(x, dtype=np.float32)
    d2 = _sq_distances(x, np.asarray(centres, dtype=np.float32))
    zero = d2 <= 1e-12
    # u_ij ∝ d_ij^(-2/(m-1)); work in logs of the smallest distance's ratio for stability
    power = 1.0 / (m - 1.0)
    ratio = d2 / np.maximum(d2.min(axis=1, keepdims=True), 1e-30)
    with np.errstate(divide="ignore", over="ignore"):  # rows with a zero distance are replaced just below
        u = np.power(ratio, -power, dtype=np.float32)
    on_centre = zero.any(axis=1)
    if on_centre.any():
        u[on_centre] = zero[on_centre]
    u = u.astype(np.float64)
    return u / u.sum(axis=1, keepdims=True)


def fuzzy_cmeans(x: np.ndarray, c: int, *, m: float = 2.0, max_iter: int = 100, tol: float = 1e-4,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit fuzzy c-means: ``(centres (c, d), memberships (n, c), iterations)``.

    Starts from ``c`` distinct vectors drawn at random (k-means++ seeding); stops when no membership
    moves by more than ``tol``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= c <= n:
        raise ConfigError(f"need 1 <= clusters <= {n} vectors, got {c}", field="clusters")
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    closest = _sq_distances(x, centres[0][None])[:, 0]
    for _ in range(1, c):  # k-means++: spread the starting centres
        p = closest / closest.sum() if closest.sum() > 0 else None
        centres.append(x[rng.choice(n, p=p)])
        closest = np.minimum(closest, _sq_distances(x, centres[-1][None])[:, 0])
    v = np.stack(centres)
    u = memberships(x, v, m)
    for it in range(1, max_iter + 1):
        w = u ** m
        v = ((w.T @ x) / np.maximum(w.sum(axis=0)[:, None], 1e-30)).astype(np.float32)
        new = memberships(x, v, m)
        delta = float(np.abs(new - u).max())
        u = new
        if delta < tol:
            return v, u, it
    return v, u, max_iter


@register_index("fuzzy")
class FuzzyIndex(VectorIndex):
    """Fuzzy c-means cluster index: probe the clusters a query belongs to, score their members exactly.

    Args:
        clusters: number of clusters (default about 2·√n at build time).
        m: fuzzifier (above 1; lower is crisper).
        coverage: probe clusters until the query's memberships in them sum to this.
        max_probe: probe at most this many clusters.
        spill: also store a vector in any further cluster where its membership is at least this
            (1.0, the default: each vector in its top cluster only; below 0.5 border vectors sit in two lists).
        train_size: cluster a random sample of at most this many vectors.
        max_iter: fuzzy c-means iterations at most.
    """

    FILE = "fuzzy.npz"

    def __init__(self, dim: int, clusters: int | None = None, m: float = 1.5, coverage: float = 0.9,
                 max_probe: int = 16, spill: float = 1.0, train_size: int = 20000, max_iter: int = 50, seed: int = 0,
                 **params: Any) -> None:
        super().__init__(dim, clusters=clusters, m=float(m), coverage=float(coverage), max_probe=int(max_probe),
                         spill=float(spill), train_size=int(train_size), max_iter=int(max_iter), seed=int(seed),
                         **params)
        if m <= 1:
            raise ConfigError(f"the fuzzifier m must be above 1, got {m}", field="m")
        self.centres: np.ndarray | None = None
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.lists: list[np.ndarray] = []
        self.iterations = 0
        self._layout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._centre_sq: np.ndarray | None = None

    @property
    def ntotal(self) -> int:
        return int(len(self.vectors))

    @property
    def coverage(self) -> float:
        return float(self.params["coverage"])

    def set_probe(self, coverage: float | None = None, max_probe: int | None = None) -> None:
        """Search-time settings (higher: more clusters probed, higher recall, slower)."""
        if coverage is not None:
            self.params["coverage"] = float(coverage)
        if max_probe is not None:
            self.params["max_probe"] = int(max_probe)

    def _train(self, x: np.ndarray) -> None:
        p = self.params
        rng = np.random.default_rng(p["seed"])
        sample = x[rng.choice(len(x), p["train_size"], replace=False)] if len(x) > p["train_size"] else x
        c = p["clusters"] or int(max(1, min(round(2 * np.sqrt(len(x))), len(sample))))
        p["clusters"] = int(c)
        centres, _, self.iterations = fuzzy_cmeans(sample, c, m=p["m"], max_iter=p["max_iter"], seed=p["seed"])
        self.centres = centres.astype(np.float32)
        self._centre_sq = None
        self.lists = [np.zeros(0, dtype=np.int64) for _ in range(c)]

    def memberships(self, x: Any) -> np.ndarray:
        """Memberships ``(n, clusters)`` of (normalised) vectors; rows sum to 1."""
        if self.centres is None:
            raise ModelError("the fuzzy index is not built yet", field="index", hint="Call build(vectors) first")
        return memberships(self._check(x), self.centres, self.params["m"])

    def _add(self, x: np.ndarray) -> None:
        if self.centres is None:
            raise ModelError("the fuzzy index must be built before vectors are added", field="index",
                             hint="Call build(vectors) first")
        start = self.ntotal
        new_lists: list[list[np.ndarray]] = [[] for _ in self.lists]
        for lo in range(0, len(x), 65536):
            u = memberships(x[lo:lo + 65536], self.centres, self.params["m"])
            top = u.argmax(axis=1)
            keep = u >= self.params["spill"]
            keep[np.arange(len(u)), top] = True
            rows, cols = np.nonzero(keep)
            order = np.argsort(cols, kind="stable")
            rows, cols = rows[order] + start + lo, cols[order]
            bounds = np.searchsorted(cols, np.arange(len(self.lists) + 1))
            for j in range(len(self.lists)):
                if bounds[j + 1] > bounds[j]:
                    new_lists[j].append(rows[bounds[j]:bounds[j + 1]])
        self.lists = [np.concatenate([old, *extra]) if extra else old for old, extra in zip(self.lists, new_lists,
                                                                                             strict=True)]
        self.vectors = np.concatenate([self.vectors, x]) if self.ntotal else x.copy()
        self._layout = None

    def probe(self, q: np.ndarray) -> np.ndarray:
        """The clusters each query probes: a boolean ``(n_queries, clusters)`` mask."""
        mask = np.zeros((len(q), len(self.centres)), dtype=bool)
        for i, v in enumerate(np.asarray(q, dtype=np.float32)):
            mask[i, self._probe_one(v)] = True
        return mask

    def _probe_one(self, v: np.ndarray) -> np.ndarray:
        """Cluster ids one query probes, by decreasing membership, until they hold ``coverage`` of it."""
        if self._centre_sq is None:
            self._centre_sq = (self.centres * self.centres).sum(axis=1)
        d2 = np.maximum(self._centre_sq - 2 * (self.centres @ v) + float(v @ v), 1e-12)
        weights = (d2.min() / d2) ** (1.0 / (self.params["m"] - 1.0))  # memberships up to their sum
        limit = min(self.params["max_probe"], len(d2))
        top = np.argpartition(d2, limit - 1)[:limit] if limit < len(d2) else np.arange(len(d2))
        top = top[np.argsort(d2[top], kind="stable")]
        share = np.cumsum(weights[top]) / weights.sum()
        return top[:min(int(np.searchsorted(share, self.params["coverage"])) + 1, limit)]

    def _packed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectors laid out list after list (ids, vectors, offsets), so a probed list is one slice."""
        if self._layout is None:
            order = np.concatenate(self.lists) if self.lists else np.zeros(0, dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum([len(a) for a in self.lists])]).astype(np.int64)
            self._layout = (order, np.ascontiguousarray(self.vectors[order]), offsets)
        return self._layout

    def _search(self, q: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        out = np.full((len(q), k), -1, dtype=np.int64)
        allowed = None
        if ids is not None:
            allowed = np.zeros(self.ntotal, dtype=bool)
            allowed[ids] = True
        order, packed, offsets = self._packed()
        spilled = self.params["spill"] < 1.0
        for i in range(len(q)):
            cand_ids, cand_scores = [], []
            for j in self._probe_one(q[i]):
                lo, hi = offsets[j], offsets[j + 1]
                members = order[lo:hi]
                if allowed is not None:  # the filter restricts the candidates before scoring
                    keep = allowed[members]
                    cand_ids.append(members[keep])
                    cand_scores.append(packed[lo:hi][keep] @ q[i])
                else:
                    cand_ids.append(members)
                    cand_scores.append(packed[lo:hi] @ q[i])
            cand = np.concatenate(cand_ids) if len(cand_ids) != 1 else cand_ids[0]
            scores = np.concatenate(cand_scores) if len(cand_scores) != 1 else cand_scores[0]
            if len(cand) == 0:
                continue
            wide = min(len(cand), 4 * k if spilled else k)
            top = np.argpartition(-scores, wide - 1)[:wide] if wide < len(cand) else np.arange(len(cand))
            top = top[np.argsort(-scores[top], kind="stable")]
            if spilled:  # a vector stored in two probed lists appears twice
                _, first = np.unique(cand[top], return_index=True)
                top = top[np.sort(first)]
            top = top[:k]
            sims[i, :len(top)], out[i, :len(top)] = scores[top], cand[top]
        return sims, out

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(ids, dtype=np.int64)]

    def _save(self, folder: Path) -> None:
        sizes = np.array([len(a) for a in self.lists], dtype=np.int64)
        flat = np.concatenate(self.lists) if self.lists else np.zeros(0, dtype=np.int64)
        np.savez(folder / self.FILE, centres=self.centres, vectors=self.vectors, list_ids=flat, list_sizes=sizes)

    def _load(self, folder: Path) -> None:
        with np.load(folder / self.FILE) as data:
            self.centres, self.vectors = data["centres"], data["vectors"]
            self._centre_sq = None
            self.lists = np.split(data["list_ids"], np.cumsum(data["list_sizes"])[:-1])
        self._layout = None


__all__ = ["FuzzyIndex", "fuzzy_cmeans", "memberships"]
