"""render_html: sections, CI formatting, embedded figures, escaping, report.json, sparse reports."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from meddx.exceptions import ConfigError, MissingFieldError
from meddx.report import render_html
from meddx.report.checklist import SECTION_IDS
from meddx.report.html import fmt_ci, fmt_num, fmt_pct, markdown_to_html
from tests.report._example import FIGURE_KEYS, HOSTILE

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _text(html: str) -> str:
    """The page's text (tags removed), as a reader sees and copies it."""
    return re.sub(r"<[^>]+>", "", html)


def _attributes(html: str, name: str) -> list[str]:
    return re.findall(rf'\b{name}\s*=\s*["\']([^"\']*)["\']', html, flags=re.IGNORECASE)


@pytest.fixture
def rendered(full: dict[str, Any], report_dir: Path) -> str:
    out = render_html(full, report_dir / "report.html")
    assert out == report_dir / "report.html"
    return out.read_text(encoding="utf-8")


def test_every_section_has_a_stable_id_and_a_contents_link(rendered: str) -> None:
    assert len(SECTION_IDS) == 11
    for sid in SECTION_IDS:
        assert f'<section id="{sid}"' in rendered, sid
        assert f'href="#{sid}"' in rendered, sid
    assert "(not included)" not in rendered  # the full example fills every section
    assert 'id="local-recalibration"' in rendered
    assert rendered.lstrip().startswith("<!DOCTYPE html>") and '<html lang="en">' in rendered


def test_values_are_formatted_with_confidence_intervals(rendered: str) -> None:
    assert '0.912 <span class="nw">(0.871–0.948)</span>' in rendered  # breaks only before the interval
    rendered = _text(rendered)
    assert "0.912 (0.871–0.948)" in rendered  # AUC
    assert "0.762 (0.634–0.884)" in rendered  # sensitivity
    assert "0.081 (0.052–0.122)" in rendered and "0.034 (0.021–0.070)" in rendered  # ECE before/after
    assert "0.810 (0.690–0.920)" in rendered  # operating point sensitivity
    assert "32.6%" in rendered  # subgroup prevalence
    assert "Balanced accuracy" in rendered and "AUC (ROC)" in rendered


def test_figures_are_embedded_and_nothing_external_is_referenced(rendered: str) -> None:
    sources = _attributes(rendered, "src")
    assert len(sources) == len(FIGURE_KEYS) + 4  # five figures, two explanations × (original, overlay)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in _attributes(rendered, "href"))
    for forbidden in ("<link", "<script", "<iframe", "<object", "<embed", "url(", "@import", "srcset"):
        assert forbidden not in rendered.lower(), forbidden
    assert "default-src 'none'; img-src data:" in rendered  # the page's CSP forbids external loads too
    images = re.findall(r"<img\b[^>]*>", rendered)
    assert images and all(re.search(r'\balt="[^"]{10,}"', img) for img in images)


def test_accessible_tables_and_intended_use_banner(rendered: str) -> None:
    tables = rendered.count("<table>")
    assert tables >= 8 and rendered.count("<caption>") == tables
    assert 'scope="col"' in rendered and 'scope="row"' in rendered
    assert "Not for primary diagnosis." in rendered and 'role="note"' in rendered
    assert "@media print" in rendered


def test_hostile_strings_are_escaped(full: dict[str, Any], report_dir: Path) -> None:
    full["title"] = f"Report {HOSTILE}"
    full["data"]["splits"]["test"]["classes"][HOSTILE] = 1
    full["calibration"]["params"][HOSTILE] = HOSTILE
    full["figures"]["roc"] = {"path": "roc.png", "caption": HOSTILE, "alt": '" onload="alert(3)'}
    html = render_html(full, report_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert ESCAPED in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html  # raw HTML in the card
    assert 'onload="alert' not in html and "&#34; onload=&#34;alert(3)" in html
    assert "<title>Report &lt;script&gt;" in html


def test_model_card_markdown_is_converted_safely(rendered: str) -> None:
    card = rendered.split('<section id="model-card"', 1)[1].split("</section>", 1)[0]
    assert "<h3>Model card: breast-us</h3>" in card
    assert "<strong>1.2.0</strong>" in card
    assert f"<code>{ESCAPED}</code>" in card
    assert "<caption>Performance (from the model card)</caption>" in card
    assert '<th scope="col">95% CI</th>' in card and "<td>0.871 – 0.948</td>" in card
    assert "the data set (https://medmnist.com/)" in card and "<a " not in card


def test_markdown_converter_edge_cases() -> None:
    html = markdown_to_html("Para *one*\nline two\n\n1. first\n2. `a<b`\n   continued\n\n```\n<x> & y\n```\n---\n")
    assert "<p>Para <em>one</em> line two</p>" in html
    assert "<ol><li>first</li><li><code>a&lt;b</code> continued</li></ol>" in html
    assert "<pre><code>&lt;x&gt; &amp; y</code></pre>" in html and "<hr>" in html
    assert markdown_to_html("") == ""
    assert markdown_to_html("x = 2*3*4 and snake_case_name") == "<p>x = 2*3*4 and snake_case_name</p>"


def test_report_json_is_written_beside_with_relative_paths(full: dict[str, Any], tmp_path: Path) -> None:
    figures = tmp_path / "report"  # the fixture put the PNGs here
    full["evaluation"]["metrics"]["npv"] = {"value": math.nan, "low": None, "high": None}
    full["figures"]["roc"] = figures / "roc.png"  # an absolute Path
    out = render_html(full, tmp_path / "site" / "report.html", base_dir=figures)
    saved = json.loads((tmp_path / "site" / "report.json").read_text(encoding="utf-8"),
                       parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert saved["figures"]["roc"] == "../report/roc.png" and saved["figures"]["pr"] == "../report/pr.png"
    assert saved["explanations"][0]["image"] == "../report/cam0.png"
    assert saved["evaluation"]["metrics"]["npv"]["value"] is None
    assert saved["model"]["class_names"][2] == HOSTILE and saved["title"] == full["title"]
    html = out.read_text(encoding="utf-8")
    assert "NPV</th><td class=\"num\">n/a</td>" in html
    assert html.count("data:image/png;base64,") == len(FIGURE_KEYS) + 4


def test_minimal_report_renders_with_every_section_marked(minimal: dict[str, Any], report_dir: Path) -> None:
    html = render_html(minimal, report_dir / "report.html").read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}"' in html, sid
    assert html.count("Not included in this report") >= 6
    assert "0.850 (0.740–0.930)" in _text(html)
    assert "not recorded" in html and "No warnings." in html
    assert "Validation report: cnn-tiny" in html
    checklist = html.split('<section id="checklist"', 1)[1]
    assert "not covered" in checklist
    assert (report_dir / "report.json").is_file()


def test_missing_figure_is_a_visible_warning_not_a_crash(full: dict[str, Any], report_dir: Path) -> None:
    full["figures"]["roc"] = "nowhere/roc.png"
    (report_dir / "notapng.png").write_text("hello")
    full["figures"]["extra"] = "notapng.png"
    html = render_html(full, report_dir / "report.html").read_text(encoding="utf-8")
    warnings = html.split('<section id="warnings"', 1)[1]
    assert "figure &#39;roc&#39;: image file not found" in warnings
    assert "figure &#39;extra&#39;: cannot embed" in warnings and "not a PNG" in warnings
    assert 'src=""' not in html and "could not be embedded" in html


@pytest.mark.parametrize("drop", ["model", "data", "evaluation"])
def test_required_sections(minimal: dict[str, Any], report_dir: Path, drop: str) -> None:
    del minimal[drop]
    with pytest.raises(MissingFieldError, match=drop):
        render_html(minimal, report_dir / "report.html")
    assert not (report_dir / "report.html").exists()


def test_output_name_cannot_be_the_json(minimal: dict[str, Any], report_dir: Path) -> None:
    with pytest.raises(ConfigError):
        render_html(minimal, report_dir / "report.json")


def test_formatters() -> None:
    assert fmt_ci({"value": 0.9123, "low": 0.8714, "high": 0.9481}) == "0.912 (0.871–0.948)"
    assert fmt_ci({"value": 0.5, "low": None, "high": None}) == "0.500"
    assert fmt_ci({"value": math.nan}) == fmt_ci(None) == fmt_ci("x") == "n/a"
    assert fmt_ci(0.25) == "0.250"
    assert fmt_num(3) == "3" and fmt_num(True) == "n/a" and fmt_num(0.12345) == "0.123"
    assert fmt_pct(0.326) == "32.6%" and fmt_pct(None) == "n/a"
