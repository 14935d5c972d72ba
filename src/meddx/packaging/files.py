"""The files a model package is made of, and reading/writing its ``package.json`` (a leaf module)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meddx.exceptions import ModelError

PACKAGE_FILE = "package.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "MODEL_CARD.md"


def read_package(folder: str | Path) -> dict[str, Any]:
    """The parsed ``package.json`` of ``folder``, or a ModelError saying why it cannot be used."""
    folder = Path(folder)
    meta = folder / PACKAGE_FILE
    if not meta.is_file():
        raise ModelError(
            "not a meddx model package (package.json missing)", path=folder,
            hint="Pass a run folder written by `meddx train`, or a registered name[:version] (`meddx models list`)",
        )
    try:
        package = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read package.json: {exc}", path=meta, hint="Re-run `meddx train`") from exc
    if not isinstance(package, dict):
        raise ModelError("package.json does not hold a JSON object", path=meta)
    return package


def write_package(folder: str | Path, package: dict[str, Any]) -> Path:
    """Write ``package.json`` atomically (a crash never leaves half a file)."""
    path = Path(folder) / PACKAGE_FILE
    tmp = path.with_name(f".{PACKAGE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(package, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
