"""Generalisation benchmark: every default model, internal beside external validation (issue 17).

    python -m bench.generalisation                       # every catalogue set meddx trains by default
    python -m bench.generalisation --only heart-disease-uci,brain-tumor-mri-navoneel
    python -m bench.generalisation --package ecg-cinc2017-af=RUN   # reuse a package instead of training

For each catalogue set that ``meddx train SET`` accepts, the default model is trained with
default settings (``meddx train SET``, cached under ``bench/runs/generalisation``) and
``meddx validate`` runs every external check the data allow: other collections in the
mirror, leave-one-source-out / leave-one-site-out retraining where the catalogue knows the
sources. The sealed sets the maintainers keep apart are never used.

Rows ``{set, model, internal_auc, external_auc, external_kind, ece, ece_floor}`` (AUC with 95%
CIs; ``ece`` is the external check's, beside the ECE a perfectly calibrated model shows at that
n) go to ``bench/results/generalisation.{json,md}``, with the figures the issue quotes for the
models before this work, in the same table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench._common import RUNS, machine, write_results

SETS = ("pneumoniamnist", "breastmnist", "brain-tumor-mri-navoneel", "covid-cxr-ieee8023-lungbbox",
        "ecg-cinc2017-af", "heart-disease-uci", "breast-cancer-wisconsin-diagnostic", "pima-indians-diabetes",
        "heart-failure-clinical-records", "stroke-kaggle")
SLOW = {"ecg-cinc2017-af": "the default ECG model (a CNN + features ensemble) trains for more than 90 min on 2 "
                           "cores; pass --package ecg-cinc2017-af=RUN to include it",
        "covid-cxr-ieee8023-lungbbox": "the default model is a 5-fold CV ensemble (small-data recipe) and "
                                       "leave-one-country-out retrains it once per country (3): several hours on 2 "
                                       "shared cores; pass --package covid-cxr-ieee8023-lungbbox=RUN to include it"}
ISSUE_FIGURES = {
    "brain-tumor-mri-navoneel": "issue 17 (old default): validation AUC 0.69; another collection 0.49 / 0.57",
    "heart-disease-uci": "issue 17 (old default): other hospitals 0.67 [0.59, 0.75]; mean-imputation LR 0.73",
    "ecg-cinc2017-af": "issue 17: challenge score 0.830 own test, 0.820 [0.795, 0.845] on 1,000 unseen records",
    "pneumoniamnist": "MedMNIST v2 (Yang et al. 2023): ResNet-18 (28) test AUC 0.944",
    "breastmnist": "MedMNIST v2 (Yang et al. 2023): ResNet-18 (28) test AUC 0.901",
}


def default_run(data: str) -> Path:
    """``meddx train DATA`` with default settings, cached."""
    from meddx.cli import main

    run = RUNS / "generalisation" / f"{data}-default"
    if not (run / "package.json").is_file():
        code = main(["train", data, "--out", str(run), "--no-progress"])
        if code != 0:
            raise SystemExit(f"meddx train {data} failed with exit code {code}")
    return run


def simulated_shift(data: str) -> list[dict[str, Any]]:
    """Rows of ``bench/results/small_data.json`` (the small-data recipe's simulated scanner shift of held-out
    folds) for ``data``: the only external-like estimate for a set the mirror has no other collection of."""
    from bench._common import RESULTS

    path = RESULTS / "small_data.json"
    if data != "brain-tumor-mri-navoneel" or not path.is_file():
        return []
    import json

    rows = []
    for r in json.loads(path.read_text(encoding="utf-8"))["rows"]:
        if r.get("row") == "brain-new" and isinstance(r.get("external"), dict):
            for name, ext in r["external"].items():
                rows.append({"kind": f"simulated scanner shift ({name}), held-out CV folds",
                             "source": "bench/results/small_data.json (brain-new)", "n": r.get("n"),
                             "auc": ext["auc"], "ece": ext.get("ece"), "ece_floor": ext.get("noise_floor_p95"),
                             "note": "not another hospital: same collection, transformed"})
    return rows


def rows_of(data: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per external check (or one row saying none exists)."""
    internal = result["internal"]
    base = {"set": data, "model": result.get("model"), "modality": result.get("modality"),
            "internal_auc": internal["auc"], "internal_n": internal["n"], "internal_kind": internal["source"],
            "internal_ece": internal.get("ece"), "internal_ece_floor": internal.get("ece_floor"),
            "issue_figure": ISSUE_FIGURES.get(data)}
    externals = (result.get("external") or []) + simulated_shift(data)
    if not externals:
        return [{**base, "external_auc": None, "external_kind": "none available in the mirror",
                 "external_source": None, "external_n": None, "ece": internal.get("ece"),
                 "ece_floor": internal.get("ece_floor"), "ece_of": "internal"}]
    return [{**base, "external_auc": r["auc"], "external_kind": r["kind"], "external_source": r["source"],
             "external_n": r["n"], "external_prevalence": r.get("prevalence"), "ece": r.get("ece"),
             "ece_floor": r.get("ece_floor"), "ece_of": "external", "ood_flagged": r.get("ood_flagged"),
             "auc_not_flagged": r.get("auc_not_flagged"),
             **({"recalibrated": r["recalibrated"]} if "recalibrated" in r else {})} for r in externals]


def _ci(a: dict[str, Any] | None) -> str:
    from meddx.evaluation.validate import format_ci

    return format_ci(a, missing="—")


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Generalisation: internal vs external validation of every default model (issue 17)", "",
             f"Made by `{result['command']}` in {result['seconds'] / 60:.1f} min on {result['machine']['cores']} CPU "
             f"cores ({result['machine']['date']}). Each model: `meddx train SET` with default settings, then "
             "`meddx validate`. Internal = the partition of its own data the model never saw; external = other "
             "collections in the mirror and leave-one-source-out retraining where the sources are known (never "
             "the sealed sets). AUC with 95% bootstrap CIs (patients/groups resampled where known); ECE of the "
             "external check beside its floor, the ECE a perfectly calibrated model shows at that n (95th "
             "percentile): an ECE within its floor is not evidence of miscalibration. Goal: external within "
             "0.05 of internal.", "",
             "| set | internal AUC | external AUC | external check | n | ECE | floor | OOD flagged | AUC not flagged "
             "| gap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        gap = "—"
        if r.get("external_auc") and r["external_auc"].get("value") is not None:
            gap = f"{r['internal_auc']['value'] - r['external_auc']['value']:+.3f}"
        ece = f"{r['ece']:.3f}" if r.get("ece") is not None else "—"
        floor = f"{r['ece_floor']:.3f}" if r.get("ece_floor") is not None else "—"
        flagged = f"{r['ood_flagged']:.2f}" if r.get("ood_flagged") is not None else "—"
        check = r["external_kind"] + (f": {r['external_source']}" if r.get("external_source") else "")
        lines.append(f"| {r['set']} | {_ci(r['internal_auc'])} | {_ci(r.get('external_auc'))} | {check} | "
                     f"{r.get('external_n') or '—'} | {ece} | {floor} | {flagged} | {_ci(r.get('auc_not_flagged'))} "
                     f"| {gap} |")
    lines += ["", "Before this work (figures quoted by the issue or the published benchmark):", ""]
    for r in {r["set"]: r for r in result["rows"]}.values():
        if r.get("issue_figure"):
            lines.append(f"- {r['set']}: {r['issue_figure']}")
    if result.get("skipped"):
        lines += ["", "Not run:", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()]
    lines += ["", "Seconds per set (training + validation): " + ", ".join(
        f"{k} {v:.0f}" for k, v in result["seconds_per_set"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated sets (default: all)")
    parser.add_argument("--package", action="append", default=[], help="SET=RUN: use this package for SET")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--stem", default="generalisation")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of other sets from the existing table (runs of several sessions)")
    args = parser.parse_args()
    from meddx.evaluation.validate import validate

    given = dict(item.split("=", 1) for item in args.package)
    sets = args.only.split(",") if args.only else list(SETS)
    start = time.perf_counter()
    rows, skipped, seconds = [], {}, {}
    for data in sets:
        t0 = time.perf_counter()
        if data in given:
            run = Path(given[data])
        elif data in SLOW:
            skipped[data] = SLOW[data]
            continue
        else:
            run = default_run(data)
        print(f"validating {data} ({run.name})", flush=True)
        result = validate(run, n_boot=args.n_boot)
        rows += rows_of(data, result)
        seconds[data] = time.perf_counter() - t0
    command = "python -m bench.generalisation" + (f" --only {args.only}" if args.only else "") + "".join(
        f" --package {k}=RUN" for k in given)
    elapsed = time.perf_counter() - start
    if args.merge:
        from bench._common import RESULTS

        old_path = RESULTS / f"{args.stem}.json"
        if old_path.is_file():
            import json

            old = json.loads(old_path.read_text(encoding="utf-8"))
            rows = [r for r in old["rows"] if r["set"] not in sets] + rows
            seconds = {**{k: v for k, v in old["seconds_per_set"].items() if k not in sets}, **seconds}
            skipped = {**{k: v for k, v in old.get("skipped", {}).items() if k not in sets and k not in seconds},
                       **skipped}
            command = f"{old['command']}; then {command} --merge"
            elapsed += old["seconds"]
        order = {name: i for i, name in enumerate(SETS)}
        rows.sort(key=lambda r: order.get(r["set"], len(order)))
    payload = {"command": command, "machine": machine(), "seconds": elapsed,
               "seconds_per_set": seconds, "rows": rows, "skipped": skipped}
    json_path, md_path = write_results(args.stem, payload, markdown(payload))
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
