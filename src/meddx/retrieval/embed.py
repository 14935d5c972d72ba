"""Case embeddings: the pre-logit features of an image classification package, L2-normalised.

The vectors are the ``penultimate`` columns of :meth:`meddx.inference.Pipeline.logits_and_features`,
the very features the out-of-distribution gate is fitted on (:mod:`meddx.trust.ood`), computed through
the package's own preprocessing (reading, windowing, resizing, its mean/SD) and on its ONNX export when
it has one. Options: ``members="all"`` joins the features of every member of an ensemble package (each
normalised, then concatenated); ``flips=True`` averages each image's features with those of its mirror
image (test-time flip).

Large collections are embedded in chunks (:func:`embed_chunks`): each chunk is saved to a checkpoint
folder as it finishes, so an interrupted run resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.retrieval.indexes import normalise

MEMBERS = ("first", "all")


def model_identity(pipeline: Any) -> dict[str, Any]:
    """What an index records of the package it was embedded with: name, version, weights sha256, folder."""
    from meddx.packaging.registry import WEIGHTS_FILE, sha256_file

    hashes = []
    for folder in pipeline.member_folders():
        weights = Path(folder) / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError("the package has no weights file", path=weights)
        hashes.append(sha256_file(weights))
    digest = hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()
    return {"name": str(pipeline.package["name"]), "version": str(pipeline.package["version"]),
            "weights_sha256": digest, "path": str(Path(pipeline.folder).resolve())}


def penultimate_columns(pipeline: Any) -> tuple[int, int]:
    """The column range of the pre-logit layer within the package's feature vector."""
    groups = ((pipeline.package.get("ood") or {}).get("groups")) or None
    if groups is None:
        from meddx.models.heads import feature_groups

        pre = pipeline.package["preprocess"]
        groups = feature_groups(pipeline.members[0], int(pre["in_chans"]), int(pre["size"]))
    for name, start, end in groups:
        if name == "penultimate":
            return int(start), int(end)
    raise ModelError("the package's features have no penultimate group", field="ood.groups")


def _member_views(pipeline: Any) -> list[Any]:
    """One single-network view of the pipeline per ensemble member (the pipeline itself for one network)."""
    attribute, nets = ("networks", pipeline.networks) if pipeline.networks else ("_members", pipeline.members)
    if len(nets) == 1:
        return [pipeline]
    views = []
    for net in nets:
        view = copy.copy(pipeline)
        setattr(view, attribute, [net])
        views.append(view)
    return views


@dataclass(frozen=True)
class EmbeddingOptions:
    """How vectors were made; an index stores these so queries are embedded the same way."""

    members: str = "first"
    flips: bool = False

    def __post_init__(self) -> None:
        if self.members not in MEMBERS:
            raise ConfigError(f"members must be one of {MEMBERS}, got {self.members!r}", field="members")


class Embedder:
    """Turns uint8/uint16 images ``(N, H, W[, C])`` into unit vectors with one package's backbone."""

    def __init__(self, pipeline: Any, options: EmbeddingOptions | None = None) -> None:
        if pipeline.package.get("modality", "image") != "image" or "class_names" not in pipeline.package:
            raise ModelError("retrieval embeds with an image classification package", path=pipeline.folder,
                             field="task")
        self.pipeline = pipeline
        self.options = options or EmbeddingOptions()
        self.columns = penultimate_columns(pipeline)
        views = _member_views(pipeline)
        self.views = views if self.options.members == "all" else views[:1]

    @classmethod
    def load(cls, model: str | Path, options: EmbeddingOptions | None = None) -> Embedder:
        from meddx.inference import Pipeline

        return cls(Pipeline.load(model), options)

    @property
    def dim(self) -> int:
        return (self.columns[1] - self.columns[0]) * len(self.views)

    def identity(self) -> dict[str, Any]:
        return {**model_identity(self.pipeline), "embedding": asdict(self.options), "dim": self.dim}

    def _features(self, view: Any, images: np.ndarray) -> np.ndarray:
        start, end = self.columns
        features = view.logits_and_features(images)[1][:, start:end]
        if self.options.flips:
            features = features + view.logits_and_features(np.ascontiguousarray(images[:, :, ::-1]))[1][:, start:end]
        return normalise(features)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Unit vectors ``(N, dim)`` (float32) for a batch of images."""
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._features(view, images) for view in self.views]
        return normalise(np.concatenate(parts, axis=1))

    def embed_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Read each file as the package would for a prediction, then embed them together."""
        images = [self.pipeline.image_from_file(p) for p in paths]
        size = int(self.pipeline.package["preprocess"]["size"])
        if len({im.shape for im in images}) > 1:  # different sizes: bring them to the model's size first
            images = [_resize_uint8(im, size) for im in images]
        return self.embed_images(np.stack(images))


def _resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _progress(total: int, enabled: bool, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # a predict-only install: no bar
        return None
    return tqdm(total=total, disable=not enabled, desc=desc, unit="img", file=sys.stderr, leave=False)


def embed_chunks(count: int, load: Callable[[int, int], np.ndarray], embed: Callable[[np.ndarray], np.ndarray], *,
                 chunk_size: int = 1024, checkpoint: str | Path | None = None, identity: dict[str, Any] | None = None,
                 progress: bool = True) -> np.ndarray:
    """Embed ``count`` items chunk by chunk; ``load(start, stop)`` gives the images of one chunk.

    With ``checkpoint`` each finished chunk is written there (``chunk_00000.npy`` ...) next to a
    ``checkpoint.json`` naming the model and chunk size, and chunks already there are reused, so a
    run resumes after an interruption. A checkpoint made with another model or chunk size is refused.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}", field="chunk_size")
    folder = Path(checkpoint) if checkpoint is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = {"identity": identity or {}, "chunk_size": chunk_size, "count": count}
        meta = folder / "checkpoint.json"
        if meta.is_file():
            if json.loads(meta.read_text(encoding="utf-8")) != stamp:
                raise ConfigError("the checkpoint folder holds chunks from another model, data size or chunk size",
                                  path=folder, field="checkpoint", hint="Delete it or pass another folder")
        else:
            meta.write_text(json.dumps(stamp), encoding="utf-8")
    bar = _progress(count, progress, "embedding")
    parts = []
    try:
        for number, start in enumerate(range(0, count, chunk_size)):
            stop = min(start + chunk_size, count)
            path = folder / f"chunk_{number:05d}.npy" if folder is not None else None
            if path is not None and path.is_file():
                vectors = np.load(path)
            else:
                vectors = np.asarray(embed(load(start, stop)), dtype=np.float32)
                if path is not None:
                    tmp = path.with_suffix(".tmp.npy")
                    np.save(tmp, vectors)
                    tmp.replace(path)  # a chunk is either whole or absent
            if len(vectors) != stop - start:
                raise ModelError(f"chunk {number} holds {len(vectors)} vectors, expected {stop - start}", path=path)
            parts.append(vectors)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


__all__ = ["EmbeddingOptions", "Embedder", "embed_chunks", "model_identity", "penultimate_columns"]
