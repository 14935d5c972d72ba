"""Benchmark: does the records OOD gate and batch-shift check tell a hospital when not to trust the heart model?

Run: ``python -m bench.ood_records`` (``--quick``: one seed, 200 bootstrap resamples).
Writes ``bench/results/ood_records.json`` and ``ood_records.md`` (``ood_records_quick.*`` with --quick).

(a) In distribution: the default ``meddx train heart-disease-uci`` model (since issue 17 the
    LR + monotone boosting blend with conditional-mean imputation; seed 0; also seeds 1-4)
    evaluated by ``meddx evaluate`` on its own held-out 20% test split.
    The gate's flag rate should be near its 5% target and the recommendation "use as is".
(b) Leave one site out: the same recipe trained on one hospital's rows only (Cleveland or
    Hungary, from the data set's ``dataset`` column; 80% train, its own 20% test), evaluated on
    its own test rows (in-site comparator) and on every row of the other hospital.

Every figure is what ``meddx evaluate`` writes in its JSON ``shift`` block: share flagged
(Wilson 95% CI), flagged by distance / by training range, KS test of the OOD scores against
the out-of-fold training scores, prevalence estimated without labels (prior-shift EM,
bootstrap 95% CI) against the observed one, calibration-in-the-large (bootstrap 95% CI), ECE
against its noise floor at that n, and the recommendation. The flag share of every stored
detector (each with its own cross-fitted threshold) is added for comparison. One CPU thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench._common import machine, write_results  # noqa: E402

DATA = "heart-disease-uci"
SITES = ("Cleveland", "Hungary")


def _methods(folder: Path, package: dict[str, Any], data: str, split: str | None) -> dict[str, Any]:
    """Flag share of every stored detector on the evaluated rows (thresholds from the package)."""
    import numpy as np

    from meddx.records.ood import log_probs, model_inputs, wilson
    from meddx.records.package import _score, load
    from meddx.trust.ood import load_gate

    bundle = load(folder, package)
    s = _score(package, bundle, data, split)
    gate = load_gate(folder, package)
    Z = model_inputs(bundle["pipeline"], s["rows"])
    logp = log_probs(bundle["pipeline"].named_steps["model"], Z)
    out = {}
    for name in gate.detectors:
        flags = np.array([r.flagged for r in gate.assess(Z, logp, name)])
        out[name] = {"flagged": int(flags.sum()), "share": wilson(int(flags.sum()), len(flags))}
    return out


def _evaluate(folder: Path, data: str, split: str | None, n_boot: int) -> dict[str, Any]:
    from meddx.packaging.registry import read_package
    from meddx.records.package import evaluate

    package = read_package(folder)
    r = evaluate(folder, package, data, split=split, n_boot=n_boot, seed=0)
    sh = r["shift"]
    return {"data": Path(data).name if Path(data).is_file() else data, "split": r["split"], "n": r["n"],
            "validation": r["validation"], "rejected_by_input_check": r["input_check"]["rejected"],
            "auc": r["metrics"]["auc"], "ece": r["metrics"]["ece"], "flagged": sh["flagged"],
            "ks_ood_scores": sh["ks_ood_scores"], "prevalence": sh["prevalence"],
            "calibration_in_the_large": sh["calibration_in_the_large"], "ece_noise_floor": sh["ece"]["noise_floor"],
            "recommendation": sh["recommendation"], "methods": _methods(folder, package, data, split),
            "ood_threshold_on": package["ood"]["threshold_on"]}


def run(seeds: tuple[int, ...], n_boot: int) -> dict[str, Any]:
    import pandas as pd

    from meddx.data.catalogue import fetch
    from meddx.records.package import train
    from meddx.records.schema import get_task

    work = Path(tempfile.mkdtemp(prefix="ood_records-"))
    results: dict[str, Any] = {"in_distribution": [], "leave_one_site_out": []}
    for seed in seeds:
        t0 = time.perf_counter()
        run_dir = train(DATA, seed=seed, out=work / f"default-{seed}")
        from meddx.packaging.registry import read_package

        row = {"seed": seed, "model": f"{read_package(run_dir)['architecture']} (default)",
               **_evaluate(run_dir, DATA, None, n_boot)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results["in_distribution"].append(row)
        print(f"(a) seed {seed}: flagged {row['flagged']['n']}/{row['n']} -> {row['recommendation']['action']}",
              flush=True)
    raw = pd.read_csv(fetch(DATA) / str(get_task(DATA).file))
    for site in SITES:
        raw[raw["dataset"] == site].to_csv(work / f"{site}.csv", index=False)
    for source, target in (SITES, SITES[::-1]):
        t0 = time.perf_counter()
        run_dir = train(str(work / f"{source}.csv"), seed=0, out=work / f"site-{source}")
        own = _evaluate(run_dir, str(work / f"{source}.csv"), None, n_boot)
        other = _evaluate(run_dir, str(work / f"{target}.csv"), None, n_boot)
        results["leave_one_site_out"].append({"train": source, "test": target, "own_test_split": own,
                                              "other_site": other, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"(b) {source} -> {target}: flagged {other['flagged']['n']}/{other['n']} -> "
              f"{other['recommendation']['action']}", flush=True)
    return results


def _ci(block: dict[str, float], pct: bool = True) -> str:
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")
    return f"{f(block['value'])} ({f(block['low'])}–{f(block['high'])})"


def _line(label: str, r: dict[str, Any]) -> str:
    fl, pv, ci = r["flagged"], r["prevalence"], r["calibration_in_the_large"]
    ks = r["ks_ood_scores"]
    return (f"| {label} | {r['n']} | {fl['n']} = {_ci(fl['share'])} | {fl['by_distance']} / {fl['by_training_range']} "
            f"| {ks['statistic']:.2f} (p={ks['p_value']:.2g}) "
            f"| {pv['observed']:.2f} / {pv['estimated_unlabelled']:.2f} "
            f"({pv['estimated_low']:.2f}–{pv['estimated_high']:.2f}) | {_ci(ci, False)} "
            f"| {r['ece']['value']:.3f} / {r['ece_noise_floor']['p95']:.3f} | {_ci(r['auc'], False)} "
            f"| **{r['recommendation']['action']}** |")


def markdown(payload: dict[str, Any]) -> str:
    res = payload["results"]
    head = ("| evaluated on | n | flagged (95% CI) | by distance / by range | KS of OOD scores | prevalence observed / "
            "estimated (95% CI) | calibration-in-the-large (95% CI) | ECE / floor (p95) | AUC (95% CI) "
            "| recommendation |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"# Records OOD and site shift: {DATA}", "",
             f"Command: `{payload['command']}`. Run time {payload['seconds'] / 60:.1f} min on "
             f"{payload['machine']['cores']} shared CPU cores ({payload['machine']['cpu']}), one thread; "
             f"{payload['n_boot']} bootstrap resamples for the metric CIs.", "",
             "Gate: squared Mahalanobis distance on the standardised model inputs, threshold = 95th percentile of "
             "5-fold out-of-fold training scores (target in-distribution flag rate 5%), plus a flag when a value "
             "lies more than 10% of the training range beyond it. Recommendation: `meddx.trust.drift.recommend` "
             "(do not use here when more than max(3 × 5%, 20%) are flagged; recalibrate when the ECE passes its "
             "noise floor or |calibration-in-the-large| > 0.05).", "",
             "## (a) Default model on its own test split", "", head]
    for r in res["in_distribution"]:
        lines.append(_line(f"test split, seed {r['seed']}", r))
    pooled_n = sum(r["n"] for r in res["in_distribution"])
    pooled_k = sum(r["flagged"]["n"] for r in res["in_distribution"])
    from meddx.records.ood import wilson

    if len(res["in_distribution"]) > 1:
        lines += ["", f"Pooled over the {len(res['in_distribution'])} seeds: {pooled_k} of {pooled_n} test rows "
                      f"flagged = {_ci(wilson(pooled_k, pooled_n))} (target 5%)."]
    lines += ["", "## (b) Leave one site out (train on one hospital, evaluate on the other)", "", head]
    for r in res["leave_one_site_out"]:
        lines.append(_line(f"{r['train']} model, own test split", r["own_test_split"]))
        lines.append(_line(f"{r['train']} model → all of {r['test']}", r["other_site"]))
    lines += ["", "Flag share of each stored detector (own cross-fitted threshold each):", "",
              "| model → data | " + " | ".join(res["leave_one_site_out"][0]["other_site"]["methods"]) + " |",
              "|---|" + "---|" * len(res["leave_one_site_out"][0]["other_site"]["methods"])]
    rows = [(f"default seed {r['seed']} → test split", r) for r in res["in_distribution"][:1]]
    for r in res["leave_one_site_out"]:
        rows += [(f"{r['train']} → own test split", r["own_test_split"]),
                 (f"{r['train']} → {r['test']}", r["other_site"])]
    for label, r in rows:
        lines.append(f"| {label} | " + " | ".join(_ci(m["share"]) for m in r["methods"].values()) + " |")
    lines += ["", "Features named by the training-range flag (rows):", ""]
    for r in res["leave_one_site_out"]:
        named = r["other_site"]["flagged"]["features_outside_training_range"]
        lines.append(f"- {r['train']} → {r['test']}: " + (", ".join(f"{k} {v}" for k, v in named.items()) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 200 bootstrap resamples")
    args = parser.parse_args(argv)
    seeds, n_boot = ((0,), 200) if args.quick else ((0, 1, 2, 3, 4), 1000)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = run(seeds, n_boot)
    payload = {"command": "python -m bench.ood_records" + (" --quick" if args.quick else ""),
               "machine": machine(), "seeds": list(seeds), "n_boot": n_boot, "results": results,
               "seconds": round(time.perf_counter() - t0, 1)}
    stem = "ood_records_quick" if args.quick else "ood_records"
    paths = write_results(stem, payload, markdown(payload))
    print(f"wrote {paths[0]} and {paths[1]} in {payload['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
