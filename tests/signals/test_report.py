"""`meddx report` accepts signal packages: one HTML page with metrics, CIs and the confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("wfdb")

from tests.signals.test_package import _run, features_run, folder  # noqa: E402,F401 - fixtures


def test_report_for_a_signal_package(features_run: Path, folder: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "report"
    _run(["report", features_run, folder, "--n-boot", "50", "--out", out])
    page = (out / "report.html").read_text()
    assert "challenge_score" in page and "Confusion matrix" in page and "not for primary diagnosis" in page
    result = json.loads((out / "report.json").read_text())["result"]
    assert result["n"] == 28
    confusion = result["confusion"]
    assert sum(map(sum, confusion)) == 28
