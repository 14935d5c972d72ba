"""Compute everything the validation report shows, for one model on one labelled data set.

:func:`build_report` is what ``meddx report`` runs. It evaluates the model on a
split (a catalogue set's test split, or a hospital's folder with ``labels.csv``),
and gathers, each with 95% bootstrap CIs where a CI makes sense: discrimination,
calibration before and after the package's calibrator, operating points with
thresholds chosen on validation data, optional recalibration on a local labelled
sample, subgroup tables where the data carry sex/age, conformal coverage and
abstention, and explanations with their sanity and faithfulness checks. The
result is rendered by :func:`meddx.report.render_html` into one self-contained
HTML page plus ``report.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.calibration.scaling import softmax
from meddx.exceptions import ConfigError

AGE_BANDS = ((0, 40, "<40"), (40, 60, "40–59"), (60, 80, "60–79"), (80, 200, "≥80"))




def _ci(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("value", "low", "high")}


def _split_table(sample: Any, class_names: list[str]) -> dict[str, Any]:
    names = sample.class_names or class_names
    out = {}
    for name, (_, labels) in sample.splits.items():
        labels = np.asarray(labels).reshape(len(labels), -1)[:, 0] if len(labels) else np.asarray([])
        classes: dict[str, int] = {}
        for value in labels:
            key = names[int(value)] if str(value).isdigit() and int(value) < len(names) else str(value)
            classes[key] = classes.get(key, 0) + 1
        out[name] = {"n": int(len(labels)), "classes": classes}
    return out


def operating_points(y_val: np.ndarray, p_val: np.ndarray, y: np.ndarray, p: np.ndarray, groups: Any,
                     n_boot: int, chosen_on: str) -> list[dict[str, Any]]:
    """Thresholds for 90/95% specificity and 90/95% sensitivity chosen on validation, scored on ``y``."""
    from meddx.evaluation.metrics import bootstrap_metrics

    points = []
    negatives, positives = np.sort(p_val[y_val == 0]), np.sort(p_val[y_val == 1])
    for target in (0.90, 0.95):
        if len(negatives):
            threshold = float(np.quantile(negatives, target, method="higher")) + 1e-12
            points.append(("sensitivity at {:.0%} specificity".format(target), threshold))
        if len(positives):
            threshold = float(np.quantile(positives, 1 - target, method="lower"))
            points.append(("specificity at {:.0%} sensitivity".format(target), threshold))
    out = []
    proba = np.stack([1 - p, p], axis=1)
    for name, threshold in points:
        m = bootstrap_metrics(y, proba, groups=groups, n_boot=n_boot, seed=0, positive=1, threshold=threshold)
        out.append({"name": name, "threshold": threshold, "chosen_on": chosen_on,
                    **{k: _ci(m[k]) for k in ("sensitivity", "specificity", "ppv", "npv")}})
    return out


def _subgroups(attributes: dict[str, list[Any]], y: np.ndarray, proba: np.ndarray, pos: int | None,
               n_boot: int) -> list[dict[str, Any]]:
    from meddx.calibration import bootstrap_calibration
    from meddx.evaluation.metrics import bootstrap_metrics

    tables = []
    for attribute, values in attributes.items():
        values = list(values)
        if attribute == "age":
            banded = []
            for v in values:
                try:
                    age = float(v)
                except (TypeError, ValueError):
                    banded.append("unknown")
                    continue
                banded.append(next((label for lo, hi, label in AGE_BANDS if lo <= age < hi), "unknown"))
            values, attribute = banded, "age band"
        rows = []
        for group in sorted({str(v) for v in values}):
            mask = np.array([str(v) == group for v in values])
            if mask.sum() < 5:
                rows.append({"group": group, "n": int(mask.sum()), "note": "fewer than 5 cases: not estimated"})
                continue
            kwargs = {"positive": pos} if pos is not None else {}
            m = bootstrap_metrics(y[mask], proba[mask], n_boot=n_boot, seed=0, **kwargs)
            row = {"group": group, "n": int(mask.sum()),
                   "prevalence": float(np.mean(y[mask] == pos)) if pos is not None else None,
                   **{k: _ci(m[k]) for k in ("auc", "acc", "sensitivity", "specificity") if k in m}}
            row["ece"] = _ci(bootstrap_calibration(proba[mask], y[mask], n_boot=n_boot, seed=0)["ece"])
            rows.append(row)
        tables.append({"attribute": attribute, "rows": rows})
    return tables


def build_report(model: str | Path, data: str | None = None, *, split: str | None = None,
                 out: str | Path = "report", n_boot: int = 1000, explain: int = 4, explain_method: str = "gradcam",
                 local_fraction: float = 0.0, uncertainty: str = "auto", seed: int = 0) -> Path:
    """Evaluate ``model`` on ``data``/``split`` and write ``out/report.html`` and ``out/report.json``."""
    from meddx import __version__
    from meddx.calibration import (
        bootstrap_calibration,
        create_calibrator,
        evaluate_resplits,
        plot_reliability,
        risk_coverage_curve,
    )
    from meddx.calibration.abstention import SCORES
    from meddx.evaluation.report import evaluate_model, map_labels
    from meddx.inference import Pipeline
    from meddx.report import render_html

    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline.load(model)
    package = pipeline.package
    data = data or (package.get("data") or {}).get("source")
    if not data:
        raise ConfigError("no data given and the package does not name its data", field="data",
                          hint="meddx report MODEL DATA (a catalogue set or a folder with labels.csv)")
    from meddx.data.datasets import load_images
    from meddx.evaluation.shift import choose_partition, seen_title, shift_block

    pre = package["preprocess"]
    sample = load_images(data, size=pre["size"], channels=pre["in_chans"]) if Path(data).is_dir() \
        else load_images(data)
    part = choose_partition(pipeline.folder, package, data, sample, split)
    split, seen = part["split"], part["seen_by_model"]
    classes = pipeline.class_names
    images, labels, groups = part["images"], part["labels"], part["groups"]
    y = map_labels(labels, classes, sample.class_names)
    warnings: list[str] = []
    if seen:
        warnings.append(f"These images are data the model was {seen}: the figures below are not a validation.")

    evaluation = evaluate_model(pipeline, images, y, class_names=classes, groups=groups, out_dir=figures,
                                n_boot=n_boot, seed=seed, data=data, split=split)
    pos = classes.index(evaluation["positive_class"]) if evaluation.get("positive_class") in classes else None

    logits = pipeline.predict_logits(images)
    raw, calibrated = softmax(logits), pipeline.trust.calibrator.transform(logits)
    trust = package.get("trust") or {}
    if not trust:
        warnings.append("The package has no fitted calibration, conformal predictor or abstention policy.")
    plot_reliability({"before (softmax)": (raw, y), "after " + trust.get("calibration", {}).get("name", "identity"):
                      (calibrated, y)}, figures / "reliability.png", title=f"Reliability on {split}")
    calibration = {"method": trust.get("calibration", {}).get("name", "identity"),
                   "params": {k: v for k, v in trust.get("calibration", {}).items() if k != "name"},
                   "fitted_on": trust.get("fitted_on", "not fitted"),
                   "before": bootstrap_calibration(raw, y, n_boot=n_boot, seed=seed, groups=groups),
                   "after": bootstrap_calibration(calibrated, y, n_boot=n_boot, seed=seed, groups=groups)}

    shown = Path(data).name if Path(data).is_dir() else data
    report: dict[str, Any] = {
        "title": (f"{seen_title(seen)}report of {package['name']} on {shown} [{split}]" if seen
                  else f"Validation report: {package['name']} on {shown} [{split}]"),
        "seen_by_model": seen, "validation": seen is None,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "meddx_version": __version__,
        "model": {"name": package["name"], "version": str(package["version"]),
                  "architecture": package.get("architecture"), "modality": package.get("modality", "image"),
                  "task": package.get("task"), "class_names": classes, "positive_class": package.get("positive_class"),
                  "intended_use": package.get("intended_use"),
                  "limitations": package.get("limitations") or [
                      "Validated only on the data sets named in this report; performance at other sites, devices "
                      "and populations must be checked locally before use.",
                      "Not for primary diagnosis: a decision-support aid for qualified staff."],
                  "card_markdown": (pipeline.folder / "MODEL_CARD.md").read_text(encoding="utf-8")
                  if (pipeline.folder / "MODEL_CARD.md").is_file() else ""},
        "data": {"dataset": sample.meta.get("dataset") or str(data), "source": str(data),
                 "licence": sample.meta.get("licence") or (package.get("data") or {}).get("licence"),
                 "description": sample.meta.get("description") or "",
                 "grouped": groups is not None, "split_note": (package.get("data") or {}).get("split", ""),
                 "splits": _split_table(sample, classes), "evaluated_split": split},
        "evaluation": {"split": split, "n": evaluation["n"],
                       "metrics": {k: _ci(v) for k, v in evaluation["metrics"].items()},
                       "ci_method": f"95% percentile bootstrap, {n_boot} resamples"
                                    + (" of patients" if groups is not None else " of images"),
                       "positive_class": evaluation.get("positive_class"), "threshold": evaluation.get("threshold")},
        "figures": {"roc": str(figures / "roc.png"), "pr": str(figures / "pr.png"),
                    "confusion": str(figures / "confusion.png"), "reliability": str(figures / "reliability.png")},
        "calibration": calibration,
        "shift": shift_block(pipeline, np.asarray(images), y, pos),
        "warnings": warnings,
    }

    # operating points: thresholds chosen on the validation split when the data have one
    if pos is not None:
        if "val" in sample.splits and split != "val":
            val_images, val_labels = sample.splits["val"]
            y_val = map_labels(val_labels, classes, sample.class_names)
            p_val = pipeline.trust.calibrator.transform(pipeline.predict_logits(val_images))[:, pos]
            chosen_on = f"validation split (n={len(y_val)})"
        else:
            y_val, p_val, chosen_on = y, calibrated[:, pos], "the evaluated data themselves (no validation split)"
            warnings.append("Operating thresholds were chosen on the evaluated data: they are optimistic.")
        report["operating_points"] = operating_points((y_val == pos).astype(int), p_val, (y == pos).astype(int),
                                                      calibrated[:, pos], groups, n_boot, chosen_on)

    # recalibration on a local labelled sample (a hospital labels a share of its own cases)
    if local_fraction > 0:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        n_local = max(10, int(round(local_fraction * len(y))))
        fit_idx, rest = order[:n_local], order[n_local:]
        local = create_calibrator("temperature").fit(logits[fit_idx], y[fit_idx])
        report["local_recalibration"] = {
            "description": f"Temperature refitted on {n_local} randomly chosen labelled cases of this data set "
                           f"(as a hospital would with its own sample); scored on the other {len(rest)}.",
            "n_local": int(n_local),
            "before": bootstrap_calibration(calibrated[rest], y[rest], n_boot=n_boot, seed=seed),
            "after": bootstrap_calibration(local.transform(logits[rest]), y[rest], n_boot=n_boot, seed=seed)}

    attributes = (sample.meta.get("attributes") or {}).get(split) if isinstance(sample.meta.get("attributes"),
                                                                                 dict) else None
    if attributes:
        report["subgroups"] = _subgroups(attributes, y, calibrated, pos, n_boot)

    # uncertainty: conformal coverage on this data, abstention policy, risk-coverage curve
    correct = calibrated.argmax(axis=1) == y
    entropy = SCORES["predictive_entropy"](calibrated)
    curve = risk_coverage_curve(entropy, correct)
    _plot_risk_coverage(figures / "risk_coverage.png", curve)
    report["figures"]["risk_coverage"] = str(figures / "risk_coverage.png")
    alpha = pipeline.trust.alpha or 0.1
    resplits = evaluate_resplits(calibrated, y, alpha=alpha, method="aps", n_splits=20, seed=seed, allow_empty=True)
    package_sets = pipeline.trust.conformal.predict_sets(calibrated) if pipeline.trust.conformal else None
    decisions = pipeline.predict_detailed(images, uncertainty=uncertainty)
    kept = np.array([d.decision.decision != "refer" for d in decisions])
    grid = np.asarray(curve["coverage"])
    table = []
    for c in (1.0, 0.95, 0.9, 0.8, 0.7, 0.5):
        i = int(np.argmin(np.abs(grid - c)))
        table.append({"coverage": float(grid[i]), "accuracy": float(1 - np.asarray(curve["risk"])[i]),
                      "risk": float(np.asarray(curve["risk"])[i])})
    report["uncertainty"] = {
        "method": decisions[0].uncertainty.method if decisions else uncertainty,
        "conformal": {"method": "aps", "alpha": alpha, "coverage": resplits["coverage_mean"],
                      "mean_set_size": resplits["size_mean"], "n_resplits": 20,
                      "package_coverage": float(package_sets[np.arange(len(y)), y].mean())
                      if package_sets is not None else None},
        "abstention": {"measure": (trust.get("abstention") or {}).get("measure", "predictive_entropy"),
                       "threshold": (trust.get("abstention") or {}).get("threshold"),
                       "target_risk": (trust.get("abstention") or {}).get("target_risk"),
                       "coverage": float(kept.mean()),
                       "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
                       "accuracy_all": float(correct.mean())},
        "table": table,
    }
    if explain > 0 and package.get("modality", "image") == "image":
        report["explanations"] = _explanations(pipeline, images, calibrated, y, classes, explain, explain_method,
                                               figures)
    return render_html(report, out / "report.html")


def _explanations(pipeline: Any, images: np.ndarray, calibrated: np.ndarray, y: np.ndarray, classes: list[str],
                  n: int, method: str, figures: Path) -> list[dict[str, Any]]:
    from PIL import Image

    from meddx.inference.explanations import explain_image

    picks: list[int] = []
    for c in range(len(classes)):  # the most confident correct case of each class, then the worst error
        idx = np.flatnonzero((y == c) & (calibrated.argmax(1) == c))
        if len(idx):
            picks.append(int(idx[np.argmax(calibrated[idx, c])]))
    wrong = np.flatnonzero(calibrated.argmax(1) != y)
    if len(wrong):
        picks.append(int(wrong[np.argmax(calibrated[wrong].max(1))]))
    rest = [i for i in range(len(y)) if i not in picks]
    picks = (picks + rest)[:n]
    out = []
    for k, i in enumerate(picks):
        image = np.asarray(images[i])
        if image.dtype != np.uint8:
            image = np.clip(image / max(float(image.max()), 1.0) * 255, 0, 255).astype(np.uint8)
        if image.ndim == 3 and image.shape[-1] not in (3, 4):
            image = image[..., 0]
        original = figures / f"case{k}.png"
        Image.fromarray(image).save(original)
        target = classes[int(calibrated[i].argmax())]
        e = explain_image(pipeline, image, target, method=method, out_dir=figures, stem=f"case{k}")
        out.append({"image": e.overlay, "original": str(original), "method": method, "target": target,
                    "true_class": classes[int(y[i])], "probability": float(calibrated[i].max()),
                    "sanity_spearman": e.sanity_spearman, "deletion_auc": e.deletion_auc,
                    "random_deletion_auc": e.random_deletion_auc, "insertion_auc": e.insertion_auc})
    return out


def _plot_risk_coverage(path: Path, curve: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=110)
    ax.plot(np.asarray(curve["coverage"]), 1 - np.asarray(curve["risk"]), color="#1f5fa8")
    ax.set_xlabel("coverage (share of cases the model keeps)")
    ax.set_ylabel("accuracy on kept cases")
    ax.set_xlim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy–coverage (refer the most uncertain first)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
