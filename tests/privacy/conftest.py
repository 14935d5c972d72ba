"""Fixtures of the privacy tests: fixed keys (never read from the environment)."""

from __future__ import annotations

import pytest

from meddx.privacy import PseudonymKey


@pytest.fixture
def key() -> PseudonymKey:
    return PseudonymKey(bytes(range(32)))


@pytest.fixture
def other_key() -> PseudonymKey:
    return PseudonymKey(bytes(range(1, 33)))


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDDX_PSEUDONYM_KEY", raising=False)
