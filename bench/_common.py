"""Shared helpers for benchmarks: machine description and result writing (JSON + Markdown)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(os.environ.get("MEDDX_BENCH_RUNS", Path(__file__).resolve().parent / "runs"))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


REPO = Path(__file__).resolve().parents[1]


def portable(text: str) -> str:
    """``text`` with this checkout's absolute path made repository-relative (results name no machine's paths)."""
    return str(text).replace(f"{REPO}/", "").replace(str(REPO), ".")


def command_line() -> str:
    """The benchmark's command as run (``python -m bench.NAME ARGS``), for the table's header."""
    import shlex
    import sys

    module = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "?"
    return portable("python -m " + shlex.join([f"bench.{module}", *sys.argv[1:]]))


def write_results(stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``bench/results/<stem>.json`` and ``<stem>.md``; return both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{stem}.json"
    md_path = RESULTS / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


def mean_sd(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
