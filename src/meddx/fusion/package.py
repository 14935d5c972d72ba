"""``meddx train/evaluate/predict`` for fusion models (``package.json["modality"] == "fusion"``).

``train("fusion:covid-cxr-ieee8023-lungbbox", model="intermediate:survival")`` fits one of
``image``, ``clinical``, ``late``, ``intermediate`` (default) for a target (covid set:
``covid`` (default) or ``survival``; a ``clinical.csv`` folder: a column, default
``label``), on the train+val patients of a 70/15/15 patient split; the test patients
are recorded in ``package.json`` and scored by ``evaluate``. The image branch is the
frozen trunk of a ``meddx pretrain`` backbone named by ``$MEDDX_FUSION_BACKBONE``; it is
refused when it was pretrained on the same data set.

``predict`` takes image files and/or clinical files: for ``img.jpg`` it reads
``img.json`` (an object of clinical values) or ``img.csv`` (one row) beside it when
present; a ``.json``/``.csv`` given alone is a patient without an image. It predicts
from whichever modalities exist and names the missing modality and features in
``warnings``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError

JOBLIB = "fusion.joblib"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".gz"}


def parse_model(model: str | None) -> tuple[str, str | None]:
    """``"late:survival"`` -> ``("late", "survival")``; ``None`` -> ``("intermediate", None)``."""
    from meddx.fusion.models import KINDS

    text = (model or "intermediate").strip()
    kind, _, target = text.partition(":")
    kind = kind or "intermediate"
    if kind not in KINDS:
        raise ConfigError(f"unknown fusion model {kind!r}", field="model",
                          hint=f"Use one of {', '.join(KINDS)}, optionally with a target: intermediate:survival")
    return kind, (target or None)


def _source_name(data: str) -> str:
    from meddx.fusion import PREFIX

    name = data[len(PREFIX):] if data.startswith(PREFIX) else data
    return name if not Path(name).is_dir() else str(Path(name).resolve())


def _run_folder(out: Path | None, kind: str, target: str) -> Path:
    from meddx.config import home_dir

    folder = Path(out) if out else home_dir() / "runs" / f"fusion-{kind}-{target}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _split(data: Any, target: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, test rows) among the labelled rows: a folder's ``split`` column, else 70+15 / 15 by patient."""
    from meddx.data.splits import group_train_val_test_split

    idx = data.labelled(target)
    if "split" in data.notes:
        split = np.asarray(data.notes["split"])[idx]
        if (split == "test").any():
            return idx[split != "test"], idx[split == "test"]
    y = data.targets[target][idx]
    parts = group_train_val_test_split(y, np.asarray(data.groups[idx]).astype(str), val=0.15, test=0.15, seed=seed)
    fit = np.sort(np.concatenate([parts["train"], parts["val"]]))
    return idx[fit], idx[np.sort(parts["test"])]


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = False, backbone: str | None = None) -> Path:
    """Fit a fusion model; write a run folder (``package.json``, ``model.safetensors``, ``fusion.joblib``)."""
    import joblib
    import torch
    from safetensors.torch import save_file

    from meddx import __version__
    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.fusion.clinical import ClinicalPrep
    from meddx.fusion.data import load
    from meddx.fusion.embed import build_trunk, embed, resolve_backbone, trunk_state
    from meddx.fusion.models import FusionModel

    started = time.perf_counter()
    kind, target = parse_model(model)
    spec = resolve_backbone(backbone, _source_name(data))
    fdata, target = load(data, spec["size"], target)
    trunk = build_trunk(spec, seed=seed)
    E = embed(trunk, fdata.images, spec["mean"], spec["std"])
    fit_rows, test_rows = _split(fdata, target, seed)
    y = fdata.targets[target]
    if len(np.unique(y[fit_rows])) < 2:
        raise InvalidValueError(f"target {target!r} has a single class in the training rows", field="target")
    prep = ClinicalPrep().fit(fdata.clinical.iloc[fit_rows])
    X, present = prep.transform(fdata.clinical)
    torch.manual_seed(seed)
    fm = FusionModel(kind, seed=seed, epochs=epochs).fit(E[fit_rows], X[fit_rows], present[fit_rows], y[fit_rows],
                                                          np.asarray(fdata.groups[fit_rows]).astype(str))
    metrics = None
    if len(test_rows) and len(np.unique(y[test_rows])) == 2:
        p = fm.predict_proba(E[test_rows], X[test_rows], present[test_rows])
        metrics = bootstrap_metrics(y[test_rows], np.stack([1 - p, p], 1), groups=fdata.groups[test_rows],
                                    n_boot=200, seed=seed)
    run = _run_folder(out, kind, target)
    tensors = {f"backbone.{k}": v for k, v in trunk_state(trunk).items()}
    tensors.update(fm.tensors())
    save_file(tensors, str(run / "model.safetensors"))
    joblib.dump({"prep": prep, "model": fm}, run / JOBLIB)
    source = _source_name(data)
    package = {
        "format": "meddx-model/1", "kind": "classifier", "modality": "fusion", "meddx_version": __version__,
        "name": f"fusion-{kind}-{target}", "version": time.strftime("%Y%m%d%H%M%S"),
        "architecture": f"fusion-{kind}/{spec['architecture']}", "class_names": fdata.class_names[target],
        "positive_class": fdata.class_names[target][1], "target": target, "num_classes": 2,
        "task": f"binary classification ({target}) from an image and clinical values",
        "data": {"source": source, "dataset": source if not Path(source).is_dir() else None,
                 "train": int(len(fit_rows)), "val": 0, "test": int(len(test_rows)),
                 "split": "labelled rows of the target; 70/15/15 by patient (train+val fitted), or the folder's "
                          "split column", "licence": fdata.notes.get("licence")},
        "fusion": {"kind": kind, "clinical_columns": prep.columns, "clinical_features": prep.feature_names,
                   "needs": {"image": fm.uses_image, "clinical": fm.uses_clinical}, "info": fm.info,
                   "epochs": fm.epochs if kind == "intermediate" else None,
                   "members": fm.members if kind == "intermediate" else None},
        "backbone": spec,
        "preprocess": {"in_chans": 1, "size": spec["size"], "mean": spec["mean"], "std": spec["std"],
                       "scale": "grey, zero-padded to a square, bilinear resize, divide by 255"},
        "split": {"seed": seed, "rule": "labelled rows; 70/15/15 by patient (train+val fitted), or the folder's "
                                         "split column", "n_fit": int(len(fit_rows)), "n_test": int(len(test_rows)),
                  "test_groups": sorted({str(g) for g in fdata.groups[test_rows]})},
        "data_notes": fdata.notes,
        "metrics": ({"values": metrics, "data": source, "split": "test", "n": int(len(test_rows)),
                     "n_groups": int(len({str(g) for g in fdata.groups[test_rows]})), "n_boot": 200,
                     "positive_class": fdata.class_names[target][1]} if metrics else None),
        "intended_use": "Research only: decision support from a chest X-ray and whichever clinical values exist; "
                        "not validated for clinical use.",
        "extra_files": [JOBLIB],
        "training": {"seconds": time.perf_counter() - started, "seed": seed},
    }
    (run / "package.json").write_text(json.dumps(package, indent=2, default=str), encoding="utf-8")
    if progress:
        auc = metrics["auc"]["value"] if metrics else float("nan")
        print(f"fusion {kind} on {source} [{target}]: test AUC {auc:.3f}")
    return run


def _load(folder: Path, package: dict[str, Any]) -> tuple[Any, Any, Any]:
    from safetensors.torch import load_file

    from meddx.fusion.embed import build_trunk
    from meddx.packaging.registry import load_joblib, verify_files

    verify_files(folder, package)
    tensors = load_file(str(Path(folder) / "model.safetensors"))
    bundle = load_joblib(folder, package, JOBLIB)
    fm = bundle["model"]
    fm.load_tensors(tensors)
    trunk = None
    if fm.uses_image:
        state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        trunk = build_trunk(package["backbone"], state=state)
    return trunk, bundle["prep"], fm


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """Metrics with patient-bootstrap CIs on the test patients (or ``split="all"``); also with clinical withheld."""
    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.fusion.data import load
    from meddx.fusion.embed import embed

    trunk, prep, fm = _load(folder, package)
    target = package["target"]
    fdata, _ = load(data, package["preprocess"]["size"], target, package["class_names"])
    idx = fdata.labelled(target)
    recorded = package.get("data")
    same = _source_name(data) == (recorded.get("source") if isinstance(recorded, dict) else recorded)
    chosen = split or ("test" if same else "all")
    test_groups = set(package.get("split", {}).get("test_groups", []))
    in_test = np.asarray([str(g) in test_groups for g in fdata.groups[idx]])
    if chosen == "test":
        if not same:
            raise ConfigError("the test split is defined only on the data the model was trained on", field="split",
                              hint="Use --split all for another source")
        idx = idx[in_test]
    elif chosen == "train":
        idx = idx[~in_test] if same else idx
    elif chosen != "all":
        raise ConfigError(f"unknown split {chosen!r}", field="split", hint="test | train | all")
    y = fdata.targets[target][idx]
    groups = np.asarray(fdata.groups[idx]).astype(str)
    E = embed(trunk, fdata.images[idx], package["preprocess"]["mean"], package["preprocess"]["std"]) if trunk else None
    X, present = prep.transform(fdata.clinical.iloc[idx])
    p = fm.predict_proba(E, X, present, np.ones(len(idx), bool))
    pos = 1
    if positive is not None:
        names = package["class_names"]
        if positive not in names:
            raise ConfigError(f"unknown positive class {positive!r}", field="positive", hint=f"One of {names}")
        pos = names.index(positive)
    proba = np.stack([1 - p, p], 1)
    metrics = bootstrap_metrics(y, proba, groups=groups, n_boot=n_boot, seed=seed, positive=pos)
    result: dict[str, Any] = {"model": package.get("name"), "version": package.get("version"), "data": data,
                              "split": chosen, "target": target, "n": int(len(y)),
                              "n_groups": int(len(np.unique(groups))), "class_names": package["class_names"],
                              "positive": package["class_names"][pos], "metrics": metrics,
                              "rows_with_clinical_values": int(present.sum())}
    if fm.uses_image and fm.uses_clinical:
        Xn, _ = prep.transform(fdata.clinical.iloc[idx].map(lambda v: None).astype(object))
        pn = fm.predict_proba(E, Xn, np.zeros(len(idx), bool), np.ones(len(idx), bool))
        withheld = bootstrap_metrics(y, np.stack([1 - pn, pn], 1), groups=groups, n_boot=n_boot, seed=seed,
                                     positive=pos)
        result["clinical_withheld"] = {"auc": withheld["auc"]}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _read_clinical(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".json":
        value = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(value, list):
            value = value[0] if value else {}
        if not isinstance(value, dict):
            raise InvalidValueError("clinical JSON must be an object of values", path=path)
        return value
    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(table) != 1:
        raise InvalidValueError(f"clinical CSV must hold one row, found {len(table)}", path=path,
                                hint="One file per patient (the row of the image beside it)")
    return {k: (v if v != "" else None) for k, v in table.iloc[0].to_dict().items()}


def _inputs(inputs: list[str]) -> list[tuple[str, Path | None, Path | None]]:
    """(label, image, clinical file) per case; a clinical file beside an image is paired with it."""
    cases, used = [], set()
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise InvalidValueError("input not found", path=path)
        if path.suffix.lower() in {".json", ".csv"}:
            continue
        side = next((path.with_suffix(s) for s in (".json", ".csv") if path.with_suffix(s).is_file()), None)
        if side is not None:
            used.add(side.resolve())
        cases.append((str(path), path, side))
    for path in paths:
        if path.suffix.lower() in {".json", ".csv"} and path.resolve() not in used:
            cases.append((str(path), None, path))
    return cases


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One :class:`~meddx.inference.schema.Prediction` dict per case, from whichever inputs exist."""
    import pandas as pd

    from meddx.fusion.clinical import clean_clinical
    from meddx.fusion.data import read_image
    from meddx.fusion.embed import embed
    from meddx.inference.schema import Decision, Prediction, Uncertainty

    trunk, prep, fm = _load(folder, package)
    names = list(package["class_names"])
    columns = prep.columns
    results = []
    for label, image_path, clinical_path in _inputs(inputs):
        warnings: list[str] = []
        has_image = image_path is not None
        if image_path is not None and image_path.suffix.lower() not in _IMAGE_SUFFIXES:
            raise InvalidValueError("not an image or clinical file", path=image_path,
                                    hint="Images: PNG/JPEG/DICOM; clinical values: .json or .csv")
        row = _read_clinical(clinical_path) if clinical_path is not None else {}
        unknown = sorted(set(row) - set(columns) - {"image", "patientid", "split"})
        if unknown:
            warnings.append(f"ignored clinical fields the model does not use: {', '.join(unknown)}")
        frame = pd.DataFrame([{c: row.get(c) for c in columns}], dtype=object)
        cleaned, report = clean_clinical(frame)
        for c, counts in report.items():
            if counts.get("implausible") or counts.get("unparsed"):
                warnings.append(f"clinical value {c}={row.get(c)!r} is implausible or unreadable; treated as missing")
            if counts.get("fahrenheit"):
                warnings.append(f"temperature {row.get(c)!r} read as °F and converted to °C")
        X, present = prep.transform(cleaned)
        missing = prep.missing_features({c: cleaned.iloc[0][c] for c in columns})
        if not has_image and fm.uses_image and not fm.uses_clinical:
            raise InvalidValueError("this image-only model needs an image", path=clinical_path,
                                    hint="Pass the X-ray (with its clinical file beside it)")
        if fm.uses_clinical:
            if not present[0]:
                warnings.append("missing modality: clinical (no clinical value given); predicted from the image only"
                                if has_image and fm.uses_image else
                                "missing modality: clinical (no value given); the prediction reflects the prior only")
            elif missing:
                warnings.append(f"missing clinical features (imputed, flagged as missing): {', '.join(missing)}")
        if not has_image and fm.uses_image:
            warnings.append("missing modality: image; predicted from the clinical values only")
        if has_image and not fm.uses_image:
            warnings.append("this clinical-only model ignores the image")
        E = None
        if trunk is not None and has_image:
            pre = package["preprocess"]
            E = embed(trunk, read_image(image_path, pre["size"])[None], pre["mean"], pre["std"])
        p, member_p = fm.predict_members(E, X, present, np.asarray([has_image]))
        p1 = float(p[0])
        probs = {names[0]: 1 - p1, names[1]: p1}
        if member_p is not None and member_p.shape[0] > 1:
            draws = np.stack([1 - member_p[:, 0], member_p[:, 0]], 1)
            method = "ensemble"
        else:
            draws = np.asarray([[1 - p1, p1]])
            method = "none"
        ent = lambda q: float(-(np.clip(q, 1e-12, 1) * np.log(np.clip(q, 1e-12, 1))).sum(-1))  # noqa: E731
        mean = draws.mean(0)
        expected = float(np.mean([ent(d) for d in draws]))
        uncertainty = Uncertainty(
            method=method, samples=int(draws.shape[0]), predictive_entropy=ent(mean), expected_entropy=expected,
            mutual_information=max(ent(mean) - expected, 0.0), max_probability=float(mean.max()),
            sample_probabilities_sd={n: float(draws[:, i].std()) for i, n in enumerate(names)} if method != "none"
            else None)
        if 0.35 <= p1 <= 0.65:
            decision = Decision(decision="refer", reason=f"P({names[1]}) = {p1:.2f} is within the refer band 0.35-0.65")
        else:
            decision = Decision(decision="positive" if p1 > 0.5 else "negative",
                                reason=f"P({names[1]}) = {p1:.2f} (threshold 0.5)"
                                + ("; " + warnings[0] if warnings and warnings[0].startswith("missing modality")
                                   else ""))
        inputs_used = [m for m, ok in (("image", has_image and fm.uses_image),
                                       ("clinical", bool(present[0]) and fm.uses_clinical)) if ok]
        warnings.append(f"inputs used: {', '.join(inputs_used) or 'none'}")
        prediction = Prediction(
            input=label, modality="fusion", model=str(package.get("name")), model_version=str(package.get("version")),
            class_names=names, probabilities=probs, calibrated_probabilities=probs,
            calibration="platt (late fusion stacker)" if fm.kind == "late" else "identity",
            prediction=names[int(p1 >= 0.5)], uncertainty=uncertainty, decision=decision,
            intended_use=package.get("intended_use"), warnings=warnings)
        results.append(prediction.to_json_dict())
    return results


def report(folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
           split: str | None = None) -> Path:
    """``meddx report`` for fusion models: the evaluation as one HTML page, with the AUC when the
    clinical values are withheld (what a site without them would get)."""
    from meddx.report.summary import write_summary_report

    data = data or (package.get("data") or {}).get("source") or (package.get("data") or {}).get("dataset")
    if not data:
        raise ConfigError("the package does not say what it was trained on", field="data",
                          hint="Pass the data: meddx report MODEL fusion:SET_OR_FOLDER")
    result = evaluate(folder, package, data, split=split, n_boot=n_boot, out=None)
    tables = []
    withheld = (result.get("clinical_withheld") or {}).get("auc")
    if withheld:
        tables.append(("Missing modality: clinical values withheld at prediction", ["metric", "value", "low", "high"],
                       [["auc", withheld.get("value"), withheld.get("low"), withheld.get("high")]]))
    return write_summary_report(package, result, out, tables=tables)
