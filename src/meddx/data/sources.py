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
