"""``meddx train/evaluate/predict/report`` for clinical-record models (``modality == "tabular"``).

``train("heart-disease-uci", model="catboost")`` reads the task's CSV against its declared
schema, holds out a stratified 20% test split (recorded in ``package.json``), fits the
preprocessing pipeline and the model on the rest and writes a run folder:

* ``package.json``: name, version, modality ``tabular``, architecture, class names, the
  feature schema, the test rows, test metrics and calibration;
* ``records.joblib``: the fitted scikit-learn pipeline (unit harmoniser, missing codes,
  imputer with missingness indicators, encoder/scaler, model), a background sample for
  the explanations, and the schema (listed in ``extra_files``: the registry hashes it and
  :func:`load` checks the hash);
* ``model.safetensors``: the MLP weights (an empty tensor file for other models).

``model`` is one of ``logreg``, ``mlp``, ``tabnet``, ``catboost``, ``hybrid``, or ``auto``
(repeated 5-fold CV on the training rows picks; logistic regression unless beaten).
Without ``model`` the task's default is used (logistic regression: the bench found no
model significantly better).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError

JOBLIB = "records.joblib"
CALIBRATION = {"logreg": "logistic loss (no separate calibrator)", "hybrid": "mean of the members' Platt scaling",
               "blend": "both members fitted by logistic loss, probabilities averaged (no separate calibrator)"}
"""How each model kind's probabilities are calibrated (the rest: Platt scaling on a held-out 20%)."""
RECALIBRATION_DRAWS = 20
"""Random draws of local cases behind the ``over_draws`` figures of ``validate``'s recalibration rows."""
REFER_MISSING_SHARE = 0.5
"""A record missing more than this share of the model's features is referred, not decided."""


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _run_folder(out: Path | None, name: str) -> Path:
    from meddx.config import home_dir

    folder = Path(out) if out else home_dir() / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _split(y: np.ndarray, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(te)


def _encoded(pipe: Any, frame: Any) -> np.ndarray:
    return np.asarray(pipe.named_steps["pre"].transform(frame), dtype=np.float32)


def _save_weights(folder: Path, model: Any) -> None:
    from safetensors.torch import save_file

    from meddx.records.models import MLP

    save_file(model.state_dict() if isinstance(model, MLP) else {}, str(folder / "model.safetensors"))


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = False) -> Path:
    """Fit a records model on ``data`` (a task name or a CSV); return the run folder."""
    import warnings

    import joblib

    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.records.explain import attributions, global_importance, method_of
    from meddx.records.intended import intended_input
    from meddx.records.models import ARCHITECTURES, MODELS, make_pipeline, select_model
    from meddx.records.ood import RANGE_MARGIN, fit_gate, log_probs, model_inputs, training_ranges
    from meddx.records.schema import load_table
    from meddx.records.stats import ece
    from meddx.records.transform import feature_groups

    _threads()
    warnings.filterwarnings("ignore", module="pytorch_tabnet")
    task, frame, path = load_table(data)
    y = task.label(frame[task.target])
    tr, te = _split(y, seed)
    kind = (model or task.default_model).strip()
    selection = None
    if kind == "auto":
        kind, means = select_model(task, frame.iloc[tr].reset_index(drop=True), y[tr], seed=seed)
        selection = {"method": "repeated stratified 5-fold CV x2 on the training rows (AUC)", "cv_auc": means,
                     "chosen": kind}
    if kind not in MODELS:
        raise ConfigError(f"unknown records model {kind!r}", field="model", hint=f"Use one of {list(MODELS)} or auto")
    params = {"max_epochs": int(epochs)} if epochs and kind in ("mlp", "tabnet") else {}
    pipe = make_pipeline(task, kind, seed, **params).fit(frame.iloc[tr], y[tr])
    est = pipe.named_steps["model"]
    rng = np.random.default_rng(seed)
    Ztr = _encoded(pipe, frame.iloc[tr])
    background = Ztr[rng.choice(len(tr), size=min(20, len(tr)), replace=False)]
    groups = feature_groups(pipe.named_steps["pre"], task)

    p = pipe.predict_proba(frame.iloc[te])[:, 1]
    proba = np.column_stack([1 - p, p])
    metrics = bootstrap_metrics(y[te], proba, n_boot=200, seed=seed)
    sample = Ztr[rng.choice(len(tr), size=min(40, len(tr)), replace=False)]
    phi, _ = attributions(est, sample, groups, len(task.names), background, permutations=4, seed=seed)

    name = f"{task.name}-{kind}"
    run = _run_folder(out, name)
    pre = pipe.named_steps["pre"].named_steps
    clean_tr = pre["codes"].transform(pre["units"].transform(frame.iloc[tr]))
    ranges = training_ranges(clean_tr, task)
    Z_ood = model_inputs(pipe, frame.iloc[tr])
    gate, reference = fit_gate(Z_ood, log_probs(est, Z_ood), y[tr], seed=seed)
    ood = {**gate.to_package(run), "range_check": {
        "margin": RANGE_MARGIN, "ranges": ranges,
        "rule": f"a value more than {RANGE_MARGIN:.0%} of the training range beyond it flags the record"}}
    joblib.dump({"pipeline": pipe, "background": background, "groups": groups, "task": task.to_dict(),
                 "ranges": ranges, "ood_reference": reference,
                 "train_hashes": sorted(row_hashes(task, frame.iloc[tr]))}, run / JOBLIB)
    _save_weights(run, est)
    calibration = CALIBRATION.get(kind, "Platt scaling on a held-out 20% of the training rows")
    package = {
        "name": name,
        "version": time.strftime("%Y%m%d-%H%M%S"),
        "modality": "tabular",
        "architecture": kind,
        "architecture_description": ARCHITECTURES[kind],
        "class_names": list(task.class_names),
        "num_classes": 2,
        "positive_class": task.class_names[1],
        "feature_schema": task.to_dict(),
        "data": {"dataset": task.name if data == task.name else None, "source": str(path), "n": int(len(y)),
                 "n_train": int(len(tr)), "n_test": int(len(te)), "positives": int(y.sum()),
                 "train_prevalence": float(y[tr].mean()),
                 **({"sites": sorted(set(frame[task.site].astype(str)))} if task.site in frame else {}),
                 "split": {"method": "stratified 80/20", "seed": seed, "test_rows": te.tolist()}},
        "seed": seed,
        "model_selection": selection,
        "metrics": {"split": "test", "values": {k: v["value"] for k, v in metrics.items()}, "ci": metrics},
        "trust": {"calibration": calibration, "test_ece": ece(p, y[te]),
                  "attribution_method": method_of(est),
                  "refer_if_missing_share_above": REFER_MISSING_SHARE},
        "site_robustness": site_robustness(task),
        "global_importance": global_importance(phi, task.names),
        "intended_use": f"research: risk of {task.class_names[1]} from routine clinical records "
                        f"({task.name}); not for clinical decisions",
        "intended_input": intended_input(task, sites=sorted(set(frame.iloc[tr][task.site].astype(str)))
                                         if task.site in frame else None, n=int(len(tr))),
        "ood": ood,
        "extra_files": [JOBLIB, ood["file"]],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    from meddx.packaging.registry import write_package

    write_package(run, package)
    return run


def site_robustness(task: Any) -> dict[str, Any]:
    """What the package does about other hospitals: imputation, and the local cases a recalibration needs."""
    from meddx.records.sites import LOCAL_CASES

    how = {"conditional": "missing values (including declared codes such as chol = 0) filled by their conditional "
                          "mean given the patient's other values; no missingness indicators, so a column absent "
                          "at a whole site does not mark the site",
           "indicator": "median imputation with missingness indicators (the indicators can learn where a row "
                        "comes from when missingness differs by site)"}
    return {"imputation": task.imputation, "imputation_description": how.get(task.imputation, task.imputation),
            "recalibration": {"method": "intercept", "local_cases": LOCAL_CASES,
                              "how": "meddx.records.package.recalibrate(MODEL, LOCAL_CSV, n_local=...) on labelled "
                                     "cases from the new site; see `meddx validate MODEL` for the effect",
                              "measured": "bench/results/records.md (ECE vs number of local cases)"}}


def _recalibrated(package: dict[str, Any], p: Any) -> np.ndarray:
    """``p`` through the package's site recalibration, if it has one (identity otherwise)."""
    from meddx.records.models import logit

    rec = package.get("recalibration")
    p = np.asarray(p, dtype=float)
    if not rec:
        return p
    return 1.0 / (1.0 + np.exp(-(float(rec["a"]) * logit(p) + float(rec["b"]))))


def recalibrate(model: str | Path, data: str, *, n_local: int | None = None, method: str = "intercept",
                out: Path | None = None) -> Path:
    """A copy of ``model`` recalibrated for a new site on the first ``n_local`` labelled cases of ``data``.

    ``method="intercept"`` moves only the intercept (the new site's prevalence; the package's
    ``site_robustness.recalibration.local_cases`` says how many cases it needs),
    ``"logistic"`` also the slope. The new package records the map, the cases and the source;
    ``evaluate``, ``predict`` and ``validate`` apply it. Returns the new run folder.
    """
    import shutil

    from meddx.packaging.registry import read_package, resolve, write_package
    from meddx.records.sites import recalibrate_proba

    folder = resolve(model)
    package = read_package(folder)
    if package.get("modality") != "tabular":
        raise ConfigError("only record (tabular) packages are recalibrated here", path=folder, field="modality")
    bundle = load(folder, package)
    base = {**package, "recalibration": None}
    s = _score(base, bundle, data, "all")
    needed = int((package.get("site_robustness") or {}).get("recalibration", {}).get("local_cases", 0))
    k = len(s["y"]) if n_local is None else int(n_local)
    if k < 2 or k > len(s["y"]) or len(np.unique(s["y"][:k])) < 2:
        raise InvalidValueError(f"{k} local cases of {len(s['y'])} cannot recalibrate (need both classes)",
                                path=data, field="n_local", hint=f"Give at least {max(needed, 10)} labelled cases "
                                "with both outcomes")
    _, params = recalibrate_proba(s["p"][:k], s["y"][:k], s["p"][:k], method=method)
    run = _run_folder(out, f"{package['name']}-recalibrated")
    for item in folder.iterdir():
        if item.name != "package.json":
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, run / item.name)
    new = {**package, "version": time.strftime("%Y%m%d-%H%M%S"),
           "recalibration": {**params, "source": str(data), "cases": "first n_local labelled rows",
                             "recommended_local_cases": needed or None,
                             "warning": f"fewer local cases than the {needed} recommended" if k < needed else None},
           "trust": {**package.get("trust", {}), "calibration": f"{package.get('trust', {}).get('calibration')}; "
                     f"then {method} recalibration on {k} cases of {Path(str(data)).name}"}}
    write_package(run, new)
    return run


def load(folder: Path, package: dict[str, Any]) -> dict[str, Any]:
    """The saved bundle, after checking its sha256 against ``package["files"]`` when listed."""
    from meddx.packaging.registry import load_joblib

    return load_joblib(folder, package, JOBLIB)


def row_hashes(task: Any, frame: Any) -> list[str]:
    """A short hash of each row's feature values (numbers to 6 significant digits): finds rows a model saw."""
    import hashlib
    import math

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6g}"
        return str(v)

    typed = task.frame(frame)
    return [hashlib.sha1("|".join(cell(v) for v in row).encode()).hexdigest()[:16]
            for row in typed.itertuples(index=False)]


def _rows(package: dict[str, Any], bundle: dict[str, Any], task: Any, frame: Any, data: str,
          split: str | None) -> tuple[Any, str, int]:
    """The rows to evaluate, the split's name and how many of them the model trained on.

    The default is always data the model never saw: the package's own test rows, or, for
    other data, every row that is not identical to a training row. An explicit split that
    includes training rows is evaluated as asked and counted (``evaluate`` then says so).
    """
    same = data == (package.get("data") or {}).get("dataset") or str(Path(data).resolve()) == str(
        Path((package.get("data") or {}).get("source", "")).resolve())
    test_rows = np.asarray(package["data"]["split"]["test_rows"], dtype=int)
    trained = set(bundle.get("train_hashes") or ())

    def seen_in(rows: Any) -> np.ndarray:
        if same:
            return ~rows.index.isin(frame.index[test_rows])
        return np.isin(row_hashes(task, rows), list(trained)) if trained and len(rows) else np.zeros(len(rows), bool)

    if split in (None, "test") and same:
        return frame.iloc[test_rows], "test", 0
    if split == "train" and same:
        rows = frame.drop(index=frame.index[test_rows])
        return rows, "train", len(rows)
    if split is None:
        seen = seen_in(frame)
        if seen.any():
            return frame[~seen], f"all rows not used in training ({int(seen.sum())} training rows left out)", 0
        return frame, "all", 0
    if split == "all":
        return frame, "all", int(seen_in(frame).sum())
    if task.site and split in set(frame[task.site].astype(str)):
        rows = frame[frame[task.site].astype(str) == split]
        if same:  # only the held-out rows of that site: the others trained the model
            rows = rows[rows.index.isin(frame.index[test_rows])]
            return rows, f"test:{split}", 0
        return rows, split, int(seen_in(rows).sum())
    choices = ["test", "train", "all"] + (sorted(set(frame[task.site].astype(str))) if task.site else [])
    raise ConfigError(f"no split {split!r} for {data}", field="split", hint=f"Choose one of {choices}")


def _score(package: dict[str, Any], bundle: dict[str, Any], data: str, split: str | None) -> dict[str, Any]:
    from meddx.records.schema import TaskSchema, load_table

    task = TaskSchema.from_dict(bundle["task"])
    if data is None:
        data = package["data"].get("dataset") or package["data"]["source"]
    _, frame, _ = load_table(data)
    if task.target not in frame.columns:
        raise ConfigError(f"{data} has no label column {task.target!r}", field=task.target)
    rows, chosen, seen = _rows(package, bundle, task, frame, data, split)
    rejected = _screen_rows(package, task, rows)
    kept = rows[[not r for r in rejected]] if any(rejected) else rows
    y = task.label(kept[task.target])
    p = _recalibrated(package, bundle["pipeline"].predict_proba(kept)[:, 1]) if len(kept) else np.zeros(0)
    return {"task": task, "rows": kept, "y": y, "p": p, "split": chosen, "data": data, "seen": seen,
            "rejected": [r for r in rejected if r], "n_asked": int(len(rows))}


def _missing_reasons(s: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Why values are missing in the scored rows (blank, ``chol = 0`` code, column absent...), per feature."""
    import pandas as pd

    from meddx.records.schema import TASKS
    from meddx.records.transform import missing_reasons

    task = s["task"]
    data = str(s["data"])
    path = Path(data) if data not in TASKS else None
    if path is None:
        from meddx.data.catalogue import fetch

        path = fetch(data) / str(task.file)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (OSError, ValueError, pd.errors.ParserError):  # the rows were read already; the counts are extra
        return {}
    if task.target in raw:
        raw = raw[raw[task.target].str.strip() != ""].reset_index(drop=True)
    rows = s["rows"]
    if len(raw) >= len(rows) and rows.index.isin(raw.index).all():
        raw = raw.loc[rows.index]
    return missing_reasons(raw, task)


def _screen_rows(package: dict[str, Any], task: Any, rows: Any) -> list[list[str]]:
    """The intended-input reasons of each labelled row (empty lists: accepted)."""
    from meddx.records.intended import RecordRow
    from meddx.trust.intended import check_sample

    intended = package.get("intended_input")
    if not intended:
        return [[] for _ in range(len(rows))]
    units = dict(rows.attrs.get("units") or {})
    return [check_sample(RecordRow(str(i), {f: rec.get(f) for f in task.names if f in rec}, units), intended)
            for i, rec in zip(rows.index, rows.to_dict("records"), strict=True)]


def _shift(folder: Path, package: dict[str, Any], bundle: dict[str, Any], s: dict[str, Any], ece_value: float,
           n_boot: int, seed: int) -> dict[str, Any]:
    """Is this batch like the training data, and is the model calibrated here (see :mod:`meddx.records.ood`)."""
    from meddx.records.ood import log_probs, model_inputs, shift_summary, verdicts
    from meddx.trust.ood import DEFAULT_FLAG_RATE, load_gate

    pipe = bundle["pipeline"]
    pre = pipe.named_steps["pre"].named_steps
    gate = load_gate(folder, package)
    Z = model_inputs(pipe, s["rows"])
    clean = pre["codes"].transform(pre["units"].transform(s["rows"]))
    rows = verdicts(gate, Z, log_probs(pipe.named_steps["model"], Z), clean, bundle.get("ranges") or {},
                    units={f.name: f.unit for f in s["task"].features})
    data = package.get("data") or {}
    prevalence = data.get("train_prevalence", data.get("positives", 0) / max(data.get("n", 1), 1))
    summary = shift_summary(s["y"], s["p"], rows, reference=bundle.get("ood_reference"), train_prevalence=prevalence,
                            flag_rate=gate.flag_rate if gate is not None else DEFAULT_FLAG_RATE, ece_value=ece_value,
                            n_boot=n_boot, seed=seed)
    rec = summary["recommendation"]
    if rec["action"].startswith("recalibrate"):  # the records way and the measured number of cases
        from meddx.records.sites import LOCAL_CASES

        k = int(((package.get("site_robustness") or {}).get("recalibration") or {}).get("local_cases")
                or LOCAL_CASES)
        rec["local_cases"] = k
        rec["why"] = (rec["why"].split(". Refit the calibrator")[0]
                      + f". Recalibrate on about {k} local labelled cases: meddx.records.package.recalibrate(MODEL, "
                      f"LOCAL_CSV, n_local={k}) (an intercept update; the number is measured in "
                      "bench/results/records.md), then check with `meddx validate MODEL --data LOCAL_CSV`.")
    return summary


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """Metrics with bootstrap 95% CIs (plus PR-AUC, Brier and ECE) on a split or a site, and the shift block.

    By default only data the model never saw is evaluated; an explicit ``split`` that holds
    training rows is evaluated as asked, named so in ``split`` (hence the CLI's title) and
    marked ``"validation": false``. Rows the intended-input check rejects (implausible
    values) are left out of the metrics and counted, as ``predict`` would reject them.
    """
    from sklearn.metrics import average_precision_score, brier_score_loss

    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.records.stats import bootstrap, ece

    _threads()
    bundle = load(folder, package)
    s = _score(package, bundle, data, split)
    y, p = s["y"], s["p"]
    names = list(package["class_names"])
    pos = 1
    if positive is not None:
        if positive not in names:
            raise ConfigError(f"unknown positive class {positive!r}", field="positive", hint=f"One of {names}")
        pos = names.index(positive)
    if len(np.unique(y)) < 2:
        raise InvalidValueError(f"the {s['split']} rows hold one class only", field="split")
    proba = np.column_stack([1 - p, p])
    metrics = bootstrap_metrics(y, proba, n_boot=n_boot, seed=seed, positive=pos)
    metrics["pr_auc"] = bootstrap(average_precision_score, y, p, n_boot=n_boot, seed=seed)
    metrics["brier"] = bootstrap(brier_score_loss, y, p, n_boot=n_boot, seed=seed)
    metrics["ece"] = bootstrap(lambda t, q: ece(q, t), y, p, n_boot=n_boot, seed=seed)
    bins = np.minimum((p * 10).astype(int), 9)
    reliability = [{"bin": f"{b / 10:.1f}-{(b + 1) / 10:.1f}", "n": int((bins == b).sum()),
                    "mean_predicted": float(p[bins == b].mean()), "observed": float(y[bins == b].mean())}
                   for b in range(10) if (bins == b).any()]
    task = s["task"]
    missing = {f: float(s["rows"][f].isna().mean()) if f in s["rows"] else 1.0 for f in task.names}
    seen = int(s["seen"])
    chosen = s["split"]
    if seen:
        chosen = (f"{chosen}: {seen} of {s['n_asked']} rows were used to train the model, so this is not a "
                  "validation" if seen < s["n_asked"] else f"{chosen}: the model's own training rows, not a validation")
    result = {"model": package.get("name"), "version": package.get("version"),
              "data": s["data"], "split": chosen, "validation": not seen,
              "seen_in_training": {"rows": seen, "of": s["n_asked"]},
              "n": int(len(y)), "n_groups": 0, "class_names": names, "positive": names[pos],
              "prevalence": float(y.mean()), "metrics": metrics,
              "calibration": {"method": package.get("trust", {}).get("calibration"), "ece_bins": 10,
                              "reliability": reliability},
              "missing_share": {k: v for k, v in missing.items() if v > 0},
              "input_check": {"rejected": len(s["rejected"]), "of": s["n_asked"],
                              "examples": [r[0] for r in s["rejected"][:5]]}}
    result["shift"] = _shift(folder, package, bundle, s, metrics["ece"]["value"], n_boot, seed)
    result["ece"] = metrics["ece"]["value"]
    result["ece_noise_floor"] = result["shift"]["ece"]["noise_floor"]["p95"]
    result["ece_note"] = ("10 equal-width bins of P(positive); the floor is the 95th percentile of the ECE a perfectly "
                          f"calibrated model with these probabilities shows at n = {len(y)}: an ECE below it is "
                          "indistinguishable from perfect calibration")
    result["missing_reasons"] = _missing_reasons(s)
    if seen:
        result["shift"]["warning"] = ("rows the model trained on look familiar by construction: the flag share and "
                                      "calibration here overstate how well the model fits new data")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


# -------------------------------------------------------------------------------------- validate
def _recalibration_block(y: np.ndarray, p: np.ndarray, k: int, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Before/after an intercept update fitted on ``k`` local cases, both scored on the site's other cases.

    The ``k`` cases are drawn at random (``seed``): files are often sorted by outcome (the UCI
    Hungarian rows are), and a clinic's first cases are not. ``over_draws`` repeats it for
    :data:`RECALIBRATION_DRAWS` random draws, since one draw of a few dozen cases varies a lot.
    """
    from meddx.evaluation.validate import block
    from meddx.records.sites import positive_ece, recalibrate_proba, recalibration_curve

    order = np.random.default_rng(seed).permutation(len(y))
    loc, rest = order[:k], order[k:]
    if len(rest) < 20 or len(np.unique(y[rest])) < 2:
        return {"k": int(k), "note": f"not shown: {len(y)} cases are too few to fit on {k} and score the rest"}
    after, params = recalibrate_proba(p[loc], y[loc], p[rest], method="intercept")
    before_row = block("before", "rest", y[rest], p[rest], n_boot=n_boot, seed=seed)
    after_row = block("after", "rest", y[rest], after, n_boot=n_boot, seed=seed)
    keep = ("n", "auc", "ece", "ece_floor")
    return {"k": int(k), "method": "intercept", "b": params["b"],
            "fitted_on": f"{k} cases drawn at random (seed {seed})", "scored_on": f"the other {len(rest)} cases",
            "before": {**{x: before_row[x] for x in keep}, **positive_ece(y[rest], p[rest], seed=seed)},
            "after": {**{x: after_row[x] for x in keep}, **positive_ece(y[rest], after, seed=seed)},
            "over_draws": {"draws": RECALIBRATION_DRAWS,
                           "note": f"ECE of P(positive) over {RECALIBRATION_DRAWS} random draws of {k} local cases "
                                   "(one draw can be lucky or not)",
                           **recalibration_curve(y, p, ks=(k,), repeats=RECALIBRATION_DRAWS, seed=seed)["rows"][0]}}


def _data_files(item: str) -> list[str]:
    """A CSV, or every CSV/TSV in a folder (sorted), as sources to score."""
    path = Path(item)
    if path.is_dir():
        files = sorted(str(f) for f in path.iterdir() if f.suffix.lower() in (".csv", ".tsv"))
        if not files:
            raise InvalidValueError("no CSV file in the folder", path=path, hint="Give a CSV of labelled records "
                                    "with the model's feature columns and its label column")
        return files
    return [item]


def validate(folder: Path, package: dict[str, Any], *, folders: list[str] | tuple[str, ...] = (), n_boot: int = 1000,
             seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Internal (the package's test split) beside every external check the data allow, one row each.

    * ``leave-one-site-out``: when the data set names each row's hospital, the package's recipe
      (same model kind, imputation, seed) is retrained on the other sites and scored on the one
      left out; each such row also shows the figures after an intercept recalibration on ``k``
      of the site's cases (``k`` from the package's ``site_robustness``), scored on the rest;
    * ``simulated other site``: the same left-out site with the Switzerland/VA missingness
      (cholesterol not measured, ca/thal/slope absent): a check built from the mirror, not real data;
    * ``user data``: each CSV in ``folders`` (or each CSV of a folder) scored as it is by the package.
    """
    from meddx.evaluation.validate import block as shared_block
    from meddx.records.models import make_pipeline
    from meddx.records.schema import TaskSchema, load_table
    from meddx.records.sites import LOCAL_CASES, PATTERNS, positive_ece, simulate, site_splits

    def block(kind: str, source: str, y: Any, p: Any, **kw: Any) -> dict[str, Any]:
        return shared_block(kind, source, y, p, **kw, **positive_ece(y, p, seed=seed))

    _threads()
    bundle = load(folder, package)
    task = TaskSchema.from_dict(bundle["task"])
    data = (package.get("data") or {}).get("dataset") or package["data"]["source"]
    s = _score(package, bundle, data, "test")
    k = int(((package.get("site_robustness") or {}).get("recalibration") or {}).get("local_cases") or LOCAL_CASES)
    _, frame, _ = load_table(data)
    sites = list(site_splits(task, frame))
    note = "" if sites else ("no site column in this data set, so no leave-one-site-out check: give data from "
                             "other sources with --data")
    internal = block("internal", f"{task.name} test split ({len(s['y'])} held-out rows)", s["y"], s["p"],
                     n_boot=n_boot, seed=seed, note=note)
    external: list[dict[str, Any]] = []
    kind = str(package.get("architecture"))
    y = task.label(frame[task.target])
    for site, tr, te in sites:
        if progress:
            print(f"leave-one-site-out: retraining without {site} ({len(tr)} rows)", flush=True)
        pipe = make_pipeline(task, kind, seed).fit(frame.iloc[tr], y[tr])
        p = pipe.predict_proba(frame.iloc[te])[:, 1]
        external.append(block(
            "leave-one-site-out", site, y[te], p, n_boot=n_boot, seed=seed,
            note=f"{kind} recipe retrained on the other sites ({len(tr)} rows), scored on all {len(te)} {site} rows",
            recalibrated=_recalibration_block(y[te], p, k, n_boot=n_boot, seed=seed)))
        pattern = PATTERNS["switzerland-va"]
        ps = pipe.predict_proba(simulate(frame.iloc[te], pattern, seed=seed))[:, 1]
        external.append(block(
            "simulated other site", f"{site}, {pattern.name} missingness", y[te], ps, n_boot=n_boot, seed=seed,
            note=f"simulated, not real data: the {site} rows with {pattern.description}",
            recalibrated=_recalibration_block(y[te], ps, k, n_boot=n_boot, seed=seed)))
    for item in folders:
        for source in _data_files(item):
            if progress:
                print(f"scoring {source}", flush=True)
            u = _score(package, bundle, source, None)
            reasons = _missing_reasons(u)
            note = f"scored as given; {len(u['rejected'])} of {u['n_asked']} rows rejected by the input check"
            if u["seen"]:
                note += f"; {u['seen']} rows identical to training rows left out"
            external.append(block("user data", source, u["y"], u["p"], n_boot=n_boot, seed=seed, note=note,
                                  missing_reasons=reasons,
                                  recalibrated=_recalibration_block(u["y"], u["p"], k, n_boot=n_boot, seed=seed)))
    return {"model": package.get("name"), "set": data, "modality": "tabular", "internal": internal,
            "external": external, "recalibration_cases": k,
            "recalibration_note": f"'recalibrated': intercept update fitted on {k} cases of a source drawn at "
                                  "random, before and after both scored on its remaining cases",
            "ece_note": "'ece'/'ece_floor': top-label ECE (15 bins), shared by every modality; 'ece_positive'/"
                        "'ece_positive_floor': ECE of P(positive) in 10 bins, as `meddx evaluate` reports it, which "
                        "also shows a shift of every risk in one direction (a new site's prevalence)"}


# --------------------------------------------------------------------------------------- predict
def _read_csv(path: Path, task: Any) -> list[tuple[str, Any]]:
    """One :class:`~meddx.records.intended.RecordRow` per CSV row, cells kept as text.

    Cells are typed and checked row by row (:mod:`meddx.records.intended`), so one bad cell
    rejects its row, not the file. A column ``<feature>_unit`` gives that feature's unit.
    """
    import csv

    import pandas as pd

    from meddx.exceptions import CorruptFileError, EmptyDataError
    from meddx.records.intended import UNIT_SUFFIX, RecordRow

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None if path.suffix.lower() != ".tsv"
                            else "\t", engine="python", encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise EmptyDataError("the file is empty", path=path, hint="Expected a header line and data rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFileError(f"not a readable CSV: {exc}", path=path,
                               hint="A row has more fields than the header, or a quote is not closed") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    present = [f for f in task.names if f in frame.columns]
    unit_cols = {f: f"{f}{UNIT_SUFFIX}" for f in task.names if f"{f}{UNIT_SUFFIX}" in frame.columns}
    rows = []
    for i, rec in enumerate(frame.to_dict("records")):
        label = f"{path}#row{i + 1}"
        units = {f: str(rec[c]).strip() for f, c in unit_cols.items() if str(rec[c]).strip()}
        rows.append((label, RecordRow(label, {f: rec[f] for f in present}, units), {}))
    return rows


def _cases(path: Path, task: Any) -> list[tuple[str, Any, dict[str, str]]]:
    """``(input label, RecordRow, feature -> source)`` per CSV row or per patient of a FHIR/HL7 file."""
    from meddx.records.fhir import record_frame
    from meddx.records.intended import RecordRow

    if not path.is_file():
        raise InvalidValueError("input not found", path=path, hint="Give a CSV, a FHIR R4 JSON or an HL7 v2 file")
    if path.suffix.lower() in (".csv", ".tsv"):
        return _read_csv(path, task)
    frame, _ = record_frame(path, task)
    row_units = frame.attrs.get("row_units") or {}
    row_sources = frame.attrs.get("row_sources") or {}
    out = []
    for idx, rec in zip(frame.index, frame.to_dict("records"), strict=True):
        label = f"{path}#patient={idx}" if len(frame) > 1 else str(path)
        out.append((label, RecordRow(label, rec, dict(row_units.get(idx) or {})), dict(row_sources.get(idx) or {})))
    return out


def _rejected(package: dict[str, Any], label: str, reasons: list[str]) -> dict[str, Any]:
    from meddx.inference.schema import Prediction

    return Prediction.rejected(input=label, modality="tabular", model=str(package.get("name")),
                               model_version=str(package.get("version")), class_names=list(package["class_names"]),
                               reasons=reasons, intended_use=package.get("intended_use")).to_json_dict()


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One Prediction dict per CSV row, FHIR bundle or HL7 v2 message (per patient).

    Each record is first checked against the package's intended input (units, plausible
    ranges, categories): a record that fails is ``rejected`` with reasons naming the
    feature and the fix, and an unreadable file is one rejected prediction; neither stops
    the batch. Accepted records carry the OOD verdict (``ood``: feature-space distance, or
    a value far outside the training range) and a decision made by
    :func:`meddx.trust.decide.decide` (``refer`` when flagged).
    """
    from meddx.exceptions import MeddxError
    from meddx.inference.schema import OOD, Decision, InputCheck, Prediction, Uncertainty
    from meddx.records.explain import attributions, method_of
    from meddx.records.intended import intended_input, typed_row
    from meddx.records.ood import decision as ood_decision
    from meddx.records.ood import verdicts
    from meddx.records.schema import TaskSchema, unit_factor
    from meddx.trust.intended import check_sample
    from meddx.trust.ood import load_gate

    _threads()
    bundle = load(folder, package)
    task = TaskSchema.from_dict(bundle["task"])
    intended = package.get("intended_input") or intended_input(task)  # packages from before the check existed
    gate = load_gate(folder, package)
    pipe = bundle["pipeline"]
    est = pipe.named_steps["model"]
    pre = pipe.named_steps["pre"]
    names = list(package["class_names"])
    model_units = {f.name: f.unit for f in task.features}
    results = []
    for item in inputs:
        path = Path(item)
        try:
            cases = _cases(path, task)
        except MeddxError as exc:
            results.append(_rejected(package, str(path), [str(exc)]))
            continue
        if not cases:
            results.append(_rejected(package, str(path), [f"no record of a patient found in {path}"]))
            continue
        for label, record, sources in cases:
            reasons = check_sample(record, intended)
            if reasons:
                results.append(_rejected(package, label, reasons))
                continue
            row = typed_row(record, task)
            units = dict(row.attrs.get("units") or {})
            harmonised = pre.named_steps["units"].transform(row)
            clean = pre.named_steps["codes"].transform(harmonised)
            absent = [f for f in task.names if row[f].isna().iloc[0]]
            coded = [f for f in task.names if f not in absent and clean[f].isna().iloc[0]]
            missing = absent + coded
            Z = np.asarray(pre.named_steps["encode"].transform(clean), dtype=np.float32)
            p_model = float(est.predict_proba(Z)[0, 1])
            raw = float(est.raw_proba(Z)[0]) if hasattr(est, "raw_proba") else p_model
            q1 = min(max(p_model, 1e-12), 1 - 1e-12)  # the OOD gate was fitted on the model's own outputs
            p1 = float(_recalibrated(package, [p_model])[0])
            verdict = verdicts(gate, Z.astype(np.float64), np.array([[np.log1p(-q1), np.log(q1)]]), clean,
                               bundle.get("ranges") or {}, units=model_units)[0]
            phi, base = attributions(est, Z, bundle["groups"], len(task.names), bundle["background"],
                                     permutations=8, seed=0)
            if package.get("recalibration"):  # the site map is affine on the log-odds the attributions sum to
                a, b = float(package["recalibration"]["a"]), float(package["recalibration"]["b"])
                phi, base = phi * a, base * a + b
            warnings: list[str] = []
            if missing:
                warnings.append(f"missing features (imputed, flagged): {', '.join(missing)}")
            if coded:
                warnings.append("missing-value codes treated as missing: " + ", ".join(
                    f"{f}={harmonised[f].iloc[0]!r}" for f in coded))
            outside = [f"{f}={clean[f].iloc[0]:.4g} (training {lo:.4g}-{hi:.4g})"
                       for f, (lo, hi) in (bundle.get("ranges") or {}).items()
                       if clean[f].notna().iloc[0] and not lo <= clean[f].iloc[0] <= hi]
            if outside:
                warnings.append("outside the range seen in training (extrapolation): " + ", ".join(outside))
            if verdict["flagged"]:
                what = "; ".join(verdict["range"]) if verdict["range"] else "far from every training record"
                warnings.append(f"outside the model's training data: {what}")
            converted = [f"{f} from {u}" for f, u in units.items()
                         if f in task.names and unit_factor(task.feature(f), u) not in (None, 1.0)]
            if converted:
                warnings.append("units converted: " + ", ".join(converted))
            if sources:
                warnings.append("values from the record: " + ", ".join(f"{k} ({v})" for k, v in sources.items()))
            share = len(missing) / len(task.names)
            q = np.clip(np.array([1 - p1, p1]), 1e-12, 1)
            entropy = float(-(q * np.log(q)).sum())
            if share > REFER_MISSING_SHARE:
                trust = {"decision": "refer", "reason": f"{len(missing)} of {len(task.names)} features are "
                         f"missing (more than {REFER_MISSING_SHARE:.0%}); P({names[1]}) = {p1:.2f} rests "
                         "mostly on imputed values"}
            else:
                trust = {"decision": "positive" if p1 >= 0.5 else "negative",
                         "reason": f"P({names[1]}) = {p1:.2f} (threshold 0.5)"
                         + (f"; {len(missing)} feature(s) imputed" if missing else "")}
            made = ood_decision(trust, verdict)
            if verdict["flagged"] and trust["decision"] == "refer":
                made["reason"] += f"; also {trust['reason']}"
            features = {}
            for f in task.names:
                v = clean[f].iloc[0]
                features[f] = None if isinstance(v, float) and np.isnan(v) else v if isinstance(v, str) else float(v)
            prediction = Prediction(
                input=label, modality="tabular", model=str(package.get("name")),
                model_version=str(package.get("version")), class_names=names,
                probabilities={names[0]: 1 - raw, names[1]: raw},
                calibrated_probabilities={names[0]: 1 - p1, names[1]: p1},
                calibration=str(package.get("trust", {}).get("calibration", "identity")),
                prediction=names[int(p1 >= 0.5)],
                uncertainty=Uncertainty(method="none", samples=1, predictive_entropy=entropy,
                                        expected_entropy=entropy, mutual_information=0.0,
                                        max_probability=float(q.max())),
                decision=Decision(**made),
                ood=OOD(**{k: verdict[k] for k in ("method", "score", "threshold", "flagged", "flag_rate")})
                if "method" in verdict else None,
                input_check=InputCheck(passed=True), intended_use=package.get("intended_use"), warnings=warnings,
                attributions={f: float(v) for f, v in zip(task.names, phi[0])},
                attribution_method=method_of(est), attribution_base=float(base[0]),
                missing_features=missing, features=features)
            results.append(prediction.to_json_dict())
    return results


# ---------------------------------------------------------------------------------------- report
def report(folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
           split: str | None = None) -> Path:
    """A one-page HTML validation report: metrics with CIs, calibration, global feature importance."""
    from meddx.records.explain import attributions, global_importance, method_of

    data = data or package["data"].get("dataset") or package["data"]["source"]
    result = evaluate(folder, package, data, split=split, n_boot=n_boot, out=None)
    bundle = load(folder, package)
    s = _score(package, bundle, data, split)
    est = bundle["pipeline"].named_steps["model"]
    rows = s["rows"].iloc[:200 if method_of(est) != "sampled-shapley" else 60]
    Z = _encoded(bundle["pipeline"], rows)
    phi, _ = attributions(est, Z, bundle["groups"], len(s["task"].names), bundle["background"], permutations=4)
    importance = global_importance(phi, s["task"].names)
    result["global_importance"] = {"method": method_of(est), "rows": int(len(rows)), "mean_abs_log_odds": importance}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    esc = html.escape
    mrows = "".join(f"<tr><td>{esc(k)}</td><td>{v['value']:.3f}</td><td>{v['low']:.3f} – {v['high']:.3f}</td></tr>"
                    for k, v in result["metrics"].items() if v.get("value") == v.get("value"))
    crow = "".join(f"<tr><td>{r['bin']}</td><td>{r['n']}</td><td>{r['mean_predicted']:.3f}</td>"
                   f"<td>{r['observed']:.3f}</td></tr>" for r in result["calibration"]["reliability"])
    top = max(importance.values()) or 1.0
    irow = "".join(f"<tr><td>{esc(k)}</td><td>{v:.3f}</td><td><div class='bar' style='width:{200 * v / top:.0f}px'>"
                   f"</div></td></tr>" for k, v in importance.items())
    miss = ", ".join(f"{esc(k)} {v:.0%}" for k, v in result["missing_share"].items()) or "none"
    kind = "Validation report" if result.get("validation", True) else \
        "Evaluation on rows the model trained on (not a validation)"
    sh = result.get("shift") or {}
    shift_html = ""
    if sh:
        fl, pv, ci, floor = sh["flagged"], sh["prevalence"], sh["calibration_in_the_large"], sh["ece"]["noise_floor"]
        ks = sh.get("ks_ood_scores") or {}
        rec = sh["recommendation"]
        shift_html = f"""<h2>Is this data like the training data?</h2>
<p><b>Recommendation: {esc(rec['action'])}</b> ({esc(rec['why'])}).</p><ul>
<li>Outside the training data: {fl['n']} of {result['n']} rows ({fl['share']['value']:.1%}, 95% CI
{fl['share']['low']:.1%}–{fl['share']['high']:.1%}; about {sh['flag_rate_expected']:.0%} expected in distribution);
{fl['by_distance']} by distance, {fl['by_training_range']} by training range
{esc(', '.join(f'{k} {v}' for k, v in fl['features_outside_training_range'].items()))}.</li>
{f"<li>OOD scores vs training (KS): D = {ks['statistic']:.2f}, p = {ks['p_value']:.2g}.</li>" if ks else ""}
<li>Prevalence: observed {pv['observed']:.2f}; estimated without labels {pv['estimated_unlabelled']:.2f}
({pv['estimated_low']:.2f}–{pv['estimated_high']:.2f}); training {pv['training']:.2f}.
{esc(pv.get('caveat', ''))}</li>
<li>Calibration-in-the-large (observed − predicted): {ci['value']:+.3f} ({ci['low']:+.3f} – {ci['high']:+.3f}).</li>
<li>ECE {sh['ece']['value']:.3f}; a perfectly calibrated model shows {floor['mean']:.3f} on average at n = {floor['n']}
(95th percentile {floor['p95']:.3f}).</li></ul>
{f"<p><b>{esc(sh['warning'])}</b></p>" if sh.get('warning') else ""}"""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>meddx {kind.lower()}: {esc(str(package['name']))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em}}.bar{{background:#4a7;height:.8em}}</style></head><body>
<h1>{kind}: {esc(str(package['name']))} {esc(str(package.get('version')))}</h1>
<p>Model: {esc(str(package.get('architecture_description', package.get('architecture'))))}. Data: {esc(str(data))}
[{esc(result['split'])}], n = {result['n']}, prevalence {result['prevalence']:.3f}.
Intended use: {esc(str(package.get('intended_use')))}.</p>
<h2>Metrics (95% bootstrap CIs, {n_boot} resamples)</h2>
<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>{mrows}</table>
<h2>Calibration</h2><p>{esc(str(result['calibration']['method']))}; ECE over 10 equal-width bins
{result['metrics']['ece']['value']:.3f}.</p>
<table><tr><th>predicted bin</th><th>n</th><th>mean predicted</th><th>observed</th></tr>{crow}</table>
<h2>Global feature importance</h2><p>Mean |attribution| to the calibrated log-odds ({esc(method_of(est))},
{len(rows)} rows).</p><table><tr><th>feature</th><th>mean |φ|</th><th></th></tr>{irow}</table>
<h2>Missing values in these rows</h2><p>{miss}</p>
{shift_html}
</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["evaluate", "load", "predict", "recalibrate", "report", "site_robustness", "train", "validate"]


def fhir(predictions: list[dict[str, Any]], subject: str | None) -> list[dict[str, Any]]:
    """Each prediction as a validated FHIR R4 RiskAssessment about ``subject`` (``meddx predict --fhir``)."""
    from meddx.records.fhir import risk_assessment

    return [risk_assessment(p, subject=subject) for p in predictions]
