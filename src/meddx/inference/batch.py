"""Predict for a batch of files where one bad file never stops the others.

Handlers that write files per input (masks, synthetic images) call :func:`predict_each` with a function
for one input; it gives each input a unique, file-system-safe stem for its outputs and turns a
:class:`~meddx.exceptions.MeddxError` (or an I/O or value error) into a ``rejected`` prediction that
names the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meddx.exceptions import MeddxError


def output_stem(item: str, index: int, used: set[str]) -> str:
    """A stem for ``item``'s output files: its own (safe) name, with ``-index`` when taken already."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(item)).stem) or "input"
    stem = f"{stem}-{index}" if stem in used else stem
    used.add(stem)
    return stem


def predict_each(inputs: list[str], one: Callable[[str, str], dict[str, Any]], *, base: dict[str, Any],
                 task: str) -> list[dict[str, Any]]:
    """``[one(item, stem) or a rejected prediction for item in inputs]``; ``base`` holds the rejected
    prediction's modality, model, model_version, class_names and intended_use."""
    from meddx.inference.schema import Prediction

    results, used = [], set()
    for i, item in enumerate(inputs):
        stem = output_stem(str(item), i, used)
        try:
            results.append(one(str(item), stem))
        except (MeddxError, OSError, ValueError) as exc:  # one bad file never stops the batch
            rejected = Prediction.rejected(input=str(item), reasons=[str(exc)], **base)
            rejected.task = task
            results.append(rejected.to_json_dict())
    return results
