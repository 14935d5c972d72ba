"""External validation: what a model does on data from sources it never saw.

``meddx validate MODEL`` runs every external check the package's data allow and puts them
beside the internal figure (the model's own test partition):

* **leave-one-source-out** (or leave-one-site-out): when the catalogue knows where each
  case came from, the model's recipe is retrained on all sources but one and scored on the
  one left out, for each source in turn;
* **other collections** the catalogue names for the set (e.g. adult chest films for a
  paediatric pneumonia model);
* **any folder the user gives** (``--data``), scored as it is.

Every row carries the AUC with its 95% CI, the prevalence and the expected calibration
error beside its *noise floor* (the ECE a perfectly calibrated model shows at that n), so a
calibration error is only called one when it stands above the noise.

Modalities plug in through their handler's ``validate(folder, package, *, folders, n_boot,
seed, progress) -> dict`` (see :mod:`meddx.modalities`); :func:`block` makes each row, so
every modality's JSON has the same shape::

    {"model", "set", "modality", "internal": ROW, "external": [ROW, ...], "seconds"}
    ROW = {"kind", "source", "n", "prevalence", "auc": {"value", "low", "high"},
           "ece", "ece_floor", "note"}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError

GOAL_GAP = 0.05
"""Issue 17's goal: the external AUC within this much of the internal one."""


def auc_ci(y: np.ndarray, proba: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
           groups: np.ndarray | None = None) -> dict[str, float | None]:
    """AUC (binary, or macro one-vs-rest for more classes) with a bootstrap 95% CI (resampling groups when given)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        proba = np.column_stack([1 - proba, proba])
    classes = proba.shape[1]

    def auc(yy: np.ndarray, pp: np.ndarray) -> float:
        present = np.unique(yy)
        if len(present) < 2:
            return float("nan")
        if classes == 2:
            return float(roc_auc_score(yy, pp[:, 1]))
        scores = [roc_auc_score(yy == c, pp[:, c]) for c in present]
        return float(np.mean(scores))

    value = auc(y, proba)
    rng = np.random.default_rng(seed)
    units = np.unique(groups) if groups is not None else None
    boots = []
    for _ in range(n_boot):
        if units is None:
            idx = rng.integers(0, len(y), len(y))
        else:
            pick = rng.choice(units, len(units))
            idx = np.concatenate([np.flatnonzero(groups == g) for g in pick])
        boots.append(auc(y[idx], proba[idx]))
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(value) or not len(boots):
        return {"value": None if not np.isfinite(value) else value, "low": None, "high": None}
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high)}


def block(kind: str, source: str, y: Any, proba: Any, *, n_boot: int = 1000, seed: int = 0,
          groups: Any = None, note: str = "", **extra: Any) -> dict[str, Any]:
    """One validation row: n, prevalence, AUC [95% CI], ECE and the ECE noise floor at this n.

    ``proba`` is ``(n, classes)`` or the positive class's probability for a binary model;
    ``prevalence`` is the share of class 1 (binary) or of each class (more classes).
    """
    from meddx.calibration.metrics import ece, ece_noise_floor

    y = np.asarray(y).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.column_stack([1 - p, p])
    if len(y) != len(p):
        raise InvalidValueError(f"{len(y)} labels but {len(p)} predictions", field=f"validate.{source}")
    if len(y) == 0:
        raise InvalidValueError("no cases to validate on", field=f"validate.{source}",
                                hint="Check the source's labels and the model's intended input")
    counts = np.bincount(y, minlength=p.shape[1]) / len(y)
    floor = ece_noise_floor(p, draws=500, seed=seed)
    return {
        "kind": kind, "source": source, "n": int(len(y)),
        "prevalence": float(counts[1]) if p.shape[1] == 2 else [float(c) for c in counts],
        "auc": auc_ci(y, p, n_boot=n_boot, seed=seed, groups=None if groups is None else np.asarray(groups)),
        "ece": float(ece(p, y)), "ece_floor": floor["p95"], "note": note, **extra,
    }


def validate(model: str | Path, *, folders: list[str] | tuple[str, ...] = (), n_boot: int = 1000, seed: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Internal and external validation of a package, whatever its modality (see the module docstring)."""
    from meddx.modalities import handler_for_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(model)
    package = read_package(folder)
    handler = handler_for_package(package)
    start = time.perf_counter()
    run = getattr(handler.handler(), "validate", None)
    if run is None:
        from meddx.exceptions import ConfigError

        raise ConfigError(f"{handler.name} {handler.task} packages have no external validation yet", path=folder,
                          field="modality", hint="Use `meddx evaluate MODEL FOLDER` on another source")
    result = run(folder, package, folders=list(folders), n_boot=n_boot, seed=seed, progress=progress)
    result.setdefault("modality", handler.name)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def format_ci(a: dict[str, Any] | None, missing: str = "n/a") -> str:
    """``{"value", "low", "high"}`` as ``0.912 [0.887, 0.934]`` (``missing`` when there is no value)."""
    if not a or a.get("value") is None:
        return missing
    if a.get("low") is None:
        return f"{a['value']:.3f}"
    return f"{a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"


def format_validation(result: dict[str, Any]) -> str:
    """The side-by-side table ``meddx validate`` prints."""
    rows = [result["internal"], *result.get("external", [])]
    lines = [f"{result.get('model', '')} ({result.get('modality', '')}, trained on {result.get('set', '?')}): "
             "internal vs external validation", "",
             f"{'check':44s} {'n':>6s} {'prev':>6s}  {'AUC [95% CI]':24s} {'ECE':>6s} {'floor':>6s} {'OOD':>5s}"]
    for r in rows:
        prev = r.get("prevalence")
        prev_s = f"{prev:.2f}" if isinstance(prev, float) else "-"
        label = f"{r['kind']}: {r['source']}"[:44]
        ece_s = f"{r['ece']:.3f}" if r.get("ece") is not None else "n/a"
        floor_s = f"{r['ece_floor']:.3f}" if r.get("ece_floor") is not None else "n/a"
        ood_s = f"{r['ood_flagged']:.2f}" if r.get("ood_flagged") is not None else "-"
        auc = format_ci(r.get("auc"))
        lines.append(f"{label:44s} {r['n'] or 0:>6d} {prev_s:>6s}  {auc:24s} {ece_s:>6s} {floor_s:>6s} {ood_s:>5s}")
    internal = (result["internal"].get("auc") or {}).get("value")
    gaps = [internal - r["auc"]["value"] for r in result.get("external", [])
            if internal is not None and (r.get("auc") or {}).get("value") is not None]
    if gaps:
        worst = max(gaps)
        verdict = "within" if worst <= GOAL_GAP else "NOT within"
        lines += ["", f"largest internal - external AUC gap {worst:+.3f}: {verdict} the {GOAL_GAP} goal"]
    lines.append("ECE above its floor (the ECE a perfectly calibrated model shows at that n, 95th percentile) is "
                 "miscalibration; OOD = share the model's out-of-distribution gate flags.")
    for r in rows:
        if r.get("note"):
            lines.append(f"note ({r['source']}): {r['note']}")
    return "\n".join(lines)
