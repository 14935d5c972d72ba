"""Fixtures for the report tests (the example dicts live in tests/report/_example.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.report._example import full_report, minimal_report


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "report"
    folder.mkdir()
    return folder


@pytest.fixture
def full(report_dir: Path) -> dict[str, Any]:
    return full_report(report_dir)


@pytest.fixture
def minimal() -> dict[str, Any]:
    return minimal_report()
