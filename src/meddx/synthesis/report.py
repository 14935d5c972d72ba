"""``meddx report MODEL DATA`` for a restoration model: one self-contained HTML page (plus its JSON).

The page says at the top, in a red banner, that the restored images in it are SYNTHETIC; then the
model, the data and the split (the title of :func:`meddx.synthesis.package.evaluate`, which says when
the split holds images the model was trained or tuned on), the PSNR / SSIM table per dose (low-dose
input, restored, and the paired gain, each with its 95 % bootstrap CI) and a few example triplets:
full-dose | simulated low-dose | restored, the restored one with its ``SYNTHETIC`` banner burnt in
(:func:`meddx.synthesis.derived.with_banner`), each with its residual hallucination check. The
pictures are embedded as PNG data URIs, so the file stands alone.

:func:`meddx.synthesis.package.report` (the handler's ``report``) calls :func:`write` with the handler
module itself, whose ``evaluate``, ``degraded_set``, ``load_net`` and ``params_of`` are used here: this
module imports nothing from it, so the two form no import circle.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

BANNER = "SYNTHETIC images: the restored pictures in this report were computed by a model, not acquired"


def _png_uri(array: np.ndarray) -> str:
    from PIL import Image

    x = np.asarray(array)
    if x.dtype != np.uint8:
        x = np.clip(np.asarray(x, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ci(metric: dict[str, Any] | None, digits: int = 2) -> str:
    if not metric:
        return "–"
    return (f"{metric['value']:.{digits}f} <span class='ci'>({metric['low']:.{digits}f} – "
            f"{metric['high']:.{digits}f})</span>")


def triplets(handler: Any, folder: Path, package: dict[str, Any], images: list[np.ndarray], names: list[str], *,
             dose: float, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` triplets at ``dose``: full-dose, simulated low-dose and restored (banner burnt in) pictures
    as data URIs, with the residual check of each restored image."""
    from meddx.synthesis import derived, hallucination
    from meddx.synthesis import dose as DM
    from meddx.synthesis.training import restore_images

    chosen = images[:max(n, 0)]
    if not chosen:
        return []
    dose_model = DM.get(package["restoration"]["noise"])
    params = handler.params_of(package)
    observed, levels = handler.degraded_set(chosen, dose_model, params, dose, seed)
    restored = restore_images(handler.load_net(folder, package), observed, levels)
    text = derived.banner_text("restoration", str(package.get("name")))
    out = []
    for name, full, low, level, ours in zip(names, chosen, observed, levels, restored, strict=False):
        check = hallucination.residual(low, ours, level, expected=dose_model.expected(ours, dose, **params))
        out.append({"name": name, "dose": dose, "full": _png_uri(full), "low": _png_uri(low),
                    "restored": _png_uri(derived.with_banner(ours, text)), "regions": int(check["regions"])})
    return out


def write(handler: Any, folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
          split: str | None = None, examples: int = 3, example_dose: float | None = None,
          max_images: int | None = None) -> Path:
    """Write the restoration report; return the HTML file. ``handler``: :mod:`meddx.synthesis.package`.

    ``out``: a folder (``report.html`` and ``report.json`` in it) or a file name ending in ``.html``
    (its JSON beside it). ``data``: default the model's training source; ``split``: default test.
    ``examples``: triplets shown (default 3); ``example_dose``: their dose (default the middle of the
    doses scored); ``max_images``: cap on the images scored.
    """
    from meddx.synthesis import data as SD

    if package.get("task") != "restoration" and "restoration" not in package:
        raise ConfigError("not a restoration model", field="task", hint="Give a model trained with --task restoration")
    data = data or str((package.get("data") or {}).get("source") or "")
    if not data:
        raise ConfigError("no data to report on", field="data", hint="Give the images: meddx report MODEL FOLDER")
    options = {"max_images": max_images} if max_images else {}
    result = handler.evaluate(Path(folder), package, data, split=split, n_boot=n_boot, **options)
    doses = [float(d) for d in result["doses"]]
    dose = float(example_dose) if example_dose is not None else sorted(doses)[len(doses) // 2]
    images = SD.load(data, package.get("preprocess", {}).get("size"))
    part = result["split"]
    shown = triplets(handler, Path(folder), package, images.splits[part], list(images.names.get(part) or []),
                     dose=dose, n=examples)

    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        page_path, json_path = out, out.with_suffix(".json")
    else:
        page_path, json_path = out / "report.html", out / "report.json"
    page_path.parent.mkdir(parents=True, exist_ok=True)
    summary = {**result, "kind": "restoration", "synthetic": True, "banner": BANNER,
               "examples": [{k: v for k, v in e.items() if k in ("name", "dose", "regions")} for e in shown]}
    json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    page_path.write_text(_page(package, result, shown, n_boot), encoding="utf-8")
    return page_path


def _page(package: dict[str, Any], result: dict[str, Any], shown: list[dict[str, Any]], n_boot: int) -> str:
    esc = html.escape
    metrics = result["metrics"]
    rows = []
    for d in result["doses"]:
        key = f"{float(d):g}"
        gain = metrics.get(f"gain_psnr@{key}") or {}
        rows.append(
            f"<tr><th scope='row'>{key}</th><td>{_ci(metrics.get(f'low_psnr@{key}'))}</td>"
            f"<td>{_ci(metrics.get(f'psnr@{key}'))}</td><td>{_ci(gain)}"
            + (f" · better on {100 * gain['wins']:.0f}% of images" if 'wins' in gain else "") + "</td>"
            f"<td>{_ci(metrics.get(f'low_ssim@{key}'), 3)}</td><td>{_ci(metrics.get(f'ssim@{key}'), 3)}</td>"
            f"<td>{_ci(metrics.get(f'gain_ssim@{key}'), 3)}</td></tr>")
    figures = "".join(
        f"""<figure class="triplet"><div class="row">
<div><img src="{e['full']}" alt="full-dose image {esc(str(e['name']))}"><p>full dose (acquired)</p></div>
<div><img src="{e['low']}" alt="simulated low-dose image {esc(str(e['name']))}">
<p>dose {e['dose']:g} (simulated)</p></div>
<div><img class="synthetic" src="{e['restored']}" alt="SYNTHETIC restored image {esc(str(e['name']))}">
<p class="synth">restored – SYNTHETIC</p></div></div>
<figcaption>{esc(str(e['name']))}: {e['regions']} region(s) changed beyond the expected noise
{'– compare with the input' if e['regions'] else '(the removed signal looks like noise)'}</figcaption></figure>"""
        for e in shown)
    spec = package.get("restoration") or {}
    title = str(result.get("title") or f"{package.get('name')} on {result.get('data')} ({result.get('split')})")
    seen = "trained or tuned on" in title
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>meddx restoration report: {esc(title)}</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:1em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
.ci{{color:#555;font-size:.9em}}.banner{{background:#aa0000;color:#fff;font-weight:700;padding:.6em 1em;
border-radius:4px}}.warn{{background:#fff7ed;border:1px solid #fdba74;padding:.5em .8em}}
.triplet .row{{display:flex;gap:.6em;flex-wrap:wrap;align-items:flex-start}}.triplet img{{width:220px;
image-rendering:pixelated;display:block}}.triplet p{{margin:.2em 0;font-size:.9em}}
.synth{{color:#aa0000;font-weight:700}}
figure{{margin:1em 0;border-top:1px solid #ddd;padding-top:.6em}}</style></head><body>
<div id="synthetic-banner" class="banner" role="alert">{esc(BANNER)}. They are not images of a patient; never
read them without the acquired image.</div>
<h1>Restoration report: {esc(title)}</h1>
{'<p class="warn"><b>Not a validation:</b> these images were used to train or tune the model.</p>' if seen else ''}
<p>Model: <b>{esc(str(package.get('name')))}</b> {esc(str(package.get('version')))}
({esc(str(package.get('model') or package.get('architecture') or ''))}); noise model
{esc(str(spec.get('noise')))}. Data: {esc(str(result.get('data')))}, split <b>{esc(str(result.get('split')))}</b>,
n = {result.get('n')} images. Intended use: {esc(str(package.get('intended_use') or '–'))}</p>
<h2>PSNR and SSIM per dose</h2>
<p>Each image is degraded to the dose with the model's noise model (seeded), then restored. Means over images with
95% percentile-bootstrap CIs ({n_boot} resamples); gain is restored minus low-dose on the same images.</p>
<table id="metrics"><tr><th>dose</th><th>PSNR low-dose (dB)</th><th>PSNR restored (dB)</th><th>PSNR gain</th>
<th>SSIM low-dose</th><th>SSIM restored</th><th>SSIM gain</th></tr>{''.join(rows)}</table>
<h2>Examples</h2>
<p>Full dose | simulated low dose | restored. The restored image carries its banner in the pixels, as every
synthetic image meddx writes does (DICOM outputs are marked ImageType DERIVED instead).</p>
{figures or '<p>No images to show.</p>'}
<p class="ci">meddx synthesis report · hallucination check: structure in what the model removed beyond the
expected noise (residual regions); a count of 0 does not prove that nothing was invented.</p>
</body></html>"""


__all__ = ["BANNER", "triplets", "write"]
