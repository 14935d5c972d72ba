"""AES-256-GCM: round trip, tampering and wrong keys fail, key sources and rotation."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from meddx.exceptions import ConfigError
from meddx.storage import crypto
from meddx.storage.crypto import DecryptionError, Encryptor


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDDX_ENCRYPTION_KEY", raising=False)


def test_round_trip_and_random_nonces() -> None:
    enc = Encryptor(secrets.token_bytes(32))
    data = b"\x00pixel data\xff" * 100
    a, b = enc.encrypt(data, "study/1"), enc.encrypt(data, "study/1")
    assert a != b and data not in a
    assert len(a) == len(data) + 2 + 12 + 16
    assert a[0] == crypto.FORMAT_VERSION and a[1] == enc.key_id
    assert enc.decrypt(a, "study/1") == data == enc.decrypt(b, b"study/1")
    assert enc.decrypt(enc.encrypt(b"", ""), "") == b""
    assert enc.decrypt_json(enc.encrypt_json({"p": [0.1, 0.9]}, "r"), "r") == {"p": [0.1, 0.9]}


@pytest.mark.parametrize("position", [0, 1, 5, 20, -1])
def test_any_flipped_bit_fails(position: int) -> None:
    enc = Encryptor(secrets.token_bytes(32))
    blob = bytearray(enc.encrypt(b"result: positive", "r/1"))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        enc.decrypt(bytes(blob), "r/1")


def test_wrong_associated_data_wrong_key_and_truncation_fail() -> None:
    enc = Encryptor(secrets.token_bytes(32))
    blob = enc.encrypt(b"secret", "result/1")
    with pytest.raises(DecryptionError, match="authentication failed"):
        enc.decrypt(blob, "result/2")
    other = Encryptor(secrets.token_bytes(32))
    with pytest.raises(DecryptionError, match="key"):
        other.decrypt(blob, "result/1")
    forged = bytes([blob[0], other.key_id]) + blob[2:]  # pretend it was made with the other key
    with pytest.raises(DecryptionError, match="authentication failed"):
        other.decrypt(forged, "result/1")
    with pytest.raises(DecryptionError, match="truncated"):
        enc.decrypt(blob[:20], "result/1")


def test_key_from_environment_hex_and_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_bytes(32)
    blob = Encryptor(key).encrypt(b"x", "a")
    for text in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")):
        monkeypatch.setenv("MEDDX_ENCRYPTION_KEY", text)
        assert Encryptor.from_config().decrypt(blob, "a") == b"x"
    monkeypatch.setenv("MEDDX_ENCRYPTION_KEY", "too-short")
    with pytest.raises(ConfigError, match="256-bit"):
        Encryptor.from_config()
    with pytest.raises(ConfigError):
        Encryptor(b"short")


def test_several_environment_keys_first_encrypts(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    old_blob = Encryptor(old).encrypt(b"old", "a")
    monkeypatch.setenv("MEDDX_ENCRYPTION_KEY", f"{new.hex()}, {old.hex()}")
    enc = Encryptor.from_config()
    assert enc.key_id == crypto.key_id(new)
    assert enc.decrypt(old_blob, "a") == b"old"


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_key_file_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "home"))
    path = crypto.key_file()
    assert path == tmp_path / "home" / "keys" / "storage.key" and not path.exists()
    with pytest.raises(ConfigError, match="no encryption key"):
        Encryptor.from_config(create=False)
    blob = Encryptor.from_config().encrypt(b"x", "a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert Encryptor.from_config().decrypt(blob, "a") == b"x"  # same key read back
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        Encryptor.from_config()


def test_rotation_keeps_old_data_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path))
    first = Encryptor.from_config()
    blob = first.encrypt(b"before rotation", "a")
    new_id = crypto.rotate_key_file()
    second = Encryptor.from_config()
    assert second.key_id == new_id
    assert second.decrypt(blob, "a") == b"before rotation"
    moved = second.reencrypt(blob, "a")
    assert Encryptor.key_id_of(moved) == new_id
    assert second.reencrypt(moved, "a") == moved  # already current: unchanged
    assert second.decrypt(moved, "a") == b"before rotation"
    assert len(crypto.load_keys()) == 2
    for key in crypto.load_keys():  # never key material in reprs
        assert key.hex() not in repr(second) and base64.b64encode(key).decode() not in repr(second)
