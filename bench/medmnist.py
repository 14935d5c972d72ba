"""MedMNIST at 28 px, official splits, several seeds: meddx vs the MedMNIST v2 table.

    python -m bench.medmnist                      # ResNet-18 (28), 3 seeds, both sets
    python -m bench.medmnist --model cnn-small --stem medmnist_28_cnn-small

Each run trains on the official train split, keeps the checkpoint with the best
validation AUC (early stopping), and is evaluated once on the official test
split (ACC at the arg-max, AUC). Results: ``bench/results/<stem>.{json,md}``
with mean ± SD over seeds and the CPU wall time of each run, next to the
published MedMNIST v2 figures (Yang et al., Scientific Data 2023, Table 3).
"""

from __future__ import annotations

import argparse
import time

from pathlib import Path

from bench._common import RUNS, machine, mean_sd, write_results

# MedMNIST v2 (Sci Data 2023) Table: ResNet-18 (28) and the best of the table per metric
# (Google AutoML Vision for both sets, as the issue names it).
PUBLISHED = {
    "breastmnist": {"resnet18_28": {"acc": 0.863, "auc": 0.901}, "best": {"acc": 0.861, "auc": 0.919},
                    "best_name": "Google AutoML Vision"},
    "pneumoniamnist": {"resnet18_28": {"acc": 0.854, "auc": 0.944}, "best": {"acc": 0.946, "auc": 0.991},
                       "best_name": "Google AutoML Vision"},
}


AUGMENT = {"none": {"augment": False}, "flip": {"augment": True, "augment_geometry": False},
           "full": {"augment": True, "augment_geometry": True},
           "flip-shift3": {"augment": True, "augment_geometry": False, "shift_px": 3}}


def run_one(dataset: str, model: str, seed: int, epochs: int, lr: float, batch_size: int, sampler: str,
            augment: str, threads: int | None = None, *, schedule: str = "onecycle", ema: float = 0.0,
            weight_decay: float = 1e-4, label_smoothing: float = 0.0, device: str = "auto",
            tag: str = "", pretrained: str | None = None, backbone_lr_mult: float = 1.0) -> dict:
    """Train one seed on the official train split, pick by validation AUC, score the test split once.

    ``pretrained`` starts from a ``meddx pretrain`` package (or state-dict file), with the
    backbone's learning rate scaled by ``backbone_lr_mult``.
    """
    import json

    import numpy as np

    from meddx.data.datasets import load_images
    from meddx.evaluation.metrics import compute_metrics
    from meddx.inference import Pipeline
    from meddx.training import TrainConfig, train

    out = RUNS / f"medmnist-{dataset}-{model}{'-' + tag if tag else ''}-s{seed}"
    config = TrainConfig(data=dataset, model=model, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         patience=epochs, sampler=sampler, threads=threads, out=str(out), schedule=schedule,
                         ema=ema, weight_decay=weight_decay, label_smoothing=label_smoothing, device=device,
                         pretrained=pretrained, backbone_lr_mult=backbone_lr_mult, **AUGMENT[augment])
    started = time.perf_counter()
    run = train(config, progress=False)
    wall = time.perf_counter() - started
    images, labels = load_images(dataset).splits["test"]
    proba = Pipeline.load(run).predict_arrays(images)
    test = compute_metrics(np.asarray(labels).reshape(-1), proba)
    package = json.loads((run / "package.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = package["training"]["best_epoch"]
    val = next((h for h in history if h["epoch"] == best), {})
    return {"dataset": dataset, "model": model, "tag": tag, "seed": seed, "test_acc": test["acc"],
            "test_auc": test["auc"], "val_acc": val.get("val_acc"), "val_auc": val.get("val_auc"),
            "best_epoch": best, "epochs_run": package["training"]["epochs_run"],
            "train_images_per_s": package["training"]["images_per_second"], "wall_s": wall,
            "device": _device_name(device), "run": str(run), "pretrained": pretrained,
            "backbone_lr_mult": backbone_lr_mult}


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return f"cpu ({machine()['cores']} cores, {torch.get_num_threads()} threads)"


def run_many(jobs: list[dict], workers: int = 1, log_path: Path | None = None) -> list[dict]:
    """Run ``run_one(**job)`` for each job, ``workers`` processes at a time; append each row to ``log_path``."""
    import json

    rows: list[dict] = []

    def record(row: dict) -> None:
        rows.append(row)
        print(f"{row['dataset']} {row['tag'] or row['model']} seed {row['seed']}: ACC {row['test_acc']:.3f} "
              f"AUC {row['test_auc']:.3f} (val AUC {row['val_auc']:.3f}; {row['wall_s'] / 60:.1f} min)", flush=True)
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    if workers <= 1:
        for job in jobs:
            record(run_one(**job))
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, **job) for job in jobs]
        for future in as_completed(futures):
            record(future.result())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-28")
    parser.add_argument("--sets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[30, 8], help="per set, in --sets order")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sampler", default="none", help="weighted-loss | balanced | none")
    parser.add_argument("--augment", default="none", choices=sorted(AUGMENT))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--schedule", default="onecycle", help="onecycle | cosine | step")
    parser.add_argument("--ema", type=float, default=0.0, help="weight EMA decay per step (0 = off)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--stem", default="medmnist_28")
    args = parser.parse_args()
    epochs = dict(zip(args.sets, args.epochs if len(args.epochs) == len(args.sets) else args.epochs * len(args.sets)))
    jobs = [dict(dataset=dataset, model=args.model, seed=seed, epochs=epochs[dataset], lr=args.lr,
                 batch_size=args.batch_size, sampler=args.sampler, augment=args.augment, threads=args.threads,
                 schedule=args.schedule, ema=args.ema, weight_decay=args.weight_decay,
                 label_smoothing=args.label_smoothing, device=args.device)
            for dataset in args.sets for seed in args.seeds]
    rows = run_many(jobs, args.jobs)
    rows.sort(key=lambda r: (args.sets.index(r["dataset"]), r["seed"]))
    summary = {}
    lines = [f"# MedMNIST at 28 px: meddx `{args.model}` vs MedMNIST v2", "",
             f"Official splits, seeds {args.seeds}, best-validation-AUC checkpoint, test split; AdamW "
             f"{args.schedule} schedule, lr {args.lr}, weight decay {args.weight_decay}, batch {args.batch_size}, "
             f"epochs {epochs}, weight EMA {args.ema or 'off'}, label smoothing {args.label_smoothing}, "
             f"sampler {args.sampler}, augmentation {args.augment}. "
             f"Device: {rows[0]['device']}; {args.jobs} run(s) at a time; torch {machine()['torch']}.", "",
             "| set | meddx ACC (mean ± SD) | meddx AUC (mean ± SD) | ResNet-18 (28), MedMNIST v2 ACC / AUC | "
             "meets ResNet-18 (28) row | best in table ACC / AUC | wall per run (min) |",
             "|---|---|---|---|---|---|---|"]
    for dataset in args.sets:
        sel = [r for r in rows if r["dataset"] == dataset]
        acc, acc_sd = mean_sd([r["test_acc"] for r in sel])
        auc, auc_sd = mean_sd([r["test_auc"] for r in sel])
        ref = PUBLISHED[dataset]
        meets = acc >= ref["resnet18_28"]["acc"] and auc >= ref["resnet18_28"]["auc"]
        wall = [r["wall_s"] / 60 for r in sel]
        summary[dataset] = {"acc_mean": acc, "acc_sd": acc_sd, "auc_mean": auc, "auc_sd": auc_sd,
                            "published": ref, "meets_resnet18_28": meets, "wall_min": wall}
        lines.append(f"| {dataset} | {acc:.3f} ± {acc_sd:.3f} | {auc:.3f} ± {auc_sd:.3f} | "
                     f"{ref['resnet18_28']['acc']:.3f} / {ref['resnet18_28']['auc']:.3f} | {'yes' if meets else 'NO'} | "
                     f"{ref['best']['acc']:.3f} / {ref['best']['auc']:.3f} ({ref['best_name']}) | "
                     f"{', '.join(f'{w:.1f}' for w in wall)} |")
    lines += ["", "Per run:", "", "| set | seed | ACC | AUC | val AUC | best epoch / run | train img/s | wall (min) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['seed']} | {r['test_acc']:.3f} | {r['test_auc']:.3f} | {r['val_auc']:.3f} | "
              f"{r['best_epoch']} / {r['epochs_run']} | {r['train_images_per_s']:.0f} | {r['wall_s'] / 60:.1f} |"
              for r in rows]
    payload = {"model": args.model, "args": vars(args), "machine": machine(), "runs": rows, "summary": summary}
    paths = write_results(args.stem, payload, "\n".join(lines))
    print("\n".join(lines))
    print("written:", *paths)


if __name__ == "__main__":
    main()
