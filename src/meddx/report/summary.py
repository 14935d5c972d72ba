"""A one-page validation report for any modality: what was evaluated, metrics with CIs, calibration, card.

The image report (:mod:`meddx.report.build`) adds explanations, subgroups and uncertainty figures;
signal and fusion models get this page from their ``evaluate`` result, so that ``meddx report``
accepts every model package. Plain HTML, escaped, no scripts: it opens anywhere and renders
without console errors (``meddx report --check``).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]
"""(heading, column names, rows) of an extra table."""

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
          "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:.2em .6em;"
          "text-align:left}td.n{text-align:right}.note{background:#fff6d5;padding:.5em}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return "–" if value is None else str(value)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td class='n'>{html.escape(_fmt(v))}</td>" if isinstance(v, (int, float))
                         else f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_summary_report(package: dict[str, Any], result: dict[str, Any], out: str | Path, *,
                         tables: Sequence[Table] = ()) -> Path:
    """Write ``out/report.html`` and ``out/report.json`` from an ``evaluate`` result; return the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    metrics = result.get("metrics") or {}
    rows = [(name, m.get("value"), m.get("low"), m.get("high")) for name, m in metrics.items()
            if isinstance(m, dict) and "value" in m]
    trust = package.get("trust") or {}
    calibration = (trust.get("calibration") or {}).get("name", "none")
    training = package.get("data") or {}
    sections = [
        f"<h1>Validation report: {esc(str(package.get('name')))} {esc(str(package.get('version', '')))}</h1>",
        "<p class='note'>Decision support for qualified staff; not for primary diagnosis. "
        f"Intended use: {esc(str(package.get('intended_use') or 'not stated'))}</p>",
        "<h2>Model</h2>",
        _table(("field", "value"), [
            ("modality", package.get("modality", "image")), ("architecture", package.get("architecture")),
            ("classes", ", ".join(map(str, package.get("class_names", [])))),
            ("trained on", f"{training.get('dataset') or training.get('source')}"),
            ("calibration", calibration), ("meddx", package.get("meddx_version")),
        ]),
        "<h2>Evaluation</h2>",
        f"<p>Data <code>{esc(str(result.get('data')))}</code>, split <b>{esc(str(result.get('split')))}</b>: "
        f"n = {esc(str(result.get('n')))}"
        + (f" from {esc(str(result['n_groups']))} patients/records" if result.get("n_groups") else "")
        + f"; 95% bootstrap CIs ({esc(str(result.get('n_boot', 'n/a')))} resamples"
        + (f", resampling {esc(str(result['resampling']))}" if result.get("resampling") else "") + ").</p>",
        _table(("metric", "value", "95% CI low", "95% CI high"), rows),
    ]
    for heading, columns, body in tables:
        sections += [f"<h2>{esc(heading)}</h2>", _table(columns, body)]
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>meddx report: "
            f"{esc(str(package.get('name')))}</title><style>{_STYLE}</style></head><body>{''.join(sections)}"
            "</body></html>")
    (out / "report.json").write_text(json.dumps({"package": {k: package.get(k) for k in (
        "name", "version", "modality", "architecture", "class_names")}, "result": result}, indent=2, default=str),
        encoding="utf-8")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
