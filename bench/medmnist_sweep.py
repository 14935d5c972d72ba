"""Search training recipes for ResNet-18 (28) on MedMNIST, choosing by validation AUC only.

    python -m bench.medmnist_sweep --jobs 12            # on a GPU machine: the whole grid in minutes
    python -m bench.medmnist_sweep --sets breastmnist --recipes step-long-ema99 --jobs 2
    python -m bench.medmnist_sweep --sets breastmnist --recipes onecycle30-medpre --jobs 3   # pretrains first
    python -m bench.medmnist_sweep --from-log RUNS.jsonl --recipes ... --seeds 3 4 5       # re-table, no training

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

from bench._common import RUNS, machine, mean_sd, write_results
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
    # transfer learning: start from meddx's medical backbone (`meddx pretrain`, 28 px, BreastMNIST and
    # PneumoniaMNIST's val/test never seen), whole network at the recipe's lr or the trunk at a lower one
    "onecycle30-medpre": {"schedule": "onecycle", "pretrained": "medical",
                          "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-medpre-blr03": {"schedule": "onecycle", "pretrained": "medical", "backbone_lr_mult": 0.3,
                                "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-medpre-flip": {"schedule": "onecycle", "pretrained": "medical", "augment": "flip",
                               "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    "onecycle30-medpre-b32-flip": {"schedule": "onecycle", "pretrained": "medical", "augment": "flip",
                                   "batch_size": 32, "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
    # a backbone pretrained on three times as many images per task ("pretrain" overrides PRETRAIN)
    "onecycle30-medpre3k": {"schedule": "onecycle", "pretrained": "medical", "pretrain": {"max_per_task": 3000},
                            "epochs": {"breastmnist": 30, "pneumoniamnist": 8}},
}

# `meddx pretrain` settings for the medical backbone when --backbone is not given (about 10 CPU-minutes)
PRETRAIN = {"size": 28, "epochs": 10, "max_per_task": 1000, "seed": 0}


def medical_backbone(model: str, backbone: Path | None, overrides: dict | None = None) -> tuple[str, float | None]:
    """The backbone package for ``pretrained: "medical"`` recipes: ``backbone``, or one pretrained now.

    ``overrides`` (a recipe's ``pretrain``) change :data:`PRETRAIN` and always build (or reuse) their own
    package. Returns its path and the seconds spent pretraining (None when it was given or cached).
    """
    import time

    if backbone is not None and not overrides:
        return str(backbone), None
    settings = {**PRETRAIN, **(overrides or {})}
    out = RUNS / f"pretrain-{model}-{settings['size']}px-e{settings['epochs']}-cap{settings['max_per_task']}"
    if (out / "package.json").exists():
        return str(out), None
    from meddx.training.pretrain import PretrainConfig, pretrain

    started = time.perf_counter()
    pretrain(PretrainConfig(model=model, out=str(out), **settings), progress=False)
    return str(out), time.perf_counter() - started


def jobs_for(recipes: list[str], sets: list[str], seeds: list[int], model: str, device: str,
             threads: int | None, backbones: dict[str, str] | None = None) -> list[dict]:
    """One job per recipe, set and seed; ``backbones`` maps each ``*-medpre*`` recipe to its package."""
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
                                 label_smoothing=recipe.get("label_smoothing", 0.0), device=device, tag=name,
                                 pretrained=(backbones or {}).get(name),
                                 backbone_lr_mult=recipe.get("backbone_lr_mult", 1.0)))
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


def runs_from_log(log: Path, recipes: list[str], sets: list[str], seeds: list[int]) -> list[dict]:
    """The rows of ``log`` (as ``--log`` writes them) for these recipes, sets and seeds; the last one of a repeat."""
    import json

    picked: dict[tuple, dict] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["tag"] in recipes and row["dataset"] in sets and row["seed"] in seeds:
            picked[(row["tag"], row["dataset"], row["seed"])] = row
    if not picked:
        raise SystemExit(f"{log}: no runs of recipes {recipes} on {sets} with seeds {seeds}")
    return list(picked.values())


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
    parser.add_argument("--backbone", type=Path, default=None,
                        help="`meddx pretrain` package for the *-medpre recipes (default: pretrain one now, cached)")
    parser.add_argument("--from-log", type=Path, default=None,
                        help="train nothing: summarise the runs of --recipes, --sets and --seeds found in this log")
    parser.add_argument("--stem", default="medmnist_28_sweep")
    args = parser.parse_args()
    backbones: dict[str, str] = {}
    pretrain_seconds: dict[str, float] = {}
    if args.from_log is not None:
        rows = runs_from_log(args.from_log, args.recipes, args.sets, args.seeds)
        backbones = {r["tag"]: r["pretrained"] for r in rows if r.get("pretrained")}
    else:
        for name in args.recipes:
            if RECIPES[name].get("pretrained") == "medical":
                backbones[name], seconds = medical_backbone(args.model, args.backbone, RECIPES[name].get("pretrain"))
                if seconds:
                    pretrain_seconds[backbones[name]] = seconds
        rows = run_many(jobs_for(args.recipes, args.sets, args.seeds, args.model, args.device, args.threads,
                                 backbones), args.jobs, args.log)
    summary, markdown = summarise(rows, args.sets)
    markdown += (f"\n\nDevice: {rows[0]['device'] if rows else '-'}; {args.jobs} runs at a time "
                 f"(wall times are not CPU figures). torch {machine()['torch']}.\n")
    if args.from_log is not None:
        markdown += f"\nSummarised from `{args.from_log.name}` (runs of earlier invocations, seeds {args.seeds}).\n"
    for path in sorted(set(backbones.values())):
        names = sorted(name for name, p in backbones.items() if p == path)
        settings = {**PRETRAIN, **RECIPES[names[0]].get("pretrain", {})}
        spent = pretrain_seconds.get(path)
        markdown += (f"\nMedical backbone of {', '.join(f'`{n}`' for n in names)}: `{path}` (`meddx pretrain` "
                     f"settings {settings}" + (f"; pretrained in this run in {spent / 60:.1f} min" if spent else "")
                     + ").\n")
    paths = write_results(args.stem, {"args": {**vars(args), "log": str(args.log), "from_log": str(args.from_log),
                                               "backbone": str(args.backbone) if args.backbone else None},
                                      "backbones": backbones, "pretrain_seconds": pretrain_seconds,
                                      "machine": machine(),
                                      "recipes": RECIPES, "runs": rows, "summary": summary}, markdown)
    print(markdown)
    print("written:", *paths)


if __name__ == "__main__":
    main()
