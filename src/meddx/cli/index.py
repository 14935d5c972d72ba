"""``meddx index``: similar-case indexes (build, search, info); and ``meddx data duplicates``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Similar-case retrieval: build an index of confirmed cases, search it by image.",
                  no_args_is_help=True)


def _filters(items: list[str] | None) -> dict[str, list[str]]:
    from meddx.exceptions import ConfigError

    out: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"a filter is FIELD=VALUE, got {item!r}", field="filter",
                              hint="e.g. --filter sex=F --filter age_band=40-49")
        out.setdefault(name.strip(), []).append(value.strip())
    return out


@app.command("build")
def build(
    model: str = typer.Argument(..., help="An image classification package: folder or NAME[:VERSION]."),
    data: str = typer.Argument(..., help="Catalogue name, .npz, or a folder of images (labels.csv optional)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the index to."),
    kind: str = typer.Option("flat", help="Index kind: flat (exact), ivf, hnsw or fuzzy."),
    split: str = typer.Option("train", help="Split of a catalogue set to index (all: every split)."),
    members: str = typer.Option("first", help="Ensemble packages: embed with the first member or all."),
    flips: bool = typer.Option(False, "--flips/--no-flips", help="Average each image with its mirror image."),
    chunk_size: int = typer.Option(1024, help="Images per checkpointed chunk."),
    checkpoint: Path = typer.Option(None, help="Keep chunks here to resume an interrupted build."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Embed DATA with MODEL's backbone and write a searchable index; print its summary as JSON."""
    from meddx.retrieval.build import build_index
    from meddx.retrieval.embed import EmbeddingOptions

    index = build_index(model, data, out, kind=kind, split=split, options=EmbeddingOptions(members, flips),
                        chunk_size=chunk_size, checkpoint=checkpoint, progress=progress)
    typer.echo(json.dumps({"index": str(out), "count": index.info["count"], "kind": kind,
                           "model": {k: index.info["model"][k] for k in ("name", "version")}}))


@app.command("search")
def search(
    index: Path = typer.Argument(..., help="An index folder written by `meddx index build`."),
    files: list[Path] = typer.Argument(..., help="Image file(s) to find similar cases for."),
    k: int = typer.Option(10, "-k", "--k", help="Number of similar cases per file."),
    filter_: list[str] = typer.Option(None, "--filter", help="FIELD=VALUE (modality, label, site, age_band, "
                                                              "sex); repeat a field for any of several values."),
    model: str = typer.Option(None, help="Embed with this package (default: the one the index records)."),
) -> None:
    """Print JSON: for each file, its hits (case id, label, similarity), best first."""
    from meddx.retrieval.cases import CaseIndex

    loaded = CaseIndex.load(index, model)
    filters = _filters(filter_)
    results = [{"file": str(f), "hits": hits}
               for f, hits in zip(files, loaded.search_files(files, k, filters), strict=True)]
    typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


@app.command("info")
def info(index: Path = typer.Argument(..., help="An index folder.")) -> None:
    """Print the index's model (name, version, weights sha256), kind, size, labels and filter values."""
    from meddx.retrieval.cases import CaseIndex

    typer.echo(json.dumps(CaseIndex.load(index, with_model=False).describe(), indent=2))


def _duplicate_data(data: str) -> tuple[list[Any], list[str], list[str]]:
    """Images, split name and case id of every image of DATA (all splits)."""
    import numpy as np

    path = Path(data)
    if path.is_dir() and not (path / "labels.csv").is_file():
        from meddx.data.readers import read
        from meddx.retrieval.build import folder_cases

        parts = [p for p in sorted(path.iterdir()) if p.is_dir()] or [path]
        images, splits, ids = [], [], []
        for part in parts:
            for case in folder_cases(part):
                images.append(np.asarray(read(part / case["file"]).array))
                splits.append(part.name)
                ids.append(f"{part.name}/{case['file']}" if part != path else case["file"])
        return images, splits, ids
    from meddx.data.datasets import load_images

    sample = load_images(data)
    images, splits, ids = [], [], []
    for name, (arrays, _) in sample.splits.items():
        files = sample.files.get(name) or []
        for i, image in enumerate(arrays):
            images.append(image)
            splits.append(name)
            ids.append(files[i] if files else f"{name}:{i}")
    return images, splits, ids


def duplicates(
    data: str = typer.Argument(..., help="Catalogue name, .npz, or a folder (one subfolder per split, or flat)."),
    threshold: float = typer.Option(0.95, help="Cosine similarity above which two images are near-duplicates."),
    model: str = typer.Option(None, help="Compare a package's embeddings instead of 32×32 grey thumbnails."),
    k: int = typer.Option(16, help="Neighbours checked per image."),
) -> None:
    """Find near-duplicate images within DATA and across its splits (train/test leakage); print JSON."""
    import numpy as np

    from meddx.retrieval.duplicates import PIXEL_SIZE, find_duplicates, pixel_vectors

    images, splits, ids = _duplicate_data(data)
    if model:
        from meddx.retrieval.embed import Embedder, _resize_uint8

        embedder = Embedder.load(model)
        size = int(embedder.pipeline.package["preprocess"]["size"])
        vectors = embedder.embed_images(np.stack([_resize_uint8(np.asarray(i, dtype=np.uint8), size)
                                                  for i in images]))
        how = f"embeddings of {embedder.pipeline.package['name']} {embedder.pipeline.package['version']}"
    else:
        vectors, how = pixel_vectors(images), f"normalised correlation of {PIXEL_SIZE}x{PIXEL_SIZE} grey thumbnails"
    found = find_duplicates(vectors, threshold, splits=splits, k=k)
    groups = [[ids[i] for i in g] for g in found.multi_groups()]
    typer.echo(json.dumps({
        "images": len(ids), "splits": sorted(set(splits)), "vectors": how, "threshold": threshold,
        "pairs": len(found.pairs), "groups": groups, "images_in_groups": sum(len(g) for g in groups),
        "cross_split_pairs": [{"a": ids[a], "b": ids[b], "similarity": round(s, 4)} for a, b, s in found.cross_split],
    }, indent=2))
