"""A case index: vectors of confirmed cases, their metadata, and the model package they came from.

On disk an index is a folder: ``index.json`` (format, the model's name/version/weights sha256 and
embedding options, the vector index kind, the data it was built from), ``cases.json`` (one record per
vector: ``case_id``, ``label`` and the filterable fields ``modality``, ``site``, ``age_band``, ``sex``,
plus ``file`` where the case came from a file) and the vector index's own files
(:mod:`meddx.retrieval.indexes`).

An index answers only for the model it was built with: :meth:`CaseIndex.load` compares the package's
name, version and weights sha256 with what ``index.json`` records and refuses a mismatch, because
vectors from two different networks are not comparable.

Metadata filters become the set of allowed ids, which the vector index searches within
(:meth:`~meddx.retrieval.indexes.VectorIndex.search`), so filtered-out cases never take a slot in the top k.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.retrieval.embed import Embedder, EmbeddingOptions
from meddx.retrieval.indexes import VectorIndex, create_index

FORMAT = "meddx-index/1"
FILTER_FIELDS = ("modality", "label", "site", "age_band", "sex")
"""Metadata a search can be restricted by."""
INDEX_FILE, CASES_FILE = "index.json", "cases.json"


def age_band(age: Any, width: int = 10) -> str | None:
    """``47`` → ``"40-49"`` (None for a missing or unreadable age)."""
    try:
        value = float(age)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(value) or value < 0:
        return None
    low = int(value // width) * width
    return f"{low}-{low + width - 1}"


def _values(value: Any) -> set[str]:
    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    return {str(v).strip().lower() for v in items}


class CaseIndex:
    """Vectors, case records and model identity together; search by vector or by image."""

    def __init__(self, vectors: VectorIndex, cases: list[dict[str, Any]], info: dict[str, Any],
                 embedder: Embedder | None = None) -> None:
        if len(cases) != vectors.ntotal:
            raise ModelError(f"{len(cases)} case records for {vectors.ntotal} vectors", field="cases")
        self.vectors, self.cases, self.info, self.embedder = vectors, cases, info, embedder

    @classmethod
    def build(cls, embedder: Embedder, vectors: np.ndarray, cases: Sequence[Mapping[str, Any]], *, kind: str = "flat",
              source: str | None = None, **params: Any) -> CaseIndex:
        """Index ``vectors`` (from ``embedder``) with one record per vector."""
        index = create_index(kind, vectors.shape[1], **params).build(vectors)
        info = {"format": FORMAT, "model": embedder.identity(), "kind": kind, "count": int(len(cases)),
                "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return cls(index, [_record(c, i) for i, c in enumerate(cases)], info, embedder)

    def add(self, vectors: np.ndarray, cases: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Add confirmed cases; returns their ids."""
        if len(vectors) != len(cases):
            raise ConfigError(f"{len(cases)} records for {len(vectors)} vectors", field="cases")
        ids = self.vectors.add(vectors)
        self.cases += [_record(c, int(i)) for c, i in zip(cases, ids, strict=True)]
        self.info["count"] = len(self.cases)
        return ids

    def allowed(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Ids whose metadata match every filter (a value or a list of values each), or None without filters."""
        if not filters:
            return None
        unknown = set(filters) - set(FILTER_FIELDS)
        if unknown:
            raise ConfigError(f"cannot filter by {sorted(unknown)}", field="filter",
                              hint=f"Filter by {', '.join(FILTER_FIELDS)}")
        keep = np.ones(len(self.cases), dtype=bool)
        for name, value in filters.items():
            wanted = _values(value)
            keep &= np.array([str(c.get(name)).strip().lower() in wanted for c in self.cases], dtype=bool)
        return np.flatnonzero(keep)

    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       filters: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """Hits for each query vector: ``{rank, case_id, label, similarity, ...metadata}`` best first."""
        sims, ids = self.vectors.search(queries, k, allowed=self.allowed(filters))
        return [[self.hit(int(j), float(s), r) for r, (s, j) in enumerate(zip(srow, irow, strict=True), 1) if j >= 0]
                for srow, irow in zip(sims, ids, strict=True)]

    def hit(self, i: int, similarity: float, rank: int) -> dict[str, Any]:
        case = self.cases[i]
        out = {"rank": rank, "case_id": case["case_id"], "label": case.get("label"),
               "similarity": round(similarity, 6)}
        out.update({f: case[f] for f in FILTER_FIELDS if f != "label" and case.get(f) is not None})
        return out

    def search_images(self, images: np.ndarray, k: int = 10,
                      filters: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """Hits for uint8 images ``(N, H, W[, C])``, embedded as the index's vectors were."""
        return self.search_vectors(self._embedder().embed_images(images), k, filters)

    def search_files(self, paths: Sequence[str | Path], k: int = 10,
                     filters: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """Hits for image files, read and preprocessed by the package as for a prediction."""
        return self.search_vectors(self._embedder().embed_files(paths), k, filters)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise ModelError("this index was loaded without its model", field="model",
                             hint="Load it with CaseIndex.load(INDEX) or pass model=...")
        return self.embedder

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.vectors.save(folder)
        (folder / CASES_FILE).write_text(json.dumps(self.cases), encoding="utf-8")
        (folder / INDEX_FILE).write_text(json.dumps(self.info, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: Any = None, *, with_model: bool = True) -> CaseIndex:
        """Read an index; embed queries with ``model`` (a Pipeline, a path or a registry reference) or,
        by default, with the package at the path the index records. A package whose name, version or
        weights differ from the index's is refused.
        """
        folder = Path(folder)
        path = folder / INDEX_FILE
        if not path.is_file():
            raise ModelError("not a meddx index (index.json is missing)", path=folder,
                             hint="Build one with `meddx index build MODEL DATA --out INDEX`")
        info = json.loads(path.read_text(encoding="utf-8"))
        if info.get("format") != FORMAT:
            raise ModelError(f"unknown index format {info.get('format')!r}", path=path, field="format")
        cases = json.loads((folder / CASES_FILE).read_text(encoding="utf-8"))
        embedder = None
        if with_model:
            options = EmbeddingOptions(**info["model"].get("embedding", {}))
            if model is None:
                model = info["model"]["path"]
            embedder = model if isinstance(model, Embedder) else (
                Embedder(model, options) if hasattr(model, "package") else Embedder.load(model, options))
            check_model(info["model"], embedder.identity(), folder)
        return cls(VectorIndex.load(folder), cases, info, embedder)

    def describe(self) -> dict[str, Any]:
        """What ``meddx index info`` prints: model, kind, size, labels and filterable values."""
        labels: dict[str, int] = {}
        for case in self.cases:
            labels[str(case.get("label"))] = labels.get(str(case.get("label")), 0) + 1
        fields = {f: sorted({str(c[f]) for c in self.cases if c.get(f) is not None}) for f in FILTER_FIELDS
                  if f != "label"}
        return {**self.info, "params": self.vectors.params, "dim": self.vectors.dim, "labels": labels,
                "filters": {f: v[:20] for f, v in fields.items() if v}}


def check_model(recorded: Mapping[str, Any], actual: Mapping[str, Any], where: Path | None = None) -> None:
    """Refuse a model whose name, version, weights or embedding differ from the index's."""
    for key in ("name", "version", "weights_sha256", "embedding"):
        if recorded.get(key) != actual.get(key):
            raise ModelError(
                f"the index was built with {recorded.get('name')} {recorded.get('version')} "
                f"({key} {recorded.get(key)!r}), this model has {actual.get(key)!r}", path=where, field="model",
                hint="Vectors of different models are not comparable: rebuild the index with "
                     "`meddx index build MODEL DATA --out INDEX`")


def _record(case: Mapping[str, Any], i: int) -> dict[str, Any]:
    record = {k: v for k, v in case.items() if v is not None}
    record.setdefault("case_id", str(i))
    if "age" in record and "age_band" not in record:
        band = age_band(record["age"])
        if band is not None:
            record["age_band"] = band
    return record


def similar_cases(index: CaseIndex | str | Path, image: np.ndarray, k: int = 10,
                  filters: Mapping[str, Any] | None = None, *, model: Any = None) -> list[dict[str, Any]]:
    """Confirmed cases most like one uint8 image ``(H, W[, C])``: the call for the service.

    ``index`` is a loaded :class:`CaseIndex` (load it once and keep it) or its folder; ``model`` (a
    loaded Pipeline) avoids loading the package a second time. Hits carry ``case_id``, ``label``,
    ``similarity`` and the filterable metadata, never the source file.
    """
    if not isinstance(index, CaseIndex):
        index = CaseIndex.load(index, model)
    return index.search_images(np.asarray(image)[None], k, filters)[0]


__all__ = ["CASES_FILE", "FILTER_FIELDS", "FORMAT", "INDEX_FILE", "CaseIndex", "age_band", "check_model",
           "similar_cases"]
