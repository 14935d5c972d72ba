"""render_check: headless Chromium loads the report without errors; a broken page is caught.

Without Chromium these tests skip locally, and FAIL under CI (CI set), saying how to install it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from meddx.report import render_check, render_html
from meddx.report.browser import INSTALL_HINT, ChromiumNotFoundError, find_chromium

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_chromium() -> str:
    """The browser, or skip (locally) / fail (under CI) with how to install it.

    Called inside each test rather than as a fixture, so that under CI the test itself FAILS.
    """
    path = find_chromium()
    if path is None:
        message = f"headless Chromium not found. {INSTALL_HINT}"
        if _under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_full_report_renders_without_errors(full: dict[str, Any], report_dir: Path) -> None:
    require_chromium()
    html = render_html(full, report_dir / "report.html")
    result = render_check(html, report_dir / "shots" / "report.png", timeout=90)
    assert result["console_errors"] == [] and result["exceptions"] == [], result
    shot = Path(result["screenshot"])
    assert shot.read_bytes()[:8] == PNG_MAGIC
    assert shot.stat().st_size > 10_000
    assert result["title"] == full["title"]
    assert result["width"] == 1280 and result["height"] > 2000  # the full page, not the viewport
    assert "Chrome" in result["chromium"]


def test_broken_page_is_reported_and_the_browser_is_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_chromium()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body><h1>Broken</h1>"
        '<img src="missing.png" alt="gone">'
        "<script>console.error('bad thing happened');</script>"
        "<script>throw new Error('boom in the page');</script>"
        "</body></html>", encoding="utf-8")
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("meddx.report.browser.tempfile.mkdtemp", recording_mkdtemp)
    result = render_check(page, tmp_path / "broken.png", width=800, height=600, timeout=90)
    assert any("boom in the page" in e for e in result["exceptions"]), result
    assert any("bad thing happened" in e for e in result["console_errors"]), result
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in result["console_errors"]), result
    assert result["title"] == "broken"
    assert (tmp_path / "broken.png").read_bytes()[:8] == PNG_MAGIC
    # the profile is deleted and no process still uses it
    assert len(made) == 1 and not Path(made[0]).exists()
    if Path("/proc").is_dir():
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                assert made[0].encode() not in cmdline, f"process {proc.name} still running"


def test_missing_chromium_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.html"
    page.write_text("<title>x</title>")
    monkeypatch.setenv("MEDDX_CHROMIUM", str(tmp_path / "no-such-browser"))
    assert find_chromium() is None
    with pytest.raises(ChromiumNotFoundError, match="MEDDX_CHROMIUM") as info:
        render_check(page, tmp_path / "x.png")
    assert "apt-get install chromium" in str(info.value)
    monkeypatch.delenv("MEDDX_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    with pytest.raises(ChromiumNotFoundError, match="apt-get install chromium"):
        render_check(page, tmp_path / "x.png")
    assert isinstance(ChromiumNotFoundError("x"), FileNotFoundError)


def test_meddx_chromium_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MEDDX_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)
