"""Benchmark: is the CinC 2017 rhythm model safe on signals it never saw?

Run: ``python -m bench.ood_signals --model RUN_FOLDER`` (a package from ``meddx train ecg-cinc2017-af``).
Writes ``bench/results/ood_signals.{json,md}``.

Everything goes through the package's own predict path (:func:`meddx.signals.package.predict`: read
the file, intended-input check, OOD gate, quality check, :func:`meddx.trust.decide.decide`), on
records written to disk as WFDB:

1. **in distribution**: the package's own test-split records (N, A, O): how many are flagged/referred
   (the price of the gate);
2. **non-ECG traces fed as ECG** (``ppg-heartpy``; ``actigraphy-pyactigraphy-samples``), three ways:
   *honest header* (the channel named and in its own unit and rate: the intended-input check's job),
   *labelled ECG in mV, values as recorded* (the amplitude check's job) and *disguised* (labelled ECG,
   mV, 300 Hz, rescaled to the median CinC amplitude: only the OOD gate can tell);
3. **noisy records (``~``) it never saw**: the test split's ``~`` records; the bar is that it
   flags/refers/rejects them at least as often as it calls them a rhythm (N, A or O).

Shares come with Wilson 95% intervals. Every OOD method fitted in the package is reported on the
disguised traces; the package's method (``mahalanobis``) was declared before this run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench._common import machine, write_results  # noqa: E402

SEGMENT_S = 15.0
"""Length of the PPG / actigraphy segments fed as records (CinC records last 9-61 s)."""
RHYTHMS = ("N", "A", "O")


def _wilson(k: int, n: int) -> dict[str, Any]:
    from meddx.signals.ood import wilson

    return {"k": int(k), "n": int(n), **wilson(k, n)}


def _outcome(r: dict[str, Any]) -> str:
    """rejected | ood-refer | quality-refer | refer (unsure) | noisy (~) | rhythm."""
    d = r["decision"]["decision"]
    reason = r["decision"]["reason"]
    if d == "rejected":
        return "rejected"
    if d == "refer" and reason.startswith("outside the model's training data"):
        return "ood-refer"
    if d == "refer" and reason.startswith("poor signal quality"):
        return "quality-refer"
    if d == "refer":
        return "refer (unsure)"
    return "noisy (~)" if d == "~" else "rhythm"


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    counts = Counter(_outcome(r) for r in results)
    caught = sum(counts[k] for k in ("rejected", "ood-refer", "quality-refer", "refer (unsure)"))
    flagged = sum(bool(r.get("ood") and r["ood"]["flagged"]) for r in results)
    checked = [r for r in results if r.get("ood")]
    return {"n": n, "outcomes": dict(counts),
            "rejected": _wilson(counts["rejected"], n),
            "ood_flagged_of_checked": _wilson(flagged, len(checked)),
            "flagged_refer_or_rejected": _wilson(caught, n),
            "called_a_rhythm": _wilson(counts["rhythm"], n),
            "called_noisy": _wilson(counts["noisy (~)"], n),
            "rhythm_calls": dict(Counter(r["decision"]["decision"] for r in results
                                         if _outcome(r) == "rhythm"))}


# ------------------------------------------------------------------------------------------ sources
def _segments(x: np.ndarray, n: int) -> list[np.ndarray]:
    return [x[i:i + n] for i in range(0, x.size - n + 1, n)] or ([x] if x.size else [])


def ppg_traces() -> list[tuple[str, np.ndarray, float]]:
    """``(name, values, fs)`` 15-s segments of the three HeartPy PPG streams."""
    from meddx.signals.ppg import load_heartpy

    out = []
    for rec in load_heartpy():
        for i, seg in enumerate(_segments(np.asarray(rec.ppg, float), int(SEGMENT_S * rec.fs))):
            out.append((f"ppg-{Path(rec.name).stem}-{i:02d}", seg, float(rec.fs)))
    return out


def actigraphy_recordings() -> list[tuple[str, np.ndarray, float]]:
    """``(name, counts, fs)`` of every actigraphy recording (5 AWD at 1/60 Hz, Actiware and UKB at 1/30 Hz)."""
    import gzip

    from meddx.data.catalogue import fetch
    from meddx.signals.sleep import read_actiware_csv

    base = Path(fetch("actigraphy-pyactigraphy-samples"))
    out = []
    for awd in sorted(base.glob("example_0*.AWD")):
        values = []
        for line in awd.read_text(encoding="latin-1").splitlines()[7:]:
            token = line.strip().split(" ")[0] if line.strip() else ""
            try:
                values.append(float(token))
            except ValueError:
                continue
        out.append((f"acti-{awd.stem}", np.asarray(values), 1 / 60))
    rpx = read_actiware_csv(base / "test_sample_rpx_eng.csv")
    out.append(("acti-actiware", np.nan_to_num(np.asarray(rpx.activity, float)), 1 / float(rpx.epoch_s)))
    with gzip.open(base / "sample-timeSeries.csv.gz", "rt") as fh:
        import pandas as pd

        ukb = pd.read_csv(fh)
    out.append(("acti-ukb", np.nan_to_num(ukb["acc"].to_numpy(float)), 1 / 30))
    return out


def _write(folder: Path, name: str, x: np.ndarray, fs: float, sig_name: str, unit: str) -> str:
    import wfdb

    x = np.asarray(x, dtype=np.float64)
    span = float(np.max(np.abs(x))) or 1.0
    gain = 30000.0 / span  # 16-bit with headroom, whatever the unit
    wfdb.wrsamp(name, fs=fs, units=[unit], sig_name=[sig_name], p_signal=x[:, None], fmt=["16"], adc_gain=[gain],
                baseline=[0], write_dir=str(folder))
    return str(folder / name)


def _disguise(x: np.ndarray, fs: float, target_amp: float) -> np.ndarray:
    """``x`` resampled to 300 Hz (its own samples relabelled for sub-Hz actigraphy) and rescaled to ``target_amp``."""
    from meddx.signals.intended import robust_amplitude
    from meddx.signals.rhythm import _resample

    y = _resample(np.asarray(x, float), fs, 300.0) if fs >= 1.0 else np.asarray(x, float)
    y = y - np.median(y)
    amp = robust_amplitude(y) or 1.0
    return y * (target_amp / amp)


# ------------------------------------------------------------------------------------------ main
def run(model: Path, *, limit: int | None = None) -> dict[str, Any]:
    from meddx.data.catalogue import fetch
    from meddx.packaging.registry import read_package
    from meddx.signals import package as SP
    from meddx.signals.intended import robust_amplitude
    from meddx.signals.ood import windows_of
    from meddx.signals.rhythm import load_cinc

    t_all = time.perf_counter()
    package = read_package(model)
    sm = SP.SignalModel.load(model)
    gate = sm.ood_gate
    if gate is None:
        raise SystemExit(f"{model} has no OOD gate: refit it with meddx.signals.ood.refit_ood")
    cinc = Path(fetch("ecg-cinc2017-af")) / "records"
    test_ids = package["splits"]["test"][:limit] if limit else package["splits"]["test"]
    signals, labels, names = load_cinc(records=test_ids)
    target_amp = float(np.median([robust_amplitude(s) for s in signals]))
    out: dict[str, Any] = {"model": {"folder": str(model), "name": package["name"], "kind": package["model"],
                                     "training_seconds": package["training"].get("seconds"),
                                     "ood": {k: v for k, v in package["ood"].items()
                                             if k not in ("scaler", "reference")}},
                           "segment_s": SEGMENT_S, "disguise_amplitude_mv": target_amp}
    timings: dict[str, float] = {}

    def predict(paths: list[str]) -> list[dict[str, Any]]:
        return SP.predict(model, package, paths)

    # 1. in distribution (test split), and 3. the unseen noisy records
    t0 = time.perf_counter()
    res = predict([str(cinc / n) for n in names])
    timings["cinc_test_s"] = time.perf_counter() - t0
    by_label = {lab: [r for r, y in zip(res, labels, strict=True) if y == lab] for lab in ("N", "A", "O", "~")}
    out["in_distribution"] = {lab: _summary(by_label[lab]) for lab in RHYTHMS}
    out["in_distribution"]["all N/A/O"] = _summary([r for lab in RHYTHMS for r in by_label[lab]])
    noisy = _summary(by_label["~"])
    noisy["bar"] = {"flagged_refer_or_rejected": noisy["flagged_refer_or_rejected"]["k"],
                    "called_a_rhythm": noisy["called_a_rhythm"]["k"],
                    "met": noisy["flagged_refer_or_rejected"]["k"] >= noisy["called_a_rhythm"]["k"],
                    "met_counting_noisy_as_not_a_rhythm":
                        noisy["flagged_refer_or_rejected"]["k"] + noisy["called_noisy"]["k"]
                        >= noisy["called_a_rhythm"]["k"]}
    out["noisy_unseen"] = noisy

    # 2. non-ECG traces
    sources = {"ppg": ppg_traces(), "actigraphy": actigraphy_recordings()}
    out["non_ecg"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, items in sources.items():
            t0 = time.perf_counter()
            sig_name, unit = ("PLETH", "NU") if kind == "ppg" else ("activity", "counts")
            honest = [_write(folder, f"{n}-honest", x, fs, sig_name, unit) for n, x, fs in items]
            if kind == "actigraphy":  # 15-s pieces of the counts, each relabelled as a 300-Hz ECG
                pieces = [(f"{n}-{i:02d}", seg, fs) for n, x, fs in items
                          for i, seg in enumerate(_segments(x, int(SEGMENT_S * 300)))]
            else:
                pieces = items
            # actigraphy pieces keep their values and are relabelled 300 Hz; PPG keeps its own rate
            as_recorded = [_write(folder, f"{n}-mv", x, fs if fs >= 1 else 300.0, "ECG", "mV") for n, x, fs in pieces]
            disguised_x = [_disguise(x, fs, target_amp) for _, x, fs in pieces]
            disguised = [_write(folder, f"{n}-ecg", y, 300.0, "ECG", "mV")
                         for (n, _, _), y in zip(pieces, disguised_x, strict=True)]
            entry = {"honest_header": _summary(predict(honest)),
                     "labelled_ecg_mv_values_as_recorded": _summary(predict(as_recorded)),
                     "disguised_as_ecg": _summary(predict(disguised))}
            # every fitted method on the disguised traces (record = mean of its window scores)
            wins, owner = windows_of(disguised_x, 300.0, gate.window_s)
            proba_w, feats_w = sm.window_outputs(wins, 300.0)
            entry["disguised_by_method"] = {
                m: _wilson(sum(v["flagged"] for v in gate.assess_records(feats_w, proba_w, owner, len(pieces), m)),
                           len(pieces)) for m in gate.gate.detectors}
            entry["honest_header_reasons"] = Counter(
                r.split(";")[1].strip() if ";" in r else r for p in predict(honest[:3])
                for r in p["input_check"]["reasons"]).most_common(3)
            out["non_ecg"][kind] = entry
            timings[f"{kind}_s"] = time.perf_counter() - t0
    # the in-distribution price of every method (test N/A/O records)
    t0 = time.perf_counter()
    keep = [i for i, y in enumerate(labels) if y in RHYTHMS]
    wins, owner = windows_of([signals[i] for i in keep], 300.0, gate.window_s)
    proba_w, feats_w = sm.window_outputs(wins, 300.0)
    out["in_distribution_by_method"] = {
        m: _wilson(sum(v["flagged"] for v in gate.assess_records(feats_w, proba_w, owner, len(keep), m)), len(keep))
        for m in gate.gate.detectors}
    noisy_idx = [i for i, y in enumerate(labels) if y == "~"]
    wins, owner = windows_of([signals[i] for i in noisy_idx], 300.0, gate.window_s)
    proba_w, feats_w = sm.window_outputs(wins, 300.0)
    out["noisy_by_method"] = {
        m: _wilson(sum(v["flagged"] for v in gate.assess_records(feats_w, proba_w, owner, len(noisy_idx), m)),
                   len(noisy_idx)) for m in gate.gate.detectors}
    timings["by_method_s"] = time.perf_counter() - t0
    out["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    out["machine"] = machine()
    return out


def cv_noisy(folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Every noisy (``~``) record of the 1,600, each judged by a ``features`` package that never saw it.

    Stratified ``folds``-fold CV by record: on each fold the feature model is fitted on the other
    records less a 15% validation part, which fits the temperature / conformal / abstention layer
    and thresholds the OOD gate, exactly as ``meddx train --model features`` does; the held-out
    fold's records then get the package's decision (``decide``: OOD refer > poor-quality refer >
    the trust layer). The record and window features are computed once for all folds.
    """
    from sklearn.model_selection import train_test_split

    from meddx.inference.trust import TrustLayer, fit_trust
    from meddx.signals import package as SP
    from meddx.signals import rhythm as R
    from meddx.signals.ood import gate_from_window_outputs, quality_decision, record_quality, windows_of
    from meddx.trust.decide import decide

    t0 = time.perf_counter()
    signals, labels, _ = R.load_cinc()
    y = R._to_index(labels)
    names = list(R.CLASSES)
    records = R.feature_matrix(signals, 300.0)
    wins, owner = windows_of(signals, 300.0)
    windows = np.stack([R.rhythm_features(w, 300.0) for w in wins])
    raw = np.delete(windows, SP._DURATION_COLUMN, axis=1)
    quality = [record_quality(s, 300.0) for s in signals]
    features_s = time.perf_counter() - t0
    fold = R.stratified_folds(labels, folds, seed)
    results: list[dict[str, Any]] = []
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        rest = np.flatnonzero(fold != f)
        tr, va = train_test_split(rest, test_size=0.15 / 0.8, stratify=y[rest], random_state=seed + f)
        clf = R.make_feature_classifier(seed).fit(records[tr], y[tr])
        p_rec = SP._feature_proba(clf, records)
        p_win = SP._feature_proba(clf, windows)
        trust = TrustLayer.from_package({"trust": fit_trust(SP.SignalModel.logits_of(p_rec[va]), y[va],
                                                            calibration="temperature")})

        def part(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            mask = np.isin(owner, ix)
            remap = {int(r): j for j, r in enumerate(ix)}
            return p_win[mask], raw[mask], np.asarray([remap[int(o)] for o in owner[mask]])

        gate = gate_from_window_outputs(part(tr), y[tr], part(va), len(va))
        p_te, f_te, o_te = part(test)
        verdicts = gate.assess_records(f_te, p_te, o_te, len(test))
        trusted = trust.apply(SP.SignalModel.logits_of(p_rec[test]), names, None)
        for i, t, v in zip(test, trusted, verdicts, strict=True):
            q = quality[i]
            decision = decide(quality_decision(q) if q["poor"] else t["decision"], ood=v)
            results.append({"label": names[y[i]], "decision": decision, "ood": v})
    noisy = _summary([r for r in results if r["label"] == "~"])
    clean = _summary([r for r in results if r["label"] in RHYTHMS])
    noisy["bar"] = {"flagged_refer_or_rejected": noisy["flagged_refer_or_rejected"]["k"],
                    "called_a_rhythm": noisy["called_a_rhythm"]["k"],
                    "met": noisy["flagged_refer_or_rejected"]["k"] >= noisy["called_a_rhythm"]["k"]}
    return {"folds": folds, "seed": seed, "noisy": noisy, "in_distribution": clean,
            "features_s": round(features_s, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def stream_drift(model: Path, *, devices: int = 200, horizon: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The runner's per-device drift monitor on live-window verdicts (7-s windows, non-overlapping).

    In distribution: ``devices`` streams of ``horizon`` windows, each a random sequence of the test
    split's N/A/O records played window by window (a record's windows stay together, as on a real
    device): the share of streams that raise an ``input-drift`` alarm (the design target is at
    most 5% per 1,000 windows). Out of distribution: each HeartPy PPG stream, disguised as a
    300-Hz ECG in mV, played from its start: the windows until the alarm.
    """
    from meddx.packaging.registry import read_package
    from meddx.signals import package as SP
    from meddx.signals.intended import robust_amplitude
    from meddx.signals.ood import cut_windows
    from meddx.signals.rhythm import load_cinc
    from meddx.trust.drift import DriftMonitor

    t0 = time.perf_counter()
    package = read_package(model)
    sm = SP.SignalModel.load(model)
    gate = sm.ood_gate
    signals, labels, _ = load_cinc(records=package["splits"]["test"])
    keep = [s for s, y in zip(signals, labels, strict=True) if y in RHYTHMS]
    per_record = []
    for x in keep:
        wins = cut_windows(x, 300.0, gate.window_s)
        wins = [w for w in wins if w.size == wins[0].size]
        proba, feats = sm.window_outputs(wins, 300.0)
        per_record.append([(v["flagged"], v["score"]) for v in gate.assess_windows(feats, proba)])
    iid = DriftMonitor.create(gate.flag_rate, gate.reference.get("windows")).to_dict()
    template = gate.drift_monitor().to_dict()  # what the runner uses
    rng = np.random.default_rng(seed)
    def replay(start: dict[str, Any]) -> tuple[int, list[int], Counter]:
        alarms, at, why = 0, [], Counter()
        for _ in range(devices):
            monitor = DriftMonitor.from_dict(json.loads(json.dumps(start)))
            while monitor.n < horizon and not monitor.alarm:
                for flagged, score in per_record[int(rng.integers(len(per_record)))]:
                    monitor.update(flagged, score)
                    if monitor.n >= horizon or monitor.alarm:
                        break
            alarms += bool(monitor.alarm)
            if monitor.alarm:
                at.append(int(monitor.alarm_at))
                why["CUSUM" if "CUSUM" in monitor.alarm_reason else "KS"] += 1
        return alarms, at, why

    iid_alarms, _, iid_why = replay(iid)
    alarms, at, why = replay(template)
    window_flags = [f for rec in per_record for f, _ in rec]
    target_amp = float(np.median([robust_amplitude(s) for s in keep]))
    ppg = []
    from meddx.signals.ppg import load_heartpy

    for rec in load_heartpy():
        y = _disguise(np.asarray(rec.ppg, float), float(rec.fs), target_amp)
        wins = cut_windows(y, 300.0, gate.window_s)
        wins = [w for w in wins if w.size == wins[0].size]
        proba, feats = sm.window_outputs(wins, 300.0)
        monitor = DriftMonitor.from_dict(json.loads(json.dumps(template)))
        for v in gate.assess_windows(feats, proba):
            monitor.update(v["flagged"], v["score"])
            if monitor.alarm:
                break
        ppg.append({"stream": rec.name, "windows": len(wins), "alarm": bool(monitor.alarm),
                    "alarm_at_window": monitor.alarm_at, "alarm_reason": monitor.alarm_reason})
    return {"in_distribution": {"devices": devices, "horizon_windows": horizon,
                                "window_flag_rate": _wilson(int(sum(window_flags)), len(window_flags)),
                                "streams_alarmed": _wilson(alarms, devices), "alarm_tests": dict(why),
                                "alarm_at_median": float(np.median(at)) if at else None,
                                "streams_alarmed_iid_thresholds": _wilson(iid_alarms, devices),
                                "alarm_tests_iid_thresholds": dict(iid_why)},
            "ppg_disguised": ppg, "cusum_threshold": template["h"], "ks_threshold": template["ks_limit"],
            "wall_s": round(time.perf_counter() - t0, 1)}


def _pct(e: dict[str, Any]) -> str:
    if e.get("value") is None:
        return "n/a"
    return f"{e['value']:.0%} [{e['low']:.0%}, {e['high']:.0%}] ({e['k']}/{e['n']})"


def markdown(r: dict[str, Any], command: str) -> str:
    m = r["model"]
    lines = [
        "# Signal models on data they never saw (issue 16): CinC 2017 rhythm model",
        "",
        f"Command: `{command}`; wall {r['wall_s']:.0f} s on {r['machine']['cpu']} "
        f"({r['machine']['cores']} cores, shared), {r['machine']['date']}.",
        f"Model: `{m['name']}` (kind `{m['kind']}`, trained in {m['training_seconds']} s), OOD gate "
        f"`{m['ood']['method']}` on {m['ood']['features']}, fitted on {m['ood']['fitted_on']}, thresholds on "
        f"{m['ood']['threshold_on']}; record score = mean of its {m['ood']['window_s']:g}-s windows' scores, "
        f"threshold = the validation records' 95th percentile (flag rate {m['ood']['flag_rate']:.0%}).",
        "",
        "Outcomes come from the package's predict path on WFDB files (read, intended-input check, OOD gate, "
        "quality check, `decide`). Brackets: Wilson 95% CI (k/n).",
        "",
        "## Non-ECG traces fed to the ECG model",
        "",
        "| source | header | n | rejected | flagged / referred / rejected | called a rhythm |",
        "|---|---|---:|---|---|---|",
    ]
    labels = {"honest_header": "own channel name, unit, rate", "labelled_ecg_mv_values_as_recorded":
              "ECG, mV, values as recorded", "disguised_as_ecg": "ECG, mV, 300 Hz, ECG amplitude"}
    for kind, entry in r["non_ecg"].items():
        for key, label in labels.items():
            s = entry[key]
            lines.append(f"| {kind} | {label} | {s['n']} | {_pct(s['rejected'])} | "
                         f"{_pct(s['flagged_refer_or_rejected'])} | {_pct(s['called_a_rhythm'])} |")
    lines += ["", "Disguised traces flagged by each fitted OOD method (record = mean window score):", "",
              "| method | PPG | actigraphy | test N/A/O (in distribution) | test ~ (noisy, unseen) |",
              "|---|---|---|---|---|"]
    for method in r["in_distribution_by_method"]:
        lines.append(f"| {method} | {_pct(r['non_ecg']['ppg']['disguised_by_method'][method])} | "
                     f"{_pct(r['non_ecg']['actigraphy']['disguised_by_method'][method])} | "
                     f"{_pct(r['in_distribution_by_method'][method])} | {_pct(r['noisy_by_method'][method])} |")
    for kind, entry in r["non_ecg"].items():
        lines.append(f"\nExample rejection reasons ({kind}, honest header): "
                     + "; ".join(f"\"{reason}\"" for reason, _ in entry["honest_header_reasons"]))
    noisy = r["noisy_unseen"]
    bar = noisy["bar"]
    lines += ["", "## Noisy (`~`) test records the model never saw", "",
              f"n = {noisy['n']}. Outcomes: {json.dumps(noisy['outcomes'])}.", "",
              f"- flagged / referred / rejected: {_pct(noisy['flagged_refer_or_rejected'])}",
              f"- called noisy (`~`, not a rhythm): {_pct(noisy['called_noisy'])}",
              f"- called a rhythm (N/A/O): {_pct(noisy['called_a_rhythm'])} {noisy['rhythm_calls']}",
              f"- OOD gate alone flags {_pct(noisy['ood_flagged_of_checked'])} of those checked",
              "",
              f"Bar (flagged/referred/rejected >= called a rhythm): **{'met' if bar['met'] else 'NOT met'}** "
              f"({bar['flagged_refer_or_rejected']} vs {bar['called_a_rhythm']}); counting a `~` call as not a "
              f"rhythm: {'met' if bar['met_counting_noisy_as_not_a_rhythm'] else 'NOT met'}.",
              "", "## The price: in-distribution test records", "",
              "| class | n | OOD flagged | flagged / referred / rejected | called a rhythm |", "|---|---:|---|---|---|"]
    for lab, s in r["in_distribution"].items():
        lines.append(f"| {lab} | {s['n']} | {_pct(s['ood_flagged_of_checked'])} | "
                     f"{_pct(s['flagged_refer_or_rejected'])} | {_pct(s['called_a_rhythm'])} |")
    cv = r.get("cv_noisy")
    if cv:
        n, c = cv["noisy"], cv["in_distribution"]
        lines += ["", f"## All 100 noisy records, each unseen ({cv['folds']}-fold CV of `features` packages)", "",
                  "Each fold refits the feature model, the trust layer and the OOD gate as `meddx train --model "
                  "features` does, on the other folds (less 15% for validation).", "",
                  "| records | n | OOD flagged | flagged / referred / rejected | called noisy (~) | called a rhythm |",
                  "|---|---:|---|---|---|---|",
                  f"| noisy ~ | {n['n']} | {_pct(n['ood_flagged_of_checked'])} | "
                  f"{_pct(n['flagged_refer_or_rejected'])} | {_pct(n['called_noisy'])} | "
                  f"{_pct(n['called_a_rhythm'])} |",
                  f"| N/A/O | {c['n']} | {_pct(c['ood_flagged_of_checked'])} | "
                  f"{_pct(c['flagged_refer_or_rejected'])} | {_pct(c['called_noisy'])} | "
                  f"{_pct(c['called_a_rhythm'])} |",
                  "", f"Bar on all 100: **{'met' if n['bar']['met'] else 'NOT met'}** "
                  f"({n['bar']['flagged_refer_or_rejected']} flagged/referred vs {n['bar']['called_a_rhythm']} "
                  f"called a rhythm). Outcomes: {json.dumps(n['outcomes'])}. CV wall {cv['wall_s']:.0f} s "
                  f"(features {cv['features_s']:.0f} s)."]
    sd = r.get("stream_drift")
    if sd:
        ind = sd["in_distribution"]
        lines += ["", "## Streams: the runner's per-device drift monitor (7-s non-overlapping windows)", "",
                  f"- in distribution ({ind['devices']} simulated devices x {ind['horizon_windows']} windows of "
                  f"the test split's N/A/O records, a record's windows in order): window flag rate "
                  f"{_pct(ind['window_flag_rate'])}; streams raising an `input-drift` alarm "
                  f"{_pct(ind['streams_alarmed'])} {ind['alarm_tests']} with the runner's thresholds "
                  "(replays of validation records, record by record), against "
                  f"{_pct(ind['streams_alarmed_iid_thresholds'])} {ind['alarm_tests_iid_thresholds']} with "
                  "`DriftMonitor.create`'s thresholds for independent studies (design: at most 5% per 1,000 "
                  "windows)"]
        for p in sd["ppg_disguised"]:
            when = (f"alarm after {p['alarm_at_window']} windows ({7 * p['alarm_at_window']} s)" if p["alarm"]
                    else "no alarm")
            lines.append(f"- PPG `{p['stream']}` disguised as ECG ({p['windows']} windows): {when}")
        lines.append(f"- runner's thresholds: CUSUM {sd['cusum_threshold']:.2f}, KS {sd['ks_threshold']:.3f}; "
                     f"wall {sd['wall_s']:.0f} s")
    lines += ["", f"Timings (s): {json.dumps(r['timings_s'])}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="signal package trained on ecg-cinc2017-af")
    parser.add_argument("--limit", type=int, default=None, help="first N test records only (smoke runs)")
    parser.add_argument("--stem", default="ood_signals")
    parser.add_argument("--cv-noisy", action="store_true", help="also judge all 100 noisy records by 5-fold CV")
    parser.add_argument("--stream", action="store_true", help="also replay streams through the drift monitor")
    parser.add_argument("--stream-only", action="store_true",
                        help="add the stream replay to an existing results file instead of rerunning the rest")
    args = parser.parse_args()
    if args.stream_only:
        from bench._common import RESULTS

        result = json.loads((RESULTS / f"{args.stem}.json").read_text(encoding="utf-8"))
        result["stream_drift"] = stream_drift(args.model)
        result["stream_command"] = f"python -m bench.ood_signals --model {args.model} --stream-only"
        paths = write_results(args.stem, result, markdown(result, result["command"])
                              + f"\n\nStream section: `{result['stream_command']}`.")
        print("wrote", *paths)
        return
    result = run(args.model, limit=args.limit)
    if args.stream:
        result["stream_drift"] = stream_drift(args.model)
        result["wall_s"] = round(result["wall_s"] + result["stream_drift"]["wall_s"], 1)
    if args.cv_noisy:
        result["cv_noisy"] = cv_noisy()
        result["wall_s"] = round(result["wall_s"] + result["cv_noisy"]["wall_s"], 1)
    command = (f"python -m bench.ood_signals --model {args.model}" + (f" --limit {args.limit}" if args.limit else "")
               + (" --cv-noisy" if args.cv_noisy else "") + (" --stream" if args.stream else ""))
    result["command"] = command
    paths = write_results(args.stem, result, markdown(result, command))
    print(markdown(result, command))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
