"""Multimodal fusion on covid-cxr-ieee8023-lungbbox: chest X-ray + clinical values.

    python -m bench.fusion --backbone BACKBONE      # a `meddx pretrain` package without the covid set

Two targets: COVID-19 vs other findings, and survival (died vs survived, where recorded).
Four models per target: image-only (linear probe on the frozen transfer-learned
backbone), clinical-only (logistic regression on imputed values + missingness
indicators), late fusion (stacking of calibrated branch outputs) and intermediate
fusion (gated attention over the two embeddings, modality dropout). Patient-level
5-fold CV (stratified, grouped by patientid); AUC of the pooled out-of-fold predictions
with 95% bootstrap CIs resampling patients; the paired difference of each fusion model
against the best single modality (same patient resamples); and the fusion models'
AUC when the clinical data is withheld at prediction time (missing modality).
Results: ``bench/results/fusion.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from bench._common import RUNS, machine, write_results

ROWS = ("image", "clinical", "late", "intermediate")
CHECK = "clinical (missingness indicators only)"


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _members(groups: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def bootstrap(y: np.ndarray, preds: dict[str, np.ndarray], groups: np.ndarray, pairs: list[tuple[str, str]],
              n_boot: int, seed: int) -> tuple[dict, dict]:
    """AUC CIs per prediction and paired AUC differences, all from the same patient resamples."""
    rng = np.random.default_rng(seed)
    members = _members(groups)
    samples = {k: [] for k in preds}
    diffs = {f"{a} - {b}": [] for a, b in pairs}
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[idx])) < 2:
            continue
        aucs = {k: _auc(y[idx], p[idx]) for k, p in preds.items()}
        for k, v in aucs.items():
            samples[k].append(v)
        for a, b in pairs:
            diffs[f"{a} - {b}"].append(aucs[a] - aucs[b])
    ci = {}
    for k, p in preds.items():
        low, high = np.quantile(samples[k], [0.025, 0.975])
        ci[k] = {"auc": _auc(y, p), "low": float(low), "high": float(high)}
    dci = {}
    for a, b in pairs:
        arr = np.asarray(diffs[f"{a} - {b}"])
        low, high = np.quantile(arr, [0.025, 0.975])
        dci[f"{a} - {b}"] = {"diff": _auc(y, preds[a]) - _auc(y, preds[b]), "low": float(low), "high": float(high),
                             "p_le_0": float((arr <= 0).mean())}
    return ci, dci


def embeddings(data, spec: dict, cache: Path) -> tuple[np.ndarray, float, bool]:
    from meddx.fusion.embed import build_trunk, embed

    key = hashlib.sha256((spec["source"] + str(data.images.shape) + str(data.images.sum())).encode()).hexdigest()[:12]
    path = cache / f"fusion-embeddings-{key}.npz"
    if path.is_file():
        return np.load(path)["E"], 0.0, True
    started = time.perf_counter()
    E = embed(build_trunk(spec), data.images, spec["mean"], spec["std"])
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, E=E)
    return E, seconds, False


def finetune_fold(data, spec: dict, rows_tr: np.ndarray, rows_te: np.ndarray, y_all: np.ndarray, groups_all: np.ndarray,
                  args, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fine-tune the backbone (whole network, backbone at half the learning rate) on one fold's training patients.

    Returns the test-row logits, the inner validation rows (indices into ``rows_tr``) and their logits (for a
    Platt calibration that did not see the training rows), and the seconds taken.
    """
    from meddx.data.splits import group_train_val_test_split
    from meddx.models import create_model
    from meddx.training import TrainConfig, fit
    from meddx.training.trainer import predict_logits, prepare_arrays, seed_everything

    seed_everything(seed)
    parts = group_train_val_test_split(y_all[rows_tr], groups_all[rows_tr], val=0.15, test=0.0, seed=seed)
    tr, va = rows_tr[parts["train"]], rows_tr[parts["val"]]
    x = prepare_arrays(data.images, None)
    model = create_model(spec["architecture"], num_classes=2, in_chans=1, pretrained=spec["source"])
    config = TrainConfig(data="-", model=spec["architecture"], epochs=args.finetune_epochs,
                         patience=max(6, args.finetune_epochs // 3), lr=2e-3, seed=seed, backbone_lr_mult=0.5,
                         hflip=0.0)
    started = time.perf_counter()
    fit(model, x[tr], y_all[tr], x[va], y_all[va], config, mean=spec["mean"], std=spec["std"])
    seconds = time.perf_counter() - started

    def logit(rows: np.ndarray) -> np.ndarray:
        z = predict_logits(model, x[rows], spec["mean"], spec["std"])
        return z[:, 1] - z[:, 0]

    return logit(rows_te), parts["val"], logit(va), seconds


def run_target(data, E: np.ndarray, target: str, args, spec: dict | None = None) -> dict:
    from meddx.data.splits import group_kfold
    from meddx.fusion.clinical import ClinicalPrep
    from meddx.fusion.models import FusionModel

    idx = data.labelled(target)
    y = data.targets[target][idx]
    groups = np.asarray(data.groups[idx]).astype(str)
    table = data.clinical.iloc[idx].reset_index(drop=True)
    Et = E[idx]
    repeats = []
    for rep in range(args.repeats):
        seed = args.seed + rep
        oof = {k: np.full(len(y), np.nan) for k in ROWS}
        withheld = {k: np.full(len(y), np.nan) for k in ("late", "intermediate")}
        seconds = {k: 0.0 for k in ROWS}
        gates = np.full((len(y), 2), np.nan)
        finetune = args.finetune_epochs > 0 and rep == 0
        if finetune:
            for name in ("image (fine-tuned)", "late (fine-tuned image)", CHECK):
                oof[name] = np.full(len(y), np.nan)
                seconds[name] = 0.0
        for k, (tr, te) in enumerate(group_kfold(y, groups, n_splits=args.folds, seed=seed)):
            prep = ClinicalPrep().fit(table.iloc[tr])
            Xtr, ptr = prep.transform(table.iloc[tr])
            Xte, pte = prep.transform(table.iloc[te])
            Xnone, _ = prep.transform(table.iloc[te].map(lambda v: None).astype(object))
            for kind in ROWS:
                started = time.perf_counter()
                model = FusionModel(kind, seed=seed * 100 + k, epochs=args.epochs, members=args.members)
                model.fit(Et[tr], Xtr, ptr, y[tr], groups[tr])
                oof[kind][te] = model.predict_proba(Et[te], Xte, pte)
                if kind == "intermediate":
                    gates[te] = model.last_gates
                if kind in withheld:
                    withheld[kind][te] = model.predict_proba(Et[te], Xnone, np.zeros(len(te), bool))
                seconds[kind] += time.perf_counter() - started
            if args.extra_checks:
                from meddx.fusion.models import fit_lr

                cols = [i for i, n in enumerate(prep.feature_names) if n.endswith("_missing")]
                lr, _ = fit_lr(Xtr[:, cols], y[tr], groups[tr], seed)
                oof.setdefault(CHECK, np.full(len(y), np.nan))[te] = lr.predict_proba(Xte[:, cols])[:, 1]
            if finetune:
                from meddx.fusion.models import Platt, fit_lr, oof_logits

                z_te, va_pos, z_va, sec = finetune_fold(data, spec, idx[tr], idx[te], data.targets[target],
                                                        np.asarray(data.groups).astype(str), args, seed * 100 + k)
                oof["image (fine-tuned)"][te] = z_te
                seconds["image (fine-tuned)"] += sec
                started = time.perf_counter()
                img_cal = Platt().fit(z_va, y[tr][va_pos])
                cli_lr, C = fit_lr(Xtr, y[tr], groups[tr], seed)
                cli_cal = Platt().fit(oof_logits(Xtr, y[tr], groups[tr], C, seed), y[tr])
                z_cli = cli_lr.predict_proba(Xte)[:, 1]
                z_cli = np.log(np.clip(z_cli, 1e-6, 1 - 1e-6) / np.clip(1 - z_cli, 1e-6, 1))
                p_img = img_cal(z_te)
                oof["late (fine-tuned image)"][te] = np.where(pte, (p_img + cli_cal(z_cli)) / 2, p_img)
                seconds["late (fine-tuned image)"] += sec + time.perf_counter() - started
        repeats.append({"seed": seed, "oof": oof, "withheld": withheld, "seconds": seconds, "gates": gates})
        print(json.dumps({"target": target, "seed": seed,
                          **{k: round(_auc(y, v), 4) for k, v in oof.items()},
                          **{f"{k} (no clinical)": round(_auc(y, v), 4) for k, v in withheld.items()},
                          "seconds": {k: round(v, 1) for k, v in seconds.items()}}), flush=True)
    first = repeats[0]
    best_single = max(("image", "clinical"), key=lambda k: _auc(y, first["oof"][k]))
    preds = {**first["oof"], **{f"{k} (clinical withheld)": v for k, v in first["withheld"].items()}}
    pairs = [("late", best_single), ("intermediate", best_single), ("late", "image"), ("intermediate", "image"),
             ("late", "clinical"), ("intermediate", "clinical"),
             ("intermediate (clinical withheld)", "image"), ("late (clinical withheld)", "image")]
    pairs = list(dict.fromkeys(pairs))
    if args.finetune_epochs <= 0:
        ci, diffs = bootstrap(y, preds, groups, pairs, args.n_boot, args.seed)
    if args.finetune_epochs > 0:
        best_ft = max(("image (fine-tuned)", "clinical"), key=lambda k: _auc(y, first["oof"][k]))
        pairs += [("image (fine-tuned)", "image"), ("late (fine-tuned image)", best_ft),
                  ("intermediate", "image (fine-tuned)")]
        ci, diffs = bootstrap(y, preds, groups, pairs, args.n_boot, args.seed)
    if args.extra_checks:
        pairs += [("clinical", CHECK)]
        ci, diffs = bootstrap(y, preds, groups, pairs, args.n_boot, args.seed)
    per_repeat = {k: [_auc(y, r["oof"][k]) for r in repeats] for k in ROWS}
    per_repeat.update({f"{k} (clinical withheld)": [_auc(y, r["withheld"][k]) for r in repeats]
                       for k in ("late", "intermediate")})
    present = ClinicalPrep().fit(table).transform(table)[1]
    return {"target": target, "class_names": data.class_names[target], "n_images": int(len(y)),
            "n_patients": int(len(np.unique(groups))), "n_positive_images": int(y.sum()),
            "n_positive_patients": int(len(np.unique(groups[y == 1]))),
            "rows_with_any_clinical_value": int(present.sum()),
            "features_observed": {c: int(table[c].notna().sum()) for c in table.columns},
            "best_single": best_single, "auc": ci, "paired_differences": diffs,
            "auc_over_cv_seeds": {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                      "values": v} for k, v in per_repeat.items()},
            "mean_gate_weights_image_clinical": [float(x) for x in np.nanmean(first["gates"], 0)],
            "seconds_per_model_first_cv": first["seconds"],
            "finetune_epochs": args.finetune_epochs}


def _fmt(c: dict) -> str:
    return f"{c['auc']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def markdown(payload: dict) -> str:
    spec = payload["backbone"]
    lines = ["# Multimodal fusion: chest X-ray + clinical values (covid-cxr-ieee8023-lungbbox)", "",
             f"Patient-level {payload['args']['folds']}-fold CV (StratifiedGroupKFold by `patientid`, seed "
             f"{payload['args']['seed']}); AUC of the pooled out-of-fold predictions, 95% bootstrap CI resampling "
             f"patients ({payload['args']['n_boot']} resamples). Images {spec['size']} px grey. Image branch: frozen "
             f"`{spec['architecture']}` trunk from `meddx pretrain` on {', '.join(spec['tasks']) or 'nothing'} "
             f"(data sets: {', '.join(spec['pretrained_on']) or 'none'}; the covid set was excluded, so no test "
             "patient was seen in pretraining). Clinical: "
             f"{', '.join(payload['features'])} (median imputation + missingness indicators, fitted per fold).", ""]
    for res in payload["targets"]:
        neg, pos = res["class_names"]
        lines += [f"## {res['target']}: {pos} (positive) vs {neg}", "",
                  f"{res['n_images']} images of {res['n_patients']} patients; {res['n_positive_images']} positive "
                  f"images ({res['n_positive_patients']} patients). Rows with at least one clinical value: "
                  f"{res['rows_with_any_clinical_value']}. Values observed: "
                  + ", ".join(f"{k} {v}" for k, v in res["features_observed"].items()) + ".", "",
                  f"| model | AUC [95% CI] | AUC, clinical withheld at prediction | mean (sd) AUC over "
                  f"{payload['args']['repeats']} CV seeds | training s ({payload['args']['folds']} folds) |", "|---|---|---|---|---|"]
        for kind in ROWS:
            w = res["auc"].get(f"{kind} (clinical withheld)")
            rep = res["auc_over_cv_seeds"][kind]
            lines.append(f"| {kind}{' (fusion)' if kind in ('late', 'intermediate') else ''} | {_fmt(res['auc'][kind])} | "
                         f"{_fmt(w) if w else ('= image-only' if kind == 'image' else 'n/a (no input)')} | "
                         f"{rep['mean']:.3f} ({rep['sd']:.3f}) | {res['seconds_per_model_first_cv'][kind]:.1f} |")
        for name in ("image (fine-tuned)", "late (fine-tuned image)", CHECK):
            if name in res["auc"]:
                lines.append(f"| {name} | {_fmt(res['auc'][name])} | - | - (seed {payload['args']['seed']} only) | "
                             f"{res['seconds_per_model_first_cv'].get(name, float('nan')):.1f} |")
        lines += ["", f"Best single modality (by point AUC, seed {payload['args']['seed']}): **{res['best_single']}**. "
                  "Paired AUC differences (same patient resamples):", "", "| comparison | ΔAUC [95% CI] | share of resamples ≤ 0 |",
                  "|---|---|---|"]
        for name, d in res["paired_differences"].items():
            lines.append(f"| {name} | {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_le_0']:.3f} |")
        g = res["mean_gate_weights_image_clinical"]
        lines += ["", f"Intermediate fusion's mean attention weights (image, clinical) on test rows: "
                  f"{g[0]:.2f}, {g[1]:.2f}.", ""]
    lines += [f"Wall time: embeddings {payload['embedding_seconds']:.1f} s"
              f"{' (cached)' if payload['embedding_cached'] else ''}, loading {payload['load_seconds']:.1f} s, "
              f"all CV fits {payload['cv_seconds'] / 60:.1f} min; backbone pretraining "
              f"{payload.get('backbone_pretrain_seconds') or float('nan'):.0f} s. Machine: {payload['machine']['cpu']}, "
              f"{payload['machine']['threads']} torch thread(s)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="`meddx pretrain` package folder (not trained on covid)")
    parser.add_argument("--targets", nargs="+", default=["covid", "survival"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="CV seeds (the CIs use the first)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="intermediate fusion steps (default: chosen by grouped inner CV, up to 300)")
    parser.add_argument("--members", type=int, default=5, help="intermediate fusion ensemble members")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="also fine-tune the backbone per fold (image-only and late-average rows; first CV seed)")
    parser.add_argument("--extra-checks", action="store_true",
                        help=f"add the row '{CHECK}' (does missingness alone predict the target?)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the backbone's own)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stem", default="fusion")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from meddx.fusion.data import COVID_FEATURES, COVID_SET, load_covid
    from meddx.fusion.embed import resolve_backbone

    spec = resolve_backbone(args.backbone, COVID_SET)
    if args.size and args.size != spec["size"]:  # the trunk is convolutional: it runs at any size
        spec = {**spec, "pretrained_size": spec["size"], "size": args.size}
    started = time.perf_counter()
    data = load_covid(spec["size"])
    load_seconds = time.perf_counter() - started
    E, embed_seconds, cached = embeddings(data, spec, RUNS)
    print(json.dumps({"images": len(E), "embedding_dim": E.shape[1], "embed_seconds": embed_seconds,
                      "cached": cached, "notes": data.notes}), flush=True)
    started = time.perf_counter()
    results = [run_target(data, E, t, args, spec) for t in args.targets]
    cv_seconds = time.perf_counter() - started
    backbone_pkg = json.loads((Path(args.backbone) / "package.json").read_text())
    payload = {"args": vars(args), "backbone": spec, "backbone_pretrain_seconds": backbone_pkg.get("training", {}).get(
        "seconds") if isinstance(backbone_pkg.get("training"), dict) else backbone_pkg.get("train_seconds"),
               "backbone_heldout": {t["name"]: t.get("heldout_balanced_accuracy") for t in backbone_pkg.get("tasks", [])},
               "features": list(COVID_FEATURES), "data_notes": data.notes, "load_seconds": load_seconds,
               "embedding_seconds": embed_seconds, "embedding_cached": cached, "cv_seconds": cv_seconds,
               "machine": machine(), "targets": results}
    text = markdown(payload)
    paths = write_results(args.stem, payload, text)
    print(text)
    print("written:", *paths)


if __name__ == "__main__":
    main()
