"""Transfer learning on small data: scratch vs the meddx medical backbone vs a linear probe.

    python -m bench.transfer                          # pretrains the backbone first
    python -m bench.transfer --backbone RUN_FOLDER    # reuse a `meddx pretrain` package

Targets: BreastMNIST (official splits, 28 px) and brain-tumor-mri-navoneel
(5-fold cross-validation over near-duplicate groups, 128 px). For each label
fraction (100/50/25/10% of the training groups, stratified), three regimes:

* ``scratch``: random initialisation;
* ``finetune``: start from the medical backbone (``meddx pretrain`` on
  PneumoniaMNIST, COVID chest X-rays, BCCD blood cells and CHASE retina, never
  the targets) and train everything, the backbone at half the learning rate;
* ``probe``: the same backbone frozen (normalisation statistics included), the
  head trained alone.

AUC on the test split (BreastMNIST) or on the pooled out-of-fold predictions
(brain MRI), with 95% bootstrap CIs that resample images (BreastMNIST) or
near-duplicate groups (brain MRI). Results: ``bench/results/transfer.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench._common import command_line, RUNS, machine, write_results

REGIMES = ("scratch", "finetune", "probe")


def _config(regime: str, arch: str, epochs: int, seed: int):
    from meddx.training import TrainConfig

    lr = {"scratch": 3e-3, "finetune": 2e-3, "probe": 1e-2}[regime]
    return TrainConfig(data="-", model=arch, epochs=epochs, patience=max(8, epochs // 3), lr=lr, seed=seed,
                       freeze="backbone" if regime == "probe" else "none",
                       backbone_lr_mult=0.5 if regime == "finetune" else 1.0)


def _fit_predict(regime: str, arch: str, backbone: Path, stats: tuple[float, float], x_tr, y_tr, x_va, y_va, x_te,
                 epochs: int, seed: int) -> tuple[np.ndarray, float]:
    from meddx.models import create_model
    from meddx.training import fit
    from meddx.training.trainer import predict_proba, seed_everything

    seed_everything(seed)
    model = create_model(arch, num_classes=2, in_chans=1, pretrained=None if regime == "scratch" else backbone)
    mean, std = (float(x_tr.mean()), float(x_tr.std())) if regime == "scratch" else stats
    started = time.perf_counter()
    fit(model, x_tr, y_tr, x_va, y_va, _config(regime, arch, epochs, seed), mean=mean, std=std)
    return predict_proba(model, x_te, mean, std), time.perf_counter() - started


def breastmnist(args, backbone: Path, stats) -> list[dict]:
    from meddx.data.datasets import load_images
    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.training.trainer import prepare_arrays, subsample_labels

    sample = load_images("breastmnist")
    (xtr, ytr), (xva, yva), (xte, yte) = (sample.splits[s] for s in ("train", "val", "test"))
    xtr, xva, xte = (prepare_arrays(x, 28) for x in (xtr, xva, xte))
    ytr, yva, yte = (np.asarray(y).reshape(-1).astype(np.int64) for y in (ytr, yva, yte))
    rows = []
    for fraction in args.fractions:
        keep = subsample_labels(ytr, fraction, seed=args.seed) if fraction < 1 else np.arange(len(ytr))
        for regime in REGIMES:
            proba, seconds = _fit_predict(regime, args.arch, backbone, stats, xtr[keep], ytr[keep], xva, yva, xte,
                                          args.epochs[0], args.seed)
            auc = bootstrap_metrics(yte, proba, n_boot=args.n_boot)["auc"]
            rows.append({"target": "breastmnist", "fraction": fraction, "regime": regime, "n_train": int(len(keep)),
                         "auc": auc["value"], "low": auc["low"], "high": auc["high"], "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def brain(args, backbone: Path, stats) -> list[dict]:
    from meddx.data.datasets import load_images
    from meddx.data.splits import group_kfold, group_train_val_test_split
    from meddx.evaluation.metrics import bootstrap_metrics
    from meddx.training.trainer import prepare_arrays, subsample_labels

    sample = load_images("brain-tumor-mri-navoneel", size=args.brain_size)
    images, labels = sample.splits["all"]
    groups = np.asarray(sample.meta["groups"]["all"])
    x = prepare_arrays(images, args.brain_size)
    y = np.asarray(labels).astype(np.int64)
    folds = list(group_kfold(y, groups, n_splits=args.folds, seed=args.seed))
    rows = []
    for fraction in args.fractions:
        for regime in REGIMES:
            oof = np.zeros((len(y), 2))
            seconds = 0.0
            n_train = []
            for k, (train_idx, test_idx) in enumerate(folds):
                parts = group_train_val_test_split(y[train_idx], groups[train_idx], val=0.15, test=0.0,
                                                   seed=args.seed + k)
                tr, va = train_idx[parts["train"]], train_idx[parts["val"]]
                if fraction < 1:
                    tr = tr[subsample_labels(y[tr], fraction, seed=args.seed + k, groups=groups[tr])]
                n_train.append(len(tr))
                proba, s = _fit_predict(regime, args.arch, backbone, stats, x[tr], y[tr], x[va], y[va], x[test_idx],
                                        args.epochs[1], args.seed + k)
                oof[test_idx] = proba
                seconds += s
            auc = bootstrap_metrics(y, oof, groups=groups, n_boot=args.n_boot)["auc"]
            rows.append({"target": "brain-tumor-mri-navoneel", "fraction": fraction, "regime": regime,
                         "n_train": int(np.mean(n_train)), "auc": auc["value"], "low": auc["low"],
                         "high": auc["high"], "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", type=Path, help="a `meddx pretrain` package (default: pretrain one now)")
    parser.add_argument("--arch", default="cnn-small")
    parser.add_argument("--pretrain-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--pretrain-cap", type=int, default=1000)
    parser.add_argument("--targets", nargs="+", default=["breastmnist", "brain-tumor-mri-navoneel"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--epochs", nargs=2, type=int, default=[30, 25], help="BreastMNIST, brain MRI")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--brain-size", type=int, default=128)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--stem", default="transfer")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pretrain_seconds = None
    backbone = args.backbone
    if backbone is None:
        from meddx.training.pretrain import PretrainConfig, pretrain

        started = time.perf_counter()
        backbone = pretrain(PretrainConfig(model=args.arch, size=args.pretrain_size, epochs=args.pretrain_epochs,
                                           max_per_task=args.pretrain_cap, seed=args.seed,
                                           out=str(RUNS / f"pretrain-{args.arch}-{args.pretrain_size}px")),
                            progress=False)
        pretrain_seconds = time.perf_counter() - started
    package = json.loads((Path(backbone) / "package.json").read_text())
    stats = (float(package["preprocess"]["mean"]), float(package["preprocess"]["std"]))
    rows = []
    if "breastmnist" in args.targets:
        rows += breastmnist(args, Path(backbone), stats)
    if "brain-tumor-mri-navoneel" in args.targets:
        rows += brain(args, Path(backbone), stats)
    lines = [f"# Transfer learning on small data (`{args.arch}`)", "", f"Command: `{command_line()}`", "",
             f"Backbone: `meddx pretrain` package `{Path(backbone).name}` (tasks: "
             f"{', '.join(t['name'] if isinstance(t, dict) else str(t) for t in package.get('tasks', []))}; "
             f"targets excluded). AUC with 95% bootstrap CI. BreastMNIST: official test split (n=156), 28 px. "
             f"Brain MRI: pooled out-of-fold predictions of {args.folds}-fold CV over near-duplicate groups, "
             f"{args.brain_size} px, CI resampling groups.", "",
             "| target | labels | n train | scratch | medical backbone (fine-tune) | linear probe | "
             "backbone − scratch |", "|---|---|---|---|---|---|---|"]
    for target in args.targets:
        for fraction in args.fractions:
            cell = {r["regime"]: r for r in rows if r["target"] == target and r["fraction"] == fraction}
            if not cell:
                continue
            fmt = {k: f"{v['auc']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in cell.items()}
            delta = cell["finetune"]["auc"] - cell["scratch"]["auc"]
            lines.append(f"| {target} | {fraction:.0%} | {cell['scratch']['n_train']} | {fmt['scratch']} | "
                         f"{fmt['finetune']} | {fmt['probe']} | {delta:+.3f} |")
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Training CPU wall time: {total / 60:.1f} min for all cells"
              + (f", plus {pretrain_seconds / 60:.1f} min of pretraining." if pretrain_seconds else ".")]
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "backbone": str(backbone), "pretrain_seconds": pretrain_seconds, "backbone_package": package,
               "machine": machine(), "rows": rows}
    paths = write_results(args.stem, payload, "\n".join(lines))
    print("\n".join(lines))
    print("written:", *paths)


if __name__ == "__main__":
    main()
