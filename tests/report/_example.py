"""Example report dicts for the report tests: a full one with small generated PNG figures, and a minimal one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HOSTILE = "<script>alert(1)</script>"
FIGURE_KEYS = ("roc", "pr", "confusion", "reliability", "risk_coverage")


def ci(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def _png(path: Path, seed: int, size: tuple[int, int] = (240, 180)) -> str:
    """A small, non-trivial PNG: a gradient with noise and a bright square."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), rng.integers(0, 255, (h, w))], axis=-1).astype(np.uint8)
    img[h // 3: h // 2, w // 3: w // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path.name


def minimal_report() -> dict[str, Any]:
    return {
        "model": {"name": "cnn-tiny", "version": "0.1.0", "class_names": ["normal", "lesion"]},
        "data": {"dataset": "toy"},
        "evaluation": {"split": "test", "n": 40,
                       "metrics": {"acc": ci(0.8, 0.7, 0.9), "auc": ci(0.85, 0.74, 0.93)}},
    }


def full_report(folder: Path) -> dict[str, Any]:
    """Every section filled; figures are PNG files in ``folder`` (paths relative to it)."""
    figures = {key: _png(folder / f"{key}.png", n) for n, key in enumerate(FIGURE_KEYS)}
    explanations = []
    for n, target in enumerate(["malignant", HOSTILE]):
        explanations.append({
            "image": _png(folder / f"cam{n}.png", 10 + n, (64, 64)),
            "original": _png(folder / f"img{n}.png", 20 + n, (64, 64)),
            "method": "gradcam", "target": target, "probability": 0.93 - n / 10,
            "sanity_spearman": 0.12, "deletion_auc": 0.21, "random_deletion_auc": 0.48, "insertion_auc": 0.81,
        })
    metrics = {
        "acc": ci(0.8846, 0.8333, 0.9295),
        "auc": ci(0.9123, 0.8714, 0.9481),
        "sensitivity": ci(0.7619, 0.6341, 0.8837),
        "specificity": ci(0.9298, 0.8835, 0.9730),
        "ppv": ci(0.8, 0.6667, 0.9189),
        "npv": ci(0.9138, 0.8621, 0.9593),
        "f1": ci(0.7805, 0.6667, 0.8718),
        "balanced_accuracy": ci(0.8459, 0.7857, 0.9063),
    }
    card = "\n".join([
        "# Model card: breast-us", "", "Version **1.2.0**", "",
        "## Intended use", "", "Research only. **Not for primary diagnosis**.", "",
        "## Preprocessing", "", "- Size: 28×28 (bilinear)", f"- Class `{HOSTILE}` is hostile", "",
        "## Performance", "", "| metric | value | 95% CI |", "|---|---|---|", "| AUC | 0.912 | 0.871 – 0.948 |", "",
        "See [the data set](https://medmnist.com/) and <img src=x onerror=alert(2)>.",
    ])
    return {
        "title": "Validation report: breast-us 1.2.0",
        "generated": "2026-01-02T03:04:05+00:00",
        "meddx_version": "0.1.0",
        "model": {
            "name": "breast-us", "version": "1.2.0", "architecture": "resnet18", "modality": "ultrasound",
            "task": "binary classification", "class_names": ["benign", "malignant", HOSTILE],
            "positive_class": "malignant",
            "intended_use": "Second opinion for breast ultrasound, read by a radiologist.",
            "limitations": ["Single-centre data.", "Images were 28×28 pixels."],
            "card_markdown": card,
        },
        "data": {
            "dataset": "breastmnist", "source": "MedMNIST v2", "licence": "CC BY 4.0",
            "description": "Breast ultrasound, 780 images.", "grouped": False,
            "split_note": "The data set's official split; patient identifiers are not available.",
            "splits": {
                "train": {"n": 546, "classes": {"benign": 399, "malignant": 147}},
                "val": {"n": 78, "classes": {"benign": 57, "malignant": 21}},
                "test": {"n": 156, "classes": {"benign": 114, "malignant": 42}},
            },
        },
        "evaluation": {"split": "test", "n": 156, "metrics": metrics, "positive_class": "malignant",
                       "threshold": 0.5, "ci_method": "95% bootstrap, 1000 resamples (patients when known)"},
        "figures": figures,
        "calibration": {
            "method": "temperature", "params": {"temperature": 1.732}, "fitted_on": "validation split (n=78)",
            "before": {"ece": ci(0.081, 0.052, 0.122), "brier": ci(0.091, 0.07, 0.11), "nll": ci(0.31, 0.25, 0.38)},
            "after": {"ece": ci(0.034, 0.021, 0.07), "brier": ci(0.085, 0.066, 0.104), "nll": ci(0.27, 0.22, 0.33)},
        },
        "operating_points": [
            {"name": "sensitivity at 90% specificity", "threshold": 0.42, "sensitivity": ci(0.81, 0.69, 0.92),
             "specificity": ci(0.9, 0.84, 0.95), "ppv": ci(0.75, 0.62, 0.87), "npv": ci(0.93, 0.88, 0.97),
             "chosen_on": "validation"},
        ],
        "local_recalibration": {
            "description": "Temperature refitted on 40 cases of the local hospital", "n_local": 40,
            "before": {"ece": ci(0.12, 0.08, 0.17)}, "after": {"ece": ci(0.05, 0.03, 0.09)},
        },
        "subgroups": [{"attribute": "age group", "rows": [
            {"group": "< 50", "n": 70, "prevalence": 0.2, "auc": ci(0.9, 0.82, 0.96), "acc": ci(0.88, 0.8, 0.94),
             "sensitivity": ci(0.71, 0.5, 0.9), "specificity": ci(0.93, 0.86, 0.98), "ece": ci(0.05, 0.03, 0.1)},
            {"group": HOSTILE, "n": 86, "prevalence": 0.326, "auc": ci(0.92, 0.86, 0.97),
             "acc": ci(0.89, 0.82, 0.94), "sensitivity": ci(0.79, 0.64, 0.92),
             "specificity": ci(0.93, 0.85, 0.98), "ece": ci(0.06, 0.03, 0.11)},
        ]}],
        "uncertainty": {
            "method": "mc-dropout (20 passes)",
            "conformal": {"method": "split conformal (APS)", "alpha": 0.1, "coverage": 0.91, "mean_set_size": 1.21,
                          "n_resplits": 100},
            "abstention": {"measure": "predictive entropy", "threshold": 0.42, "target_risk": 0.05, "coverage": 0.78,
                           "accuracy_kept": 0.95, "accuracy_all": 0.885},
            "table": [{"coverage": c, "accuracy": a, "risk": 1 - a}
                      for c, a in [(1.0, 0.885), (0.8, 0.94), (0.6, 0.97)]],
        },
        "explanations": explanations,
        "warnings": ["Partitions are image-level: one patient's images may be in several partitions.", HOSTILE],
    }


