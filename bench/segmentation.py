"""Retinal vessel segmentation on CHASE_DB1 (issue 19): the default `meddx train` segmentation model.

    python -m bench.segmentation                   # train (time-limited, 1 thread) on the 20/8 split, score, time
    python -m bench.segmentation --run RUN         # score and time an existing package instead

Rows: the model (test images 21-28, metrics inside the derived field of view, pooled over pixels,
95 % percentile bootstrap CI over the 8 images), the second human observer scored against the
first on the same images (the human reference point), and published anchors (not re-run here).
Inference time: one 999×960 image, preprocessing + sliding window, ONNX Runtime and torch, 2 threads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RUNS, command_line, machine, portable, write_results

ANCHORS = [
    {"set": "chase-db1", "method": "U-Net (published range, e.g. R2U-Net / LadderNet / IterNet papers)",
     "f1": [0.78, 0.81], "auc": [0.978, 0.985], "source": "Alom 2018; Zhuang 2018; Li 2020 (IterNet)"},
    {"set": "chase-db1", "method": "best published (FR-UNet, SA-UNet class)", "f1": [0.81, 0.82], "auc": 0.994,
     "source": "Liu 2022 (FR-UNet); Guo 2021 (SA-UNet)"},
]
IMAGE = "Image_11L"


def _time_inference(run: Path, package: dict[str, Any], image: np.ndarray, threads: int, repeats: int = 3,
                    backends: tuple[str, ...] = ("onnx", "torch")) -> dict[str, float]:
    """Median seconds for one image (FOV + preprocessing + sliding window) per backend, and with 4 MC draws."""
    import torch

    from meddx.tasks.segmentation.model import SegModel

    out = {}
    torch.set_num_threads(threads)
    for backend in backends:
        seg = SegModel(run, package, backend=backend, threads=threads)
        seg.probability(*seg.prepare(image))  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            seg.probability(*seg.prepare(image))
            times.append(time.perf_counter() - t0)
        out[backend] = float(np.median(times))
        if len(backends) == 1:
            continue
        t0 = time.perf_counter()
        x, fov = seg.prepare(image)
        seg.mc_dropout(x, fov, 4)
        out[f"{backend}_mc4"] = time.perf_counter() - t0
    torch.set_num_threads(1)
    return out


def _timings(run: Path, package: dict[str, Any], image: np.ndarray, threads: int) -> dict[str, Any]:
    """Timings with 1 thread and with ``threads`` threads; the headline is the faster of the two per backend
    (on a loaded machine, torch's OpenMP threads can slow down sharply when cores are busy)."""
    per = {n: _time_inference(run, package, image, n) for n in sorted({1, threads})}
    best = {k: min(per[n][k] for n in per) for k in per[1]}
    return {**best, "by_threads": per}


def _variant(run: Path, package: dict[str, Any], tta: bool, n_boot: int,
             seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same weights with flip test-time augmentation switched to ``tta``; temperature and threshold refit
    on the validation images (never on test). Returns ``(package copy, test result)``."""
    import copy

    from meddx.tasks.segmentation import data as D
    from meddx.tasks.segmentation import package as P
    from meddx.tasks.segmentation.model import SegModel

    variant = copy.deepcopy(package)
    variant["segmentation"]["tta"] = tta
    samples = {s.name: s for s in D.chase_samples(D.resolve(D.CHASE)[0])}
    val = P._prepare([samples[n] for n in package["splits"]["val"]], variant["segmentation"]["preprocessing"])
    variant["segmentation"].update(P.operating_point(SegModel(run, variant), val, seed=seed))
    result = P._evaluate_samples(SegModel(run, variant), variant, [samples[n] for n in package["splits"]["test"]],
                                 data=D.CHASE, split="test", n_boot=n_boot, seed=seed)
    return variant, result


def _row(method: str, metrics: dict[str, Any], spread: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"set": "chase-db1", "method": method, **extra}
    for k in ("f1", "auc", "sensitivity", "specificity", "acc"):
        if k in metrics:
            m = metrics[k]
            row[k] = round(m["value"], 4)
            row[f"{k}_ci"] = [round(m["low"], 4), round(m["high"], 4)]
        if spread and k in spread:
            row[f"{k}_per_image"] = {a: round(b, 4) for a, b in spread[k].items()}
    return row


def _ci(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "–"
    low, high = row[f"{key}_ci"]
    return f"{row[key]:.4f} ({low:.4f}–{high:.4f})"


def main(argv: list[str] | None = None) -> None:
    import torch

    from meddx.packaging.registry import read_package
    from meddx.tasks.segmentation import data as D
    from meddx.tasks.segmentation import package as P

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="score this package instead of training one")
    parser.add_argument("--model", default=None, help="network (default: the handler's default)")
    parser.add_argument("--minutes", type=float, default=50.0, help="training time limit (minutes)")
    parser.add_argument("--steps", type=int, default=12000, help="training steps (batches of patches) at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="threads for the inference timing")
    parser.add_argument("--stem", default="segmentation")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.run is None:
        out = RUNS / "segmentation" / time.strftime("%Y%m%d-%H%M%S")
        run = P.train(D.CHASE, model=args.model, seed=args.seed, out=out, steps=args.steps,
                      time_limit_s=args.minutes * 60)
    else:
        run = args.run
    package = read_package(run)
    metrics = package["metrics"]
    image = D.read_image(Path(D.resolve(D.CHASE)[0]) / f"{IMAGE}.jpg")
    timing = _timings(run, package, image, args.threads)
    seg = package["segmentation"]
    training = package["training"]
    base = f"meddx {seg['network']} ({seg['preprocessing']}, patch {seg['patch']}, Dice+BCE"
    model_row = _row(base + (", flip TTA)" if seg.get("tta") else ")"),
                     metrics["values"], metrics.get("per_image"), ece=round(metrics["ece"], 4) if metrics.get("ece")
                     is not None else None, threshold=round(seg["threshold"], 4),
                     temperature=round(seg["temperature"], 4), train_seconds=training.get("train_seconds"),
                     steps=training.get("steps"), best_step=training.get("best_step"),
                     onnx_seconds=round(timing["onnx"], 3), torch_seconds=round(timing["torch"], 3))
    second = metrics.get("second_observer") or {}
    rows = [model_row]
    # the other flip setting (the package's own was chosen on the validation images), for comparison
    other = not seg.get("tta")
    variant, alt = _variant(run, package, other, metrics["n_boot"], args.seed)
    vseg = variant["segmentation"]
    alt_row = _row(base + (", flip TTA" if other else ", no TTA") + "; not chosen, T and threshold refit on "
                   "validation)", alt["metrics"], alt["per_image_spread"],
                   ece=round(alt["ece"], 4), threshold=round(vseg["threshold"], 4),
                   temperature=round(vseg["temperature"], 4),
                   onnx_seconds=round(_time_inference(run, variant, image, 1, backends=("onnx",))["onnx"], 3))
    rows.append(alt_row)
    if second:
        rows.append(_row("second observer (2ndHO vs 1stHO)", second["metrics"], second.get("per_image_spread")))
    payload = {"command": command_line(), "machine": machine(), "run": portable(str(run)), "rows": rows, "anchors": ANCHORS,
               "timing": timing, "bars": {"f1": 0.80, "auc": 0.985, "inference_seconds": 5.0},
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    spread = metrics.get("per_image") or {}
    lines = [
        "# Retinal vessel segmentation, CHASE_DB1 (issue 19)", "",
        f"Command: `{command_line()}`" + ("" if args.run is None else
                                          " (the package was trained by this script without `--run`)"), "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores shared with other jobs; training with 1 thread; "
        f"{machine()['date']}. Split: images 1-20 train (16 fit + 4 validation: children 9-10), 21-28 test. "
        "Metrics inside the derived field of view, pooled over the test pixels; 95 % CI: percentile bootstrap "
        f"over the 8 test images ({metrics['n_boot']} resamples), i.e. the noise floor of this test set.", "",
        "| method | F1 (Dice) | AUC | sensitivity | specificity | accuracy |", "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['method']} | {_ci(row, 'f1')} | {_ci(row, 'auc')} | {_ci(row, 'sensitivity')} | "
                     f"{_ci(row, 'specificity')} | {_ci(row, 'acc')} |")
    for a in ANCHORS:
        f1 = "–".join(f"{v:.2f}" for v in a["f1"]) if isinstance(a["f1"], list) else a["f1"]
        auc = "–".join(f"{v:.3f}" for v in a["auc"]) if isinstance(a["auc"], list) else a["auc"]
        lines.append(f"| anchor: {a['method']} | {f1} | {auc} | | | |")
    choice = seg.get("tta_choice") or {}
    lines += ["", f"Flip test-time augmentation (mean logit over 4 flips): {'on' if seg.get('tta') else 'off'} in the "
              f"package, chosen on the 4 validation images ({choice.get('rule', 'set by option')}; validation AUC "
              f"{choice.get('val_auc_tta', float('nan')):.4f} with, {choice.get('val_auc_plain', float('nan')):.4f} "
              f"without). The row marked 'not chosen' is the other setting, its threshold "
              f"{alt_row['threshold']:.3f} and temperature {alt_row['temperature']:.3f} refit on the validation "
              f"images, ONNX {alt_row['onnx_seconds']:.2f} s per image (1 thread); nothing was chosen on the test "
              "images."]
    lines += ["", "Per-image spread of the model (mean ± sd, min–max over the 8 test images):", ""]
    for k in ("f1", "auc", "sensitivity", "specificity"):
        if k in spread:
            s = spread[k]
            lines.append(f"- {k}: {s['mean']:.4f} ± {s['sd']:.4f} ({s['min']:.4f}–{s['max']:.4f})")
    lines += [
        "",
        f"Training: {training.get('steps')} steps of {training.get('batch')} patches ({training.get('train_seconds')} s "
        f"on 1 thread, best validation step {training.get('best_step')}); whole `train` incl. test scoring "
        f"{training.get('seconds')} s. Threshold {seg['threshold']:.3f} and temperature {seg['temperature']:.3f} fitted "
        f"on the 4 validation images; pixel ECE on test {metrics.get('ece', float('nan')):.4f}.",
        "",
        f"Inference on one 999×960 image ({IMAGE}, FOV + preprocessing + sliding window {seg['roi']} px, overlap "
        f"{seg['overlap']}, median of 3, the faster of 1 and {args.threads} threads): ONNX Runtime {timing['onnx']:.2f} s, torch "
        f"{timing['torch']:.2f} s (bar ≤ 5 s); with 4 MC-dropout draws: ONNX {timing['onnx_mc4']:.2f} s, torch "
        f"{timing['torch_mc4']:.2f} s. By thread count: "
        + "; ".join(f"{n} thread(s): ONNX {t['onnx']:.2f} s, torch {t['torch']:.2f} s" for n, t in
                    timing["by_threads"].items()) + ".",
        "",
        "Anchors are published figures, not re-run here; most papers score CHASE_DB1 on the whole image or their own "
        "FOV, so they compare only roughly.",
    ]
    write_results(args.stem, payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
