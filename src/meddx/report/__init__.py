"""The rendering side of ``meddx report``: a one-page HTML validation report.

* :func:`render_html` - the report dict (schema: :mod:`meddx.report.html`) to one
  self-contained HTML file, plus ``report.json`` beside it.
* :func:`build_checklist` - which TRIPOD+AI and CLAIM 2024 items the report covers.
* :func:`render_check` / :func:`find_chromium` - open the page in headless
  Chromium, collect console errors and exceptions, and take a full-page screenshot.

Jinja2 (the ``report`` extra) and websocket-client are imported only when used.
"""

from meddx.report.browser import BrowserError, ChromiumNotFoundError, find_chromium, render_check
from meddx.report.checklist import build_checklist
from meddx.report.html import render_html

__all__ = ["BrowserError", "ChromiumNotFoundError", "build_checklist", "find_chromium", "render_check", "render_html"]
