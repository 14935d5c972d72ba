"""Accounts: argon2id, one-time passwords, policy, authentication and lockout (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from meddx.exceptions import ConfigError
from meddx.storage import users
from meddx.storage.models import User, utcnow

GOOD = "correct horse battery"


def test_real_hashing_is_argon2id(session, real_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(users, "_HASHER", real_hasher)
    user, one_time = users.create_user(session, "Dr.Who", "clinician", GOOD)
    assert one_time is None and user.username == "dr.who" and not user.must_change_password
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert GOOD not in user.password_hash
    assert users.authenticate(session, "DR.WHO", GOOD) is not None


def test_one_time_password_when_none_given(session) -> None:  # noqa: ANN001
    user, one_time = users.create_user(session, "admin", "admin")
    assert one_time is not None and len(one_time) >= 20 and user.must_change_password
    session.commit()
    assert users.authenticate(session, "admin", one_time) is user
    other, second = users.create_user(session, "admin2", "admin")
    assert second != one_time


def test_policy_roles_and_duplicates(session) -> None:  # noqa: ANN001
    with pytest.raises(users.PasswordPolicyError, match="at least 12"):
        users.create_user(session, "alice", "clinician", "short")
    with pytest.raises(users.PasswordPolicyError, match="username"):
        users.create_user(session, "alice", "clinician", "xx-alice-password-xx")
    with pytest.raises(ConfigError, match="unknown role"):
        users.create_user(session, "alice", "superuser", GOOD)
    with pytest.raises(ConfigError, match="bad username"):
        users.create_user(session, "../alice", "clinician", GOOD)
    users.create_user(session, "alice", "clinician", GOOD)
    with pytest.raises(users.UserExistsError):
        users.create_user(session, "ALICE", "engineer", GOOD)


def test_authenticate_right_wrong_unknown(session, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    users.create_user(session, "bob", "engineer", GOOD)
    session.commit()
    assert users.authenticate(session, "bob", GOOD).role == "engineer"
    assert users.authenticate(session, "bob", GOOD + "x") is None
    assert session.get(User, 1).failed_logins == 1
    calls: list[str] = []
    real_verify = users._verify
    monkeypatch.setattr(users, "_verify", lambda h, p: calls.append(h) or real_verify(h, p))
    assert users.authenticate(session, "nobody", GOOD) is None
    assert users.authenticate(session, "!!", GOOD) is None
    assert calls == [users._dummy_hash()] * 2  # unknown users still cost one argon2 verification
    assert users.authenticate(session, "bob", GOOD) is not None
    assert session.get(User, 1).failed_logins == 0  # reset by a success


def test_lockout_after_five_failures(sessions) -> None:  # noqa: ANN001
    with sessions() as s:
        users.create_user(s, "carol", "clinician", GOOD)
        s.commit()
    now = utcnow()
    for _ in range(users.MAX_FAILED_LOGINS):
        with sessions() as s:  # a fresh session per request, as in the service; counts are committed
            assert users.authenticate(s, "carol", "wrong password!", now=now) is None
    with sessions() as s:
        user = users.get_user(s, "carol")
        assert user.is_locked(now) and user.locked_until >= now + users.LOCKOUT - timedelta(seconds=1)
        assert users.authenticate(s, "carol", GOOD, now=now + timedelta(minutes=5)) is None  # still locked
        later = now + users.LOCKOUT + timedelta(seconds=1)
        assert users.authenticate(s, "carol", GOOD, now=later) is not None
        assert users.get_user(s, "carol").locked_until is None


def test_disabled_users_and_set_password(session) -> None:  # noqa: ANN001
    user, one_time = users.create_user(session, "dave", "clinician")
    users.set_password(session, user, "a brand new passphrase")
    assert not user.must_change_password
    assert users.authenticate(session, "dave", one_time) is None
    assert users.authenticate(session, "dave", "a brand new passphrase") is user
    users.set_active(session, "dave", False)
    session.commit()
    assert users.authenticate(session, "dave", "a brand new passphrase") is None
    with pytest.raises(users.UnknownUserError):
        users.set_active(session, "nobody", True)
    new = users.reset_password(session, user)
    users.set_active(session, "dave", True)
    assert users.authenticate(session, "dave", new).must_change_password


def test_passwords_never_logged(session, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    session.get_bind().echo = True  # even with SQL echo on, only hashes reach the log
    with caplog.at_level(logging.DEBUG):
        user, one_time = users.create_user(session, "erin", "admin")
        users.authenticate(session, "erin", one_time)
        users.authenticate(session, "erin", "wrong password " + one_time)
        users.set_password(session, user, "another good passphrase")
    assert caplog.records and one_time not in caplog.text and "another good passphrase" not in caplog.text
    assert "another good passphrase" not in repr(user) and user.password_hash not in repr(user)
