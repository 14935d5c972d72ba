"""Refit an image package's trust layer on a hospital's own labelled sample (before go-live)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.inference.pipeline import Pipeline
from meddx.inference.trust import fit_trust


def refit_package(folder: str | Path, images: np.ndarray, labels: np.ndarray, *, fitted_on: str,
                  **options: Any) -> dict[str, Any]:
    """Refit a package's trust layer on labelled ``images`` (a local validation set) and save it.

    What a hospital does before go-live: the model stays as trained, its calibrator,
    conformal predictor and abstention policy are refitted on the hospital's own
    labelled sample. Returns the new ``trust`` block.
    """
    import json

    from meddx.packaging.card import write_card

    pipeline = Pipeline.load(folder)
    trust = fit_trust(pipeline.predict_logits(images), np.asarray(labels).reshape(-1), fitted_on=fitted_on, **options)
    path = Path(pipeline.folder) / "package.json"
    package = json.loads(path.read_text(encoding="utf-8"))
    package["trust"] = trust
    path.write_text(json.dumps(package, indent=2), encoding="utf-8")
    write_card(pipeline.folder, package)
    return trust
