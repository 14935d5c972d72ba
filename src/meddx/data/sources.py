"""Where each image of a catalogue set came from, for leave-one-source-out validation.

A set whose cases come from several hospitals, devices or collections registers a function
that names the source of every image, split by split, in the order
:func:`meddx.data.datasets.load_images` returns them. ``meddx validate`` then retrains the
package's recipe without one source and scores it on that source, for each source in turn.
Sets without a registered function have no leave-one-source-out check (they still get the
other external checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SourceFn = Callable[[Any], dict[str, np.ndarray]]
"""``fn(sample) -> {split: array of source names}`` for a :class:`meddx.data.datasets.ImageSet`."""

_SOURCES: dict[str, tuple[SourceFn, str]] = {}


def register_sources(dataset: str, how: str) -> Callable[[SourceFn], SourceFn]:
    """Register the source function of ``dataset``; ``how`` says in words what a source is."""

    def deco(fn: SourceFn) -> SourceFn:
        _SOURCES[dataset] = (fn, how)
        return fn

    return deco


def sources_of(dataset: str | None, sample: Any) -> tuple[dict[str, np.ndarray], str] | None:
    """``({split: source names}, how)`` for a registered set, else None."""
    if not dataset or dataset not in _SOURCES:
        return None
    fn, how = _SOURCES[dataset]
    return {k: np.asarray(v).astype(str) for k, v in fn(sample).items()}, how


COVID = "covid-cxr-ieee8023-lungbbox"


@register_sources(COVID, "the country of the reporting hospital (metadata.csv `location`); countries with "
                  "fewer than 40 images or 5 of either class pooled as 'other countries'")
def _covid_sources(sample: Any) -> dict[str, np.ndarray]:
    """Country of each film, from the collection's metadata (the hospital itself is often not named)."""
    import csv
    import json
    from pathlib import Path

    folder = Path(sample.path)
    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    original = {r["file_name"]: r["orig_file_name"] for r in coco["images"]}
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        location = {row["filename"]: (row.get("location") or "").strip() for row in csv.DictReader(fh)}

    def country(name: str) -> str:
        where = location.get(original.get(name, ""), "")
        return where.split(",")[-1].strip() or "unknown"

    raw = {k: np.array([country(f) for f in files]) for k, files in sample.files.items()}
    every = np.concatenate(list(raw.values()))
    labels = np.concatenate([np.asarray(sample.splits[k][1]) for k in raw])
    keep = {c for c in np.unique(every) if (every == c).sum() >= 40
            and min((labels[every == c] == 1).sum(), (labels[every == c] == 0).sum()) >= 5 and c != "unknown"}
    return {k: np.where(np.isin(v, list(keep)), v, "other countries") for k, v in raw.items()}
