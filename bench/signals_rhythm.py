"""Benchmark: CinC 2017 single-lead ECG rhythm classification (N / A / O / ~), stratified 5-fold CV.

Run: ``python -m bench.signals_rhythm``. Writes ``bench/results/signals_rhythm.{json,md}``.
Models: RR/spectral/quality features + HistGradientBoosting, a small residual 1-D CNN, and their
probability average. Score = mean F1 of N, A, O (the 2017 challenge metric), bootstrap 95% CIs over records.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

from bench._common import machine, write_results  # noqa: E402


def _f(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def _ci(m: dict, key: str) -> str:
    lo, hi = m["ci"][key]
    return f"{_f(m[key])} [{_f(lo)}, {_f(hi)}]"


def main() -> None:
    import dataclasses

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from meddx.signals.rhythm import CLASSES, CNNConfig, cross_validate, load_cinc

    t0 = time.perf_counter()
    signals, labels, names = load_cinc()
    t_load = time.perf_counter() - t0
    cfg = CNNConfig()
    res = cross_validate(signals, labels, folds=5, seed=0, cnn_config=cfg, log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - t0
    counts = {c: int(np.sum(labels == c)) for c in CLASSES}
    payload = {
        "machine": machine(), "dataset": "ecg-cinc2017-af (1,600-record stratified subset, 300 Hz single lead)",
        "class_counts": counts, "folds": 5, "seed": 0, "cnn_config": dataclasses.asdict(cfg),
        "load_s": round(t_load, 1), "wall_s_total": round(wall, 1),
        "wall_s": {k: round(v, 1) for k, v in res["wall_s"].items()},
        "metrics": res["metrics"],
        "bars": {"challenge_score": 0.80, "f1_A": 0.85},
    }
    mt = res["metrics"]
    lines = [
        "# CinC 2017 rhythm classification (N / A / O / ~), stratified 5-fold CV by record",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['threads']} torch thread(s); "
        f"{payload['machine']['date']}. 1,600 records ({counts}). Total wall {wall:.0f} s.",
        "",
        "Score = mean F1 of N, A, O (CinC 2017 metric); brackets: bootstrap 95% CI over records (1,000 resamples).",
        "Bars from the issue: score >= 0.80 and AF F1 >= 0.85.",
        "",
        "| model | score (N/A/O mean F1) | AF F1 | F1 N | F1 O | F1 ~ | AUC N | AUC A | AUC O | AUC ~ | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("features", "cnn", "ensemble"):
        if name not in mt:
            continue
        m = mt[name]
        lines.append(
            f"| {name} | {_ci(m, 'score')} | {_ci(m, 'f1_A')} | {_f(m['f1_N'])} | {_f(m['f1_O'])} | "
            f"{_f(m['f1_~'])} | {_f(m['auc_N'])} | {_f(m['auc_A'])} | {_f(m['auc_O'])} | {_f(m['auc_~'])} | "
            f"{res['wall_s'][name]:.0f} |")
    best = max(mt, key=lambda k: mt[k]["score"])
    cnn_beats = "cnn" in mt and mt["cnn"]["score"] > mt["features"]["score"]
    lines += [
        "",
        f"Best: {best} (score {_f(mt[best]['score'])}, AF F1 {_f(mt[best]['f1_A'])}). "
        f"Bars met: score {'yes' if mt[best]['score'] >= 0.80 else 'NO'}, "
        f"AF F1 {'yes' if mt[best]['f1_A'] >= 0.85 else 'NO'}. "
        f"CNN beats the feature baseline in this run: {'yes' if cnn_beats else 'NO'}.",
        "",
        f"CNN: {cfg.fs:g} Hz, {cfg.window_s:g}-s windows, channels {cfg.channels}, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, {cfg.test_crops} test crops. Ensemble wall = features + CNN.",
    ]
    write_results("signals_rhythm", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
