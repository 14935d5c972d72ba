"""Which code trains, evaluates, predicts and reports for a model's modality.

Images are meddx's original path (``meddx.training`` / ``meddx.inference``).
Signal, record (tabular) and fusion models plug in here: each modality names a
module, imported only when used, that defines

- ``train(data: str, *, model: str | None, seed: int, epochs: int | None, out: Path | None,
  progress: bool) -> Path`` (a run folder holding ``package.json`` with ``"modality"``);
- ``evaluate(folder: Path, package: dict, data: str, *, split: str | None, n_boot: int,
  out: Path | None, seed: int, positive: str | None) -> dict`` (``{"model", "n", "n_groups",
  "metrics": {name: {"value", "low", "high"}}, ...}``, the same shape as image evaluation);
- ``predict(folder: Path, package: dict, inputs: list[str], **options) -> list[dict]``
  (one :class:`meddx.inference.schema.Prediction` dict per input);
- optionally ``report(folder, package, data, *, out, n_boot, split) -> Path`` (an HTML file);
- optionally ``validate(folder, package, *, folders: list[str], n_boot, seed, progress) -> dict``
  (internal beside external figures, rows made by :func:`meddx.evaluation.validate.block`:
  ``{"model", "set", "internal": ROW, "external": [ROW, ...]}``, see that module);
- optionally ``refit_ood(model, *, flag_rate) -> dict`` (``meddx models fit-ood``).

So ``meddx train/evaluate/predict/report`` stay one set of commands whatever the
modality; the package's ``"modality"`` field (default ``"image"``) picks the module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from meddx.exceptions import ConfigError

IMAGE = "image"


@dataclass(frozen=True)
class Modality:
    """A non-image model family: its handler module and the catalogue sets it trains on."""

    name: str
    module: str
    datasets: tuple[str, ...] = ()
    accepts: Callable[[str], bool] | None = None
    """Other training sources this modality takes (e.g. a folder layout), tested after ``datasets``."""

    def handler(self) -> ModuleType:
        """The handler module (imported on first use)."""
        return importlib.import_module(self.module)


_REGISTRY: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """Add (or replace) a modality; returns it so it can be used as a constant."""
    _REGISTRY[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    """The registered modality ``name``, or a ConfigError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model modality {name!r}", field="modality",
                          hint=f"Known: {[IMAGE, *sorted(_REGISTRY)]}") from None


def list_modalities() -> list[str]:
    """Every modality meddx can train and serve, ``image`` first."""
    return [IMAGE, *sorted(_REGISTRY)]


def modality_of_package(package: dict[str, Any]) -> str:
    """A package's modality (packages written before this field existed are images)."""
    return str(package.get("modality") or IMAGE)


def _looks_like_signals(folder: Path) -> bool:
    return (folder / "labels.csv").is_file() and any(folder.glob("*.hea"))


def modality_of_data(data: str) -> str:
    """The modality of a training/evaluation source: a catalogue name, a folder or a file.

    A catalogue set belongs to the modality that lists it; ``fusion:SET`` or a folder with
    ``clinical.csv`` is image + clinical fusion; a folder with ``labels.csv``
    and WFDB headers (``*.hea``) holds signals; a ``.csv`` file holds records; anything
    else is images.
    """
    for modality in _REGISTRY.values():
        if data in modality.datasets or (modality.accepts is not None and modality.accepts(data)):
            return modality.name
    path = Path(data)
    if path.is_dir() and _looks_like_signals(path):
        return "signal"
    if path.is_file() and path.suffix.lower() in {".csv", ".tsv"}:
        return "tabular"
    return IMAGE


register_modality(Modality("signal", "meddx.signals.package", ("ecg-cinc2017-af",)))
register_modality(Modality(
    "tabular", "meddx.records.package",
    ("heart-disease-uci", "breast-cancer-wisconsin-diagnostic", "pima-indians-diabetes",
     "heart-failure-clinical-records", "stroke-kaggle"),
))
FUSION_PREFIX = "fusion:"


def _fusion_source(data: str) -> bool:
    """``fusion:<catalogue set or folder>``, or a folder with ``clinical.csv`` beside its images."""
    if data.startswith(FUSION_PREFIX):
        return True
    path = Path(data)
    return path.is_dir() and (path / "clinical.csv").is_file() and not any(path.glob("*.hea"))


register_modality(Modality("fusion", "meddx.fusion.package", (), _fusion_source))
