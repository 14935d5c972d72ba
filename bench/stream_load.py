"""Streaming load: N simulated 300-Hz ECG devices through Mosquitto into ``meddx stream run``.

    python -m bench.stream_load --model PKG [--devices 200 --duration 300] [--sweep 300,400,600 --sweep-duration 60]

Everything runs on this machine: Mosquitto (persistence on, loopback), the runner
process (``meddx stream run``: store, 7-s windows every second, quality checks,
model, alerts), the simulator process (``meddx stream simulate``: CinC records
replayed in real time, 1-s chunks, QoS 1) and a watcher that timestamps every
prediction. Latency = arrival of a prediction at the watcher minus the moment
the chunk that completed its window was published (``sent_at``), so it includes
the broker both ways; "runner" latency stops at the runner's own publish time.
Lost = chunks the broker acknowledged to the simulator that are not in the store.
The sweep then looks for the largest N whose p99 latency stays <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import machine, write_results
from bench._stream import Mosquitto, RunnerProcess, Watcher, cpu_seconds, lost_messages, simulate, stored_chunks


def one_run(model: str, devices: int, duration: float, work: Path, *, window_s: float, hop_s: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(work / "broker").start()
    runner = RunnerProcess(model, broker.address, work / "stream.db", window_s=window_s, hop_s=hop_s,
                           log=work / "runner.log").start()
    watcher = Watcher(broker.address, topics=("meddx/predictions/#",)).start()
    pids = {"runner": runner.proc.pid, "mosquitto": broker.process.pid}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    sim = simulate(broker.address, devices, duration, work / "manifest.json")
    sim_cpu = 0.0
    while sim.poll() is None:
        sim_cpu = max(sim_cpu, cpu_seconds(sim.pid))
        time.sleep(1.0)
    wall = time.monotonic() - t0
    if sim.returncode != 0:
        raise RuntimeError(f"simulator failed: {sim.stderr.read().decode()[-2000:]}")
    acked, _ = lost_messages(work / "manifest.json", work / "stream.db")
    deadline = time.monotonic() + 120
    while stored_chunks(work / "stream.db") < acked and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # last predictions
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    acked, lost = lost_messages(work / "manifest.json", work / "stream.db")
    manifest = json.loads((work / "manifest.json").read_text())
    preds = watcher.predictions()
    watcher.stop()
    runner.stop()
    broker.stop()
    e2e = np.array([t - b["chunk_sent_at"] for t, b in preds if b.get("chunk_sent_at")])
    own = np.array([b["published_at"] - b["chunk_sent_at"] for _, b in preds if b.get("chunk_sent_at")])
    signal_s = manifest["samples"] / 300.0 / max(devices, 1)
    quality = {}
    for _, b in preds:
        quality[b["quality"]] = quality.get(b["quality"], 0) + 1
    return {
        "devices": devices, "duration_s": duration, "wall_s": round(wall, 1),
        "published": manifest["published"], "acknowledged": acked, "lost_acknowledged": lost,
        "messages_per_s": round(manifest["published"] / wall, 1),
        "samples_per_s": round(manifest["samples"] / wall, 0),
        "signal_seconds_per_device": round(signal_s, 1),
        "predictions": len(preds), "predictions_per_s": round(len(preds) / wall, 1), "quality": quality,
        "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in pids} | {
            "simulator": round(100 * sim_cpu / wall, 1)},
        "latency_s": {
            "p50": round(float(np.percentile(e2e, 50)), 3) if e2e.size else None,
            "p99": round(float(np.percentile(e2e, 99)), 3) if e2e.size else None,
            "max": round(float(e2e.max()), 3) if e2e.size else None,
            "runner_p50": round(float(np.percentile(own, 50)), 3) if own.size else None,
            "runner_p99": round(float(np.percentile(own, 99)), 3) if own.size else None,
        },
    }


def row(r: dict[str, Any]) -> str:
    c, lat = r["cpu_percent"], r["latency_s"]
    return (f"| {r['devices']} | {r['duration_s']:.0f} | {r['acknowledged']} | {r['lost_acknowledged']} | "
            f"{r['messages_per_s']} | {r['samples_per_s']:.0f} | {r['predictions_per_s']} | "
            f"{c['runner']} / {c['mosquitto']} / {c['simulator']} | {lat['p50']} | {lat['p99']} | "
            f"{lat['runner_p50']} / {lat['runner_p99']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--sweep", default="", help="Device counts to try after the main run, e.g. 300,400,600.")
    ap.add_argument("--sweep-duration", type=float, default=60.0)
    ap.add_argument("--window-s", type=float, default=7.0)
    ap.add_argument("--hop-s", type=float, default=1.0)
    ap.add_argument("--out", default="stream_load")
    args = ap.parse_args()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="meddx-stream-bench-"))
    runs = [one_run(args.model, args.devices, args.duration, work / f"main-{args.devices}",
                    window_s=args.window_s, hop_s=args.hop_s)]
    print(json.dumps(runs[-1]), flush=True)
    for n in [int(v) for v in args.sweep.split(",") if v]:
        runs.append(one_run(args.model, n, args.sweep_duration, work / f"sweep-{n}", window_s=args.window_s,
                            hop_s=args.hop_s))
        print(json.dumps(runs[-1]), flush=True)
    holding = [r["devices"] for r in runs if r["latency_s"]["p99"] is not None and r["latency_s"]["p99"] <= 1.0]
    largest = max(holding) if holding else None
    main_run = runs[0]
    payload = {"machine": machine(), "model": args.model, "window_s": args.window_s, "hop_s": args.hop_s,
               "runs": runs, "largest_n_p99_le_1s": largest, "wall_s": round(time.time() - started, 1)}
    md = [
        "# Streaming load: simulated 300-Hz ECG devices -> Mosquitto -> `meddx stream run`",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores (everything below shares "
        f"them); {payload['machine']['date']}. Model `{args.model}`; windows {args.window_s:g} s every "
        f"{args.hop_s:g} s; 1-s chunks, binary payload, QoS 1; Mosquitto {'persistence on'}, loopback.",
        "",
        "Latency: chunk publish (simulator) -> prediction received (watcher), i.e. through the broker twice; "
        "runner: chunk publish -> prediction published by the runner.",
        "",
        "| devices | signal s | acked msgs | lost | msgs/s | samples/s | predictions/s | CPU % runner / broker / "
        "simulator | p50 s | p99 s | runner p50 / p99 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        *[row(r) for r in runs],
        "",
        f"Bar: >= 200 devices for 5 minutes with 0 lost acknowledged messages: "
        f"{'met' if main_run['devices'] >= 200 and main_run['duration_s'] >= 300 and main_run['lost_acknowledged'] == 0 else 'NOT met'} "
        f"({main_run['devices']} devices, {main_run['duration_s']:.0f} s, {main_run['lost_acknowledged']} lost).",
        f"Largest N tried with p99 <= 1 s: {largest}.",
        f"Total wall time {payload['wall_s']:.0f} s.",
    ]
    write_results(args.out, payload, "\n".join(md))


if __name__ == "__main__":
    main()
