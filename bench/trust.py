"""Trustworthy diagnoses, measured: calibration, shift, conformal sets, abstention, ensembles,
a Bayesian last layer, Grad-CAM checks, the cost of uncertainty, and the HTML report.

    python -m bench.trust            # about 25 min on 2 CPU cores (models are cached in bench/runs)

Models (cnn-small, 28 px, trained by ``meddx.training.train``):

- BreastMNIST: official train/val/test; calibrated on val, scored on test.
- PneumoniaMNIST: 15% of the training split carved out as a hold-out, disjoint by
  near-duplicate image group (MedMNIST keeps no patient ids), never used for fitting
  or calibration; a 5-member deep ensemble (seeds 0-4, same split; member 0 is the
  single model) and a Bayes-by-backprop last layer. The official test split is a
  shifted site in effect (62.5% pneumonia against 74% in train/val).

Results: ``bench/results/trust.{json,md}``, the reliability diagram
``trust_reliability_pneumonia_test.png``, and the reports' Chromium screenshots
``trust_report_pneumonia.png`` and ``trust_report_covid.png`` (all in ``bench/results/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, RUNS, machine, write_results
from meddx.calibration.metrics import ece_noise_floor
from meddx.calibration.scaling import softmax

EPOCHS = {"breastmnist": 40, "pneumoniamnist": 12}


def _train(name: str, **options: Any) -> Path:
    from meddx.training import TrainConfig, train

    out = RUNS / f"trust-{name}"
    if (out / "package.json").is_file():
        return out
    config = TrainConfig(model="cnn-small", out=str(out), threads=1, **options)
    started = time.perf_counter()
    run = train(config, progress=False)
    (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run


def _current_trust(run: Path, sample: Any) -> None:
    """Refit a cached package's trust layer on its validation split when it predates the current defaults."""
    from meddx.inference.refit import refit_package

    package = json.loads((run / "package.json").read_text())
    if "calibration_selection" in (package.get("trust") or {}):
        return
    images, labels = sample.splits["val"]
    refit_package(run, images, labels, fitted_on=f"validation split (n={len(labels)})")


def _wall(run: Path) -> float | None:
    path = run / "wall_seconds.txt"
    return float(path.read_text()) if path.is_file() else None




def _calib(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    from meddx.calibration import bootstrap_calibration

    return bootstrap_calibration(probs, labels, n_boot=1000, seed=seed)


def _auc(probs: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs[:, 1]))


def _fmt(entry: dict[str, float]) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}–{entry['high']:.3f}]"


def calibration_section(name: str, pipeline: Any, images: np.ndarray, labels: np.ndarray,
                        val: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """ECE/Brier/NLL before and after the package's calibrator (and plain temperature scaling), with CIs."""
    from meddx.calibration import create_calibrator

    logits = pipeline.predict_logits(images)
    raw = softmax(logits)
    calibrated = pipeline.trust.calibrator.transform(logits)
    forced = create_calibrator("temperature").fit(pipeline.predict_logits(val[0]), np.asarray(val[1]).reshape(-1))
    return {"set": name, "n": int(len(labels)), "before": _calib(raw, labels), "after": _calib(calibrated, labels),
            "temperature_only": _calib(forced.transform(logits), labels),
            "calibrator": pipeline.trust.calibrator.to_dict(),
            "selection": (pipeline.package.get("trust") or {}).get("calibration_selection"),
            "auc": _auc(calibrated, labels), "noise_floor": ece_noise_floor(calibrated)}


def shift_section(pipeline: Any, images: np.ndarray, labels: np.ndarray, train_labels: np.ndarray,
                  n_local: int = 100, repeats: int = 20) -> dict[str, Any]:
    """The shifted test site: TS, prior-shift EM (no labels), and recalibration on a small local sample."""
    from meddx.calibration import calibration_metrics, create_calibrator, em_priors

    logits = pipeline.predict_logits(images)
    calibrated = pipeline.trust.calibrator.transform(logits)
    train_priors = np.bincount(train_labels, minlength=logits.shape[1]) / len(train_labels)
    adapted, priors = em_priors(calibrated, train_priors)
    out = {"n": int(len(labels)), "test_prevalence": float(labels.mean()), "train_prevalence": float(train_priors[1]),
           "before": _calib(softmax(logits), labels), "temperature": _calib(calibrated, labels),
           "prior_shift_em": _calib(adapted, labels), "em_estimated_prevalence": float(priors[1])}
    # a hospital labels n_local of its own cases and refits (temperature + class bias = vector scaling)
    rng = np.random.default_rng(0)
    local = {"temperature": [], "vector": [], "untouched": []}
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        fit_idx, eval_idx = order[:n_local], order[n_local:]
        local["untouched"].append(calibration_metrics(calibrated[eval_idx], labels[eval_idx])["ece"])
        for kind in ("temperature", "vector"):
            cal = create_calibrator(kind).fit(logits[fit_idx], labels[fit_idx])
            local[kind].append(calibration_metrics(cal.transform(logits[eval_idx]), labels[eval_idx])["ece"])
    out["local_recalibration"] = {
        "n_local": n_local, "repeats": repeats,
        **{k: {"mean": float(np.mean(v)), "low": float(np.percentile(v, 2.5)), "high": float(np.percentile(v, 97.5))}
           for k, v in local.items()}}
    return out


def conformal_section(pipeline: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from meddx.calibration import evaluate_resplits

    calibrated = pipeline.predict_arrays(images)
    # as the packages use them: randomised APS/RAPS with empty sets allowed (exact), LAC
    return {m: evaluate_resplits(calibrated, labels, alpha=0.1, method=m, n_splits=20, seed=0,
                                 **({"allow_empty": True} if m != "lac" else {}))
            for m in ("aps", "raps", "lac")}


def abstention_section(pipeline: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from meddx.calibration import accuracy_at_coverage, risk_coverage_curve
    from meddx.calibration.abstention import SCORES

    calibrated = pipeline.predict_arrays(images)
    correct = calibrated.argmax(axis=1) == labels
    out: dict[str, Any] = {"accuracy_all": float(correct.mean())}
    for measure in ("predictive_entropy", "max_probability", "margin"):
        u = SCORES[measure](calibrated)
        out[measure] = {"accuracy_at_80": float(accuracy_at_coverage(u, correct, coverage=0.8))}
    curve = risk_coverage_curve(SCORES["predictive_entropy"](calibrated), correct)
    out["curve"] = {k: np.asarray(v).tolist() for k, v in curve.items()}
    # the package's own policy (threshold chosen on validation for its target risk) on this test set
    decisions = [p.decision.decision for p in pipeline.predict_detailed(images)]
    kept = np.array([d != "refer" for d in decisions])
    out["policy"] = {"coverage": float(kept.mean()), "accuracy_kept": float(correct[kept].mean()) if kept.any()
                     else None, "fitted": (pipeline.package.get("trust") or {}).get("abstention", {})}
    return out


def models_section(pipelines: dict[str, Any], sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    from meddx.calibration import calibration_metrics

    out: dict[str, Any] = {}
    for name, pipeline in pipelines.items():
        out[name] = {}
        for set_name, (images, labels) in sets.items():
            probs = pipeline.predict_arrays(images)
            raw = pipeline.predict_arrays(images, calibrated=False)
            out[name][set_name] = {"auc": _auc(probs, labels), "acc": float((probs.argmax(1) == labels).mean()),
                                   "ece": calibration_metrics(probs, labels)["ece"],
                                   "ece_uncalibrated": calibration_metrics(raw, labels)["ece"],
                                   "nll": calibration_metrics(probs, labels)["nll"]}
    return out


def explanation_section(pipeline: Any, images: np.ndarray, n: int = 128) -> dict[str, Any]:
    import torch

    from meddx.explain import (
        compute_cam,
        deletion_insertion,
        random_map_baseline,
        randomisation_test,
    )

    pre = pipeline.package["preprocess"]
    x = (torch.from_numpy(pipeline._inputs(images[:n])) - pre["mean"]) / pre["std"]
    targets = pipeline.predict_logits(images[:n]).argmax(axis=1).tolist()
    started = time.perf_counter()
    out: dict[str, Any] = {"n": int(len(x))}
    for method in ("gradcam", "gradcam++"):
        cams = compute_cam(pipeline.model, x, method=method, targets=targets)
        rho = np.asarray(randomisation_test(pipeline.model, x, method=method, targets=targets))
        faithful = deletion_insertion(pipeline.model, x, cams, targets=targets)
        baseline = random_map_baseline(pipeline.model, x, targets=targets)
        deletion, random_deletion = np.asarray(faithful["deletion_auc"]), np.asarray(baseline["deletion_auc"])
        out[method] = {"spearman_mean": float(np.mean(rho)), "spearman_median": float(np.median(rho)),
                       "deletion_auc": float(deletion.mean()), "random_deletion_auc": float(random_deletion.mean()),
                       "insertion_auc": float(np.mean(faithful["insertion_auc"])),
                       "random_insertion_auc": float(np.mean(baseline["insertion_auc"])),
                       "share_deletion_below_random": float(np.mean(deletion < random_deletion))}
    out["seconds"] = time.perf_counter() - started
    return out


def cost_section(pipelines: dict[str, Any], images: np.ndarray, samples: int = 20, repeats: int = 20) -> dict[str, Any]:
    """Wall time of each uncertainty method relative to one plain forward pass, batch 1 and 64."""
    rows = []
    single = pipelines["single"]
    for batch in (1, 64):
        x = images[:batch]

        def timed(fn: Any) -> float:
            fn()
            best = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                best.append(time.perf_counter() - t)
            return float(np.median(best))

        base = timed(lambda: single.run_uncertainty(x, "none"))
        for name, pipeline, method, n in (("single", single, "mc-dropout", samples), ("single", single, "tta", samples),
                                          ("ensemble", pipelines["ensemble"], "ensemble", 5),
                                          ("bayes", pipelines["bayes"], "bayes", samples)):
            t = timed(lambda p=pipeline, m=method: p.run_uncertainty(x, m, samples))
            rows.append({"batch": batch, "method": method, "samples": n, "seconds": t, "single_forward_s": base,
                         "ratio": t / base, "bound": n, "within_bound": t / base <= n})
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    from meddx.data.datasets import load_images
    from meddx.inference import Pipeline

    started = time.perf_counter()
    breast_run = _train("breast-single", data="breastmnist", epochs=EPOCHS["breastmnist"], seed=0)
    pneu_common = dict(data="pneumoniamnist", epochs=EPOCHS["pneumoniamnist"], seed=0, holdout_fraction=0.15)
    ensemble_run = _train("pneu-ensemble5", ensemble=5, **pneu_common)
    bayes_run = _train("pneu-bayes", head="bayes", **pneu_common)
    train_wall = {"breast": _wall(breast_run), "ensemble5": _wall(ensemble_run), "bayes": _wall(bayes_run)}

    breast = load_images("breastmnist")
    pneu = load_images("pneumoniamnist")
    _current_trust(breast_run, breast)
    for run in [*(ensemble_run / "members").iterdir(), ensemble_run, bayes_run]:
        _current_trust(run, pneu)
    holdout_idx = np.asarray(json.loads((ensemble_run / "members" / "m0" / "holdout.json").read_text())["indices"])
    pneu_train_images, pneu_train_labels = pneu.splits["train"]
    pneu_train_labels = np.asarray(pneu_train_labels).reshape(-1)
    holdout = (pneu_train_images[holdout_idx], pneu_train_labels[holdout_idx])
    test = (pneu.splits["test"][0], np.asarray(pneu.splits["test"][1]).reshape(-1))
    breast_test = (breast.splits["test"][0], np.asarray(breast.splits["test"][1]).reshape(-1))
    val_labels = np.asarray(pneu.splits["val"][1]).reshape(-1)

    pipelines = {"single": Pipeline.load(ensemble_run / "members" / "m0"), "ensemble": Pipeline.load(ensemble_run),
                 "bayes": Pipeline.load(bayes_run)}
    breast_pipeline = Pipeline.load(breast_run)
    results: dict[str, Any] = {"machine": machine(), "train_wall_s": train_wall}
    results["calibration"] = [
        calibration_section("breastmnist test", breast_pipeline, *breast_test, val=breast.splits["val"]),
        calibration_section("pneumoniamnist hold-out", pipelines["single"], *holdout, val=pneu.splits["val"])]
    results["shift"] = shift_section(pipelines["single"], *test, train_labels=val_labels)
    results["conformal"] = {"pneumoniamnist test": conformal_section(pipelines["single"], *test),
                            "breastmnist test": conformal_section(breast_pipeline, *breast_test)}
    results["abstention"] = abstention_section(pipelines["single"], *test)
    results["models"] = models_section(pipelines, {"hold-out": holdout, "test": test})
    results["explanations"] = explanation_section(pipelines["single"], test[0], n=128)
    results["cost"] = cost_section(pipelines, test[0])
    covid_runs = [_train("covid-64", data="covid-cxr-ieee8023-lungbbox", size=64, epochs=40, seed=0),
                  _train("covid-128", data="covid-cxr-ieee8023-lungbbox", size=128, epochs=40, patience=40, lr=1e-3,
                         seed=0)]
    val_auc = {r.name: json.loads((r / "package.json").read_text())["training"]["best_val_auc"] for r in covid_runs}
    covid_run = max(covid_runs, key=lambda r: val_auc[r.name])  # chosen on validation, never on test
    for run in covid_runs:
        _current_trust(run, load_images("covid-cxr-ieee8023-lungbbox",
                                        size=json.loads((run / "package.json").read_text())["preprocess"]["size"]))
    train_wall["covid"] = {r.name: _wall(r) for r in covid_runs}
    results["covid_selection"] = {"val_auc": val_auc, "chosen": covid_run.name}
    results["localisation"] = localisation_section(covid_run)
    results["localisation"]["selection"] = results["covid_selection"]
    if not args.skip_report:
        results["report"] = report_section(covid_run, "covid-cxr-ieee8023-lungbbox", "covid")
        results["report_pneumonia"] = report_section(ensemble_run / "members" / "m0", "pneumoniamnist", "pneumonia")
    results["wall_s"] = time.perf_counter() - started
    from meddx.calibration import plot_reliability

    plot_reliability({"before (softmax)": (softmax(pipelines["single"].predict_logits(test[0])), test[1]),
                      "after temperature": (pipelines["single"].predict_arrays(test[0]), test[1])},
                     RESULTS / "trust_reliability_pneumonia_test.png", title="PneumoniaMNIST test (shifted)")
    write_results("trust", results, "(markdown pending)")  # the numbers are safe even if the table fails
    paths = write_results("trust", results, markdown(results))
    print(markdown(results))
    print("written:", *paths)


def report_section(model: Path, data: str, stem: str) -> dict[str, Any]:
    """Build the HTML validation report and render it in headless Chromium (screenshot in bench/results)."""
    from meddx.report import render_check
    from meddx.report.build import build_report

    started = time.perf_counter()
    html = build_report(model, data, split="test", out=RUNS / f"trust-report-{stem}", local_fraction=0.2)
    built = time.perf_counter() - started
    check = render_check(html, RESULTS / f"trust_report_{stem}.png")
    _shrink_png(RESULTS / f"trust_report_{stem}.png")
    return {"html": str(html), "console_errors": check["console_errors"], "exceptions": check["exceptions"],
            "screenshot": str(RESULTS / f"trust_report_{stem}.png"), "chromium": check.get("chromium"),
            "build_seconds": built}


def _shrink_png(path: Path) -> None:
    """A 256-colour copy of a full-page screenshot: the text stays sharp at a quarter of the bytes."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def localisation_section(run: Path, n_random: int = 20) -> dict[str, Any]:
    """COVID chest X-rays: share of Grad-CAM energy inside the annotated lung boxes, and the pointing game."""
    import torch

    from meddx.data.datasets import load_images
    from meddx.explain import compute_cam, energy_in_boxes, pointing_game
    from meddx.inference import Pipeline

    pipeline = Pipeline.load(run)
    size = pipeline.package["preprocess"]["size"]
    sample = load_images("covid-cxr-ieee8023-lungbbox", size=size)
    images, labels = sample.splits["test"]
    boxes = sample.meta["boxes"]["test"]
    keep = [i for i, b in enumerate(boxes) if b]
    pre = pipeline.package["preprocess"]
    x = (torch.from_numpy(pipeline._inputs(images[keep])) - pre["mean"]) / pre["std"]
    targets = [1] * len(keep)  # explain "COVID-19" on every image (the finding the boxes belong to)
    cams = compute_cam(pipeline.model, x, method="gradcam", targets=targets)
    energy = np.array([energy_in_boxes(c, boxes[i]) for c, i in zip(cams, keep)])
    pointing = np.array([pointing_game(c, boxes[i]) for c, i in zip(cams, keep)])
    area = np.array([energy_in_boxes(np.ones((size, size)), boxes[i]) for i in keep])
    rng = np.random.default_rng(0)
    random_pointing = np.mean([[pointing_game(rng.random((size, size)), boxes[i]) for i in keep]
                               for _ in range(n_random)])
    probs = pipeline.predict_arrays(images)
    return {"n": len(keep), "energy_in_boxes": float(energy.mean()), "box_area_share": float(area.mean()),
            "pointing_game": float(pointing.mean()), "random_pointing_game": float(random_pointing),
            "test_auc": _auc(probs, np.asarray(labels).reshape(-1)), "size": size}


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Trustworthy diagnoses: measured", "",
             f"cnn-small at 28 px on {r['machine']['cores']} CPU cores; torch {r['machine']['torch']}. "
             f"Training wall time (s): {r['train_wall_s']}. Whole benchmark: {r.get('wall_s', 0) / 60:.1f} min.", "",
             "## Calibration (ECE with 15 equal-width bins, 95% bootstrap CI)", "",
             "| set | n | ECE before | package calibrator (auto) | ECE after | ECE after plain temperature scaling | "
             "adaptive ECE after | Brier after | ECE of a perfectly calibrated model here (mean; share ≤ 0.03) | "
             "bar: after ≤ 0.03 and ≤ before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["calibration"]:
        ok = c["after"]["ece"]["value"] <= 0.03 and c["after"]["ece"]["value"] <= c["before"]["ece"]["value"]
        floor = c["noise_floor"]
        lines.append(f"| {c['set']} | {c['n']} | {_fmt(c['before']['ece'])} | {c['calibrator']['name']} | "
                     f"{_fmt(c['after']['ece'])} | {_fmt(c['temperature_only']['ece'])} | "
                     f"{_fmt(c['after']['ece_adaptive'])} | {_fmt(c['after']['brier'])} | "
                     f"{floor['mean']:.3f}; {floor['share_at_or_below_bar']:.1%} | {'met' if ok else 'NOT met'} |")
    s = r["shift"]
    lr = s["local_recalibration"]
    lines += ["", "## PneumoniaMNIST official test split (prevalence shift)", "",
              f"Test prevalence {s['test_prevalence']:.3f} against {s['train_prevalence']:.3f} in validation; "
              f"EM estimate without labels: {s['em_estimated_prevalence']:.3f}.", "",
              "| probabilities | ECE [95% CI] | Brier |", "|---|---|---|",
              f"| softmax (uncalibrated) | {_fmt(s['before']['ece'])} | {_fmt(s['before']['brier'])} |",
              f"| package calibrator fitted on validation ({r['calibration'][1]['calibrator']['name']}, chosen by "
              f"cross-validated NLL) | {_fmt(s['temperature']['ece'])} | {_fmt(s['temperature']['brier'])} |",
              f"| + prior-shift EM (no test labels) | {_fmt(s['prior_shift_em']['ece'])} | "
              f"{_fmt(s['prior_shift_em']['brier'])} |",
              "", f"Local recalibration: a hospital labels {lr['n_local']} of its cases, refits, and is scored on the "
              f"rest ({lr['repeats']} random draws; mean ECE [2.5–97.5 percentile]):", "",
              "| refit on the local sample | ECE on the remaining cases |", "|---|---|"]
    for k in ("untouched", "temperature", "vector"):
        lines.append(f"| {k} | {lr[k]['mean']:.3f} [{lr[k]['low']:.3f}–{lr[k]['high']:.3f}] |")
    lines += ["", "## Conformal prediction sets (target 90%, 20 random calibration/test re-splits of the test split)",
              "", "| set | method | mean coverage | SD | mean set size | bar [0.88, 0.92] |", "|---|---|---|---|---|---|"]
    for set_name, methods in r["conformal"].items():
        for m, v in methods.items():
            cov = v["coverage_mean"]
            lines.append(f"| {set_name} | {m} | {cov:.3f} | {v['coverage_sd']:.3f} | {v['size_mean']:.2f} | "
                         f"{'met' if 0.88 <= cov <= 0.92 else 'NOT met'} |")
    a = r["abstention"]
    acc80 = a["predictive_entropy"]["accuracy_at_80"]
    lines += ["", "## Abstention on the PneumoniaMNIST test split", "",
              f"Accuracy on all cases {a['accuracy_all']:.3f}; keeping the 80% least uncertain: "
              + ", ".join(f"{k} {v['accuracy_at_80']:.3f}" for k, v in a.items() if isinstance(v, dict)
                          and "accuracy_at_80" in v)
              + f". Bar (+0.03): {'met' if acc80 >= a['accuracy_all'] + 0.03 else 'NOT met'} "
              f"({acc80 - a['accuracy_all']:+.3f} with predictive entropy).",
              f"The package's own policy (threshold chosen on validation): keeps {a['policy']['coverage']:.1%} "
              f"of test cases with accuracy {a['policy']['accuracy_kept'] or float('nan'):.3f}.", "",
              "## Single model, 5-member deep ensemble, Bayesian last layer (calibrated on validation)", "",
              "| model | set | AUC | ACC | ECE | ECE uncalibrated | NLL |", "|---|---|---|---|---|---|---|"]
    for name, sets in r["models"].items():
        for set_name, v in sets.items():
            lines.append(f"| {name} | {set_name} | {v['auc']:.3f} | {v['acc']:.3f} | {v['ece']:.3f} | "
                         f"{v['ece_uncalibrated']:.3f} | {v['nll']:.3f} |")
    e = r["explanations"]
    lines += ["", f"## Explanations on {e['n']} PneumoniaMNIST test images", "",
              "| method | randomisation Spearman (mean / median) | deletion AUC | random-map deletion AUC | "
              "insertion AUC | random insertion | share deletion < random | bars (ρ ≤ 0.3, deletion < random) |",
              "|---|---|---|---|---|---|---|---|"]
    for m in ("gradcam", "gradcam++"):
        v = e[m]
        ok = v["spearman_mean"] <= 0.3 and v["deletion_auc"] < v["random_deletion_auc"]
        lines.append(f"| {m} | {v['spearman_mean']:.3f} / {v['spearman_median']:.3f} | {v['deletion_auc']:.3f} | "
                     f"{v['random_deletion_auc']:.3f} | {v['insertion_auc']:.3f} | {v['random_insertion_auc']:.3f} | "
                     f"{v['share_deletion_below_random']:.2f} | {'met' if ok else 'NOT met'} |")
    lines += ["", "## Cost of uncertainty at predict time (median wall time; bound: N× one forward pass)", "",
              "| batch | method | N | seconds | one forward (s) | ratio | within N× |", "|---|---|---|---|---|---|---|"]
    for row in r["cost"]["rows"]:
        lines.append(f"| {row['batch']} | {row['method']} | {row['samples']} | {row['seconds']:.4f} | "
                     f"{row['single_forward_s']:.4f} | {row['ratio']:.2f} | {'yes' if row['within_bound'] else 'NO'} |")
    if "localisation" in r:
        loc = r["localisation"]
        lines += ["", "## Localisation on the COVID chest X-ray set (test split, patient-disjoint)", "",
                  f"cnn-small at {loc['size']} px (chosen by validation AUC among {loc['selection']['val_auc']}), "
                  f"COVID-19 against other findings, test AUC {loc['test_auc']:.3f}. "
                  f"Over {loc['n']} test images with lung boxes: Grad-CAM energy inside the boxes "
                  f"{loc['energy_in_boxes']:.3f} (box area share {loc['box_area_share']:.3f}); pointing game "
                  f"{loc['pointing_game']:.3f} (random maps {loc['random_pointing_game']:.3f})."]
    for key in ("report", "report_pneumonia"):
        if key in r:
            rep = r[key]
            lines += ["", f"## HTML report in headless Chromium ({key})", "",
                      f"{rep['chromium']}: {len(rep['console_errors'])} console errors, {len(rep['exceptions'])} "
                      f"exceptions; screenshot `{Path(rep['screenshot']).name}`; built in {rep['build_seconds']:.0f} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
