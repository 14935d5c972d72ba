"""Build a case index from a model package and a data set (what ``meddx index build`` runs).

``DATA`` is a catalogue name or ``.npz`` (its ``train`` split by default: the confirmed cases) or a
folder of images. A folder is read file by file, in chunks, through the package's own reader and
windowing (:meth:`meddx.inference.Pipeline.image_from_file`), so a large folder never sits in memory
and a checkpoint lets an interrupted build resume. A ``labels.csv`` in the folder (``file,label``,
optionally ``case_id``, ``modality``, ``site``, ``age`` or ``age_band``, ``sex``) supplies the
labels and filterable metadata; without one every image below the folder is indexed unlabelled.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DataFileNotFoundError
from meddx.retrieval.cases import CaseIndex
from meddx.retrieval.embed import Embedder, EmbeddingOptions, _resize_uint8, embed_chunks

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".gz"}
Loader = Callable[[int, int], np.ndarray]


def folder_cases(folder: Path) -> list[dict[str, Any]]:
    """One record per image of a folder: from its ``labels.csv`` when there is one, else every image file."""
    labels = folder / "labels.csv"
    if labels.is_file():
        with labels.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "file" not in rows[0]:
            raise ConfigError("labels.csv needs a 'file' column", path=labels, field="file")
        cases = []
        for row in rows:
            record = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if v not in (None, "")}
            record.setdefault("case_id", record["file"])
            cases.append(record)
        return cases
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFileNotFoundError("no images in this folder", path=folder)
    return [{"file": str(p.relative_to(folder)), "case_id": str(p.relative_to(folder))} for p in files]


def data_source(data: str | Path, embedder: Embedder, split: str = "train") -> tuple[list[dict[str, Any]], Loader]:
    """Case records and a chunk loader (``load(start, stop)`` → uint8 images) for ``data``."""
    path = Path(data)
    size = int(embedder.pipeline.package["preprocess"]["size"])
    if path.is_dir():
        cases = folder_cases(path)

        def load_files(start: int, stop: int) -> np.ndarray:
            return np.stack([_resize_uint8(embedder.pipeline.image_from_file(path / c["file"]), size)
                             for c in cases[start:stop]])

        return cases, load_files
    from meddx.data.datasets import load_images

    sample = load_images(str(data))
    names = list(sample.splits) if split == "all" else [split]
    missing = [n for n in names if n not in sample.splits]
    if missing:
        raise ConfigError(f"the data has no {missing[0]!r} split", field="split",
                          hint=f"Choose one of: {', '.join(sample.splits)}, or all")
    images = np.concatenate([np.asarray(sample.splits[n][0]) for n in names])
    labels = np.concatenate([np.asarray(sample.splits[n][1]).reshape(len(sample.splits[n][1]), -1)[:, 0]
                             for n in names])
    class_names = sample.class_names or []
    modality = _dataset_modality(sample.meta.get("dataset"))
    cases = []
    for n in names:
        files = sample.files.get(n) or []
        for i in range(len(sample.splits[n][1])):
            label = int(labels[len(cases)])
            record = {"case_id": f"{n}:{i}", "label": class_names[label] if label < len(class_names) else str(label),
                      "split": n}
            if files:
                record["file"] = files[i]
            if modality:
                record["modality"] = modality
            cases.append(record)

    def load_arrays(start: int, stop: int) -> np.ndarray:
        return images[start:stop]

    return cases, load_arrays


def _dataset_modality(name: str | None) -> str | None:
    if not name:
        return None
    from meddx.data.catalogue import get_dataset

    try:
        return get_dataset(name).modality
    except Exception:  # noqa: BLE001 - a folder or an unknown set: no modality
        return None


def build_index(model: str | Path, data: str | Path, out: str | Path, *, kind: str = "flat", split: str = "train",
                options: EmbeddingOptions | None = None, chunk_size: int = 1024, checkpoint: str | Path | None = None,
                progress: bool = True, **params: Any) -> CaseIndex:
    """Embed ``data`` with ``model``, index it as ``kind`` and save it to ``out``; returns the index.

    Chunks are checkpointed to ``checkpoint`` (default ``OUT/.chunks``, removed when the build ends).
    """
    import shutil

    embedder = Embedder.load(model, options)
    cases, load = data_source(data, embedder, split)
    chunks = Path(checkpoint) if checkpoint is not None else Path(out) / ".chunks"
    vectors = embed_chunks(len(cases), load, embedder.embed_images, chunk_size=chunk_size, checkpoint=chunks,
                           identity=embedder.identity(), progress=progress)
    index = CaseIndex.build(embedder, vectors, cases, kind=kind, source=str(data), **params)
    index.info["split"] = split if not Path(data).is_dir() else None
    index.save(out)
    if checkpoint is None:
        shutil.rmtree(chunks, ignore_errors=True)
    return index


__all__ = ["build_index", "data_source", "folder_cases"]
