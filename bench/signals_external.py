"""Benchmark: the CinC 2017 rhythm model on ECGs from another device and population (issue 17).

Run: ``python -m bench.signals_external --model RUN [--model RUN2 ...]`` (packages from
``meddx train ecg-cinc2017-af``; default: ``$MEDDX_HOME/runs/cinc-features`` and
``$MEDDX_HOME/runs/cinc-ensemble-e5`` where they exist). Writes ``bench/results/signals_external.{json,md}``.

For each package, :func:`meddx.signals.package.validate` (what ``meddx validate RUN`` runs):

* **internal**: the package's own test split of ``ecg-cinc2017-af`` (AliveCor, 300 Hz);
* **external, labelled**: ``ecg-mitbih-arrhythmia`` cut into 30-s segments of lead MLII, resampled to
  300 Hz, labelled from the rhythm annotations (:mod:`meddx.signals.external`), CIs over records.

Rows carry the macro one-vs-rest AUC, the AF-vs-rest AUC, the challenge score (mean F1 of N, A, O),
the share of non-AF cases called AF, the ECE beside its noise floor (p95 of the ECE of a perfectly
calibrated model at that n) and the share the package's OOD gate flags.

Then, **descriptively only**, the mirror's MIT-BIH records that have no rhythm annotations (npz with
beats and PVC flags): how the model calls their 30-s segments. These are not validation figures
(there is no reference rhythm); they show what the model does on Holter ECGs with ectopy and paced
beats. Records are named by their MIT-BIH number; runs by their folder name only.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench._common import machine, write_results  # noqa: E402

DEFAULT_RUNS = ("cinc-features", "cinc-ensemble-e5")


def _unlabelled_mitbih(sm: Any, seconds: float) -> dict[str, Any]:
    """Predicted class shares on 30-s segments of the MIT-BIH npz records (no rhythm annotations)."""
    from meddx.signals.beats import load_mitbih_records
    from meddx.signals.external import TARGET_FS, _resample, load_mitbih
    from meddx.signals.package import _score

    labelled = set(load_mitbih().groups)
    records = [r for r in load_mitbih_records() if r.name not in labelled]
    signals, groups = [], []
    for rec in records:
        width = int(round(seconds * rec.fs))
        for start in range(0, rec.signal.size - width + 1, width):
            signals.append(_resample(rec.signal[start:start + width], rec.fs, TARGET_FS))
            groups.append(rec.name)
    t0 = time.perf_counter()
    proba, flagged = _score(sm, signals)
    pred = proba.argmax(axis=1)
    names = list(sm.class_names)
    g = np.asarray(groups)
    per_record = {r: {c: int(np.sum(pred[g == r] == i)) for i, c in enumerate(names)} for r in dict.fromkeys(groups)}
    return {"records": len(records), "segments": len(signals), "seconds": round(time.perf_counter() - t0, 1),
            "called": {c: float(np.mean(pred == i)) for i, c in enumerate(names)},
            "records_with_any_af_call": sorted(r for r, v in per_record.items() if v.get("A")),
            "per_record": per_record, "ood_flagged": flagged}


def _ci(v: dict[str, Any] | None, pct: bool = False) -> str:
    if not v or v.get("value") is None:
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.3f}")
    if v.get("low") is None:
        return f(v["value"])
    return f"{f(v['value'])} [{f(v['low'])}, {f(v['high'])}]"


def _markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        "# CinC 2017 rhythm models: internal vs external (MIT-BIH Arrhythmia) validation (issue 17)", "",
        f"Command: `{payload['command']}`; wall {payload['wall_s']:.0f} s on {m['cpu']} ({m['cores']} cores, shared, "
        f"torch threads {m['threads']}), {m['date']}.", "",
        "Internal = the package's own test split of `ecg-cinc2017-af` (AliveCor handheld, 300 Hz; records are "
        "independent, so CIs resample records). External = `ecg-mitbih-arrhythmia` (1975-79 Holter tapes, 360 Hz), "
        "30-s segments of lead MLII (the mirror's only limb-type lead, closest to the AliveCor lead I) resampled to "
        "300 Hz and labelled from the rhythm annotations ((N -> N, (AFIB -> A, (AFL left out, other rhythms -> O, "
        "segments across a rhythm change left out); CIs resample records (patients). Brackets: bootstrap 95% CI "
        f"({payload['n_boot']} resamples). ECE: top-label, 15 bins; floor = 95th percentile of the ECE a perfectly "
        "calibrated model shows at that n.", "",
        "| model (run) | check | n (records) | classes N/A/O/~ | macro AUC | AF-vs-rest AUC | challenge score "
        "| N called N | non-AF called AF | ECE | ECE floor | OOD flagged |",
        "|---|---|---:|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for res in payload["models"]:
        label = f"`{res['model']}` ({res['kind']}, run `{res['run']}`)"
        for row in [res["internal"], *res["external"]]:
            cc = row["class_counts"]
            ood = f"{100 * row['ood_flagged']:.0f}%" if row.get("ood_flagged") is not None else "-"
            lines.append(
                f"| {label} | {row['kind']}: {row['source']} | {row['n']} ({row['n_groups']}) | "
                f"{cc['N']}/{cc['A']}/{cc['O']}/{cc['~']} | {_ci(row['auc'])} | {_ci(row['auc_af'])} | "
                f"{_ci(row['challenge_score'])} | {100 * row['recall'].get('N', float('nan')):.0f}% | "
                f"{_ci(row['af_called_when_not_af'], True)} | {row['ece']:.3f} | "
                f"{row['ece_floor']:.3f} | {ood} |")
    lines += ["", "What the external rows can and cannot say:", ""]
    first = payload["models"][0]["external"][0]
    col = first.get("collection") or {}
    lines.append(f"- The mirror labels {col.get('records')} MIT-BIH record(s) ({', '.join(col.get('leads', {}))}): "
                 f"{col.get('segments')} segments, classes {col.get('class_counts')}. "
                 f"{len(col.get('skipped_records', {}))} records have no rhythm annotations in the mirror (npz with "
                 "beats and PVC flags only) and cannot be labelled.")
    lines.append("- With one class present, the macro AUC, the AF-vs-rest AUC and AF sensitivity are undefined "
                 "(n/a, not made up), and with one record there is no CI over patients (the challenge score is then "
                 "the mean of F1 N and of F1 of any other class the model called, i.e. it mostly reflects N "
                 "recall); what is measured is how often normal sinus rhythm on a Holter lead is called N or AF, "
                 "the ECE with its floor, and the OOD flag share. The external-within-0.05-of-internal AUC bar "
                 "cannot be judged until the mirror holds MIT-BIH records with rhythm annotations and AF "
                 "(AF records of MIT-BIH: 201, 202, 203, 210, 219, 221, 222; or the MIT-BIH AF database).")
    lines += ["", "## Descriptive only: MIT-BIH records without rhythm annotations", "",
              "No reference rhythm, so no accuracy; the share of 30-s segments the model calls each class "
              "and the OOD flag share.", "",
              "| model | records | segments | called N | called A | called O | called ~ | records with any AF call "
              "| OOD flagged |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for res in payload["models"]:
        u = res["unlabelled_mitbih"]
        c = u["called"]
        ood = f"{100 * u['ood_flagged']:.0f}%" if u.get("ood_flagged") is not None else "-"
        lines.append(f"| `{res['model']}` | {u['records']} | {u['segments']} | {100 * c['N']:.0f}% | "
                     f"{100 * c['A']:.0f}% | {100 * c['O']:.0f}% | {100 * c['~']:.0f}% | "
                     f"{', '.join(u['records_with_any_af_call']) or 'none'} | {ood} |")
    for res in payload["models"]:
        per = res["unlabelled_mitbih"]["per_record"]
        lines.append(f"\nSegments called AF per record, `{res['model']}`: "
                     + ", ".join(f"{r} {v.get('A', 0)}/{sum(v.values())}" for r, v in per.items()) + ".")
    lines += ["", "Timings (s, this machine): " + "; ".join(
        f"`{r['run']}` validate {r['validate_s']:.0f}, unlabelled {r['unlabelled_mitbih']['seconds']:.0f}"
        for r in payload["models"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from meddx.config import home_dir
    from meddx.packaging.registry import read_package
    from meddx.signals.package import SignalModel, validate

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="a signal package (run folder); repeat for several")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--stem", default="signals_external")
    args = ap.parse_args(argv)
    runs = [Path(m) for m in args.model] if args.model else [
        home_dir() / "runs" / r for r in DEFAULT_RUNS if (home_dir() / "runs" / r / "package.json").is_file()]
    if not runs:
        raise SystemExit("no package: pass --model RUN (a run folder of `meddx train ecg-cinc2017-af`)")
    t_all = time.perf_counter()
    models = []
    for run in runs:
        pkg = read_package(run)
        t0 = time.perf_counter()
        res = validate(run, pkg, n_boot=args.n_boot, seed=0, progress=True)
        res["validate_s"] = round(time.perf_counter() - t0, 1)
        res["run"] = run.name
        res["trained_s"] = (pkg.get("training") or {}).get("seconds")
        res["epochs"] = (pkg.get("training") or {}).get("epochs")
        res["unlabelled_mitbih"] = _unlabelled_mitbih(SignalModel.load(run), args.seconds)
        print(f"{run.name}: validate {res['validate_s']} s; unlabelled {res['unlabelled_mitbih']['seconds']} s",
              flush=True)
        models.append(res)
    payload = {"command": "python -m bench.signals_external" + "".join(f" --model {r.name}" for r in runs)
               if args.model else "python -m bench.signals_external",
               "machine": machine(), "n_boot": args.n_boot, "segment_s": args.seconds,
               "wall_s": round(time.perf_counter() - t_all, 1), "models": models}
    payload = json.loads(json.dumps(payload, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
    j, md = write_results(args.stem, payload, _markdown(payload))
    print(f"wrote {j.name} and {md.name}")


if __name__ == "__main__":
    main()
