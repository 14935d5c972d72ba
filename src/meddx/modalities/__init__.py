"""Which code trains, evaluates, predicts and reports for a model: its modality × its task.

Every model meddx builds is a *package* whose ``package.json`` names its ``modality``
(``image``, ``volume`` (3-D), ``signal``, ``tabular``, ``fusion``; default ``image``) and its ``task``
(``classification``, ``segmentation``, ``detection``, ``restoration``, ``translation``; default
``classification``).
Each registered :class:`Handler` is one (modality, task) pair pointing at a module,
imported only when used, that defines

- ``train(data: str, *, model: str | None, seed: int, epochs: int | None, out: Path | None,
  progress: bool, **options) -> Path`` (a run folder holding ``package.json``);
- ``evaluate(folder: Path, package: dict, data: str, *, split: str | None, n_boot: int,
  out: Path | None, seed: int, positive: str | None, **options) -> dict`` (``{"model", "n",
  "metrics": {name: {"value", "low", "high"}}, ...}``, the same shape for every handler);
- ``predict(folder: Path, package: dict, inputs: list[str], **options) -> list[dict]``
  (one :class:`meddx.inference.schema.Prediction` dict per input);
- optionally ``report(folder, package, data, *, out, n_boot, split, **options) -> Path`` (HTML);
- optionally ``validate(folder, package, *, folders: list[str], n_boot, seed, progress) -> dict``
  (internal beside external figures, rows made by :func:`meddx.evaluation.validate.block`);
- optionally ``refit_ood(model, *, flag_rate) -> dict`` (``meddx models fit-ood``);
- optionally ``fhir(predictions, subject) -> list[dict]`` (``meddx predict --fhir``).

So ``meddx train/evaluate/predict/report/validate`` are one set of commands that look the
handler up (:func:`handler_for_data`, :func:`handler_for_package`) and never branch on a
modality or a task; a new one is a new module plus one :func:`register` call below.
Options a handler does not take are refused by :func:`call` with the option's name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from meddx.exceptions import ConfigError

IMAGE = "image"
CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
DETECTION = "detection"
RESTORATION = "restoration"
TRANSLATION = "translation"
TASKS = {
    CLASSIFICATION: "one label (or class probabilities) per input",
    SEGMENTATION: "a label per pixel/voxel: masks, with per-pixel uncertainty",
    DETECTION: "labelled boxes around objects, with scores",
    RESTORATION: "a synthetic full-dose image from a low-dose one (marked as derived), with hallucination checks",
    TRANSLATION: "a synthetic image of another modality or domain (marked as derived), with hallucination checks",
}
"""The task axis: what a model outputs (see the optional parts of :class:`meddx.inference.schema.Prediction`)."""


@dataclass(frozen=True)
class Handler:
    """The code for one (modality, task): its module and the training sources it takes."""

    name: str
    """The modality: ``image``, ``signal``, ``tabular``, ``fusion``."""
    module: str
    datasets: tuple[str, ...] = ()
    """Catalogue sets this handler trains on (a set listed by several tasks trains the first by default)."""
    accepts: Callable[[str], bool] | None = None
    """Other training sources it takes (e.g. a folder layout), tested after ``datasets``."""
    task: str = CLASSIFICATION

    def handler(self) -> ModuleType:
        """The handler module (imported on first use)."""
        return importlib.import_module(self.module)

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.task


Modality = Handler
"""Older name of :class:`Handler` (a classification handler of one modality)."""

_REGISTRY: dict[tuple[str, str], Handler] = {}


def register(handler: Handler) -> Handler:
    """Add (or replace) the handler of a (modality, task); returns it so it can be kept as a constant."""
    if handler.task not in TASKS:
        raise ConfigError(f"unknown task {handler.task!r}", field="task", hint=f"Known: {sorted(TASKS)}")
    _REGISTRY[handler.key] = handler
    return handler


register_modality = register


def get_handler(modality: str, task: str = CLASSIFICATION) -> Handler:
    """The handler of ``modality`` × ``task``, or a ConfigError listing what exists."""
    try:
        return _REGISTRY[(modality, task)]
    except KeyError:
        known = ", ".join(f"{m}/{t}" for m, t in sorted(_REGISTRY))
        field = "task" if any(m == modality for m, _ in _REGISTRY) else "modality"
        raise ConfigError(f"meddx has no {modality} {task} models", field=field, hint=f"Known: {known}") from None


def get_modality(name: str) -> Handler:
    """The classification handler of modality ``name``."""
    return get_handler(name, CLASSIFICATION)


def list_modalities() -> list[str]:
    """Every modality meddx can train and serve, ``image`` first."""
    names = {m for m, _ in _REGISTRY}
    return [IMAGE, *sorted(names - {IMAGE})]


def list_handlers() -> list[Handler]:
    """Every registered (modality, task) handler."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def modality_of_package(package: dict[str, Any]) -> str:
    """A package's modality (packages written before this field existed are images)."""
    return str(package.get("modality") or IMAGE)


def task_of_package(package: dict[str, Any]) -> str:
    """A package's task: the :data:`TASKS` name its ``task`` field holds.

    Classifiers describe theirs in words ("binary classification", "single-lead ECG rhythm
    classification (multi-class)"); a package without the field is a classifier.
    """
    text = str(package.get("task") or CLASSIFICATION).lower()
    return next((task for task in TASKS if task in text), CLASSIFICATION)


def handler_for_package(package: dict[str, Any]) -> Handler:
    """The handler that evaluates, predicts and reports for ``package``."""
    return get_handler(modality_of_package(package), task_of_package(package))


def _looks_like_signals(folder: Path) -> bool:
    return (folder / "labels.csv").is_file() and any(folder.glob("*.hea"))


def _claims(handler: Handler, data: str) -> bool:
    return data in handler.datasets or (handler.accepts is not None and handler.accepts(data))


def modality_of_data(data: str) -> str:
    """The modality of a training/evaluation source: a catalogue name, a folder or a file.

    A catalogue set belongs to the modality whose handler lists it; ``fusion:SET`` or a folder
    with ``clinical.csv`` is image + clinical fusion; a folder with ``labels.csv`` and WFDB
    headers (``*.hea``) holds signals; a ``.csv`` file holds records; anything else is images.
    """
    for handler in _REGISTRY.values():
        if handler.datasets and data in handler.datasets:
            return handler.name
    for handler in _REGISTRY.values():
        if handler.accepts is not None and handler.accepts(data):
            return handler.name
    path = Path(data)
    if path.is_dir() and _looks_like_signals(path):
        return "signal"
    if path.is_file() and path.suffix.lower() in {".csv", ".tsv"}:
        return "tabular"
    return IMAGE


def handler_for_data(data: str, task: str | None = None) -> Handler:
    """The handler that trains on ``data``: for ``task``, or the first task a handler claims ``data`` for.

    A catalogue set listed by a segmentation or detection handler (CHASE_DB1, BCCD) trains that
    task by default; ``task`` picks another (``covid-cxr-ieee8023-lungbbox`` trains the finding
    classifier by default and its lung boxes with ``task="detection"``).
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", field="task", hint=f"Known: {', '.join(TASKS)}")
    claimed = [h for h in _REGISTRY.values() if _claims(h, data) and (task is None or h.task == task)]
    if claimed:
        return claimed[0]
    return get_handler(modality_of_data(data), task or CLASSIFICATION)


def call(func: Callable[..., Any], *args: Any, what: str = "", **options: Any) -> Any:
    """Call a handler function with the options it takes; refuse one it does not take, by name.

    ``options`` holds what the user set (not the command's defaults), so ``--lr`` on a
    record model is an error that names ``--lr`` rather than an option silently ignored.
    """
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in options if k not in params)
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise ConfigError(f"{flags} does not apply to {what or func.__module__} models", field=unknown[0],
                              hint="Drop the option; `meddx COMMAND --help` says which options each model "
                              "kind takes")
    return func(*args, **options)


def check_options(options: dict[str, Any], allowed: set[str], *, what: str, kind: str) -> None:
    """Refuse an option a handler's ``what`` step (training, evaluate, predict) does not take, naming it and
    listing the known ones (``kind``: the model kind, e.g. "segmentation models")."""
    for key in options:
        if key not in allowed:
            raise ConfigError(f"unknown {what} option {key!r} for {kind}", field=key,
                              hint=f"Known options: {sorted(allowed)}")


FUSION_PREFIX = "fusion:"


def _detection_source(data: str) -> bool:
    """A folder in Pascal VOC layout or with one COCO detection file (:func:`looks_like_detection`)."""
    from meddx.tasks.detection.data import looks_like_detection

    return looks_like_detection(data)


def _volume_source(data: str) -> bool:
    """3-D training sources (``phantom-volumes[:N]``, a folder of NIfTI volume + mask pairs)."""
    from meddx.tasks.volume.package import is_source

    return is_source(data)


def _fusion_source(data: str) -> bool:
    """``fusion:<catalogue set or folder>``, or a folder with ``clinical.csv`` beside its images."""
    if data.startswith(FUSION_PREFIX):
        return True
    path = Path(data)
    return path.is_dir() and (path / "clinical.csv").is_file() and not any(path.glob("*.hea"))


register(Handler(IMAGE, "meddx.modalities.image"))
register(Handler(IMAGE, "meddx.tasks.segmentation.package", ("chase-db1-retina-vessel-seg",), task=SEGMENTATION))
register(Handler(IMAGE, "meddx.tasks.detection.package", ("bccd-blood-cell-detection",), _detection_source,
                 task=DETECTION))
register(Handler("volume", "meddx.tasks.volume.package", (), _volume_source, task=SEGMENTATION))
register(Handler(IMAGE, "meddx.synthesis.package", (), task=RESTORATION))
register(Handler(IMAGE, "meddx.synthesis.translation.package", (), task=TRANSLATION))
register(Handler("signal", "meddx.signals.package", ("ecg-cinc2017-af",)))
register(Handler(
    "tabular", "meddx.records.package",
    ("heart-disease-uci", "breast-cancer-wisconsin-diagnostic", "pima-indians-diabetes",
     "heart-failure-clinical-records", "stroke-kaggle"),
))
register(Handler("fusion", "meddx.fusion.package", (), _fusion_source))
