"""Similar confirmed cases for a study: the served models' case indexes and their thumbnails.

The service learns which case index (:mod:`meddx.retrieval`, built with ``meddx index build``) belongs to
which served model from ``Settings.indexes`` (``meddx serve --index MODEL=INDEX``, or
``MEDDX_INDEXES=MODEL=INDEX,MODEL2=INDEX2``). :func:`load_indexes` loads each index once, at start-up,
with the model the service serves, and refuses to start when the index was built with another model or
version (:func:`meddx.retrieval.cases.check_model`): vectors of two networks are not comparable.

A query is the study's stored, de-identified image exactly as the model read it (the result's preview),
embedded through the served package's preprocessing (:func:`meddx.retrieval.similar_cases`). A hit
carries a public case id, the confirmed diagnosis, the similarity and a thumbnail link; never the case's
source file or any other metadata. A case id that is, or looks like, a file name (an index built from a
folder without ``case_id`` column) is replaced by ``case-<row>``.

Thumbnails: an optional ``thumbnails/`` folder beside the index, one small greyscale PNG per case
(:func:`write_thumbnails`, or :func:`thumbnails_from_source` from the data the index was built from;
``meddx serve --make-thumbnails`` runs it for indexes that have none). Without it the hits carry no
thumbnail link and the page shows none.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from meddx.exceptions import MeddxError, ModelError

THUMBNAILS = "thumbnails"
THUMBNAIL_SIZE = 64
MAX_K = 50
SERVED_FILTERS = ("label", "sex", "age_band", "site", "modality")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".gz", ".npy", ".npz")


def parse_indexes(values: Iterable[str]) -> dict[str, str]:
    """``["MODEL=FOLDER", ...]`` (or one comma-separated string's items) → ``{MODEL: FOLDER}``."""
    from meddx.exceptions import ConfigError

    out: dict[str, str] = {}
    for value in values:
        value = value.strip()
        if not value:
            continue
        model, sep, folder = value.partition("=")
        if not sep or not model.strip() or not folder.strip():
            raise ConfigError(f"{value!r} is not MODEL=INDEX_FOLDER", field="index",
                              hint="Name a served model and its case index: --index cnn-tiny=idx/cnn-tiny")
        out[model.strip()] = folder.strip()
    return out


def public_id(case: Mapping[str, Any], row: int) -> str:
    """The case id the service shows: the index's own when it is short and not a file name, else ``case-<row>``."""
    cid = str(case.get("case_id", ""))
    if (_SAFE_ID.match(cid) and cid != case.get("file") and not cid.lower().endswith(_FILE_SUFFIXES)
            and not cid.startswith("case-")):
        return cid
    return f"case-{row}"


def thumbnail_name(case_id: str) -> str:
    """File name of a case's thumbnail (the public id, percent-quoted)."""
    return quote(case_id, safe="") + ".png"


@dataclass
class ServedIndex:
    """One loaded case index, the served model it answers for, and its thumbnails."""

    model: str  # the package name results record
    ref: str  # what the configuration named
    folder: Path
    index: Any  # meddx.retrieval.CaseIndex
    public: list[str] = field(default_factory=list)  # row -> public id
    rows: dict[str, int] = field(default_factory=dict)  # index case id -> row
    by_public: dict[str, int] = field(default_factory=dict)  # public id -> row
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.public = [public_id(c, i) for i, c in enumerate(self.index.cases)]
        for i, case in enumerate(self.index.cases):
            self.rows.setdefault(str(case.get("case_id")), i)
        self.by_public = {p: i for i, p in enumerate(self.public)}

    def thumbnail(self, case_id: str) -> Path | None:
        """The thumbnail file of a public case id, or None."""
        if case_id not in self.by_public:
            return None
        path = self.folder / THUMBNAILS / thumbnail_name(case_id)
        return path if path.is_file() else None


def load_indexes(ctx: Any) -> dict[str, ServedIndex]:
    """Load every configured index once, with the served model, into ``ctx.case_indexes`` (by package name).

    A model the service does not offer, a folder that is not an index, or an index built with another
    model or version raises :class:`~meddx.exceptions.ModelError` naming both: the service does not start.
    """
    from meddx.retrieval import CaseIndex

    loaded: dict[str, ServedIndex] = {}
    for ref, folder in (ctx.settings.indexes or {}).items():
        try:
            pipeline = ctx.pipeline(ref)
        except MeddxError as exc:
            raise ModelError(f"case index {folder} is configured for model {ref!r}, which this service does not "
                             f"serve: {exc}", path=Path(folder), field="index") from exc
        name = str(pipeline.package["name"])
        if not hasattr(pipeline, "logits_and_features"):
            raise ModelError(f"case index {folder}: model {ref!r} is not an image classifier, so it has no "
                             f"embeddings to search with", path=Path(folder), field="index")
        try:
            index = CaseIndex.load(folder, pipeline)
        except MeddxError as exc:
            raise ModelError(f"case index {folder} does not fit served model {name} {pipeline.package['version']} "
                             f"({ref!r}): {exc}", path=Path(folder), field="index",
                             hint="Rebuild it with `meddx index build MODEL DATA --out INDEX`, or serve the "
                                  "model it was built with") from exc
        loaded[name] = ServedIndex(model=name, ref=ref, folder=Path(folder), index=index)
    ctx.case_indexes = loaded
    return loaded


def served_index(ctx: Any, model: str) -> ServedIndex | None:
    return (getattr(ctx, "case_indexes", None) or {}).get(model)


def query_image(ctx: Any, payload: Mapping[str, Any]) -> np.ndarray | None:
    """The image the model read for a result (its stored, de-identified preview), or None."""
    from PIL import Image

    blob = payload.get("preview_blob_id")
    if not blob:
        return None
    with Image.open(io.BytesIO(ctx.blobs.get(blob))) as image:
        return np.asarray(image).copy()


def search(served: ServedIndex, image: np.ndarray, k: int, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """Hits for one image: ``{rank, case_id, label, similarity, thumbnail}`` (public ids; nothing else)."""
    from meddx.retrieval import similar_cases

    with served.lock:
        hits = similar_cases(served.index, image, k, dict(filters) or None)
    out = []
    for hit in hits:
        row = served.rows.get(str(hit["case_id"]))
        if row is None:
            continue
        pid = served.public[row]
        link = (f"/api/cases/{quote(pid, safe='')}/thumbnail.png?model={quote(served.model, safe='')}"
                if served.thumbnail(pid) is not None else None)
        label = hit.get("label")
        out.append({"rank": int(hit["rank"]), "case_id": pid, "label": None if label is None else str(label),
                    "similarity": float(hit["similarity"]), "thumbnail": link})
    return out


# --- the thumbnail store ---------------------------------------------------------------------------------


def thumbnail_png(image: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    """A greyscale PNG of at most ``size`` px on its longer side (no metadata)."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        low, high = float(np.min(array)), float(np.max(array))
        array = ((array - low) / (high - low or 1.0) * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    picture = Image.fromarray(array).convert("L")
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_thumbnails(index_folder: str | Path, images: Iterable[tuple[str, np.ndarray]],
                     size: int = THUMBNAIL_SIZE) -> int:
    """Write ``index_folder/thumbnails/<public id>.png`` for ``(index case id, image)`` pairs; returns how many.

    Case ids the index does not hold are skipped."""
    import json

    from meddx.retrieval.cases import CASES_FILE

    folder = Path(index_folder)
    cases = json.loads((folder / CASES_FILE).read_text(encoding="utf-8"))
    rows: dict[str, int] = {}
    for i, case in enumerate(cases):
        rows.setdefault(str(case.get("case_id")), i)
    target = folder / THUMBNAILS
    target.mkdir(exist_ok=True)
    written = 0
    for case_id, image in images:
        row = rows.get(str(case_id))
        if row is None:
            continue
        (target / thumbnail_name(public_id(cases[row], row))).write_bytes(thumbnail_png(image, size))
        written += 1
    return written


def thumbnails_from_source(index_folder: str | Path, model: Any = None, data: str | Path | None = None,
                           size: int = THUMBNAIL_SIZE, chunk: int = 256) -> int:
    """Thumbnails for every case, read again from ``data`` (default: the source the index records) through
    the package's reader; the data must be what the index was built from (case ids are checked)."""
    from meddx.exceptions import ConfigError
    from meddx.retrieval import CaseIndex
    from meddx.retrieval.build import data_source

    index = CaseIndex.load(index_folder, model)
    source = data if data is not None else index.info.get("source")
    if not source:
        raise ConfigError("the index records no data source", path=Path(index_folder), field="data")
    cases, load = data_source(source, index.embedder, index.info.get("split") or "train")
    if [str(c.get("case_id")) for c in cases] != [str(c.get("case_id")) for c in index.cases]:
        raise ConfigError("this data is not what the index was built from (its cases differ)", field="data",
                          hint="Pass the DATA given to `meddx index build`")
    written = 0
    for start in range(0, len(cases), chunk):
        images = load(start, min(start + chunk, len(cases)))
        ids = [str(c["case_id"]) for c in cases[start:start + len(images)]]
        written += write_thumbnails(index_folder, zip(ids, images, strict=True), size)
    return written


__all__ = ["MAX_K", "SERVED_FILTERS", "THUMBNAILS", "ServedIndex", "load_indexes", "parse_indexes", "public_id",
           "query_image", "search", "served_index", "thumbnail_png", "thumbnails_from_source", "write_thumbnails"]
