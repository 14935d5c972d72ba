"""Evaluate a model package on labelled images: metrics with 95% CIs, plots, JSON.

:func:`evaluate_model` is what ``meddx evaluate`` runs, and what a hospital runs
to validate a model on its own data before trusting it. It reports every metric
of :data:`meddx.evaluation.metrics.METRICS` with a percentile bootstrap 95%
confidence interval (resampling patients/groups when they are known, so images
of one patient move together), and writes into ``out_dir``::

    metrics.json    the numbers (NaN written as null)
    roc.png         ROC curve(s), AUC in the legend
    pr.png          precision-recall curve(s), average precision in the legend
    confusion.png   the confusion matrix, counts and row percentages

Labels are matched to the model's classes *by name*: a folder's ``labels.csv``
sorts its labels its own way, and a label the model does not know is an error
that names it and the model's classes, never a silent mismatch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, LabelShapeError

PLOTS = ("roc.png", "pr.png", "confusion.png")


def map_labels(
    labels: Sequence[Any] | np.ndarray,
    model_classes: Sequence[str],
    data_classes: Sequence[str] | None = None,
    *,
    path: str | Path | None = None,
) -> np.ndarray:
    """Labels as indices into ``model_classes``, matched by name.

    ``labels`` are names, or indices into ``data_classes`` (the data's own class
    names). With neither names nor ``data_classes``, integer labels are taken to
    be model class indices already and are only range-checked.
    """
    model_classes = [str(c) for c in model_classes]
    raw = np.asarray(labels).reshape(-1)
    if raw.dtype.kind in "iu" and data_classes is None:
        if raw.size and (raw.min() < 0 or raw.max() >= len(model_classes)):
            raise InvalidValueError(
                f"label index {int(raw.max() if raw.max() >= len(model_classes) else raw.min())} is outside the "
                f"model's {len(model_classes)} classes ({', '.join(model_classes)})",
                path=path, field="label", hint="Pass labels by name, or the data's class names",
            )
        return raw.astype(np.int64)
    if raw.dtype.kind in "iu":
        data_classes = [str(c) for c in data_classes or []]
        if raw.size and (raw.min() < 0 or raw.max() >= len(data_classes)):
            raise LabelShapeError(
                f"label index {int(raw.max())} has no class name ({len(data_classes)} names given)",
                path=path, field="label",
            )
        names = [data_classes[i] for i in raw]
    else:
        names = [str(v).strip() for v in raw]
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise InvalidValueError(
            f"label {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f" is not one of the model's classes: {', '.join(repr(c) for c in model_classes)}",
            path=path, field="label",
            hint="Use the model's class names in labels.csv (see `meddx models show MODEL`)",
        )
    return np.asarray([index[n] for n in names], dtype=np.int64)


def _groups_array(groups: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray | None:
    """Group ids as strings; images without a group become their own group."""
    if groups is None:
        return None
    values = list(groups)
    if len(values) != n:
        raise LabelShapeError(f"{len(values)} group ids for {n} images", field="groups")
    if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return np.asarray([f"\0image-{i}" if v is None or v == "" else str(v) for i, v in enumerate(values)])


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _predicted(proba: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """Predicted class per row: threshold on the positive class (binary), else argmax."""
    if proba.shape[1] == 2:
        return np.where(proba[:, positive] >= threshold, positive, 1 - positive)
    return proba.argmax(axis=1)


def _per_class(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per-class n, one-vs-rest AUC, sensitivity and PPV (point values)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for c, name in enumerate(classes):
        truth = y == c
        n_pos = int(truth.sum())
        auc = float(roc_auc_score(truth, proba[:, c])) if 0 < n_pos < len(y) else float("nan")
        tp = int(np.sum((pred == c) & truth))
        predicted = int(np.sum(pred == c))
        out[name] = {
            "n": n_pos,
            "auc": auc,
            "sensitivity": tp / n_pos if n_pos else float("nan"),
            "ppv": tp / predicted if predicted else float("nan"),
        }
    return out


def _curve_classes(y: np.ndarray, n_classes: int, positive: int) -> list[int]:
    """Classes to draw curves for: the positive class (binary) or every class present with negatives."""
    if n_classes == 2:
        return [positive]
    return [c for c in range(n_classes) if 0 < np.sum(y == c) < len(y)]


def _plot_roc(path: Path, y: np.ndarray, proba: np.ndarray, classes: list[str], positive: int, title: str) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for c in _curve_classes(y, len(classes), positive):
        fpr, tpr, _ = roc_curve(y == c, proba[:, c])
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{classes[c]} (AUC {roc_auc_score(y == c, proba[:, c]):.3f})")
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="sensitivity (true-positive rate)",
           xlim=(0, 1), ylim=(0, 1.01), title=f"ROC\n{title}")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _plot_pr(path: Path, y: np.ndarray, proba: np.ndarray, classes: list[str], positive: int, title: str) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    for c in _curve_classes(y, len(classes), positive):
        precision, recall, _ = precision_recall_curve(y == c, proba[:, c])
        ap = average_precision_score(y == c, proba[:, c])
        line = ax.plot(recall, precision, linewidth=1.8, label=f"{classes[c]} (AP {ap:.3f})")[0]
        prevalence = float(np.mean(y == c))
        ax.axhline(prevalence, linestyle=":", linewidth=1, color=line.get_color())
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01),
           title=f"Precision–recall\n{title}")
    ax.legend(loc="lower left", fontsize="small", title="dotted: prevalence", title_fontsize="x-small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _plot_confusion(path: Path, matrix: np.ndarray, classes: list[str], title: str) -> None:
    from matplotlib.figure import Figure

    size = max(4.0, 1.0 + 0.9 * len(classes))
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(matrix[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize="small")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=30, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix\n{title}")
    fig.tight_layout()
    fig.savefig(path)


def evaluate_model(
    pipeline: Any,
    images: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    positive: str | int | None = None,
    threshold: float = 0.5,
    title: str | None = None,
    data: str | None = None,
    split: str | None = None,
    source: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics with 95% bootstrap CIs for ``pipeline`` on ``images``; plots and JSON into ``out_dir``.

    Args:
        pipeline: a :class:`meddx.inference.Pipeline` (anything with ``predict_arrays``,
            ``class_names`` and ``package``).
        images: ``(N, H, W[, C])`` uint8/uint16 images.
        labels: class names, or indices into ``class_names`` (the data's names),
            or model class indices when neither is given.
        groups: a patient/group id per image (None entries: own group); the
            bootstrap resamples groups.
        positive: the positive class (name or model index) for binary models;
            default the package's ``positive_class``, else class 1.
        data / split: descriptions stored in the result.
        source: the file the labels come from (a folder's labels.csv), named in errors.

    Returns:
        A JSON-ready dict: ``metrics`` (``{name: {value, low, high}}``), ``per_class``,
        ``confusion_matrix`` (rows true, columns predicted), counts and settings,
        and ``files`` written.
    """
    from meddx.evaluation.metrics import bootstrap_metrics

    classes = [str(c) for c in pipeline.class_names]
    package = getattr(pipeline, "package", {}) or {}
    y = map_labels(labels, classes, class_names, path=source)
    images = np.asarray(images)
    if len(images) != len(y):
        raise LabelShapeError(f"{len(images)} images but {len(y)} labels", field="labels")
    if len(y) == 0:
        raise InvalidValueError("nothing to evaluate: no images", field="data")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be at least 1, not {n_boot}", field="n_boot")
    group_ids = _groups_array(groups, len(y))

    pos_index: int | None = None
    if len(classes) == 2:
        chosen = positive if positive is not None else package.get("positive_class", 1)
        if isinstance(chosen, str) and chosen in classes:
            pos_index = classes.index(chosen)
        elif isinstance(chosen, str) and not chosen.isdigit():
            raise ConfigError(
                f"positive class {chosen!r} is not one of the model's classes: {', '.join(classes)}",
                field="positive",
            )
        else:
            pos_index = int(chosen)
            if pos_index not in (0, 1):
                raise ConfigError(f"positive class index must be 0 or 1, not {pos_index}", field="positive")
    elif positive is not None:
        raise ConfigError("a positive class applies to binary models only", field="positive",
                          hint=f"This model has {len(classes)} classes; metrics are macro averages")

    proba = np.asarray(pipeline.predict_arrays(images), dtype=np.float64)
    kwargs: dict[str, Any] = {"positive": pos_index, "threshold": threshold} if pos_index is not None else {}
    metrics = bootstrap_metrics(y, proba, groups=group_ids, n_boot=n_boot, seed=seed, **kwargs)
    pred = _predicted(proba, pos_index if pos_index is not None else 1, threshold)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)

    name = package.get("name", "model")
    shown = Path(data).name if data and ("/" in data or "\\" in data) else data
    label = title or f"{name}" + (f" on {shown}" if shown else "") + (f" [{split}]" if split else "")
    result: dict[str, Any] = {
        "model": name,
        "model_version": package.get("version"),
        "data": data,
        "split": split,
        "n": int(len(y)),
        "n_groups": int(len(np.unique(group_ids))) if group_ids is not None else None,
        "class_names": classes,
        "class_counts": {c: int(np.sum(y == i)) for i, c in enumerate(classes)},
        "positive_class": classes[pos_index] if pos_index is not None else None,
        "threshold": threshold if pos_index is not None else None,
        "averaging": None if pos_index is not None else "macro (AUC one-vs-rest)",
        "n_boot": n_boot,
        "seed": seed,
        "confidence": 0.95,
        "resampling": "groups" if group_ids is not None else "images",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": metrics,
        "per_class": _per_class(y, proba, pred, classes),
        "confusion_matrix": matrix.tolist(),
        "files": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_pos = pos_index if pos_index is not None else 1
        _plot_roc(out / "roc.png", y, proba, classes, plot_pos, label)
        _plot_pr(out / "pr.png", y, proba, classes, plot_pos, label)
        _plot_confusion(out / "confusion.png", matrix, classes, label)
        result["files"] = {name: str(out / name) for name in (*PLOTS, "metrics.json")}
        write_json(out / "metrics.json", result)
    return _clean(result)


def write_json(path: str | Path, result: dict[str, Any]) -> Path:
    """Write an evaluation result as strict JSON (NaN → null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def recorded_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The block ``meddx evaluate --record`` stores as ``package.json["metrics"]``."""
    keys = ("data", "split", "n", "n_groups", "positive_class", "threshold", "averaging", "n_boot", "confidence",
            "resampling", "date")
    block = {k: result.get(k) for k in keys}
    block["values"] = result["metrics"]
    return _clean(block)


__all__ = ["PLOTS", "evaluate_model", "map_labels", "recorded_metrics", "write_json"]
