"""Load test of the clinician service: POST /api/studies throughput and latency, micro-batching on and off.

    python -m bench.service_load                      # 1, 8, 32 clients; 2 × 10 s each; batching on and off
    python -m bench.service_load --clients 32 --duration 5 --repeats 1 --no-write

The real server (uvicorn, ``meddx.service.app.serve``) runs in a subprocess
(see ``tests/service/_server.py``) with a realistic demo model: a cnn-small
PneumoniaMNIST package (``bench/runs/trust-pneu-ensemble5/members/m0`` when it
exists, else one trained for one epoch and cached under ``bench/runs/``).
Clients (``httpx.AsyncClient`` each, keep-alive) send a 28×28 chest X-ray PNG
back to back (``explain=false``, ``uncertainty=none``). Both servers (batching
on and off) run at once and each client count is measured on them in turn
(on, off, off, on: load from other jobs on the machine hits both alike); after
a warm-up, every request that finishes inside a timed window counts, and the
server's CPU time per request is read from /proc. Each request also goes
through the rest of the study workflow: upload checks, de-identification
(re-encode), encrypted blob storage, database rows and the hash-chained audit
log, so micro-batching only shortens the model part of it; ``profile_steps()``
times each step in-process to show where a request's time goes.

Results: ``bench/results/service_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import RUNS, machine, write_results

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.service._server import Home, ServerProcess, prepare_home  # noqa: E402

ENSEMBLE_MEMBER = RUNS / "trust-pneu-ensemble5" / "members" / "m0"
TRAINED = RUNS / "service-load-cnn-small"
BAR = 3.0  # speed-up at the largest client count that batching should reach


def demo_model() -> Path:
    """A cnn-small PneumoniaMNIST package: the ensemble bench's first member, else one trained for 1 epoch."""
    for run in (ENSEMBLE_MEMBER, TRAINED):
        if (run / "package.json").is_file() and (run / "model.safetensors").is_file():
            return run
    from meddx.training import TrainConfig, train

    print(f"training cnn-small on pneumoniamnist for 1 epoch (once; cached in {TRAINED})", flush=True)
    return train(TrainConfig(data="pneumoniamnist", model="cnn-small", epochs=1, seed=0, out=str(TRAINED)),
                 progress=False)


def study_png() -> bytes:
    """A 28×28 PneumoniaMNIST test image as PNG (a synthetic one without the mirror)."""
    import numpy as np
    from PIL import Image

    try:
        from meddx.data.datasets import load_images

        image = np.asarray(load_images("pneumoniamnist").splits["test"][0][0])
    except Exception as exc:  # noqa: BLE001 (no mirror: any 28-px grey image does for a load test)
        print(f"note: no PneumoniaMNIST image ({type(exc).__name__}); sending a synthetic one", flush=True)
        image = np.random.default_rng(0).integers(0, 255, (28, 28)).astype(np.uint8)
    image = np.squeeze(image)
    if image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


async def _client(base: str, token: str, png: bytes, model: str, stop_at: float,
                  records: list[tuple[float, float, int]]) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    data = {"model": model, "uncertainty": "none", "explain": "false"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120.0,
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as client:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                response = await client.post("/api/studies", data=data, files={"file": ("x.png", png, "image/png")})
                status = response.status_code
            except httpx.HTTPError:
                status = -1
            records.append((start, time.perf_counter(), status))


def token_for(base: str, home: Home) -> str:
    import httpx

    response = httpx.post(base + "/api/auth/token", data={"username": home.username, "password": home.password},
                          timeout=60.0)
    response.raise_for_status()
    return str(response.json()["access_token"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its repeats: requests and seconds summed, latencies pooled."""
    latencies = sorted(x for p in parts for x in p.pop("_latencies"))

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return float(latencies[min(len(latencies) - 1, int(round(q * (len(latencies) - 1))))])

    requests, seconds = sum(p["requests"] for p in parts), sum(p["seconds"] for p in parts)
    cpu = sum(p["server_cpu_s"] for p in parts)
    return {"clients": parts[0]["clients"], "batching": parts[0]["batching"], "requests": requests,
            "errors": sum(p["errors"] for p in parts),
            "statuses": sorted({s for p in parts for s in p["statuses"]}), "seconds": seconds,
            "rps": requests / seconds if seconds else 0.0, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(latencies) if latencies else None,
            "server_cpu_ms_per_request": 1000 * cpu / requests if requests else None,
            "repeats": [{k: p[k] for k in ("rps", "p50_ms", "p99_ms", "load_avg")} for p in parts]}


def measure(server: ServerProcess, token: str, png: bytes, model: str, clients: int, warmup: float,
            duration: float, batching: bool) -> dict[str, Any]:
    """One timed window at ``clients`` concurrent clients, with the server's CPU time over it."""
    import os

    async def timed() -> dict[str, Any]:
        records: list[tuple[float, float, int]] = []
        begin = time.perf_counter()
        window = (begin + warmup, begin + warmup + duration)
        cpu: dict[str, float] = {}

        async def sample_cpu() -> None:  # the server's CPU time at the window's edges
            await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
            cpu["start"] = cpu_seconds(server.process.pid) if server.process else float("nan")
            await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
            cpu["end"] = cpu_seconds(server.process.pid) if server.process else float("nan")

        await asyncio.gather(sample_cpu(), *(_client(server.url, token, png, model, window[1], records)
                                             for _ in range(clients)))
        done = [r for r in records if window[0] <= r[1] <= window[1]]  # throughput: finished in the window
        ok = [r for r in done if r[2] == 201]
        started = [r for r in ok if r[0] >= window[0]]  # latency: whole request inside the window
        return {"clients": clients, "batching": batching, "requests": len(ok), "errors": len(done) - len(ok),
                "statuses": sorted({r[2] for r in done if r[2] != 201}), "seconds": duration,
                "rps": len(ok) / duration, "_latencies": [(e - s) * 1000 for s, e, _ in started],
                "p50_ms": statistics.median([(e - s) * 1000 for s, e, _ in started]) if started else None,
                "p99_ms": None, "server_cpu_s": cpu["end"] - cpu["start"], "load_avg": os.getloadavg()[0]}

    return asyncio.run(timed())


def run(args: argparse.Namespace, run_folder: Path, png: bytes, keep: Path | None) -> tuple[list[dict[str, Any]], str]:
    """Both servers (batching on and off) up at once; each client count measured on them in turn (ABBA)."""
    work = Path(tempfile.mkdtemp(prefix="meddx-load-"))
    servers: dict[bool, tuple[ServerProcess, str]] = {}
    model = ""
    try:
        for batching in (True, False):
            if ("on" if batching else "off") not in args.modes:
                continue
            tag = "on" if batching else "off"
            home = prepare_home(work / f"home-{tag}", run_folder)
            model = home.model
            server = ServerProcess(home.home, batching=batching,
                                   log=(keep / f"service_load.server-{tag}.log") if keep else None).start()
            servers[batching] = (server, token_for(server.url, home))
        for batching, (server, token) in servers.items():  # load the model, warm the caches
            measure(server, token, png, model, max(args.clients), 0.0, args.warmup * 2, batching)
        rows = []
        order = list(servers)
        for n in args.clients:
            parts: dict[bool, list[dict[str, Any]]] = {b: [] for b in servers}
            for rep in range(args.repeats):
                for batching in (order if rep % 2 == 0 else order[::-1]):  # on, off, off, on, ...
                    server, token = servers[batching]
                    part = measure(server, token, png, model, n, args.warmup, args.duration, batching)
                    parts[batching].append(part)
            for batching in order:
                row = merge(parts[batching])
                rows.append(row)
                print(f"batching {'on ' if batching else 'off'} {n:3d} clients: {row['rps']:7.1f} req/s, "
                      f"p50 {row['p50_ms'] or 0:7.1f} ms, p99 {row['p99_ms'] or 0:7.1f} ms, "
                      f"server CPU {row['server_cpu_ms_per_request'] or 0:5.1f} ms/request, "
                      f"errors {row['errors']}", flush=True)
        return rows, model
    finally:
        for server, _ in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _rows(ctx: Any, user: str, kind: str, data: bytes, patient: str, package: dict[str, Any],
          prediction: dict[str, Any], blobs: tuple[str, str]) -> None:
    """The database part of ``meddx.service.api.run_study`` (kept in step with it), for the profile."""
    import json

    from meddx.service import api, workflow
    from meddx.storage.db import begin_write
    from meddx.storage.models import Patient, Result, Study, User

    with ctx.sessions() as session:
        begin_write(session, Study.__tablename__)
        uploader = session.query(User).filter_by(username=user).one()
        person = session.query(Patient).filter_by(pseudonym=patient).one_or_none() or Patient(pseudonym=patient)
        study = Study(patient=person, uploader=uploader, modality=kind, content_type="image/png",
                      sha256=workflow.digest(data), size=len(data), blob_id=blobs[1], display_name=f"{kind} study")
        session.add(study)
        session.flush()
        result = Result(study_id=study.id, model_name=package["name"], model_version=str(package["version"]),
                        prediction=b"", decision=prediction["decision"]["decision"], overlay_blob_id=None)
        session.add(result)
        session.flush()
        stored = {"prediction": prediction, "preview_blob_id": blobs[0]}
        result.prediction = ctx.blobs.encryptor.encrypt(json.dumps(stored).encode(), api._aad(result.id))
        session.commit()


def profile_steps(run_folder: Path, png: bytes, iterations: int = 60) -> dict[str, float]:
    """Median milliseconds of each step of one study, in this process (no HTTP), with the service's own code."""
    import os

    import numpy as np

    from meddx.service import api, workflow
    from meddx.service.context import ServiceContext, Settings
    from meddx.service.security import issue_token, read_token
    from meddx.service.uploads import receive
    from meddx.storage.models import User
    from tests.service._server import meddx_home

    work = Path(tempfile.mkdtemp(prefix="meddx-load-profile-"))
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Any, *a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        out = fn(*a, **k)
        times.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        return out

    try:
        home = prepare_home(work / "home", run_folder)
        with meddx_home(home.home):
            os.environ.pop("MEDDX_DATABASE_URL", None)
            ctx = ServiceContext.build(Settings.from_env())
            token = issue_token(ctx.token_secret, home.username, "clinician")

            def auth() -> None:
                data = read_token(ctx.token_secret, token)
                with ctx.sessions() as session:
                    session.query(User).filter_by(username=data.username).one_or_none()

            pipeline = ctx.pipeline(home.model)
            one, many = workflow.predict_batch(pipeline, "none"), workflow.predict_batch(pipeline, "none")
            for i in range(iterations + 5):
                timed("token check + account lookup", auth)
                timed("model lookup (registry)", ctx.pipeline, home.model)
                upload = timed("upload checks (receive)", receive, io.BytesIO(png), ctx.upload_dir)
                data, patient, suffix = timed("de-identify (re-encode)", workflow.deidentify_upload, upload,
                                              ctx.pseudonym_key, None)
                image = timed("read image", workflow.read_image, pipeline, data, suffix, None)
                upload.discard()
                x = workflow.model_input(pipeline, image)
                prediction = timed("model: predict, batch of 1", one, x[None])[0]
                timed("model: predict, batch of 32 (per image)", many, np.stack([x] * 32))
                times["model: predict, batch of 32 (per image)"][-1] /= 32
                original = timed("store: preview + input, encrypted, fsynced (2 blobs)", lambda: (
                    ctx.blobs.put(workflow.png_bytes(image), kind="preview"), ctx.blobs.put(data, kind="study")))
                timed("store: study + result rows (1 commit)", _rows, ctx, home.username, upload.kind, data,
                      patient, pipeline.package, prediction, original)
                timed("store: audit entry (1 commit)", api.audit, ctx, home.username, "study.upload",
                      patient_pseudonym=patient, input_sha256=workflow.digest(data),
                      output=workflow.output_summary(prediction))
                if i < 5:  # warm-up
                    for values in times.values():
                        values.clear()
            ctx.engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {name: statistics.median(values) for name, values in times.items()}


def markdown(payload: dict[str, Any]) -> str:
    rows = {(r["clients"], r["batching"]): r for r in payload["rows"]}
    clients = sorted({c for c, _ in rows})

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "– | – | –"
        return f"{r['rps']:.1f} | {r['p50_ms'] or 0:.0f} | {r['p99_ms'] or 0:.0f}"

    def cpu(r: dict[str, Any] | None) -> str:
        return f"{r['server_cpu_ms_per_request']:.1f}" if r and r.get("server_cpu_ms_per_request") else "–"

    m = payload["machine"]
    lines = [
        "# Clinician service under load: POST /api/studies",
        "",
        f"`python -m bench.service_load`. Model `{payload['model']}` (cnn-small, PneumoniaMNIST), one 28×28 PNG per "
        "request with `explain=false`, `uncertainty=none`. The real server (uvicorn, one process) runs in a "
        "subprocess with its defaults: SQLite in WAL mode, AES-GCM blobs fsynced to disk, hash-chained audit log. "
        "Each client is an `httpx.AsyncClient` on one keep-alive connection sending requests back to back. "
        f"Both servers (micro-batching on and off) are up together and measured in turn (on, off, off, on, ...): "
        f"{payload['repeats']} windows of {payload['warmup_s']:.0f} s warm-up + {payload['duration_s']:.0f} s "
        "timed per cell; throughput counts requests finished in the windows, latency those wholly inside them.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
        f"Python {m['python']}, {m['date']}. The load generator runs on the same cores; "
        f"1-min load average during the run {payload['load_avg_min']:.1f}–{payload['load_avg_max']:.1f} "
        "(other jobs shared the machine when it is above ~2).",
        "",
        "| clients | batching on: req/s | p50 ms | p99 ms | batching off: req/s | p50 ms | p99 ms | speed-up "
        "| server CPU ms/request on / off |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in clients:
        on, off = rows.get((c, True)), rows.get((c, False))
        speed = f"{on['rps'] / off['rps']:.2f}×" if on and off and off["rps"] else "–"
        lines.append(f"| {c} | {cell(on)} | {cell(off)} | {speed} | {cpu(on)} / {cpu(off)} |")
    s = payload.get("speedup_at_max")
    lines += [
        "",
        f"Bar: ≥ {BAR:.0f}× throughput with batching at {max(clients)} clients. "
        + (f"Measured: **{s:.2f}×** ({'met' if s >= BAR else 'missed'})." if s is not None else "Not measured."),
    ]
    errors = sum(r["errors"] for r in payload["rows"])
    if errors:
        lines.append(f"\nErrors (non-201 or failed requests) in the timed windows: {errors}.")
    steps = payload.get("profile_ms")
    if steps:
        lines += ["", "## Where a request's time goes", "",
                  "Median ms per step of one study, measured in-process with the service's own functions "
                  "(no HTTP; `profile_steps()`):", "", "| step | ms |", "|---|---:|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in steps.items()]
        model1 = steps.get("model: predict, batch of 1")
        model32 = steps.get("model: predict, batch of 32 (per image)")
        total = sum(v for k, v in steps.items() if not k.startswith(" ") and "batch of 32" not in k)
        if model1 and model32 and total:
            rest = total - model1
            lines += ["", f"Batching makes the model step {model1 / model32:.1f}× cheaper per image "
                          f"({model1:.2f} → {model32:.2f} ms), but it is {100 * model1 / total:.0f}% of the "
                          f"{total:.1f} ms a study costs here; the other {rest:.1f} ms (checks, de-identification, "
                          "encryption, fsync, SQLite, audit) are the same with or without batching. "
                          f"Amdahl's bound for the end-to-end speed-up from batching alone: "
                          f"{total / (rest + model32):.2f}× (before HTTP and JSON, which add to both)."]
    for note in payload.get("notes", []):
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per window")
    parser.add_argument("--repeats", type=int, default=2, help="windows per cell (alternating on/off order)")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before each window")
    parser.add_argument("--modes", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--no-profile", action="store_true", help="skip the per-step profile")
    parser.add_argument("--note", action="append", default=[], help="a line for the Markdown report")
    parser.add_argument("--no-write", action="store_true", help="print only; keep bench/results as it is")
    args = parser.parse_args(argv)

    mirror = REPO.parent / "shared" / "data"
    if not os.environ.get("MEDDX_DATA_MIRROR") and mirror.is_dir():
        os.environ["MEDDX_DATA_MIRROR"] = str(mirror)
    run_folder = demo_model()
    png = study_png()
    keep = None if args.no_write else REPO / "bench" / "results"
    load_before = os.getloadavg()[0]
    rows, model = run(args, run_folder, png, keep)
    loads = [load_before] + [p["load_avg"] for r in rows for p in r["repeats"]]
    profile = None if args.no_profile else profile_steps(run_folder, png)
    top = max(args.clients)
    on = next((r for r in rows if r["clients"] == top and r["batching"]), None)
    off = next((r for r in rows if r["clients"] == top and not r["batching"]), None)
    speedup = on["rps"] / off["rps"] if on and off and off["rps"] else None
    payload = {"benchmark": "service_load", "model": model, "model_run": str(run_folder), "png_bytes": len(png),
               "warmup_s": args.warmup, "duration_s": args.duration, "repeats": args.repeats, "rows": rows,
               "speedup_at_max": speedup, "bar": BAR, "bar_met": speedup is not None and speedup >= BAR,
               "profile_ms": profile, "load_avg_min": min(loads), "load_avg_max": max(loads),
               "machine": machine(), "notes": list(args.note)}
    text = markdown(payload)
    print(text)
    if not args.no_write:
        paths = write_results("service_load", payload, text)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
