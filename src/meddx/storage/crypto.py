"""Encryption at rest: AES-256-GCM with per-message nonces and rotatable keys.

Ciphertext layout (all values in one ``bytes``)::

    version (1 byte, 0x01) | key id (1 byte) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)

The header (version and key id) and the caller's *associated data* (which
record and field the value belongs to) are authenticated by the tag, so a
ciphertext copied to another row, a flipped bit or a wrong key all fail
loudly instead of decrypting to garbage.

Keys: ``MEDDX_ENCRYPTION_KEY`` (base64 or hex of 32 bytes; several keys
separated by commas, the first encrypts, all decrypt), else the key file
``$MEDDX_HOME/keys/storage.key`` (one base64 key a line, the first encrypts),
created with mode 0600 on first use. The key id is a one-byte fingerprint of
the key, so rotation needs no bookkeeping: :func:`rotate_key_file` puts a new
key first and keeps the old ones for decryption; :meth:`Encryptor.reencrypt`
moves a value to the new key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meddx.config import home_dir
from meddx.exceptions import ConfigError, CorruptFileError

ENV_KEY = "MEDDX_ENCRYPTION_KEY"
FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 2
_KEY_HINT = ('generate one with: python -c "import base64, secrets; '
             'print(base64.b64encode(secrets.token_bytes(32)).decode())"')


class DecryptionError(CorruptFileError):
    """A ciphertext cannot be decrypted: altered, bound to another record, or encrypted with another key."""


def key_file() -> Path:
    """The key file used when ``MEDDX_ENCRYPTION_KEY`` is unset: ``$MEDDX_HOME/keys/storage.key``."""
    return home_dir() / "keys" / "storage.key"


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> int:
    """The one-byte fingerprint written into every ciphertext made with ``key``."""
    return hashlib.sha256(b"meddx-storage-key-id\x00" + key).digest()[0]


def parse_key(text: str, *, source: str = ENV_KEY) -> bytes:
    """Decode one key given as 64 hex digits or base64 (standard or URL-safe) of 32 bytes."""
    value = text.strip()
    raw: bytes | None = None
    if len(value) == 2 * KEY_BYTES:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        try:
            padded = value + "=" * (-len(value) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_BYTES:
        raise ConfigError("not a 256-bit key (need base64 or hex of exactly 32 bytes)", path=source, hint=_KEY_HINT)
    return raw


def _check_private(path: Path) -> None:
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file is readable by others (mode {stat.S_IMODE(mode):o})", path=path,
                          hint=f"run: chmod 600 {path}")


def _read_key_file(path: Path) -> list[bytes]:
    _check_private(path)
    keys = [parse_key(line, source=str(path)) for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ConfigError("key file holds no key", path=path, hint="delete it to have a new one created")
    return keys


def _write_key_file(path: Path, keys: Sequence[bytes], *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = "".join(base64.b64encode(k).decode() + "\n" for k in keys)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        target = path
    else:  # replace atomically, never leaving a half-written key file
        target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if target != path:
        os.replace(target, path)


def load_keys(*, create: bool = True) -> list[bytes]:
    """The configured keys, current first: from ``MEDDX_ENCRYPTION_KEY``, else the key file.

    With ``create`` (default) a missing key file is created (mode 0600, folder
    0700) holding one new random key. Back that file up: without it, encrypted
    uploads and results cannot be read.
    """
    env = os.environ.get(ENV_KEY, "").strip()
    if env:
        return [parse_key(part) for part in env.split(",") if part.strip()]
    path = key_file()
    if not path.exists():
        if not create:
            raise ConfigError("no encryption key configured", path=path,
                              hint=f"set {ENV_KEY} or let meddx create the key file")
        try:
            _write_key_file(path, [generate_key()], exclusive=True)
        except FileExistsError:  # another process created it first: use theirs
            pass
    return _read_key_file(path)


def rotate_key_file(path: Path | None = None) -> int:
    """Put a new key first in the key file (old keys stay for decryption); return its key id."""
    path = path or key_file()
    keys = _read_key_file(path) if path.exists() else []
    new = generate_key()
    _write_key_file(path, [new, *keys], exclusive=not path.exists())
    return key_id(new)


def _aad_bytes(aad: bytes | str) -> bytes:
    return aad.encode("utf-8") if isinstance(aad, str) else bytes(aad)


class Encryptor:
    """AES-256-GCM encryption with associated data; the first key encrypts, every key decrypts.

    Args:
        keys: one 32-byte key or several (current first). Default: :func:`load_keys`.
    """

    def __init__(self, keys: bytes | Sequence[bytes] | None = None) -> None:
        if keys is None:
            keys = load_keys()
        key_list = [keys] if isinstance(keys, (bytes, bytearray)) else list(keys)
        if not key_list:
            raise ConfigError("no encryption key given", hint=_KEY_HINT)
        for key in key_list:
            if len(key) != KEY_BYTES:
                raise ConfigError(f"an AES-256 key has {KEY_BYTES} bytes, not {len(key)}", hint=_KEY_HINT)
        self._current = AESGCM(bytes(key_list[0]))
        self._current_id = key_id(bytes(key_list[0]))
        self._by_id: dict[int, list[AESGCM]] = {}
        for key in key_list:
            self._by_id.setdefault(key_id(bytes(key)), []).append(AESGCM(bytes(key)))

    @classmethod
    def from_config(cls, *, create: bool = True) -> Encryptor:
        """The encryptor for the configured keys (environment, else key file)."""
        return cls(load_keys(create=create))

    @property
    def key_id(self) -> int:
        """Id of the key that new ciphertexts use."""
        return self._current_id

    def encrypt(self, plaintext: bytes, aad: bytes | str) -> bytes:
        """Encrypt ``plaintext``; ``aad`` (e.g. ``b"result.prediction/<id>"``) must be given again to decrypt."""
        header = bytes((FORMAT_VERSION, self._current_id))
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + self._current.encrypt(nonce, bytes(plaintext), header + _aad_bytes(aad))

    def decrypt(self, blob: bytes, aad: bytes | str) -> bytes:
        """Decrypt a value made by :meth:`encrypt` with the same ``aad``; raise DecryptionError otherwise."""
        blob = bytes(blob)
        if len(blob) < HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("ciphertext is truncated", field="ciphertext")
        version, kid = blob[0], blob[1]
        if version != FORMAT_VERSION:
            raise DecryptionError(f"unknown ciphertext format version {version}", field="ciphertext",
                                  hint="it was not written by this meddx storage layer, or it was altered")
        candidates = self._by_id.get(kid)
        if not candidates:
            raise DecryptionError(f"encrypted with key id {kid}, which is not configured", field="key",
                                  hint=f"set {ENV_KEY} (or the key file {key_file()}) to include that key")
        header = blob[:HEADER_BYTES]
        nonce = blob[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES]
        body = blob[HEADER_BYTES + NONCE_BYTES:]
        for aead in candidates:
            try:
                return aead.decrypt(nonce, body, header + _aad_bytes(aad))
            except InvalidTag:
                continue
        raise DecryptionError("authentication failed: the data was altered, belongs to another record, "
                              "or was encrypted with a different key", field="ciphertext")

    def encrypt_json(self, value: Any, aad: bytes | str) -> bytes:
        """Encrypt a JSON-serialisable value (compact UTF-8 JSON)."""
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return self.encrypt(text.encode("utf-8"), aad)

    def decrypt_json(self, blob: bytes, aad: bytes | str) -> Any:
        """Decrypt a value made by :meth:`encrypt_json`."""
        return json.loads(self.decrypt(blob, aad))

    def reencrypt(self, blob: bytes, aad: bytes | str) -> bytes:
        """Return ``blob`` encrypted with the current key (unchanged if it already is); for key rotation."""
        blob = bytes(blob)
        plaintext = self.decrypt(blob, aad)  # authenticates it, whatever key it uses
        if blob[1] == self._current_id:
            try:  # same key id could, rarely, be an old key with a colliding fingerprint
                self._current.decrypt(blob[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES],
                                      blob[HEADER_BYTES + NONCE_BYTES:], blob[:HEADER_BYTES] + _aad_bytes(aad))
                return blob
            except InvalidTag:
                pass
        return self.encrypt(plaintext, aad)

    @staticmethod
    def key_id_of(blob: bytes) -> int:
        """The key id a ciphertext was made with."""
        if len(blob) < HEADER_BYTES:
            raise DecryptionError("ciphertext is truncated", field="ciphertext")
        return blob[1]

    def __repr__(self) -> str:  # never key material
        return f"Encryptor(key_id={self._current_id}, keys={sum(len(v) for v in self._by_id.values())})"
