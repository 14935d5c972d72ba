"""Encrypted blob store: round trip, ciphertext only on disk, no path traversal."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from pathlib import Path

import pytest

from meddx.exceptions import ConfigError
from meddx.storage.blobs import BlobNotFoundError, BlobStore
from meddx.storage.crypto import DecryptionError, Encryptor


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", Encryptor(secrets.token_bytes(32)))


def test_put_get_delete(store: BlobStore) -> None:
    data = os.urandom(5000)
    blob_id = store.put(data, "upload")
    assert re.fullmatch(r"upload/[0-9a-f]{32}", blob_id)
    assert store.put(data, "upload") != blob_id
    assert store.get(blob_id) == data and store.exists(blob_id)
    assert store.delete(blob_id) is True and store.delete(blob_id) is False
    with pytest.raises(BlobNotFoundError):
        store.get(blob_id)
    assert store.get(store.put(b"", "overlay")) == b""


def test_no_plaintext_on_disk(store: BlobStore) -> None:
    secret = b"PATIENT SMITH JOHN 1957-03-02 chest x-ray " * 50
    ids = [store.put(secret, "upload"), store.put(secret[:64], "overlay")]
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 2
    for path in files:
        content = path.read_bytes()
        assert secret[:32] not in content and b"SMITH" not in content
        if os.name == "posix":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [store.get(i) for i in ids] == [secret, secret[:64]]


@pytest.mark.parametrize("bad", ["../etc/passwd", "upload/../../x", "/etc/passwd", "upload/" + "g" * 32,
                                 "upload/" + "a" * 31, "Upload/" + "a" * 32, "upload/" + "a" * 32 + "/..", ""])
def test_bad_ids_are_refused(store: BlobStore, bad: str) -> None:
    with pytest.raises(ConfigError):
        store.get(bad)
    with pytest.raises(ConfigError):
        store.delete(bad)


@pytest.mark.parametrize("kind", ["../up", "Upload", "", "a/b", "x" * 40])
def test_bad_kinds_are_refused(store: BlobStore, kind: str) -> None:
    with pytest.raises(ConfigError):
        store.put(b"x", kind)


def test_swapped_or_altered_files_fail(store: BlobStore) -> None:
    a, b = store.put(b"study A", "upload"), store.put(b"study B", "upload")
    path_a, path_b = (store.root / i.split("/")[0] / i.split("/")[1][:2] / f"{i.split('/')[1]}.enc" for i in (a, b))
    shutil.copyfile(path_a, path_b)  # A's ciphertext under B's id
    with pytest.raises(DecryptionError):
        store.get(b)
    raw = bytearray(path_a.read_bytes())
    raw[-1] ^= 1
    path_a.write_bytes(bytes(raw))
    with pytest.raises(DecryptionError):
        store.get(a)


def test_default_root_is_in_meddx_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("MEDDX_ENCRYPTION_KEY", raising=False)
    store = BlobStore()
    assert store.root == tmp_path / "h" / "blobs"
    blob_id = store.put(b"x", "upload")
    assert (tmp_path / "h" / "keys" / "storage.key").exists()
    assert BlobStore().get(blob_id) == b"x"
