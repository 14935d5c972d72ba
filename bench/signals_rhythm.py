"""Benchmark: CinC 2017 single-lead ECG rhythm classification (N / A / O / ~), stratified 5-fold CV.

Run: ``python -m bench.signals_rhythm`` (CPU, reads the data set through ``load_cinc``) or, on a
GPU machine without wfdb, from an exported archive::

    python -m bench.signals_rhythm --export build/cinc_device/cinc2017.npz   # here: signals + features
    python -m bench.signals_rhythm --npz build/cinc_device/cinc2017.npz --device cuda --results DIR

On a CPU the 60-epoch ResNet takes hours (5 folds); the recorded run trained the CNNs on a GPU.
Writes ``bench/results/signals_rhythm.{json,md}`` and the out-of-fold probabilities
``signals_rhythm_oof.npz`` (or into ``--results``); ``--merge`` joins parallel processes' results. One run, one set of
folds (seed 0), every model scored on the same out-of-fold predictions:

* ``features``: RR/spectral/quality features + HistGradientBoosting;
* ``cnn``: the deep model declared before the run, :data:`meddx.signals.rhythm.RESNET_SE`
  (ResNet-1D with squeeze-and-excitation, 150 Hz, 30-s crops, 60 epochs, 5 test crops);
* ``ensemble``: the average of the ``features`` and ``cnn`` probabilities;
* with ``--variants``: other CNN settings tried in the same run (reported, never swapped in for ``cnn``).

Score = mean F1 of N, A, O (the 2017 challenge metric), bootstrap 95% CIs over records.
The JSON records where each model ran (CPU or GPU) and its wall time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench._common import command_line, RESULTS, machine  # noqa: E402


def _f(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def _ci(m: dict, key: str) -> str:
    lo, hi = m["ci"][key]
    return f"{_f(m[key])} [{_f(lo)}, {_f(hi)}]"


def _variants() -> dict:
    from meddx.signals.rhythm import RESNET_SE, CNNConfig

    return {
        "cnn-300hz": dataclasses.replace(RESNET_SE, fs=300.0),
        "cnn-varwin": dataclasses.replace(RESNET_SE, min_window_s=9.0),
        "cnn-small": CNNConfig(),
    }


def export(path: Path) -> None:
    """Write the signals (int16 microvolts, CinC's own resolution), labels and feature matrix."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from meddx.signals.rhythm import feature_matrix, load_cinc

    t0 = time.perf_counter()
    signals, labels, names = load_cinc()
    lens = np.array([s.size for s in signals])
    x = np.zeros((len(signals), lens.max()), np.int16)
    for i, s in enumerate(signals):
        x[i, :s.size] = np.round(s * 1000).astype(np.int16)
    t1 = time.perf_counter()
    feats = feature_matrix(signals)
    t_feat = time.perf_counter() - t1
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, X=x, lens=lens, labels=labels, names=np.array(names), F=feats, feature_s=t_feat,
                        feature_machine=json.dumps(machine()))
    print(f"exported {len(signals)} records to {path} (load {t1 - t0:.1f} s, features {t_feat:.1f} s)")


def _load(npz: Path | None) -> tuple:
    import numpy as np

    from meddx.signals.rhythm import feature_matrix, load_cinc

    if npz is None:
        t0 = time.perf_counter()
        signals, labels, _ = load_cinc()
        t1 = time.perf_counter()
        feats = feature_matrix(signals)
        return signals, labels, feats, {"load_s": t1 - t0, "feature_s": time.perf_counter() - t1,
                                        "feature_machine": "this machine (CPU)"}
    z = np.load(npz, allow_pickle=False)
    x = z["X"]  # an NpzFile decompresses on every access: once
    signals = [x[i, :n].astype(float) / 1000.0 for i, n in enumerate(z["lens"])]
    fm = json.loads(str(z["feature_machine"])) if "feature_machine" in z else {"cpu": "export machine (CPU)"}
    return signals, z["labels"].astype(str), z["F"], {
        "load_s": 0.0, "feature_s": float(z["feature_s"]),
        "feature_machine": f"{fm.get('cpu')} CPU, {fm.get('threads', 1)} thread(s), exported {fm.get('date', '')}"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, help="only write signals + features to this .npz and stop")
    ap.add_argument("--npz", type=Path, help="read signals + features from an --export archive")
    ap.add_argument("--device", default="cpu", help="where the CNNs train: cpu | cuda | auto")
    ap.add_argument("--variants", nargs="*", default=[], help="extra CNN settings to try (see _variants)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for signals_rhythm.{json,md}")
    ap.add_argument("--epochs", type=int, help="override the CNN epochs (smoke tests)")
    ap.add_argument("--limit", type=int, help="use only the first N records (smoke tests)")
    ap.add_argument("--no-primary", action="store_true", help="run only --variants (a parallel process)")
    ap.add_argument("--note", default="", help="a note on how the run was made (stored in the results)")
    ap.add_argument("--merge", type=Path, nargs="+", help="merge these result folders into --results and stop")
    args = ap.parse_args(argv)
    if args.export:
        export(args.export)
        return
    if args.merge:
        merge(args.merge, args.results, args.note)
        return

    import numpy as np
    import torch

    if args.device == "cpu":
        torch.set_num_threads(1)
    from meddx.signals.rhythm import CLASSES, RESNET_SE, challenge_score, cross_validate

    t0 = time.perf_counter()
    signals, labels, feats, src = _load(args.npz)
    if args.limit:
        signals, labels, feats = signals[:args.limit], labels[:args.limit], feats[:args.limit]
    mach = machine()
    cpu_where = (f"the CPU of the machine running the benchmark ({mach['cpu']}, "
                 f"{os.environ.get('OMP_NUM_THREADS')} OpenMP thread(s))")
    gpu_name = torch.cuda.get_device_name(0) if args.device != "cpu" and torch.cuda.is_available() else None
    cnn_where = f"GPU: {gpu_name} (bf16 autocast)" if gpu_name else f"CPU ({torch.get_num_threads()} torch thread(s))"
    configs = {} if args.no_primary else {"cnn": RESNET_SE}
    configs.update({k: v for k, v in _variants().items() if k in args.variants})
    if args.epochs:
        configs = {k: dataclasses.replace(v, epochs=args.epochs) for k, v in configs.items()}
    say = lambda m: print(m, flush=True)  # noqa: E731

    res = cross_validate(signals, labels, folds=5, seed=0, models=("features",), features=feats, log=say)
    proba, wall, metrics = dict(res["proba"]), dict(res["wall_s"]), dict(res["metrics"])
    where = {"features": f"features extracted on {src['feature_machine']} in {src['feature_s']:.0f} s; "
                         f"gradient boosting fitted on {cpu_where}"}
    wall["features"] += src["feature_s"]
    counts = {c: int(np.sum(labels == c)) for c in CLASSES}
    y = np.asarray(labels)

    def write() -> None:
        payload = {
            "machine": mach, "dataset": "ecg-cinc2017-af (1,600-record stratified subset, 300 Hz single lead)",
            "class_counts": counts, "n_records": len(signals), "folds": 5, "seed": 0, "device": args.device,
            "note": args.note, "paired": paired,
            "cnn_configs": {k: dataclasses.asdict(v) for k, v in configs.items()},
            "primary_cnn": "cnn", "where": where, "wall_s_total": round(time.perf_counter() - t0, 1),
            "wall_s": {k: round(v, 1) for k, v in wall.items()}, "metrics": metrics,
            "bars": {"challenge_score": 0.80, "f1_A": 0.85},
        }
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "signals_rhythm.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
        (args.results / "signals_rhythm.md").write_text(_markdown(payload) + "\n", encoding="utf-8")
        np.savez_compressed(args.results / "signals_rhythm_oof.npz", labels=y, fold=res["fold"],
                            **{k: v for k, v in proba.items()})

    paired: dict = {}
    write()
    for name, cfg in configs.items():
        t1 = time.perf_counter()
        r = cross_validate(signals, labels, folds=5, seed=0, models=("cnn",), cnn_config=cfg, log=say,
                           device=args.device)
        proba[name], wall[name], where[name] = r["proba"]["cnn"], time.perf_counter() - t1, cnn_where
        metrics[name] = r["metrics"]["cnn"]
        ens = "ensemble" if name == "cnn" else f"ensemble-{name}"
        proba[ens] = (proba["features"] + proba[name]) / 2
        wall[ens] = wall["features"] + wall[name]
        where[ens] = f"average of features and {name}"
        metrics[ens] = challenge_score(y, proba[ens].argmax(axis=1), proba[ens], n_boot=1000, seed=0)
        paired[name] = paired_difference(y, proba[name], proba["features"])
        paired[ens] = paired_difference(y, proba[ens], proba["features"])
        say(f"{name}: score {metrics[name]['score']:.3f}, AF F1 {metrics[name]['f1_A']:.3f}; {ens}: "
            f"{metrics[ens]['score']:.3f} / {metrics[ens]['f1_A']:.3f} ({wall[name]:.0f} s)")
        write()
    print((args.results / "signals_rhythm.md").read_text(encoding="utf-8"))


def paired_difference(y, pa, pb, n_boot: int = 1000, seed: int = 0) -> dict:
    """Challenge score of ``pa`` minus that of ``pb`` on the same records, with a paired bootstrap 95% CI."""
    import numpy as np

    from meddx.signals.rhythm import _scores, _to_index

    t = _to_index(y)
    a, b = pa.argmax(axis=1), pb.argmax(axis=1)
    point = _scores(t, a, None)["score"] - _scores(t, b, None)["score"]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, t.size, t.size)
        diffs.append(_scores(t[i], a[i], None)["score"] - _scores(t[i], b[i], None)["score"])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"vs": "features", "diff": float(point), "low": float(lo), "high": float(hi),
            "p_not_better": float(np.mean(np.asarray(diffs) <= 0))}


def merge(folders: list[Path], results: Path, note: str = "") -> None:
    """Combine the JSON results of parallel processes (same folds, same data) into one file."""
    import numpy as np

    payloads = [json.loads((f / "signals_rhythm.json").read_text(encoding="utf-8")) for f in folders]
    base = payloads[0]
    for p in payloads[1:]:
        for key in ("metrics", "where", "wall_s", "cnn_configs", "paired"):
            for k, v in p.get(key, {}).items():
                base[key].setdefault(k, v)
        base["wall_s_total"] = max(base["wall_s_total"], p["wall_s_total"])
    base["merged_from"] = [str(f) for f in folders]
    if note:
        base["note"] = f"{base.get('note', '')} {note}".strip()
    results.mkdir(parents=True, exist_ok=True)
    (results / "signals_rhythm.json").write_text(json.dumps(base, indent=2), encoding="utf-8")
    (results / "signals_rhythm.md").write_text(_markdown(base) + "\n", encoding="utf-8")
    oof = {}
    for f in folders:
        if (f / "signals_rhythm_oof.npz").is_file():
            z = np.load(f / "signals_rhythm_oof.npz")
            oof.update({k: z[k] for k in z.files if k not in oof})
    if oof:
        np.savez_compressed(results / "signals_rhythm_oof.npz", **oof)
    print((results / "signals_rhythm.md").read_text(encoding="utf-8"))


def _markdown(p: dict) -> str:
    mt, wall, where = p["metrics"], p["wall_s"], p["where"]
    m0 = p["machine"]
    lines = [
        "# CinC 2017 rhythm classification (N / A / O / ~), stratified 5-fold CV by record",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Run {m0['date']} on {m0['cpu']}, {m0['cores']} cores, torch {m0['torch']}, "
        f"GPU {m0['cuda'] or 'none'}. {p.get('n_records', 1600)} records ({p['class_counts']}). All models share "
        f"one set of folds (seed 0). Total wall {p['wall_s_total']:.0f} s. {p.get('note', '')}",
        "",
        "Score = mean F1 of N, A, O (CinC 2017 metric); brackets: bootstrap 95% CI over records (1,000 resamples).",
        "Bars from the issue: score >= 0.80 and AF F1 >= 0.85.",
        "",
        "| model | score (N/A/O mean F1) | AF F1 | F1 N | F1 O | F1 ~ | AUC N | AUC A | AUC O | AUC ~ | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in mt.items():
        lines.append(
            f"| {name} | {_ci(m, 'score')} | {_ci(m, 'f1_A')} | {_f(m['f1_N'])} | {_f(m['f1_O'])} | "
            f"{_f(m['f1_~'])} | {_f(m['auc_N'])} | {_f(m['auc_A'])} | {_f(m['auc_O'])} | {_f(m['auc_~'])} | "
            f"{wall[name]:.0f} |")
    lines += ["", "Where each model ran:", ""] + [f"- {k}: {v}" for k, v in where.items()]
    if p.get("paired"):
        lines += ["", "Paired bootstrap (same records resampled, 1,000 times): challenge score minus the feature "
                  "baseline's, 95% CI, and the share of resamples where it is not better:", ""]
        lines += [f"- {k}: {v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}], P(not better) "
                  f"{v['p_not_better']:.3f}" for k, v in p["paired"].items()]
    if "cnn" in mt and "ensemble" in mt:
        best = max(("features", "cnn", "ensemble"), key=lambda k: mt[k]["score"] if k in mt else -1)
        beats = mt["cnn"]["score"] > mt["features"]["score"]
        pc = (p.get("paired") or {}).get("cnn")
        sig = (f"; paired difference {pc['diff']:+.3f}, 95% CI [{pc['low']:+.3f}, {pc['high']:+.3f}]" if pc
               else "")
        lines += [
            "",
            f"Best of features / cnn / ensemble: {best} (score {_f(mt[best]['score'])}, AF F1 "
            f"{_f(mt[best]['f1_A'])}). Bars met: score {'yes' if mt[best]['score'] >= 0.80 else 'NO'}, "
            f"AF F1 {'yes' if mt[best]['f1_A'] >= 0.85 else 'NO'}. "
            f"The deep model (cnn) beats the feature baseline in this run: {'yes' if beats else 'NO'} "
            f"({_f(mt['cnn']['score'])} vs {_f(mt['features']['score'])}{sig}).",
        ]
    cfgs = p["cnn_configs"]
    lines += ["", "CNN settings (`cnn` was declared before the run; the others are reported variants, "
              "not selected on these folds):", ""]
    for k, c in cfgs.items():
        done = "" if k in mt else " - NOT FINISHED in this run (no result)"
        lines.append(f"- {k}{done}: {c['arch']}, {c['fs']:g} Hz, {c['window_s']:g}-s crops"
                     f"{' (random ' + format(c['min_window_s'], 'g') + '-' + format(c['window_s'], 'g') + ' s)' if c['min_window_s'] else ''}, "
                     f"channels {tuple(c['channels'])}, kernel {c['kernel']}, {c['epochs']} epochs, batch "
                     f"{c['batch_size']}, lr {c['lr']:g}, {c['test_crops']} test crops")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
