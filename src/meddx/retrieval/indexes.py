"""Vector indexes behind one small interface, registered by name.

Every index stores L2-normalised float32 vectors under consecutive ids ``0..n-1`` and ranks by inner
product (cosine similarity). ``search(queries, k, allowed=ids)`` restricts the search itself to the
allowed ids: FAISS indexes pass an ``IDSelectorBatch`` in their search parameters; small allowed sets
are scored exactly over just those vectors (an HNSW graph walk through a few allowed nodes can miss
them). So a filtered query never returns a filtered-out id, and it returns fewer than ``k`` hits only
when fewer than ``k`` ids are allowed.

``create_index("hnsw", dim, m=32)`` builds one by name; ``register_index("name")`` adds a kind.
Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, ``nprobe`` lists probed),
``hnsw`` (``IndexHNSWFlat``, ``ef_search``) and ``fuzzy`` (:class:`~meddx.retrieval.fuzzy.FuzzyIndex`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, ModelError

INDEXES: dict[str, type[VectorIndex]] = {}

EXACT_BELOW = 2048
"""Filtered searches allowing fewer ids than this score just those vectors exactly."""


def register_index(name: str) -> Callable[[type[VectorIndex]], type[VectorIndex]]:
    """Class decorator: make an index kind available to :func:`create_index` under ``name``."""

    def deco(cls: type[VectorIndex]) -> type[VectorIndex]:
        cls.kind = name
        INDEXES[name] = cls
        return cls

    return deco


def create_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    """A new, empty index of a registered ``kind`` (``flat``, ``ivf``, ``hnsw``, ``fuzzy``)."""
    if kind not in INDEXES:
        raise ConfigError(f"unknown index kind {kind!r}", field="index", hint=f"Choose one of: {', '.join(INDEXES)}")
    return INDEXES[kind](dim, **params)


def normalise(vectors: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InvalidValueError(f"vectors must be 2-D (n, dim), got shape {x.shape}", field="vectors")
    if len(x) == 1:  # one query: the service's case, kept cheap
        norm = float(np.sqrt(x[0] @ x[0]))
        return np.ascontiguousarray(x / norm if norm > 0 else x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    norms[norms == 0] = 1
    return np.ascontiguousarray(x / norms)


class VectorIndex(ABC):
    """The interface: ``build`` (train if needed, then add), ``add``, ``search``, ``save``, ``load``."""

    kind = "abstract"

    def __init__(self, dim: int, **params: Any) -> None:
        if int(dim) <= 0:
            raise ConfigError(f"dim must be positive, got {dim}", field="dim")
        self.dim = int(dim)
        self.params = params

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of stored vectors."""

    def build(self, vectors: Any) -> VectorIndex:
        """Fit whatever the index learns (lists, clusters) on ``vectors`` and store them; returns self."""
        x = self._check(vectors)
        self._train(x)
        self._add(x)
        return self

    def add(self, vectors: Any) -> np.ndarray:
        """Store more vectors (after ``build``); returns their ids."""
        x = self._check(vectors)
        start = self.ntotal
        self._add(x)
        return np.arange(start, start + len(x))

    def search(self, queries: Any, k: int = 10, *, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(similarities, ids)``, each ``(n_queries, k)``; missing slots have id -1 and similarity -inf.

        ``allowed``: ids the search may return (the metadata filter), or None for all.
        """
        q = self._check(queries)
        if int(k) < 1:
            raise ConfigError(f"k must be at least 1, got {k}", field="k")
        k = int(k)
        if allowed is None:
            return self._search(q, k, None)
        ids = np.unique(np.asarray(allowed, dtype=np.int64).reshape(-1))
        ids = ids[(ids >= 0) & (ids < self.ntotal)]
        if len(ids) < EXACT_BELOW:
            return self._search_subset(q, k, ids)
        sims, out = self._search(q, k, ids)
        if np.any((out >= 0).sum(axis=1) < min(k, len(ids))):  # an approximate walk ran out of allowed ids
            return self._search_subset(q, k, ids)
        return sims, out

    def _search_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores over only the allowed vectors."""
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        out = np.full((len(q), k), -1, dtype=np.int64)
        if len(ids) == 0:
            return sims, out
        scores = q @ self.reconstruct(ids).T
        take = min(k, len(ids))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
        sims[:, :take] = np.take_along_axis(scores, top, axis=1)
        out[:, :take] = ids[top]
        return sims, out

    def _check(self, vectors: Any) -> np.ndarray:
        x = normalise(vectors)
        if x.shape[1] != self.dim:
            raise ModelError(f"vectors have {x.shape[1]} dimensions, the index holds {self.dim}", field="dim",
                             hint="Embed with the model the index was built from")
        return x

    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder`` (``index.json`` plus the kind's data file)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "dim": self.dim, "params": self.params, "ntotal": self.ntotal}
        self._save(folder)
        (folder / "vectors.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    @staticmethod
    def load(folder: str | Path) -> VectorIndex:
        """Read an index written by :meth:`save`, of whatever kind it is."""
        folder = Path(folder)
        meta_path = folder / "vectors.json"
        if not meta_path.is_file():
            raise ModelError("no vector index here (vectors.json is missing)", path=folder,
                             hint="Build one with `meddx index build MODEL DATA --out INDEX`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        index = create_index(meta["kind"], meta["dim"], **meta.get("params", {}))
        index._load(folder)
        if index.ntotal != meta["ntotal"]:
            raise ModelError(f"index holds {index.ntotal} vectors, vectors.json says {meta['ntotal']}", path=folder)
        return index

    @abstractmethod
    def _train(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _add(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, q: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, ``(len(ids), dim)``."""

    @abstractmethod
    def _save(self, folder: Path) -> None: ...

    @abstractmethod
    def _load(self, folder: Path) -> None: ...


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("FAISS is not installed", field="index",
                          hint="pip install 'meddx[retrieval]' (faiss-cpu)") from exc
    return faiss


class FaissIndex(VectorIndex):
    """Shared FAISS plumbing: one ``faiss.Index`` with inner-product metric, saved as ``vectors.faiss``."""

    FILE = "vectors.faiss"

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self.index = self._make(_faiss())

    def _make(self, faiss: Any) -> Any:
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _train(self, x: np.ndarray) -> None:
        if not self.index.is_trained:
            self.index.train(x)

    def _add(self, x: np.ndarray) -> None:
        if not self.index.is_trained:
            raise ModelError(f"the {self.kind} index must be built before vectors are added", field="index",
                             hint="Call build(vectors) first")
        self.index.add(x)

    def _parameters(self, faiss: Any, selector: Any) -> Any:
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _search(self, q: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(ids) if ids is not None else None
        params = self._parameters(faiss, selector)
        sims, out = self.index.search(q, k, params=params) if params is not None else self.index.search(q, k)
        if -1 in out[:, -1].tolist():  # empty slots (they come last in a row)
            sims[out < 0] = -np.inf
        return sims, out

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(ids), dtype=np.float32).reshape(len(ids), self.dim)

    def _save(self, folder: Path) -> None:
        _faiss().write_index(self.index, str(folder / self.FILE))

    def _load(self, folder: Path) -> None:
        self.index = _faiss().read_index(str(folder / self.FILE))
        if hasattr(self.index, "make_direct_map") and self.kind == "ivf":
            self.index.make_direct_map()
        self._configure()

    def _configure(self) -> None:
        """Re-apply search-time settings after a load."""


@register_index("flat")
class FlatIndex(FaissIndex):
    """Exact search (``IndexFlatIP``): the reference the approximate kinds are measured against."""

    def _make(self, faiss: Any) -> Any:
        return faiss.IndexFlatIP(self.dim)


@register_index("ivf")
class IVFIndex(FaissIndex):
    """Inverted lists (``IndexIVFFlat``): ``nlist`` k-means cells, ``nprobe`` of them searched per query.

    ``nlist`` defaults to about 4·√n at build time (at most n/39, FAISS's training minimum).
    """

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int = 8, **params: Any) -> None:
        self.nlist, self.nprobe = nlist, int(nprobe)
        super().__init__(dim, nlist=nlist, nprobe=int(nprobe), **params)

    def _make(self, faiss: Any) -> Any:
        return faiss.IndexFlatIP(self.dim)  # placeholder until build() knows n

    def _train(self, x: np.ndarray) -> None:
        faiss = _faiss()
        nlist = self.nlist or int(max(1, min(4 * np.sqrt(len(x)), len(x) // 39)))
        self.nlist = self.params["nlist"] = int(nlist)
        quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = 0
        self.index.train(x)
        self.index.make_direct_map()
        self._configure()

    def _add(self, x: np.ndarray) -> None:
        if not isinstance(self.index, _faiss().IndexIVF):
            raise ModelError("the ivf index must be built before vectors are added", field="index",
                             hint="Call build(vectors) first")
        self.index.add(x)

    def _configure(self) -> None:
        self.index.nprobe = self.nprobe

    def set_nprobe(self, nprobe: int) -> None:
        """Lists probed per query (more: higher recall, slower)."""
        self.nprobe = self.params["nprobe"] = int(nprobe)
        self._configure()

    def _parameters(self, faiss: Any, selector: Any) -> Any:
        return faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe) if selector is not None else None


@register_index("hnsw")
class HNSWIndex(FaissIndex):
    """Graph search (``IndexHNSWFlat``): ``m`` links per node, ``ef_construction`` and ``ef_search`` beams."""

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 64, **params: Any) -> None:
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        super().__init__(dim, m=self.m, ef_construction=self.ef_construction, ef_search=self.ef_search, **params)

    def _make(self, faiss: Any) -> Any:
        index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _configure(self) -> None:
        self.index.hnsw.efSearch = self.ef_search

    def set_ef_search(self, ef_search: int) -> None:
        """Beam width at search time (more: higher recall, slower)."""
        self.ef_search = self.params["ef_search"] = int(ef_search)
        self._configure()

    def _parameters(self, faiss: Any, selector: Any) -> Any:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search) if selector is not None else None


__all__ = ["EXACT_BELOW", "INDEXES", "FlatIndex", "HNSWIndex", "IVFIndex", "VectorIndex", "create_index",
           "normalise", "register_index"]
