"""Model cards: ``MODEL_CARD.md`` generated from a package's ``package.json``.

The card is what a clinician or reviewer reads before using a model: what it
does, what it must not be used for, what data it learnt from (with the data's
licence and how to cite it), how inputs are prepared, and how well it did on
held-out data, with 95% confidence intervals. It is regenerated whenever the
package changes (``meddx evaluate --record``, ``meddx models register``), so it
never drifts from ``package.json``.

Every field is read with ``.get()``: packages from older trainers still get a
card, with "not recorded" where something is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

INTENDED_USE = (
    "Research and clinical decision support only: a second opinion for a qualified clinician, who makes "
    "the diagnosis. **Not for primary diagnosis**, not for triage without a clinician's review, and not a "
    "certified medical device."
)
METRIC_NAMES = {
    "acc": "Accuracy",
    "auc": "AUC (ROC)",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_acc": "Balanced accuracy",
}
_MISSING = "not recorded"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return _MISSING if value is None or value == "" else str(value)


def _num(value: Any) -> str:
    """A metric value: three decimals; "n/a" when undefined (None/NaN, e.g. NPV with no negative calls)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return "n/a"


def _citation(package: dict[str, Any]) -> tuple[str | None, str | None]:
    """The data set's citation and homepage: from the package, else from the catalogue."""
    data = package.get("data") or {}
    citation, homepage = data.get("citation"), data.get("homepage")
    dataset = data.get("dataset")
    if dataset and not citation:
        try:
            from meddx.data.catalogue import get_dataset

            spec = get_dataset(str(dataset))
            citation, homepage = spec.citation, homepage or spec.homepage
        except Exception:  # noqa: BLE001 - a card must render even for an unknown data set
            pass
    return citation, homepage


def _metric_values(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{metric: {value, low, high}}`` from the recorded block (or a bare results dict)."""
    values = metrics.get("values", metrics)
    return {k: v for k, v in values.items() if isinstance(v, dict) and "value" in v}


def _metrics_section(package: dict[str, Any]) -> list[str]:
    metrics = package.get("metrics") or {}
    values = _metric_values(metrics) if isinstance(metrics, dict) else {}
    lines = ["## Performance", ""]
    if not values:
        lines += [
            "No held-out test metrics are recorded yet. Run "
            "`meddx evaluate MODEL DATA --split test --record` on the data set's test split.",
        ]
    else:
        where = f"{metrics.get('data', _MISSING)}, split `{metrics.get('split', _MISSING)}`"
        n = metrics.get("n")
        groups = metrics.get("n_groups")
        resample = f"resampling {groups} patients/groups" if groups else "resampling images"
        lines += [
            f"Evaluated on {where} (n = {_fmt(n)}). 95% confidence intervals from "
            f"{_fmt(metrics.get('n_boot'))} bootstrap resamples, {resample}.",
        ]
        if metrics.get("positive_class") is not None:
            lines.append(
                f"Positive class: **{metrics['positive_class']}** (threshold {_num(metrics.get('threshold', 0.5))} on "
                "its probability); sensitivity, specificity, PPV and NPV refer to it."
            )
        elif len(package.get("class_names") or []) > 2:
            lines.append("Multi-class: AUC is macro one-vs-rest; the other metrics are macro averages over classes.")
        if metrics.get("date"):
            lines.append(f"Date of the evaluation: {metrics['date']}.")
        lines += ["", "| metric | value | 95% CI |", "|---|---|---|"]
        for key, label in METRIC_NAMES.items():
            if key in values:
                v = values[key]
                lines.append(f"| {label} | {_num(v.get('value'))} | {_num(v.get('low'))} – {_num(v.get('high'))} |")
    training = package.get("training") or {}
    if training.get("select") == "last":
        lines += ["", "Each model kept its last training epoch: nothing was selected on validation data."]
    elif training.get("best_val_auc") is not None:
        lines += [
            "",
            f"Validation AUC at the chosen epoch ({_fmt(training.get('best_epoch'))}): "
            f"{_fmt(training.get('best_val_auc'))}. The epoch was chosen on this split, so this figure is "
            "optimistic; only test metrics estimate performance on new data.",
        ]
    return lines


def _calibration_limit(trust: dict[str, Any] | None) -> str:
    if not trust or "calibration" not in trust:
        return "Output probabilities are not calibrated; do not read them as the chance of disease."
    return (f"Probabilities are calibrated on {_fmt(trust.get('n'))} held-out cases ({_fmt(trust.get('fitted_on'))}); "
            "at another site they may be miscalibrated until refitted on local labelled cases.")


def _trust_section(package: dict[str, Any]) -> list[str]:
    """Calibration and conformal sets: what they were fitted on, with n and any warning (issue 17)."""
    trust = package.get("trust") or {}
    if not trust:
        return []
    calibration = trust.get("calibration") or {}
    if not isinstance(calibration, dict):  # record packages name their calibrator only
        calibration = {"name": calibration}
    state = calibration.get("state") or {}
    conformal = trust.get("conformal") or {}
    if not isinstance(conformal, dict):
        conformal = {}
    alpha = conformal.get("alpha")
    lines = ["## Calibration and prediction sets", "",
             f"- Fitted on: {_fmt(trust.get('fitted_on'))}; n = {_fmt(trust.get('n'))}"
             + (f" (per class: {', '.join(str(c) for c in trust['n_per_class'])})" if trust.get("n_per_class") else ""),
             f"- Calibrator: `{_fmt(calibration.get('name'))}`"
             + (f", temperature {float(state['temperature']):.3g}" if state.get("temperature") is not None else "")]
    if alpha is not None:
        interval = trust.get("coverage_interval_95")
        lines.append(f"- Conformal prediction sets: {1 - float(alpha):.0%} coverage on average"
                     + (f"; this package's realised coverage lies in about {interval[0]:.0%}–{interval[1]:.0%} "
                        "(95%, from n)" if interval else ""))
    cv = package.get("cv") or {}
    if cv.get("oof_auc"):
        auc = cv["oof_auc"]
        lines.append(f"- Out-of-fold AUC ({cv.get('folds')}-fold group cross-validation, n = {cv.get('n')}): "
                     f"{_num(auc.get('value'))} (95% CI {_num(auc.get('low'))} – {_num(auc.get('high'))}); "
                     "a within-collection estimate, not a measure of other hospitals")
    for warning in trust.get("warnings") or []:
        lines.append(f"- **Warning:** {warning}")
    return lines


_OUTPUTS = {
    "classification": "class probabilities (softmax)",
    "segmentation": "a class per pixel or voxel (a label mask, with a foreground probability map)",
    "detection": "labelled boxes with scores",
}


def render_card(package: dict[str, Any]) -> str:
    """The model card (Markdown) for a parsed ``package.json``."""
    name = package.get("name", "unnamed model")
    version = package.get("version", _MISSING)
    data = package.get("data") or {}
    pre = package.get("preprocess") or {}
    training = package.get("training") or {}
    classes = list(package.get("class_names") or [])
    licence = data.get("licence")
    citation, homepage = _citation(package)
    task = str(package.get("task") or "classification").lower()
    kind = next((k for k in _OUTPUTS if k in task), "classification")

    lines = [f"# Model card: {name}", "", f"Version **{version}**", ""]
    lines += [
        "## Model details",
        "",
        f"- Name: `{name}`; version `{version}` (load it as `{name}:{version}` once registered)",
        f"- Architecture: `{_fmt(package.get('architecture'))}`, "
        + (f"{_fmt(package.get('num_classes'))} outputs (softmax)" if kind == "classification" else _OUTPUTS[kind]),
        f"- Classes (output order): {', '.join(f'`{c}`' for c in classes) if classes else _MISSING}",
        f"- Task: {_fmt(package.get('task'))}; input modality: {_fmt(package.get('modality'))}",
        f"- Package format: `{_fmt(package.get('format'))}`, written by meddx {_fmt(package.get('meddx_version'))}",
    ]
    sha = (package.get("files") or {}).get("model.safetensors")
    if sha:
        lines.append(f"- Weights: `model.safetensors`, sha256 `{sha}`")
    onnx = (package.get("runtime") or {}).get("onnx") or {}
    if "file" in onnx:
        lines.append(f"- Inference export: `{onnx['file']}` (ONNX opset {onnx.get('opset')}, sha256 "
                     f"`{onnx.get('sha256')}`), max |Δlogit| against the torch model "
                     f"{float(onnx.get('max_abs_logit_gap', float('nan'))):.1e} at export")
    elif "error" in onnx:
        lines.append(f"- Inference export: none (export failed: {onnx['error']}); predictions use torch")
    lines += ["", "## Intended use", ""]
    stated = str(package.get("intended_use") or "").strip()
    if stated and "primary diagnosis" in stated.lower():
        lines.append(stated + " Not a certified medical device.")
    else:  # the safety statement is always there, whatever the package says
        lines += [INTENDED_USE] + (["", stated] if stated else [])

    lines += ["", "## Limitations", ""]
    source = data.get("dataset") or data.get("source") or "its training data"
    limits = [
        f"Learnt from {_fmt(data.get('train'))} training images of {source}. Performance on other hospitals, "
        "scanners, protocols and patient populations is unknown until measured: validate on local data first "
        "(`meddx evaluate MODEL FOLDER`, a folder of images with a labels.csv).",
    ]
    if kind == "classification":
        limits += [
            f"Images are resized to {_fmt(pre.get('size'))}×{_fmt(pre.get('size'))} pixels with "
            f"{_fmt(pre.get('in_chans'))} channel(s); findings smaller than that resolution can be lost.",
            _calibration_limit(package.get("trust")),
            "Only the classes listed above can be predicted; anything else (another disease, another body part, "
            "another modality) still gets one of them.",
        ]
    else:
        limits += [
            f"Only the classes listed above are {'segmented' if kind == 'segmentation' else 'detected'}; any "
            "other structure or finding is background to this model, and its absence from the output means nothing.",
            "The output is a measurement aid: every mask or box is to be checked by the reader.",
        ]
    if licence and any(tag in str(licence).upper() for tag in ("NC", "NON-COMMERCIAL", "UNKNOWN", "UNCLEAR")):
        limits.append(f"The training data's licence ({licence}) may restrict commercial or clinical use.")
    limits += [str(item) for item in package.get("limitations") or []]
    lines += [f"- {item}" for item in limits]

    lines += ["", "## Training data", ""]
    lines += [
        f"- Source: `{_fmt(data.get('source'))}`"
        + (f" (catalogue data set `{data['dataset']}`)" if data.get("dataset") else ""),
        f"- Licence of the data: {_fmt(licence)}",
        f"- Split: train {_fmt(data.get('train'))}, validation {_fmt(data.get('val'))}"
        + (f", test {_fmt(data.get('test'))}" if data.get("test") is not None else ""),
    ]
    if data.get("split"):
        lines.append(f"- Split method: {data['split']}")
    if training:
        seconds = training.get("seconds")
        lines.append(
            f"- Training: best epoch {_fmt(training.get('best_epoch'))}"
            + (f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else "")
            + (f", seed {training['seed']}" if training.get("seed") is not None else "")
            + (f", started from `{training['pretrained']}`" if training.get("pretrained") else "")
        )

    lines += ["", "## Preprocessing", ""]
    window = pre.get("window") or pre.get("windowing")
    if kind != "classification":
        lines += [f"- {key}: {_fmt(value)}" for key, value in pre.items()] or [f"- {_MISSING}"]
    else:
        lines += [
            f"- Channels: {_fmt(pre.get('in_chans'))}; size: {_fmt(pre.get('size'))}×{_fmt(pre.get('size'))} (bilinear)",
            f"- Intensity: {pre.get('scale') or 'divide by 255 (uint8) or 65535 (uint16)'}, then "
            f"(x − {_fmt(pre.get('mean'))}) / {_fmt(pre.get('std'))}",
            "- Windowing: "
            + (str(window) if window else "DICOM images use the file's WindowCenter/WindowWidth; "
               "NIfTI slices and float data are scaled by their min–max; 8-bit PNG/JPEG are used as they are"),
            "- 3-D volumes need a chosen slice (`meddx predict MODEL FILE --slice N`); signals and tables are refused.",
        ]

    lines += [""] + _trust_section(package)
    lines += [""] + _metrics_section(package)

    lines += ["", "## How to cite the data", ""]
    if citation:
        lines.append(citation)
        if homepage:
            lines += ["", f"Homepage: {homepage}"]
    else:
        lines.append(f"Cite the source of `{_fmt(data.get('source'))}` as its owners require, and state its licence.")
    lines += ["", "---", "", "Generated by meddx from `package.json`; edit the package, not this file."]
    return "\n".join(lines) + "\n"


def write_card(folder: str | Path, package: dict[str, Any] | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into ``folder`` (from its ``package.json`` unless given)."""
    from meddx.packaging.files import CARD_FILE, read_package

    folder = Path(folder)
    package = read_package(folder) if package is None else package
    path = folder / CARD_FILE
    path.write_text(render_card(package), encoding="utf-8")
    return path


def write_card_or_say(folder: str | Path, package: dict[str, Any], say: Any = None) -> Path | None:
    """:func:`write_card` for a training run: the card is a courtesy, so a failure is reported through
    ``say`` (when given) and never stops the run that has already written its package."""
    try:
        return write_card(folder, package)
    except Exception as exc:  # noqa: BLE001 - any card problem leaves the package intact
        if say is not None:
            say(f"model card not written: {exc}")
        return None


__all__ = ["INTENDED_USE", "render_card", "write_card"]
