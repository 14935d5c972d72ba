"""Shared fixtures: the data mirror, temporary homes, and CLI runners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mirror_path() -> Path | None:
    value = os.environ.get("MEDDX_DATA_MIRROR", "").strip()
    if value:
        return Path(value).expanduser().resolve()
    default = REPO.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local data mirror (``MEDDX_DATA_MIRROR``, else ``../shared/data``).

    Under CI (``CI=true``) a missing mirror fails the test instead of skipping
    it, so a broken CI set-up cannot pass silently.
    """
    path = _mirror_path()
    if path is None or not path.is_dir():
        message = "data mirror not found: set MEDDX_DATA_MIRROR to the shared/data folder"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def format_samples(mirror: Path) -> Path:
    return mirror / "format-samples"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the cache and home folders at a temporary place for every test."""
    base = tmp_path_factory.mktemp("meddx-home")
    monkeypatch.setenv("MEDDX_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("MEDDX_HOME", str(base / "home"))
    mirror = _mirror_path()
    if mirror is not None:
        monkeypatch.setenv("MEDDX_DATA_MIRROR", str(mirror))
