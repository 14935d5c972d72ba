"""Export a trained image package (every ensemble member) to ONNX after the fact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddx.inference.pipeline import Pipeline
from meddx.inference.runtime import export_package


def export_existing(model: str | Path) -> list[dict[str, Any]]:
    """(Re-)export a trained package, every ensemble member included; one record per network written.

    For packages trained before exports existed, or with ``--export none``.
    """
    from meddx.packaging.card import write_card
    from meddx.packaging.registry import CARD_FILE, read_package, write_package

    pipeline = Pipeline.load(model, runtime="torch")
    written = []
    for folder, module in zip(pipeline.member_folders(), pipeline.members, strict=True):
        package = pipeline.package if folder == pipeline.folder else read_package(folder)
        export_package(module, folder, package, strict=True)
        write_package(folder, package)
        if (folder / CARD_FILE).is_file():
            write_card(folder, package)  # the card lists the export
        written.append({"folder": str(folder), **package["runtime"]["onnx"]})
    return written
