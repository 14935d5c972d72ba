"""Encrypted file storage for uploads and overlays.

A blob id is ``<kind>/<32 random hex digits>``, made here and never from a
user-supplied name, so ids cannot point outside the store (ids are also
checked on every read). Files hold AES-GCM ciphertext whose associated data is
the blob id: a file renamed or copied over another one fails to decrypt.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from meddx.config import home_dir
from meddx.exceptions import ConfigError, DataFileNotFoundError
from meddx.storage.crypto import Encryptor

_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ID = re.compile(r"([a-z][a-z0-9_-]{0,31})/([0-9a-f]{32})")
_SUFFIX = ".enc"


class BlobNotFoundError(DataFileNotFoundError):
    """No blob with this id (never stored, or deleted)."""


def default_blob_root() -> Path:
    """Where blobs live by default: ``$MEDDX_HOME/blobs``."""
    return home_dir() / "blobs"


class BlobStore:
    """Encrypted blobs in a folder: ``put`` bytes, get back an id; ``get`` and ``delete`` by id.

    Args:
        root: the folder (default ``$MEDDX_HOME/blobs``), created 0700 on first write.
        encryptor: the :class:`~meddx.storage.crypto.Encryptor` (default: configured keys).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, encryptor: Encryptor | None = None) -> None:
        self.root = Path(root) if root is not None else default_blob_root()
        self.encryptor = encryptor if encryptor is not None else Encryptor.from_config()

    def _path(self, blob_id: str) -> Path:
        if not isinstance(blob_id, str) or not _ID.fullmatch(blob_id):
            raise ConfigError("not a blob id (expected KIND/32 hex digits)", field="blob_id",
                              hint="use an id returned by BlobStore.put")
        kind, token = blob_id.split("/")
        return self.root / kind / token[:2] / f"{token}{_SUFFIX}"

    def put(self, data: bytes, kind: str) -> str:
        """Encrypt and store ``data``; return its new random id ``KIND/HEX``.

        ``kind`` names the sort of blob ("upload", "overlay"): lower-case
        letters, digits, ``_`` and ``-``, starting with a letter.
        """
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ConfigError(f"bad blob kind {kind!r}: use lower-case letters, digits, _ or -", field="kind")
        while True:
            blob_id = f"{kind}/{secrets.token_hex(16)}"
            path = self._path(blob_id)
            if not path.exists():
                break
        ciphertext = self.encryptor.encrypt(bytes(data), blob_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(ciphertext)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)  # readers never see a half-written blob
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return blob_id

    def get(self, blob_id: str) -> bytes:
        """The decrypted bytes of a blob; BlobNotFoundError if absent, DecryptionError if altered."""
        path = self._path(blob_id)
        try:
            ciphertext = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError("no such blob", path=blob_id) from None
        return self.encryptor.decrypt(ciphertext, blob_id)

    def exists(self, blob_id: str) -> bool:
        """True when a blob with this id is stored."""
        return self._path(blob_id).is_file()

    def delete(self, blob_id: str) -> bool:
        """Remove a blob; True if it existed (deleting twice is not an error)."""
        path = self._path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
