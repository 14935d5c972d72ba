"""Low-dose restoration and translation benchmark (issue 21): meddx restorers against BM3D and NLM.

For each modality (X-ray: PneumoniaMNIST 28 px and adult COVID chest X-rays; MRI: brain slices),
a restorer is trained on the training split (``meddx.synthesis.package.train``, time-limited, 1
thread) and every method is scored on the held-out test images at 25, 10 and 5 % of the dose:
PSNR and SSIM with bootstrap CIs (over images: the noise floor of the test set), the paired
difference meddx - BM3D, time per image, and hallucination checks (structures added/removed
against the full-dose image). Downstream: the pneumonia classifier's AUC and decisions on
full-dose, low-dose and restored test images; the lung detector's boxes on full-dose vs restored
COVID X-rays. Translation rows come from ``bench._synthesis_translation``.

    python -m bench.synthesis                      # ~70 min on this 2-core CPU
    python -m bench.synthesis --minutes 2 --max-test 20 --stem explore_synthesis   # a quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RUNS, command_line, machine, portable, write_results

SETS = [
    {"key": "xray-28", "data": "pneumoniamnist", "size": 28, "modality": "xray"},
    {"key": "xray-cxr", "data": "covid-cxr-ieee8023-lungbbox", "size": 128, "modality": "xray"},
    {"key": "mri-brain", "data": "brain-tumor-mri-navoneel", "size": 128, "modality": "mri"},
]
DOSES = (0.25, 0.1, 0.05)
METHODS = ("low-dose", "nlm", "bm3d", "meddx")
ANCHORS = [
    "RED-CNN on the AAPM low-dose CT challenge: +3 to +10 dB PSNR over the low-dose input (Chen et al. 2017)",
    "DnCNN beats BM3D by ~0.7 dB on natural images at sigma 25 (Zhang et al. 2017)",
]
OUT = RUNS / "synthesis"


def _auc_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            boots.append(roc_auc_score(y[idx], p[idx]))
    return {"value": float(roc_auc_score(y, p)), "low": float(np.percentile(boots, 2.5)),
            "high": float(np.percentile(boots, 97.5))}


def classifier(path: Path | None) -> Any:
    """The pneumonia classifier (meddx's default recipe on PneumoniaMNIST), trained once and cached."""
    from meddx.inference import Pipeline

    folder = path or OUT / "classifier-pneumoniamnist"
    if not (Path(folder) / "package.json").is_file():
        from meddx.modalities import handler_for_data

        print(f"training the downstream classifier into {folder}", flush=True)
        handler_for_data("pneumoniamnist").handler().train("pneumoniamnist", out=Path(folder), progress=False)
    return Pipeline.load(str(folder))


def _probabilities(pipe: Any, images: list[np.ndarray]) -> np.ndarray:
    names = list(pipe.package["class_names"])
    positive = names.index("pneumonia") if "pneumonia" in names else 1
    x = np.stack([np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8) for im in images])
    return pipe.predict_arrays(x)[:, positive]


def _detector(path: Path) -> Any:
    from meddx.packaging.registry import read_package
    from meddx.tasks.detection.runtime import Detector

    package = read_package(path)
    return Detector(path, package), package


def _boxes(det: Any, image: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    rgb = np.repeat(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    boxes, _, labels = det.detect(rgb, score_thresh=threshold)
    return [{"label": int(k), "box": [float(v) for v in b]} for b, k in zip(boxes, labels, strict=True)]


def full_dose_row(key: str, modality: str, n: int) -> dict[str, Any]:
    """The reference itself: PSNR undefined (infinite), SSIM 1."""
    return {"set": key, "modality": modality, "dose": 1.0, "method": "full-dose", "psnr": None, "ssim": 1.0,
            "downstream_auc": None, "n": n}


def run_set(spec: dict[str, Any], args: argparse.Namespace, pipe: Any | None) -> tuple[list[dict[str, Any]], dict]:
    """Train (or reuse) the restorer of one set and score every method at every dose."""
    import torch

    from meddx.packaging.registry import read_package
    from meddx.synthesis import baselines as B
    from meddx.synthesis import data as SD
    from meddx.synthesis import dose as DM
    from meddx.synthesis import hallucination as H
    from meddx.synthesis import metrics as M
    from meddx.synthesis import package as P
    from meddx.synthesis.training import restore_images

    torch.set_num_threads(1)
    run = OUT / spec["key"]
    if args.reuse and (run / "package.json").is_file():
        print(f"{spec['key']}: reusing {run}", flush=True)
    else:
        minutes = dict(item.split("=") for item in args.set_minutes).get(spec["key"], args.minutes)
        P.train(spec["data"], model=args.model, out=run, size=spec["size"], time_limit_s=float(minutes) * 60,
                steps=100_000, eval_every=args.eval_every, progress=True, n_boot=200, threads=1)
    package = read_package(run)
    net = P.load_net(run, package)
    dose_model = DM.get(package["restoration"]["noise"])
    params = P.params_of(package)
    images = SD.load(spec["data"], spec["size"])
    test = images.splits["test"][: args.max_test or None]
    names = images.names["test"][: len(test)]
    labels = images.info.get("labels", {}).get("test")
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"n": len(test), "train": package["data"]["train"], "run": portable(str(run)),
                             "train_seconds": package["training"].get("seconds"), "steps": package["training"]["steps"],
                             "best_step": package["training"]["best_step"], "noise": package["restoration"]["noise"],
                             "params": params}
    full_p = _probabilities(pipe, test) if pipe is not None and spec["data"] == "pneumoniamnist" else None
    y = np.asarray(labels)[: len(test)] if full_p is not None else None
    rows.append(full_dose_row(spec["key"], spec["modality"], len(test)))
    if full_p is not None:
        auc = _auc_ci(y, full_p)
        rows[-1].update(downstream_auc=round(auc["value"], 4),
                        downstream_auc_ci=[round(auc["low"], 4), round(auc["high"], 4)])
    det = None
    if spec["data"] == "covid-cxr-ieee8023-lungbbox" and args.detector and (args.detector / "package.json").is_file():
        det, det_package = _detector(args.detector)
        unseen = [i for i, n in enumerate(names) if n in set(det_package["splits"]["test"])]
        det_threshold = float(det_package.get("score_threshold") or 0.3)
        det_full = {i: _boxes(det, test[i], det_threshold) for i in unseen}
        extra["detector"] = {"run": portable(str(args.detector)), "images": len(unseen), "score_threshold": det_threshold,
                             "note": "images in both this test split and the detector's own test split"}
    for dose in DOSES:
        observed, levels = P.degraded_set(test, dose_model, params, dose, seed=args.seed)
        outputs: dict[str, list[np.ndarray]] = {"low-dose": observed}
        seconds: dict[str, float] = {"low-dose": 0.0}
        t = time.perf_counter()
        outputs["meddx"] = restore_images(net, observed, levels)
        seconds["meddx"] = (time.perf_counter() - t) / len(test)
        for name in ("bm3d", "nlm"):
            t = time.perf_counter()
            outputs[name] = [B.restore(name, o, dose_model, dose, **params) for o in observed]
            seconds[name] = (time.perf_counter() - t) / len(test)
        scores = {m: M.per_image(test, outputs[m]) for m in METHODS}
        for m in METHODS:
            row: dict[str, Any] = {"set": spec["key"], "modality": spec["modality"], "dose": dose, "method": m,
                                   "n": len(test), "seconds_per_image": round(seconds[m], 4)}
            for key in ("psnr", "ssim"):
                ci = M.mean_ci(scores[m][key], n_boot=args.n_boot, seed=args.seed)
                row[key] = round(ci["value"], 4 if key == "ssim" else 3)
                row[f"{key}_ci"] = [round(ci["low"], 4), round(ci["high"], 4)]
            if m == "meddx":
                for key in ("psnr", "ssim"):
                    diff = M.paired(scores["meddx"][key], scores["bm3d"][key], n_boot=args.n_boot, seed=args.seed)
                    row[f"{key}_minus_bm3d"] = {k: round(v, 4) for k, v in diff.items()}
            found = [H.structures(ref, out) for ref, out in zip(test, outputs[m], strict=True)]
            row["structures_added_per_image"] = round(float(np.mean([f["added"] for f in found])), 3)
            row["structures_removed_per_image"] = round(float(np.mean([f["removed"] for f in found])), 3)
            if m != "low-dose":
                res = [H.residual(o, out, lv, expected=dose_model.expected(out, dose, **params))["regions"]
                       for o, out, lv in zip(observed, outputs[m], levels, strict=True)]
                row["residual_regions_per_image"] = round(float(np.mean(res)), 3)
            if full_p is not None:
                p = _probabilities(pipe, outputs[m])
                auc = _auc_ci(y, p)
                row["downstream_auc"] = round(auc["value"], 4)
                row["downstream_auc_ci"] = [round(auc["low"], 4), round(auc["high"], 4)]
                row["decisions_vs_full_dose"] = H.decisions(full_p, p)
            else:
                row["downstream_auc"] = None
            if det is not None and unseen:
                agree = [H.boxes(det_full[i], _boxes(det, outputs[m][i], det_threshold)) for i in unseen]
                row["lung_boxes_vs_full_dose"] = {k: int(sum(a[k] for a in agree)) for k in ("matched", "added",
                                                                                             "removed")}
            rows.append(row)
        print(f"{spec['key']} dose {dose:g}: " + ", ".join(
            f"{m} {next(r['psnr'] for r in rows if r['method'] == m and r['dose'] == dose):.2f} dB" for m in METHODS),
            flush=True)
    return rows, extra


def _ci(row: dict[str, Any], key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    if f"{key}_ci" not in row:
        return f"{row[key]:.{digits}f}"
    low, high = row[f"{key}_ci"]
    return f"{row[key]:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _recovered(rows: list[dict[str, Any]], key: str) -> list[str]:
    full = next((r for r in rows if r.get("set") == key and r["method"] == "full-dose"), None)
    if full is None or full.get("downstream_auc") is None:
        return []
    out = []
    for dose in DOSES:
        low = next(r for r in rows if r.get("set") == key and r["dose"] == dose and r["method"] == "low-dose")
        for m in ("nlm", "bm3d", "meddx"):
            r = next(r for r in rows if r.get("set") == key and r["dose"] == dose and r["method"] == m)
            lost = full["downstream_auc"] - low["downstream_auc"]
            share = (r["downstream_auc"] - low["downstream_auc"]) / lost if lost > 0 else float("nan")
            r["auc_recovered"] = None if np.isnan(share) else round(float(share), 3)
        meddx = next(r for r in rows if r.get("set") == key and r["dose"] == dose and r["method"] == "meddx")
        out.append(f"- dose {dose:g}: AUC full {full['downstream_auc']:.4f}, low {low['downstream_auc']:.4f}, meddx "
                   f"{meddx['downstream_auc']:.4f}: recovered "
                   + ("n/a (no AUC lost)" if meddx["auc_recovered"] is None else f"{meddx['auc_recovered']:.0%}")
                   + f" of the AUC lost (goal ≥ 50 %); meddx decisions differ from full-dose decisions on "
                   f"{meddx['decisions_vs_full_dose']['disagreement']:.1%} of the images (low dose: "
                   f"{low['decisions_vs_full_dose']['disagreement']:.1%})")
    return out


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# Low-dose restoration and translation (issue 21)", "",
             f"Command: `{info['command']}`", "",
             f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores shared with other jobs, 1 thread; "
             f"{info['machine']['date']}. Wall time {info['wall_seconds'] / 60:.0f} min.", "",
             "Each restorer was trained on its set's training split only; every figure below is on held-out test "
             "images (PneumoniaMNIST: the official test split; COVID X-rays: the catalogue's patient split; brain "
             "MRI: near-duplicate-group split). Low-dose images are simulated from the test images with fixed seeds "
             "(X-ray: photon-count Poisson noise, Beer-Lambert; MRI: Rician noise, sd ∝ 1/√dose). BM3D and NLM get "
             "the same noise information as meddx (variance-stabilised Poisson for X-ray, the known sd for MRI). "
             "95 % CIs: percentile bootstrap over the test images (the noise floor of the set).", ""]
    goal = info.get("goal_met") or {}
    if goal:
        lines += ["Goal (meddx beats BM3D on PSNR and SSIM at every dose on every modality): "
                  + ("**met**" if all(goal.values()) else "**not met** at " + ", ".join(k for k, v in goal.items()
                                                                                   if not v)) + ".", ""]
    for key, extra in info["sets"].items():
        lines += [f"## {key}: {extra['data']} ({extra['n']} test images, {extra['train']} training images)", "",
                  f"Restorer: {extra['run']}, {extra['steps']} steps (best validation step {extra['best_step']}), "
                  f"training + test scoring {extra['train_seconds']} s on 1 thread; noise {extra['noise']} "
                  f"{extra['params']}.", "",
                  "| dose | method | PSNR dB (95 % CI) | SSIM (95 % CI) | s / image | added / removed structures per "
                  "image | residual regions | downstream AUC |", "|---|---|---|---|---|---|---|---|"]
        for r in [r for r in rows if r.get("set") == key]:
            lines.append(f"| {r['dose']:g} | {r['method']} | {_ci(r, 'psnr', 2)} | {_ci(r, 'ssim', 4)} | "
                         f"{r.get('seconds_per_image', 0):.3f} | {r.get('structures_added_per_image', '–')} / "
                         f"{r.get('structures_removed_per_image', '–')} | {r.get('residual_regions_per_image', '–')} | "
                         f"{_ci(r, 'downstream_auc', 4)} |")
        lines.append("")
        for r in [r for r in rows if r.get("set") == key and r["method"] == "meddx"]:
            p, s = r["psnr_minus_bm3d"], r["ssim_minus_bm3d"]
            lines.append(f"- dose {r['dose']:g}: meddx − BM3D PSNR {p['value']:+.2f} dB ({p['low']:+.2f} to "
                         f"{p['high']:+.2f}; better on {p['wins']:.0%} of images), SSIM {s['value']:+.4f} "
                         f"({s['low']:+.4f} to {s['high']:+.4f}; {s['wins']:.0%})"
                         + (f"; lung boxes vs full dose {r['lung_boxes_vs_full_dose']}" if "lung_boxes_vs_full_dose"
                            in r else ""))
        lines += [""] + _recovered(rows, key) + [""]
        if extra.get("detector"):
            d = extra["detector"]
            lines += [f"Lung detector ({d['run']}, score ≥ {d['score_threshold']:.2f}) on {d['images']} images "
                      f"({d['note']}): boxes on each method's output matched to its boxes on the full-dose image "
                      "(same label, IoU ≥ 0.5); `added` = boxes only on the output.", ""]
    lines += ["Structures: regions where output and full-dose image differ by > 0.05 after a 1–4 px band-pass "
              "(meddx.synthesis.hallucination.structures); residual regions: places where what the method removed "
              "is not noise-like (> 4 sd of band-passed white noise), computed without the reference, as every "
              "`meddx synthesize denoise` output reports it.", "", "Anchors (published, not re-run here):", ""]
    lines += [f"- {a}" for a in ANCHORS]
    if info.get("translation"):
        lines += ["", "## Translation", ""] + info["translation"]["lines"]
    return "\n".join(lines)


def merge(stems: list[str], stem: str) -> None:
    """One table from partial runs of this script (their commands are listed in it)."""
    import json

    from bench._common import RESULTS

    parts = [json.loads((RESULTS / f"{s}.json").read_text(encoding="utf-8")) for s in stems]
    rows = [r for p in parts for r in p["rows"]]
    sets = {k: v for p in parts for k, v in p["sets"].items()}
    for key in sets:  # partial runs made before every set had its full-dose row
        if not any(r.get("set") == key and r["method"] == "full-dose" for r in rows):
            first = next(r for r in rows if r.get("set") == key)
            rows.insert(rows.index(first), full_dose_row(key, first["modality"], first["n"]))
    translation = next((p["translation"] for p in parts if p.get("translation")), None)
    info = {"command": " ; ".join(p["command"] for p in parts) + f" ; {command_line()}",
            "machine": parts[0]["machine"], "sets": sets, "anchors": ANCHORS, "translation": translation,
            "wall_seconds": max(p["wall_seconds"] for p in parts), "merged_from": stems,
            "goal_met": {k: v for p in parts for k, v in p.get("goal_met", {}).items()}}
    text = markdown(rows, info)
    text = text.replace("Wall time", f"Partial runs made in parallel and merged ({', '.join(stems)}); longest wall time")
    write_results(stem, {**info, "rows": rows}, text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=14.0, help="training time per set (minutes)")
    parser.add_argument("--set-minutes", nargs="*", default=[], metavar="KEY=MINUTES",
                        help="training time of one set instead of --minutes, e.g. xray-28=8")
    parser.add_argument("--model", default=None, help="restoration network (default: the handler's)")
    parser.add_argument("--sets", default=",".join(s["key"] for s in SETS))
    parser.add_argument("--max-test", type=int, default=0, help="score at most this many test images per set")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", type=Path, default=None, help="pneumonia classifier package")
    parser.add_argument("--detector", type=Path, default=RUNS / "detection-covid-lungs",
                        help="COVID lung detector package (from python -m bench.detection)")
    parser.add_argument("--translation-minutes", type=float, default=8.0, help="0 = skip the translation part")
    parser.add_argument("--reuse", action="store_true", help="score restorers already trained in bench/runs")
    parser.add_argument("--stem", default="synthesis")
    parser.add_argument("--merge", nargs="+", metavar="STEM",
                        help="write the table from partial runs (bench/results/STEM.json, e.g. sets run in parallel)")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.stem)
        return
    t0 = time.perf_counter()
    wanted = [s for s in SETS if s["key"] in args.sets.split(",")]
    pipe = classifier(args.classifier) if any(s["data"] == "pneumoniamnist" for s in wanted) else None
    rows, sets = [], {}
    for spec in wanted:
        r, extra = run_set(spec, args, pipe)
        rows += r
        sets[spec["key"]] = {**extra, "data": spec["data"]}
    translation = None
    if args.translation_minutes > 0:
        from bench import _synthesis_translation

        translation = _synthesis_translation.run(args.translation_minutes, seed=args.seed)
        rows += translation["rows"]
    info = {"command": command_line(), "machine": machine(), "sets": sets, "anchors": ANCHORS,
            "translation": translation, "wall_seconds": round(time.perf_counter() - t0, 1)}
    goal = [r for r in rows if r["method"] == "meddx" and r.get("psnr_minus_bm3d")]
    info["goal_met"] = {f"{r['set']}@{r['dose']:g}": bool(r["psnr_minus_bm3d"]["value"] > 0
                                                           and r["ssim_minus_bm3d"]["value"] > 0) for r in goal}
    text = markdown(rows, info)
    write_results(args.stem, {**info, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
