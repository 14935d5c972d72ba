"""Out-of-distribution benchmark: does each image model say "I was not made for this input"?

    python -m bench.ood                       # trains the two default models first (about 10 min on 2 cores)
    python -m bench.ood --pneumonia RUN --breast RUN   # reuse packages from `meddx train pneumoniamnist|breastmnist`

For the default PneumoniaMNIST and BreastMNIST models (``meddx train DATA`` with default
settings, which fits the OOD gate), every fitted detector (Mahalanobis, deep kNN, energy,
MSP) is scored against the model's own test split (in-distribution) and each far
out-of-distribution set: brain MRI, retinal fundus (CHASE), blood smears (BCCD), the other
MedMNIST set, and every CT/MR/US slice in ``format-samples`` read as pixels without its
header. Rows: AUROC (95% bootstrap CI), FPR at 95% TPR, the share flagged at the package
threshold, and time per image (features + score).

It also measures the pneumonia model's bars of issue 16: on the 508 real pneumonia chest
X-rays of ``covid-cxr-ieee8023-lungbbox`` (PA/AP views, finding neither "todo" nor "No Finding")
the share called negative without referral; on PneumoniaMNIST test the share referred or
flagged and the AUC on the cases kept; and that every non-chest DICOM in ``format-samples``
is rejected by its header.

Writes ``bench/results/ood.json`` (rows {method, in_set, ood_set, auroc, fpr95, flag_rate,
ms_per_image}) and ``ood.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RUNS, machine, write_results

MIRROR_SETS = {"brain-mri": "brain-tumor-mri-navoneel", "fundus-chase": "chase-db1-retina-vessel-seg",
               "blood-bccd": "bccd-blood-cell-detection"}
COVID = "covid-cxr-ieee8023-lungbbox"
NOT_PNEUMONIA = ("todo", "No Finding")


def mirror() -> Path:
    from meddx.data.catalogue import fetch

    return Path(fetch("format-samples")).parent


def folder_of(name: str) -> Path:
    from meddx.data.catalogue import fetch

    return Path(fetch(name))


def _files(folder: Path, suffixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not any(x in p.name for x in exclude))


def pixel_images(pipeline: Any, path: Path) -> list[np.ndarray]:
    """Every 2-D image in ``path`` as the pipeline would feed it, headers ignored (volumes: every slice)."""
    from meddx.data.readers import read

    sample = read(path)
    array = np.asarray(sample.array)
    if sample.format == "nifti":
        count = array.shape[2] if array.ndim >= 3 and array.shape[2] > 1 else None
    elif array.ndim == 4 or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        count = array.shape[0]
    else:
        count = None
    if count is None:
        return [pipeline.image_from_sample(sample, path)]
    return [pipeline.image_from_sample(sample, path, slice_index=k) for k in range(count)]


def covid_pneumonia_files(findings: tuple[str, ...] | None = None) -> list[Path]:
    """The real adult pneumonia films: PA/AP views whose finding is a pneumonia (not "todo"/"No Finding");
    with ``findings``, the PA/AP films with exactly those findings instead."""
    import pandas as pd

    folder = folder_of(COVID)
    meta = pd.read_csv(folder / "metadata.csv")
    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    images = pd.DataFrame(coco["images"]).merge(meta, left_on="orig_file_name", right_on="filename", how="left")
    chosen = images.finding.isin(findings) if findings else ~images.finding.isin(NOT_PNEUMONIA)
    keep = images[images.view.isin(["PA", "AP", "AP Supine", "AP Erect"]) & images.finding.notna() & chosen]
    return [folder / "images_max384" / f for f in keep.file_name]


def ood_sets(pipeline: Any, other_medmnist: str) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Far-OOD image sets as lists of uint8 2-D images (sizes vary; the pipeline resizes)."""
    from meddx.data.datasets import load_images

    sets: dict[str, Any] = {}
    for name, data in MIRROR_SETS.items():
        sets[name] = [img for f in _files(folder_of(data), (".jpg", ".jpeg", ".png"), ("HO.png",))
                      for img in pixel_images(pipeline, f)]
    sets[other_medmnist] = load_images(other_medmnist).splits["test"][0]
    samples = folder_of("format-samples")
    sets["ct-mr-us-pixels"] = [img for f in _files(samples / "dicom", (".dcm",), ("waveform",))
                               + _files(samples / "nifti", (".nii", ".gz")) for img in pixel_images(pipeline, f)]
    return sets


def embed(pipeline: Any, images: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits, features and seconds, one image at a time for ragged lists (as predictions run)."""
    start = time.perf_counter()
    if isinstance(images, np.ndarray):
        logits, features = pipeline.logits_and_features(images)
    else:
        parts = [pipeline.logits_and_features(img[None]) for img in images]
        logits, features = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return logits, features, time.perf_counter() - start


def auroc_ci(id_scores: np.ndarray, ood_scores: np.ndarray, draws: int = 1000, seed: int = 0) -> dict[str, float]:
    """AUROC (OOD = positive) with a stratified bootstrap 95% CI."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    s = np.r_[id_scores, ood_scores]
    value = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(draws):
        a = rng.choice(id_scores, len(id_scores))
        b = rng.choice(ood_scores, len(ood_scores))
        boots.append(roc_auc_score(y, np.r_[a, b]))
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high)}


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Share of in-distribution inputs flagged when the threshold flags 95% of the OOD set."""
    threshold = np.percentile(ood_scores, 5)
    return float(np.mean(id_scores >= threshold))


def wilson(k: int, n: int) -> dict[str, float]:
    """Share k/n with its Wilson 95% interval."""
    if n == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "k": 0, "n": 0}
    from meddx.trust.drift import wilson_interval

    low, high = wilson_interval(k / n, n)
    return {"value": k / n, "low": low, "high": high, "k": k, "n": n}


def method_table(pipeline: Any, in_set: str, id_images: np.ndarray, sets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (detector, OOD set)."""
    gate = pipeline.ood
    id_logits, id_features, id_seconds = embed(pipeline, id_images)
    rows = []
    for set_name, images in sets.items():
        logits, features, seconds = embed(pipeline, images)
        for method in gate.detectors:
            start = time.perf_counter()
            id_scores = gate.scores(id_features, id_logits, method)
            ood_scores = gate.scores(features, logits, method)
            score_seconds = time.perf_counter() - start
            n = len(id_scores) + len(ood_scores)
            rows.append({
                "method": method, "in_set": in_set, "ood_set": set_name, "n_in": int(len(id_scores)),
                "n_ood": int(len(ood_scores)), "auroc": auroc_ci(id_scores, ood_scores),
                "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
                "flag_rate": float(np.mean(ood_scores > gate.thresholds[method])),
                "id_flag_rate": float(np.mean(id_scores > gate.thresholds[method])),
                "ms_per_image": 1000 * ((id_seconds + seconds) + score_seconds) / n,
                "default": method == gate.method,
            })
    return rows


def pneumonia_bars(pipeline: Any) -> dict[str, Any]:
    """Issue 16's bars for the pneumonia model, on its own decisions (OOD gate and abstention included)."""
    from sklearn.metrics import roc_auc_score

    from meddx.data.datasets import load_images

    out: dict[str, Any] = {}
    files = covid_pneumonia_files()
    decisions = [r["decision"]["decision"] for r in pipeline.predict(files)]
    out["covid_pneumonia"] = {
        "n": len(files), "negative_without_referral": wilson(decisions.count("negative"), len(files)),
        "refer": decisions.count("refer"), "positive": decisions.count("positive"),
        "rejected": decisions.count("rejected"),
        "flagged_ood": None,
    }
    images = [pipeline.image_from_file(f) for f in files]
    flags = [pipeline.assess_ood(img[None])[0]["flagged"] for img in images]
    out["covid_pneumonia"]["flagged_ood"] = wilson(int(np.sum(flags)), len(flags))
    # the only normal adult films in the mirror (the maintainers' sealed set is the real test)
    normal = covid_pneumonia_files(findings=("No Finding",))
    normal_decisions = [r["decision"]["decision"] for r in pipeline.predict(normal)]
    out["covid_no_finding"] = {"n": len(normal), "pneumonia_without_referral": wilson(
        normal_decisions.count("positive"), len(normal)), "refer": normal_decisions.count("refer")}

    test_images, test_labels = load_images("pneumoniamnist").splits["test"]
    labels = np.asarray(test_labels).reshape(-1)
    predictions = pipeline.predict_detailed(test_images, uncertainty="none")
    referred = np.array([p.decision.decision in ("refer", "rejected") for p in predictions])
    flagged = np.array([bool(p.ood and p.ood.flagged) for p in predictions])
    positive = pipeline.class_names.index(pipeline.package.get("positive_class") or pipeline.class_names[1])
    probs = np.array([p.calibrated_probabilities[pipeline.class_names[positive]] for p in predictions])
    kept = ~referred
    out["pneumoniamnist_test"] = {
        "n": int(len(labels)), "referred_or_flagged": wilson(int(referred.sum()), len(labels)),
        "flagged_ood": wilson(int(flagged.sum()), len(labels)),
        "auc_all": float(roc_auc_score(labels == positive, probs)),
        "auc_kept": auroc_ci(probs[kept & (labels != positive)], probs[kept & (labels == positive)]),
        "n_kept": int(kept.sum()),
    }
    samples = folder_of("format-samples") / "dicom"
    rejected = {}
    for f in _files(samples, (".dcm",)):
        result = pipeline.predict(f)[0]
        rejected[f.name] = {"decision": result["decision"]["decision"], "reason": result["decision"]["reason"]}
    out["format_samples_dicom"] = rejected
    return out


def drift_section(pipeline: Any, replays: int = 200, horizon: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Replays of the package's drift monitor: 1,000 in-distribution studies (PneumoniaMNIST test, drawn
    with replacement), and a switch to adult chest X-rays (the covid-cxr films) after 100 studies."""
    from meddx.data.datasets import load_images
    from meddx.trust.drift import DriftMonitor

    def flags_and_scores(images: Any) -> tuple[np.ndarray, np.ndarray]:
        verdicts = [v for img in images for v in pipeline.assess_ood(img[None])] if isinstance(images, list) \
            else pipeline.assess_ood(images)
        probs = np.concatenate([pipeline.predict_arrays(img[None]) for img in images]) if isinstance(images, list) \
            else pipeline.predict_arrays(images)
        return np.array([v["flagged"] for v in verdicts]), probs[:, -1]

    id_flags, id_scores = flags_and_scores(load_images("pneumoniamnist").splits["test"][0])
    adult_flags, adult_scores = flags_and_scores([pipeline.image_from_file(f) for f in covid_pneumonia_files()])
    reference = (pipeline.package.get("drift") or {}).get("reference_scores")
    template = DriftMonitor.create(pipeline.ood.flag_rate, reference, horizon=horizon)
    rng = np.random.default_rng(seed)
    false_alarms, delays = 0, []
    for _ in range(replays):
        monitor = DriftMonitor.from_dict(template.to_dict())
        idx = rng.integers(0, len(id_flags), horizon)
        false_alarms += any(monitor.update(bool(id_flags[i]), float(id_scores[i]))["alarm"] for i in idx)
        monitor = DriftMonitor.from_dict(template.to_dict())
        for i in rng.integers(0, len(id_flags), 100):
            monitor.update(bool(id_flags[i]), float(id_scores[i]))
        already = monitor.alarm
        delay = None
        for step, i in enumerate(rng.integers(0, len(adult_flags), 200), 1):
            if monitor.update(bool(adult_flags[i]), float(adult_scores[i]))["alarm"]:
                delay = 0 if already else step
                break
        delays.append(delay)
    detected = [d for d in delays if d is not None and d <= 50]
    return {"replays": replays, "horizon": horizon, "monitor": {k: template.to_dict()[k] for k in ("p0", "p1", "h",
            "ks_limit", "window", "step", "false_alarm")}, "score_test": reference is not None,
            "id_flag_rate": float(id_flags.mean()), "adult_flag_rate": float(adult_flags.mean()),
            "in_distribution_no_alarm": wilson(replays - false_alarms, replays),
            "switch_detected_within_50": wilson(len(detected), replays),
            "median_delay": float(np.median([d for d in delays if d is not None])) if any(
                d is not None for d in delays) else None,
            "max_delay": max((d for d in delays if d is not None), default=None)}


def train_default(data: str) -> Path:
    """``meddx train DATA`` with default settings (cached under bench/runs/ood)."""
    from meddx.training import TrainConfig, train

    run = RUNS / "ood" / f"{data}-default"
    if not (run / "package.json").is_file():
        train(TrainConfig(data=data, out=str(run)), progress=False)
    return run


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Out-of-distribution detection (issue 16)", "",
             f"Made by `{result['command']}` in {result['seconds']:.0f} s on {result['machine']['cores']} CPU cores "
             f"({result['machine']['date']}). In-distribution: each model's own test split; threshold: the package's, "
             "chosen on the validation split for a 5% flag rate. AUROC with 95% bootstrap CI; FPR95 = share of "
             "in-distribution test images flagged at the threshold that flags 95% of the OOD set; flag rate = share of "
             "the OOD set flagged at the package threshold. `*` marks the package's default method.", ""]
    for model, info in result["models"].items():
        lines += [f"## {model}", "", f"Package: `{info['package']}`; default method **{info['default_method']}**; "
                  f"in-distribution test flag rate {info['id_flag_rate']:.3f}.", "",
                  "| method | OOD set | n | AUROC [95% CI] | FPR95 | flagged | ms/image |", "|---|---|---|---|---|---|---|"]
        for r in info["rows"]:
            a = r["auroc"]
            mark = "*" if r["default"] else ""
            lines.append(f"| {r['method']}{mark} | {r['ood_set']} | {r['n_ood']} | {a['value']:.4f} "
                         f"[{a['low']:.3f}, {a['high']:.3f}] | {r['fpr95']:.3f} | {r['flag_rate']:.3f} | "
                         f"{r['ms_per_image']:.2f} |")
        lines.append("")
    bars = result.get("pneumonia_bars")
    if bars:
        c, t = bars["covid_pneumonia"], bars["pneumoniamnist_test"]
        nwr, ref, auc = c["negative_without_referral"], t["referred_or_flagged"], t["auc_kept"]
        lines += ["## Pneumonia model: issue 16 bars", "",
                  "| bar | measured [95% CI] | target |", "|---|---|---|",
                  f"| 508 real pneumonia X-rays (covid-cxr): negative without referral | {nwr['value']:.3f} "
                  f"[{nwr['low']:.3f}, {nwr['high']:.3f}] ({nwr['k']}/{nwr['n']}); OOD-flagged "
                  f"{c['flagged_ood']['value']:.3f} | ≤ 0.05 |",
                  f"| PneumoniaMNIST test: referred or flagged | {ref['value']:.3f} [{ref['low']:.3f}, {ref['high']:.3f}] "
                  f"({ref['k']}/{ref['n']}) | ≤ 0.10 |",
                  f"| PneumoniaMNIST test: AUC on cases not referred | {auc['value']:.4f} [{auc['low']:.3f}, "
                  f"{auc['high']:.3f}] (n={t['n_kept']}) | ≥ 0.97 |"]
        nf = bars.get("covid_no_finding")
        if nf:
            w = nf["pneumonia_without_referral"]
            lines.append(f"| proxy for the sealed normal adult films: the {nf['n']} covid-cxr PA/AP films with \"No "
                         f"Finding\", called pneumonia without referral | {w['value']:.3f} [{w['low']:.3f}, "
                         f"{w['high']:.3f}] ({w['k']}/{w['n']}; {nf['refer']} referred) | ≤ 0.10 (sealed set) |")
        lines.append("")
        d = result.get("drift")
        if d:
            ok, hit = d["in_distribution_no_alarm"], d["switch_detected_within_50"]
            lines += [f"Drift monitor ({d['replays']} replays; CUSUM on the OOD flag, h={d['monitor']['h']:.2f}"
                      + (f", windowed KS on scores, limit {d['monitor']['ks_limit']:.3f}" if d["score_test"] else
                         ", no score test: the package has no reference scores") + "):", "",
                      "| bar | measured [95% CI] | target |", "|---|---|---|",
                      f"| 1,000 in-distribution studies, no alarm | {ok['value']:.3f} [{ok['low']:.3f}, {ok['high']:.3f}] "
                      f"({ok['k']}/{ok['n']}) | ≥ 0.95 |",
                      f"| switch to adult chest X-rays detected within 50 studies | {hit['value']:.3f} [{hit['low']:.3f}, "
                      f"{hit['high']:.3f}] ({hit['k']}/{hit['n']}); median delay {d['median_delay']}, max "
                      f"{d['max_delay']} | ≥ 0.95 |", ""]
        lines += ["Non-chest DICOMs in `format-samples` given to the pneumonia model:", "",
                  "| file | decision | reason |", "|---|---|---|"]
        for name, d in bars["format_samples_dicom"].items():
            lines.append(f"| {name} | {d['decision']} | {d['reason'][:140]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pneumonia", help="package of `meddx train pneumoniamnist` (default: train it)")
    parser.add_argument("--breast", help="package of `meddx train breastmnist` (default: train it)")
    parser.add_argument("--stem", default="ood")
    args = parser.parse_args()
    from meddx.data.datasets import load_images
    from meddx.inference import Pipeline

    start = time.perf_counter()
    runs = {"pneumoniamnist": Path(args.pneumonia) if args.pneumonia else train_default("pneumoniamnist"),
            "breastmnist": Path(args.breast) if args.breast else train_default("breastmnist")}
    result: dict[str, Any] = {"machine": machine(), "models": {}, "rows": []}
    for data, run in runs.items():
        pipeline = Pipeline.load(run)
        other = "breastmnist" if data == "pneumoniamnist" else "pneumoniamnist"
        id_images = load_images(data).splits["test"][0]
        rows = method_table(pipeline, data, id_images, ood_sets(pipeline, other))
        default_rows = [r for r in rows if r["default"]]
        result["models"][data] = {"package": str(run.name), "default_method": pipeline.ood.method, "rows": rows,
                                  "id_flag_rate": default_rows[0]["id_flag_rate"] if default_rows else None}
        result["rows"] += [{"method": r["method"], "in_set": r["in_set"], "ood_set": r["ood_set"],
                            "auroc": r["auroc"]["value"], "fpr95": r["fpr95"], "flag_rate": r["flag_rate"],
                            "ms_per_image": r["ms_per_image"]} for r in rows]
        if data == "pneumoniamnist":
            result["pneumonia_bars"] = pneumonia_bars(pipeline)
            result["drift"] = drift_section(pipeline)
    result["seconds"] = time.perf_counter() - start
    result["command"] = "python -m bench.ood" + (" --pneumonia RUN" if args.pneumonia else "") \
        + (" --breast RUN" if args.breast else "")
    json_path, md_path = write_results(args.stem, result, markdown(result))
    print(md_path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
