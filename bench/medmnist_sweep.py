"""Search training recipes for ResNet-18 (28) on MedMNIST, choosing by validation AUC only.

    python -m bench.medmnist_sweep --jobs 12            # on a GPU machine: the whole grid in minutes
    python -m bench.medmnist_sweep --sets breastmnist --recipes step-long-ema99 --jobs 2

Every recipe is trained with the same seeds; the recipe with the highest mean
*validation* AUC per set is the one selected (the test split is scored for every
run but never used to choose), so the selected row is an honest estimate and the
others show how much the recipe matters. Results:
``bench/results/medmnist_28_sweep.{json,md}``; rows are also appended to
``--log`` as they finish, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench._common import machine, mean_sd, write_results
from bench.medmnist import PUBLISHED, run_many

# name -> training options; "epochs" is per set. lr 1e-3, batch 128, unweighted loss throughout
# (MedMNIST v2's setting) unless a recipe says otherwise.
RECIPES: dict[str, dict] = {
    "onecycle-short": {"schedule": "onecycle", "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "step-long": {"schedule": "step", "epochs": {"breastmnist": 100, "pneumoniamnist": 50}},
    "step-long-ema99": {"schedule": "step", "ema": 0.99, "epochs": {"breastmnist": 100, "pneumoniamnist": 50}},
    "cosine60-ema99": {"schedule": "cosine", "ema": 0.99, "epochs": {"breastmnist": 60, "pneumoniamnist": 30}},
    "cosine60-ema998": {"schedule": "cosine", "ema": 0.998, "epochs": {"breastmnist": 60, "pneumoniamnist": 30}},
    "onecycle60-flip-ema99": {"schedule": "onecycle", "ema": 0.99, "augment": "flip",
                              "epochs": {"breastmnist": 60, "pneumoniamnist": 30}},
    "cosine60-ls-ema99": {"schedule": "cosine", "ema": 0.99, "label_smoothing": 0.1,
                          "epochs": {"breastmnist": 60, "pneumoniamnist": 30}},
    "cosine60-wd05-ema99": {"schedule": "cosine", "ema": 0.99, "weight_decay": 0.05,
                            "epochs": {"breastmnist": 60, "pneumoniamnist": 30}},
    # small data: more, smaller steps per epoch (BreastMNIST has 546 training images)
    "onecycle30-b32": {"schedule": "onecycle", "batch_size": 32, "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-b64": {"schedule": "onecycle", "batch_size": 64, "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-b32-lr5e-4": {"schedule": "onecycle", "batch_size": 32, "lr": 5e-4,
                              "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle60": {"schedule": "onecycle", "epochs": {"breastmnist": 60, "pneumoniamnist": 16}},
    "cosine30-b32": {"schedule": "cosine", "batch_size": 32, "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-b32-flip": {"schedule": "onecycle", "batch_size": 32, "augment": "flip",
                            "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    # whole-pixel shifts (no interpolation, so no blur) with flips: the CIFAR-style augmentation
    "onecycle40-flip-shift3": {"schedule": "onecycle", "augment": "flip-shift3",
                               "epochs": {"breastmnist": 40, "pneumoniamnist": 12}},
}


def jobs_for(recipes: list[str], sets: list[str], seeds: list[int], model: str, device: str,
             threads: int | None) -> list[dict]:
    jobs = []
    for name in recipes:
        recipe = dict(RECIPES[name])
        epochs = recipe.pop("epochs")
        for dataset in sets:
            for seed in seeds:
                jobs.append(dict(dataset=dataset, model=model, seed=seed, epochs=epochs[dataset],
                                 lr=recipe.get("lr", 1e-3), batch_size=recipe.get("batch_size", 128), sampler="none", augment=recipe.get("augment", "none"),
                                 threads=threads, schedule=recipe.get("schedule", "onecycle"),
                                 ema=recipe.get("ema", 0.0), weight_decay=recipe.get("weight_decay", 1e-4),
                                 label_smoothing=recipe.get("label_smoothing", 0.0), device=device, tag=name))
    # longest first, so the pool's tail is short
    return sorted(jobs, key=lambda j: -j["epochs"] * (10 if j["dataset"] == "pneumoniamnist" else 1))


def summarise(rows: list[dict], sets: list[str]) -> tuple[dict, str]:
    summary: dict = {}
    lines = ["# MedMNIST at 28 px: training recipes for meddx `resnet18-28`, selected by validation AUC", "",
             "Each recipe: the same seeds; mean ± SD. **Selected** = highest mean validation AUC for the set "
             "(the test split is never used to choose). MedMNIST v2 ResNet-18 (28) for reference.", "",
             "| set | recipe | val AUC | test ACC | test AUC | meets ResNet-18 (28) row | seeds | selected |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in sets:
        ref = PUBLISHED[dataset]["resnet18_28"]
        per: dict[str, dict] = {}
        for tag in sorted({r["tag"] for r in rows if r["dataset"] == dataset}):
            sel = [r for r in rows if r["dataset"] == dataset and r["tag"] == tag]
            stats = {k: mean_sd([r[k] for r in sel]) for k in ("val_auc", "test_acc", "test_auc")}
            per[tag] = {"n": len(sel), **{f"{k}_mean": v[0] for k, v in stats.items()},
                        **{f"{k}_sd": v[1] for k, v in stats.items()}}
        best = max(per, key=lambda t: (per[t]["n"], per[t]["val_auc_mean"])) if per else None
        summary[dataset] = {"recipes": per, "selected": best, "published": PUBLISHED[dataset]}
        for tag, s in sorted(per.items(), key=lambda kv: -kv[1]["val_auc_mean"]):
            meets = s["test_acc_mean"] >= ref["acc"] and s["test_auc_mean"] >= ref["auc"]
            lines.append(f"| {dataset} | {tag} | {s['val_auc_mean']:.3f} ± {s['val_auc_sd']:.3f} | "
                         f"{s['test_acc_mean']:.3f} ± {s['test_acc_sd']:.3f} | "
                         f"{s['test_auc_mean']:.3f} ± {s['test_auc_sd']:.3f} | {'yes' if meets else 'no'} | "
                         f"{s['n']} | {'**selected**' if tag == best else ''} |")
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", default="resnet18-28")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--log", type=Path, default=None, help="append each finished run here (JSON lines)")
    parser.add_argument("--stem", default="medmnist_28_sweep")
    args = parser.parse_args()
    rows = run_many(jobs_for(args.recipes, args.sets, args.seeds, args.model, args.device, args.threads),
                    args.jobs, args.log)
    summary, markdown = summarise(rows, args.sets)
    markdown += (f"\n\nDevice: {rows[0]['device'] if rows else '-'}; {args.jobs} runs at a time "
                 f"(wall times are not CPU figures). torch {machine()['torch']}.\n")
    paths = write_results(args.stem, {"args": {**vars(args), "log": str(args.log)}, "machine": machine(),
                                      "recipes": RECIPES, "runs": rows, "summary": summary}, markdown)
    print(markdown)
    print("written:", *paths)


if __name__ == "__main__":
    main()
