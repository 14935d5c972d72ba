"""The one-page HTML validation report: :func:`render_html`.

The report is one self-contained HTML file (figures embedded as ``data:`` URIs,
inline CSS, no script, no external resource of any kind) that a journal reviewer
or a hospital's AI committee can open offline, print, or receive by e-mail. It is
rendered with Jinja2 (autoescaping on: every string from the report dict is
escaped) from ``templates/validation.html.j2``. Beside it, ``report.json`` holds
the same dict as JSON, with figure paths relative to the HTML file's folder.

Report dict schema
==================

Only ``model``, ``data`` and ``evaluation.metrics`` are required; every other
section may be absent, ``None`` or empty. A missing section is rendered as
"not included in this report" and the reporting checklist
(:func:`meddx.report.checklist.build_checklist`) marks the items it would have
covered as "not covered". A missing *field* renders as "not recorded".

A **CI value** (:class:`CI`) is ``{"value": float, "low": float, "high": float}``
(a 95% confidence interval; ``low``/``high`` may be None) and is shown as
``0.912 (0.871–0.948)``; a bare number is accepted too and shown without CI.
None/NaN show as "n/a". Paths are ``str`` or :class:`~pathlib.Path`, absolute or
relative to ``base_dir`` (default: the HTML file's folder). Figures may be PNG,
JPEG, GIF or WebP.

Top level (:class:`Report`):

``title`` (str)
    Page title; default "Validation report: <model name>".
``generated`` (str)
    ISO 8601 time of generation; default: now (UTC).
``meddx_version`` (str)
    Default: the running meddx version.
``model`` (:class:`ModelInfo`, **required**)
    ``name``, ``version``, ``architecture``, ``modality``, ``task`` (str);
    ``class_names`` (list[str], model output order); ``positive_class`` (str);
    ``intended_use`` (str); ``limitations`` (list[str]); ``card_markdown`` (str,
    the model card in Markdown; rendered in section ``model-card`` by a minimal
    converter that escapes everything and makes no links).
``data`` (:class:`DataInfo`, **required**)
    ``dataset``, ``source``, ``licence``, ``description`` (str); ``grouped``
    (bool: partitions disjoint by patient); ``split_note`` (str, how the
    partitions were made); ``splits`` ({split name: ``{"n": int, "classes":
    {class name: count}}``}, e.g. train/val/test).
``evaluation`` (:class:`Evaluation`; ``metrics`` **required**)
    ``split`` (str, e.g. "test"); ``n`` (int, images); ``n_groups`` (int,
    patients, optional); ``external`` (bool: data from another institution than
    the training data, optional); ``positive_class`` (str) and ``threshold``
    (float), optional; ``metrics`` ({name: CI}: ``acc``, ``auc``,
    ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``,
    ``balanced_accuracy`` (or ``balanced_acc``), any other name is shown as is);
    ``ci_method`` (str, e.g. "95% bootstrap, 1000 resamples (patients when known)").
``figures`` ({key: path | :class:`Figure`})
    ``roc``, ``pr``, ``confusion`` (shown under Performance), ``reliability``
    (Calibration), ``risk_coverage`` (Uncertainty); other keys are shown under
    Performance, or under Calibration/Uncertainty/Subgroups when the key starts
    with ``reliability``/``calibration``, ``risk``/``coverage``/``uncertainty``,
    ``subgroup``. A :class:`Figure` is ``{"path", "caption", "alt"}`` to
    override the default caption and alt text. A missing or unreadable file is
    shown as a visible warning, not an error.
``calibration`` (:class:`Calibration`)
    ``method`` (str, e.g. "temperature"); ``params`` ({name: value});
    ``fitted_on`` (str, e.g. "validation split (n=78)"); ``before`` and
    ``after`` ({name: CI}: ``ece``, ``ece_adaptive``, ``brier``, ``nll``, ...).
``operating_points`` (list[:class:`OperatingPoint`])
    Each: ``name`` (e.g. "sensitivity at 90% specificity"), ``threshold``
    (float), ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (CI),
    ``chosen_on`` (str, e.g. "validation").
``local_recalibration`` (:class:`LocalRecalibration`)
    ``description`` (str), ``n_local`` (int), ``before`` / ``after`` ({name: CI});
    shown under Calibration.
``subgroups`` (list[:class:`SubgroupTable`])
    Each: ``attribute`` (e.g. "sex") and ``rows``: list of ``{"group": str,
    "n": int, "prevalence": float (0–1), <metric>: CI, ...}`` (e.g. ``auc``,
    ``acc``, ``sensitivity``, ``specificity``, ``ece``).
``uncertainty`` (:class:`Uncertainty`)
    ``method`` (str, e.g. "mc-dropout (20 passes)"); ``conformal``
    (``{"method", "alpha", "coverage", "mean_set_size", "n_resplits"}``, and
    optionally ``package_coverage``: the coverage of the package's own fitted sets);
    ``abstention`` (``{"measure", "threshold", "target_risk", "coverage",
    "accuracy_kept", "accuracy_all"}``); ``table`` (list of ``{"coverage",
    "accuracy", "risk"}``).
``explanations`` (list[:class:`Explanation`])
    Each: ``image`` (path, the overlay), ``original`` (path), ``method`` (e.g.
    "gradcam"), ``target`` (class name), ``probability`` (float),
    ``sanity_spearman`` (float, rank correlation of the map with the map of a
    randomised model: low is good), ``deletion_auc``, ``random_deletion_auc``,
    ``insertion_auc`` (float).
``warnings`` (list[str])
    Shown in section ``warnings``.

Section ids (stable, for links): ``model``, ``data``, ``performance``,
``calibration``, ``operating-points``, ``subgroups``, ``uncertainty``,
``explanations``, ``model-card``, ``checklist``, ``warnings``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from html import escape as _escape
from pathlib import Path
from typing import Any, TypedDict

from meddx.exceptions import ConfigError, MeddxError, MissingFieldError
from meddx.report.checklist import SECTIONS, build_checklist, section_present

TEMPLATE = "validation.html.j2"
TEMPLATES_DIR = Path(__file__).with_name("templates")


# --- schema ----------------------------------------------------------------------------------

class CI(TypedDict, total=False):
    value: float | None
    low: float | None
    high: float | None


class ModelInfo(TypedDict, total=False):
    name: str
    version: str
    architecture: str
    modality: str
    task: str
    class_names: list[str]
    positive_class: str
    intended_use: str
    limitations: list[str]
    card_markdown: str


class SplitInfo(TypedDict, total=False):
    n: int
    classes: dict[str, int]


class DataInfo(TypedDict, total=False):
    dataset: str
    source: str
    licence: str
    description: str
    grouped: bool
    split_note: str
    splits: dict[str, SplitInfo]


class Evaluation(TypedDict, total=False):
    split: str
    n: int
    n_groups: int
    external: bool
    positive_class: str
    threshold: float
    metrics: dict[str, CI]
    ci_method: str


class Figure(TypedDict, total=False):
    path: str
    caption: str
    alt: str


class Calibration(TypedDict, total=False):
    method: str
    params: dict[str, Any]
    fitted_on: str
    before: dict[str, CI]
    after: dict[str, CI]


class OperatingPoint(TypedDict, total=False):
    name: str
    threshold: float
    sensitivity: CI
    specificity: CI
    ppv: CI
    npv: CI
    chosen_on: str


class LocalRecalibration(TypedDict, total=False):
    description: str
    n_local: int
    before: dict[str, CI]
    after: dict[str, CI]


class SubgroupTable(TypedDict, total=False):
    attribute: str
    rows: list[dict[str, Any]]


class Uncertainty(TypedDict, total=False):
    method: str
    conformal: dict[str, Any]
    abstention: dict[str, Any]
    table: list[dict[str, float]]


class Explanation(TypedDict, total=False):
    image: str
    original: str
    method: str
    target: str
    probability: float
    sanity_spearman: float
    deletion_auc: float
    random_deletion_auc: float
    insertion_auc: float


class Report(TypedDict, total=False):
    title: str
    generated: str
    meddx_version: str
    model: ModelInfo
    data: DataInfo
    evaluation: Evaluation
    figures: dict[str, str | Figure]
    calibration: Calibration
    operating_points: list[OperatingPoint]
    local_recalibration: LocalRecalibration
    subgroups: list[SubgroupTable]
    uncertainty: Uncertainty
    explanations: list[Explanation]
    warnings: list[str]


# --- formatting ------------------------------------------------------------------------------

METRIC_LABELS = {
    "acc": "Accuracy",
    "accuracy": "Accuracy",
    "auc": "AUC (ROC)",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced accuracy",
    "balanced_acc": "Balanced accuracy",
    "ece": "ECE (expected calibration error)",
    "ece_adaptive": "Adaptive ECE",
    "brier": "Brier score",
    "nll": "Negative log-likelihood",
    "mcc": "Matthews correlation",
    "prevalence": "Prevalence",
}
LOWER_IS_BETTER = {"ece", "ece_adaptive", "brier", "nll"}
NOT_RECORDED = "not recorded"


def _number(value: Any) -> float | None:
    """A finite float, or None (bools, None, NaN, non-numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_num(value: Any, digits: int = 3) -> str:
    """``0.912``; "n/a" for None/NaN; ints stay ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    number = _number(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def fmt_ci(metric: Any, digits: int = 3) -> str:
    """``0.912 (0.871–0.948)`` from ``{"value", "low", "high"}`` (or a bare number)."""
    if isinstance(metric, Mapping):
        value, low, high = (_number(metric.get(k)) for k in ("value", "low", "high"))
    else:
        value, low, high = _number(metric), None, None
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    if low is not None and high is not None:
        text += f" ({low:.{digits}f}–{high:.{digits}f})"
    return text


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A fraction 0–1 as a percentage: ``41.0%``."""
    number = _number(value)
    return "n/a" if number is None else f"{100 * number:.{digits}f}%"


def fmt_value(value: Any) -> str:
    """Any field: numbers with 4 significant digits, bools as yes/no, lists joined, None as "not recorded"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value) if value else NOT_RECORDED
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {fmt_value(v)}" for k, v in value.items()) or NOT_RECORDED
    return str(value)


def metric_label(name: Any) -> str:
    return METRIC_LABELS.get(str(name), str(name))


# --- Markdown (model card) -------------------------------------------------------------------

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_EM_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=[^\s_])_(?![\w_])")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
_ORDERED = re.compile(r"^\s{0,3}\d{1,9}[.)]\s+(.*)$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _inline(text: str) -> str:
    """Escape ``text``, then mark up code spans, bold, italics; links become "text (url)" (no href)."""
    parts = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(_inline_plain(text[last:match.start()]))
        parts.append(f"<code>{_escape(match.group(1))}</code>")
        last = match.end()
    parts.append(_inline_plain(text[last:]))
    return "".join(parts)


def _inline_plain(text: str) -> str:
    text = _escape(text)  # no tag survives this; only the tags added below exist
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1) != m.group(2) else m.group(1), text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _EM.sub(r"<em>\1</em>", text)
    return _EM_UNDERSCORE.sub(r"<em>\1</em>", text)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [cell.strip() for cell in line.split("|")]


def markdown_to_html(text: str, *, heading_offset: int = 2) -> str:
    """A minimal, safe Markdown-to-HTML converter for model cards.

    Supports ATX headings (shifted down by ``heading_offset`` levels), paragraphs,
    bullet and numbered lists, pipe tables, fenced code blocks, horizontal rules,
    and inline code, bold and italics. Every character of the input is escaped;
    links are rendered as "text (url)" without a hyperlink, and raw HTML is shown
    as text. Returns an HTML string (mark it safe yourself).
    """
    out: list[str] = []
    paragraph: list[str] = []
    list_kind: str | None = None
    items: list[str] = []
    heading = "Model card"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    def flush() -> None:
        nonlocal list_kind, items
        if paragraph:
            out.append("<p>" + " ".join(_inline(p.strip()) for p in paragraph) + "</p>")
            paragraph.clear()
        if list_kind:
            out.append(f"<{list_kind}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_kind}>")
            list_kind, items = None, []

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            flush()
            fence = stripped[:3]
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + _escape("\n".join(body)) + "</code></pre>")
            i += 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        match = _HEADING.match(stripped)
        if match:
            flush()
            level = min(len(match.group(1)) + heading_offset, 6)
            heading = match.group(2)
            out.append(f"<h{level}>{_inline(heading)}</h{level}>")
            i += 1
            continue
        if _RULE.match(line) and not paragraph:
            flush()
            out.append("<hr>")
            i += 1
            continue
        if "|" in stripped and i + 1 < len(lines) and "|" in lines[i + 1] and _TABLE_SEP.match(lines[i + 1]):
            flush()
            header = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_cells(lines[i]))
                i += 1
            table = [f"<table><caption>{_inline(heading)} (from the model card)</caption><thead><tr>"]
            table += [f'<th scope="col">{_inline(c)}</th>' for c in header]
            table.append("</tr></thead><tbody>")
            for row in rows:
                row = (row + [""] * len(header))[: max(len(header), 1)]
                table.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            table.append("</tbody></table>")
            out.append("".join(table))
            continue
        bullet, ordered = _BULLET.match(line), _ORDERED.match(line)
        if bullet or ordered:
            kind = "ul" if bullet else "ol"
            if paragraph or (list_kind and list_kind != kind):
                flush()
            list_kind = kind
            items.append((bullet or ordered).group(1))
            i += 1
            continue
        if list_kind and line[:1].isspace():  # continuation of a list item
            items[-1] += " " + stripped
            i += 1
            continue
        if list_kind:
            flush()
        paragraph.append(line)
        i += 1
    flush()
    return "\n".join(out)


# --- figures ---------------------------------------------------------------------------------

_FIGURES: dict[str, tuple[str, str]] = {  # key: (caption, alt text)
    "roc": ("ROC curve", "Receiver operating characteristic curve: sensitivity against 1 − specificity, "
            "with the area under the curve in the legend."),
    "pr": ("Precision–recall curve", "Precision-recall curve: positive predictive value against sensitivity, "
           "with the prevalence as the dotted reference line."),
    "confusion": ("Confusion matrix", "Confusion matrix of true against predicted classes, with counts and "
                  "row percentages."),
    "reliability": ("Reliability diagram", "Reliability diagram: observed frequency of the positive class against "
                    "the predicted probability, before and after calibration; the diagonal is perfect calibration."),
    "risk_coverage": ("Risk–coverage curve", "Risk-coverage curve: error rate of the cases the model keeps, against "
                      "the fraction of cases kept when the most uncertain are referred to a clinician."),
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _figure_section(key: str) -> str:
    k = key.lower()
    if k.startswith(("reliability", "calibration")):
        return "calibration"
    if k.startswith(("risk", "coverage", "uncertainty")):
        return "uncertainty"
    if k.startswith("subgroup"):
        return "subgroups"
    return "performance"


def _resolve(path: Any, base_dir: Path) -> Path:
    path = Path(os.fspath(path)).expanduser()
    return path if path.is_absolute() else base_dir / path


def data_uri(path: Path) -> str:
    """The image file as a ``data:`` URI; raises ValueError for a non-image file."""
    raw = path.read_bytes()
    mime = next((m for magic, m in _MAGIC if raw.startswith(magic)), None)
    if mime is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        raise ValueError("not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _embed(path: Any, base_dir: Path, what: str, problems: list[str]) -> str | None:
    """Data URI for an image path, or None with a problem recorded."""
    if path is None or (isinstance(path, str) and not path.strip()):
        return None
    file = _resolve(path, base_dir)
    try:
        return data_uri(file)
    except FileNotFoundError:
        problems.append(f"{what}: image file not found: {file}")
    except (OSError, ValueError) as exc:
        problems.append(f"{what}: cannot embed {file}: {exc}")
    return None


def _figures(report: Mapping[str, Any], base_dir: Path, problems: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_section: dict[str, list[dict[str, Any]]] = {}
    figures = report.get("figures") or {}
    if not isinstance(figures, Mapping):
        problems.append("figures: expected a mapping of name to image path")
        return by_section
    order = [k for k in _FIGURES if k in figures] + [k for k in figures if k not in _FIGURES]
    for key in order:
        spec = figures[key]
        spec = spec if isinstance(spec, Mapping) else {"path": spec}
        caption, alt = _FIGURES.get(key, (str(key).replace("_", " ").capitalize(), ""))
        caption = str(spec.get("caption") or caption)
        alt = str(spec.get("alt") or alt or caption)
        src = _embed(spec.get("path"), base_dir, f"figure '{key}'", problems)
        by_section.setdefault(_figure_section(str(key)), []).append(
            {"key": str(key), "src": src, "caption": caption, "alt": alt, "path": str(spec.get("path"))})
    return by_section


# --- JSON ------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, numpy scalars/arrays → Python, Paths → str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _relative(path: Any, base_dir: Path, out_dir: Path) -> Any:
    if path is None or (isinstance(path, str) and not path.strip()):
        return path
    file = _resolve(path, base_dir)
    try:
        return Path(os.path.relpath(file.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows: keep it absolute
        return str(file)


def report_json(report: Mapping[str, Any], *, base_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The report dict as written to ``report.json``: JSON-safe, image paths relative to ``out_dir``."""
    data = _jsonable(report)
    figures = data.get("figures")
    if isinstance(figures, dict):
        for key, spec in figures.items():
            if isinstance(spec, dict):
                spec["path"] = _relative(spec.get("path"), base_dir, out_dir)
            else:
                figures[key] = _relative(spec, base_dir, out_dir)
    for item in data.get("explanations") or []:
        if isinstance(item, dict):
            for key in ("image", "original"):
                if key in item:
                    item[key] = _relative(item[key], base_dir, out_dir)
    return data


# --- rendering -------------------------------------------------------------------------------

def _validate(report: Any) -> None:
    if not isinstance(report, Mapping):
        raise ConfigError(f"the report must be a dict, not {type(report).__name__}",
                          hint="Build it as documented in meddx.report.html.")
    for key in ("model", "data"):
        if not isinstance(report.get(key), Mapping):
            raise MissingFieldError(f"the report has no '{key}' section", field=key,
                                    hint="model, data and evaluation.metrics are required; see meddx.report.html.")
    evaluation = report.get("evaluation")
    metrics = evaluation.get("metrics") if isinstance(evaluation, Mapping) else None
    if not isinstance(metrics, Mapping) or not metrics:
        raise MissingFieldError("the report has no performance metrics", field="evaluation.metrics",
                                hint="Give evaluation.metrics as {name: {value, low, high}}.")


def _environment():  # noqa: ANN202 - jinja2 is imported lazily (optional dependency)
    try:
        import jinja2
        import markupsafe
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MeddxError("the HTML report needs Jinja2, which is not installed",
                         hint="Install it with: pip install 'meddx[report]'") from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )

    def defined(func):  # noqa: ANN001, ANN202 - an undefined template value is a missing field: None
        return lambda value, *args: func(None if isinstance(value, jinja2.Undefined) else value, *args)

    def ci_html(metric: Any) -> Any:  # "0.912 (0.871–0.948)", breaking only between estimate and interval
        text = fmt_ci(metric)
        estimate, sep, interval = text.partition(" ")
        if not sep:
            return text
        return markupsafe.Markup('{} <span class="nw">{}</span>').format(estimate, interval)

    env.filters.update(ci=defined(ci_html), num=defined(fmt_num), pct=defined(fmt_pct), val=defined(fmt_value),
                       label=defined(metric_label))
    env.globals.update(lower_is_better=LOWER_IS_BETTER)
    return env


def _metric_keys(*tables: Any) -> list[str]:
    keys: list[str] = []
    for table in tables:
        for key in table or {}:
            if key not in keys:
                keys.append(key)
    return keys


def build_context(report: Mapping[str, Any], *, base_dir: Path) -> dict[str, Any]:
    """Everything the template needs: the report, embedded figures, checklist, derived tables."""
    problems: list[str] = []
    model = report.get("model") or {}
    evaluation = report.get("evaluation") or {}
    data = report.get("data") or {}

    explanations = []
    for n, item in enumerate(report.get("explanations") or [], start=1):
        if not isinstance(item, Mapping):
            continue
        explanations.append({
            **item,
            "image_src": _embed(item.get("image"), base_dir, f"explanation {n} (overlay)", problems),
            "original_src": _embed(item.get("original"), base_dir, f"explanation {n} (original)", problems),
        })

    splits = data.get("splits") if isinstance(data.get("splits"), Mapping) else {}
    split_classes = _metric_keys(*((s or {}).get("classes") for s in splits.values() if isinstance(s, Mapping)))

    subgroups = []
    for table in report.get("subgroups") or []:
        if not isinstance(table, Mapping):
            continue
        rows = [r for r in table.get("rows") or [] if isinstance(r, Mapping)]
        columns = [k for k in _metric_keys(*rows) if k not in ("group", "n", "prevalence")]
        subgroups.append({"attribute": table.get("attribute"), "rows": rows, "columns": columns})

    calibration = report.get("calibration") or {}
    local = report.get("local_recalibration") or {}
    figures = _figures(report, base_dir, problems)
    checklist = build_checklist(report)
    present = {sid: section_present(report, sid) for sid, _ in SECTIONS}
    warnings = [str(w) for w in report.get("warnings") or []]

    return {
        "report": report,
        "title": report.get("title") or f"Validation report: {model.get('name') or 'unnamed model'}",
        "generated": report.get("generated")
        or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "meddx_version": report.get("meddx_version") or _meddx_version(),
        "model": model,
        "data": data,
        "evaluation": evaluation,
        "splits": splits,
        "split_classes": split_classes,
        "figures": figures,
        "calibration": calibration,
        "calibration_keys": _metric_keys(calibration.get("before"), calibration.get("after")),
        "local": local,
        "local_keys": _metric_keys(local.get("before"), local.get("after")),
        "operating_points": [o for o in report.get("operating_points") or [] if isinstance(o, Mapping)],
        "subgroups": subgroups,
        "uncertainty": report.get("uncertainty") or {},
        "explanations": explanations,
        "card_html": markdown_to_html(str(model.get("card_markdown") or "")),
        "checklist": checklist,
        "checklist_counts": {
            "covered": sum(r["status"] == "covered" for r in checklist),
            "missing": sum(r["status"] != "covered" and r["scope"] == "report" for r in checklist),
            "authors": sum(r["scope"] == "authors" for r in checklist),
        },
        "sections": SECTIONS,
        "section_titles": dict(SECTIONS),
        "present": present,
        "warnings": warnings,
        "problems": problems,
    }


def _meddx_version() -> str:
    from meddx import __version__

    return __version__


def render_string(report: Mapping[str, Any], *, base_dir: str | os.PathLike[str] = ".") -> str:
    """The report as an HTML string (figures embedded); see :func:`render_html`."""
    _validate(report)
    from markupsafe import Markup

    context = build_context(report, base_dir=Path(base_dir))
    context["card_html"] = Markup(context["card_html"])  # built from escaped text only
    return _environment().get_template(TEMPLATE).render(**context)


def render_html(report: Mapping[str, Any], out: str | os.PathLike[str], *,
                base_dir: str | os.PathLike[str] | None = None) -> Path:
    """Render the validation report to ``out`` (HTML) and write ``report.json`` beside it.

    Args:
        report: the report dict (schema in this module's docstring).
        out: the HTML file to write, e.g. ``runs/x/report/report.html``; its folder is created.
        base_dir: the folder that relative image paths in ``report`` are relative to
            (default: the folder of ``out``).

    Returns:
        The path of the HTML file. The JSON is ``out`` with the suffix ``.json``
        (``report.json`` for ``report.html``), holding the report dict with NaN as
        null and image paths relative to the HTML file's folder.

    Raises:
        MissingFieldError: ``model``, ``data`` or ``evaluation.metrics`` is missing.
        ConfigError: ``out`` would overwrite the JSON (a ``.json`` name).
    """
    out = Path(out)
    if out.suffix.lower() == ".json":
        raise ConfigError("the HTML report cannot be written to a .json file", path=out,
                          hint="Name it report.html; report.json is written beside it.")
    base = Path(base_dir) if base_dir is not None else out.parent
    html_text = render_string(report, base_dir=base)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_text, encoding="utf-8")
    json_path = out.with_suffix(".json")
    payload = report_json(report, base_dir=base, out_dir=out.parent)
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return out


__all__ = [
    "CI",
    "Calibration",
    "DataInfo",
    "Evaluation",
    "Explanation",
    "Figure",
    "LocalRecalibration",
    "ModelInfo",
    "OperatingPoint",
    "Report",
    "SubgroupTable",
    "Uncertainty",
    "fmt_ci",
    "markdown_to_html",
    "render_html",
    "render_string",
]
