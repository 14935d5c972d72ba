"""`make demo`'s set-up step: the admin account gets a fresh one-time password each time, never a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from meddx.service.demo import admin_account


def test_admin_account_is_created_then_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path))
    monkeypatch.delenv("MEDDX_DATABASE_URL", raising=False)
    first = admin_account()
    second = admin_account()
    assert len(first) >= 12 and len(second) >= 12 and first != second
    from meddx.storage.db import open_database
    from meddx.storage.users import authenticate

    engine, sessions = open_database(f"sqlite:///{tmp_path / 'meddx.db'}")
    try:
        with sessions() as session:
            assert authenticate(session, "admin", first) is None  # the old one-time password is gone
            user = authenticate(session, "admin", second)
            assert user is not None and user.role == "admin" and user.must_change_password
    finally:
        engine.dispose()
