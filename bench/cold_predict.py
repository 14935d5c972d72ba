"""Cold start of ``meddx predict`` for every backbone: a new process per call, PNG and DICOM, ONNX vs torch.

    python -m bench.cold_predict
    python -m bench.cold_predict --models resnet18-28 cnn-small --repeats 5

The bar (issue 3): ``meddx predict`` on a PNG and on a DICOM file returns JSON in
under 3 s cold. For each backbone (28 px for meddx's CNNs and the 28-px stems,
224 px otherwise) this trains a package for one epoch on 16 generated images (the
weights do not matter for speed), which writes its ONNX export as every package
does, then times ``meddx predict PACKAGE FILE`` as a new process, ``--repeats``
times per file and runtime: the default (the package's ONNX export on ONNX
Runtime, no torch import) and ``MEDDX_RUNTIME=torch`` (torch and timm, as before
exports existed). The DICOM file is the catalogue's ``format-samples``
ultrasound ``US1_UNCR.dcm`` (640×480); the PNG holds the same pixels. Before the
first call of each model and runtime the OS page cache is dropped when the process
may (root), so that call reads the package and the libraries from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import RUNS, write_results

MODELS = ["cnn-small", "resnet18-28", "densenet121-28", "resnet18", "resnet50", "mobilenetv3-small",
          "mobilenetv3-large", "efficientnet-b0", "densenet121"]
BAR_S = 3.0


def _size(model: str) -> int:
    return 28 if model.startswith("cnn") or model.endswith("-28") else 224


def _training_folder(root: Path) -> Path:
    """16 grey 32 px PNGs with ``labels.csv`` (bright centre = ``lesion``)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(16):
        img = rng.integers(0, 80, (32, 32)).astype(np.uint8)
        if i % 2:
            img[8:24, 8:24] += 150
        Image.fromarray(img).save(root / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'lesion' if i % 2 else 'normal'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _inputs(root: Path) -> dict[str, Path]:
    """The catalogue's ultrasound DICOM and a PNG of its pixels."""
    from PIL import Image

    import meddx
    from meddx.data.catalogue import fetch

    dicom = fetch("format-samples") / "dicom" / "US1_UNCR.dcm"
    pixels = np.asarray(meddx.read(dicom).array)
    grey = pixels.mean(axis=-1) if pixels.ndim == 3 else pixels
    png = root / "US1_UNCR.png"
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(png)
    return {"png": png, "dicom": dicom}


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _meddx() -> list[str]:
    script = Path(sys.executable).parent / "meddx"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meddx.cli"]


def _call(package: Path, file: Path, runtime: str) -> float:
    env = dict(os.environ, MEDDX_RUNTIME=runtime)
    start = time.perf_counter()
    proc = subprocess.run([*_meddx(), "predict", str(package), str(file)], capture_output=True, text=True,
                          timeout=120, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "meddx predict failed")
    json.loads(proc.stdout)  # the answer is JSON
    return wall


def measure(model: str, data: Path, inputs: dict[str, Path], repeats: int, out: Path) -> dict:
    from meddx.training import TrainConfig, train

    size = _size(model)
    start = time.perf_counter()
    run = train(TrainConfig(data=str(data), model=model, epochs=1, size=size, batch_size=8, augment=False,
                            out=str(out / f"cold-{model}"), threads=os.cpu_count()), progress=False)
    build_s = time.perf_counter() - start
    package = json.loads((run / "package.json").read_text())
    onnx = package.get("runtime", {}).get("onnx", {})
    row = {"model": model, "size": size, "build_s": build_s, "onnx": onnx,
           "onnx_mb": (run / "model.onnx").stat().st_size / 1e6 if (run / "model.onnx").is_file() else None,
           "weights_mb": (run / "model.safetensors").stat().st_size / 1e6}
    for runtime in ("auto", "torch"):
        row["page_cache_dropped"] = _drop_page_cache()  # each runtime's first call reads its files from disk
        for kind, file in inputs.items():
            row[f"{runtime}_{kind}"] = [_call(run, file, runtime) for _ in range(repeats)]
    return row


def _fmt(times: list[float]) -> str:
    return f"{times[0]:.2f} / {statistics.median(times[1:] or times):.2f} / {max(times):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--repeats", type=int, default=3, help="new processes per file and runtime")
    parser.add_argument("--stem", default="cold_predict")
    args = parser.parse_args()
    out = RUNS / "cold-predict"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = _training_folder(Path(tmp) / "data")
        inputs = _inputs(Path(tmp))
        rows = []
        for model in args.models:
            try:
                row = measure(model, data, inputs, args.repeats, out)
            except Exception as exc:  # noqa: BLE001 - report the model that failed, go on with the rest
                rows.append({"model": model, "size": _size(model), "error": f"{type(exc).__name__}: {exc}"[:300]})
                print(f"{model}: {rows[-1]['error']}", flush=True)
                continue
            rows.append(row)
            print(f"{model}: onnx png {_fmt(row['auto_png'])}, dicom {_fmt(row['auto_dicom'])}; "
                  f"torch png {_fmt(row['torch_png'])}, dicom {_fmt(row['torch_dicom'])}", flush=True)
    import platform

    import onnxruntime
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    ok = [r for r in rows if "error" not in r]
    worst = max((max(r["auto_png"] + r["auto_dicom"]) for r in ok), default=float("nan"))
    lines = ["# Cold start of `meddx predict`", "",
             f"{info['cores']} CPU cores, Python {info['python']}, torch {info['torch']}, onnxruntime "
             f"{info['onnxruntime']}; {info['date']}. Each figure is one new `meddx predict PACKAGE FILE` process "
             f"(wall seconds), {args.repeats} per cell: first / median of the rest / max. The first PNG call of each "
             "model and runtime follows a page-cache drop where allowed (column 'cache dropped'). PNG and DICOM: "
             "`format-samples/dicom/US1_UNCR.dcm` (640×480 ultrasound) and the same pixels as PNG.", "",
             f"Bar: under {BAR_S:.0f} s. Slowest default-runtime call over all models: **{worst:.2f} s**.", "",
             "| model | px | weights MB | ONNX MB | max abs Δlogit, export vs torch | cache dropped | "
             "ONNX Runtime: PNG | ONNX Runtime: DICOM | torch: PNG | torch: DICOM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | – | – | – | – | cannot run: {r['error']} | | | |")
            continue
        gap = r["onnx"].get("max_abs_logit_gap")
        lines.append(f"| {r['model']} | {r['size']} | {r['weights_mb']:.1f} | "
                     f"{r['onnx_mb']:.1f} | {gap:.1e} | {'yes' if r['page_cache_dropped'] else 'no'} | "
                     f"{_fmt(r['auto_png'])} | {_fmt(r['auto_dicom'])} | {_fmt(r['torch_png'])} | "
                     f"{_fmt(r['torch_dicom'])} |" if r["onnx_mb"] else
                     f"| {r['model']} | {r['size']} | {r['weights_mb']:.1f} | no export: "
                     f"{r['onnx'].get('error', '?')} | | | {_fmt(r['auto_png'])} | {_fmt(r['auto_dicom'])} | "
                     f"{_fmt(r['torch_png'])} | {_fmt(r['torch_dicom'])} |")
    paths = write_results(args.stem, {"machine": info, "bar_s": BAR_S, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))
    print("written:", *paths)


if __name__ == "__main__":
    main()
