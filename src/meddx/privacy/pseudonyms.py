"""Keyed pseudonyms, DICOM UID remapping and per-patient date shifts.

Everything here is derived from one 32-byte secret, the :class:`PseudonymKey`,
with HMAC-SHA256, so the same key and the same original value always give the
same pseudonym, UID or date offset: files of one patient or one study
de-identified on different days (or by different machines that share the key)
still link up.

Threat model
    Whoever holds the key can re-link: they can recompute the pseudonym of a
    known patient ID, or test guesses, and can undo the date shift of a patient
    they know. Without the key the mapping is one-way: HMAC-SHA256 cannot be
    inverted, and unlike a plain hash it cannot be attacked with a dictionary of
    likely IDs (medical record numbers are short and guessable). So the key is
    kept apart from the data: in ``MEDDX_PSEUDONYM_KEY`` or in a key file
    (``<home>/keys/pseudonym.key`` by default, mode 0600 in a 0700 folder) that
    is never written inside, nor read from, the folder being de-identified into.
    Losing the key does not expose anything, but later runs will give new
    pseudonyms that do not link to the earlier ones.

What the key does *not* protect: values that are kept (ages, sex, image
content, free text not covered by the profiles), and the length of the date
shift, which an attacker who knows one true date of a patient can recover.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meddx.exceptions import ConfigError, InvalidValueError

ENV_KEY = "MEDDX_PSEUDONYM_KEY"
"""Environment variable holding the key as 64 hex digits or base64 of 32 bytes."""

KEY_BYTES = 32
DEFAULT_SHIFT_RANGE: tuple[int, int] = (-365, -1)
"""Date offsets in days (inclusive): always into the past, never zero."""

PSEUDONYM_PREFIXES: dict[str, str] = {
    "patient": "P",
    "identifier": "ID",
    "account": "A",
    "person": "RP",
    "practitioner": "PR",
    "resource": "R",
}
"""Kinds of pseudonym and their prefixes; each kind is a separate HMAC domain."""

_PSEUDONYM_CHARS = 16  # base32 characters = 80 bits


def default_key_path() -> Path:
    """``<home>/keys/pseudonym.key`` (``MEDDX_HOME`` respected)."""
    from meddx.config import home_dir

    return home_dir() / "keys" / "pseudonym.key"


def _decode_key(text: str, *, where: str, path: Path | None = None) -> bytes:
    """64 hex digits or base64 (standard or URL-safe) of exactly 32 bytes."""
    text = text.strip()
    secret: bytes | None = None
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        secret = bytes.fromhex(text)
    else:
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                secret = decode(text.encode("ascii") + b"=" * (-len(text) % 4))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                continue
            break
    if secret is None or len(secret) != KEY_BYTES:
        raise ConfigError(
            f"the pseudonym key is not {KEY_BYTES} bytes as 64 hex digits or base64",
            path=path,
            field=where,
            hint="Generate one with: python -c \"import secrets; print(secrets.token_hex(32))\"",
        )
    return secret


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class PseudonymKey:
    """The secret behind every pseudonym, remapped UID and date shift.

    Args:
        secret: 32 random bytes.
        shift_range: inclusive ``(low, high)`` range of date offsets in days.
        source: where the key came from (``"env"``, a file path, ``"memory"``);
            reported, never the secret itself.
        created: True when the key file was created by this load.
    """

    secret: bytes = field(repr=False)
    shift_range: tuple[int, int] = DEFAULT_SHIFT_RANGE
    source: str = "memory"
    created: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            raise ConfigError(f"a pseudonym key must be {KEY_BYTES} bytes", field="secret")
        low, high = self.shift_range
        if int(low) != low or int(high) != high or low > high:
            raise ConfigError(
                f"date shift range {self.shift_range} is not (low, high) whole days with low <= high",
                field="shift_range",
                hint="Use e.g. (-365, -1)",
            )

    # -- loading -----------------------------------------------------------------
    @classmethod
    def generate(cls, **kwargs: object) -> PseudonymKey:
        """A fresh random key (kept in memory only)."""
        return cls(os.urandom(KEY_BYTES), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_hex(cls, text: str, **kwargs: object) -> PseudonymKey:
        """A key from 64 hex digits or base64 text."""
        return cls(_decode_key(text, where="key"), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls,
        key_file: str | os.PathLike[str] | None = None,
        *,
        forbid_inside: Iterable[str | os.PathLike[str]] = (),
        create: bool = True,
        shift_range: tuple[int, int] = DEFAULT_SHIFT_RANGE,
    ) -> PseudonymKey:
        """The key from ``key_file``, else ``MEDDX_PSEUDONYM_KEY``, else the default key file.

        A missing key file is created (32 random bytes as hex, mode 0600, folder
        0700) when ``create`` is true. ``forbid_inside`` lists folders the key
        must not live in (the output being written): a key file there is
        neither created nor read, since it would travel with the data.
        """
        forbidden = [Path(p) for p in forbid_inside]
        if key_file is None:
            env = os.environ.get(ENV_KEY, "").strip()
            if env:
                return cls(_decode_key(env, where=ENV_KEY), shift_range=shift_range, source="env")
            path = default_key_path()
        else:
            path = Path(key_file).expanduser()
        for folder in forbidden:
            if _is_inside(path, folder):
                raise ConfigError(
                    "the pseudonym key file is inside the folder being written; the key must be kept apart "
                    "from the de-identified data",
                    path=path,
                    field="key_file",
                    hint=f"Choose a key file outside {folder} (or set {ENV_KEY})",
                )
        created = False
        if not path.exists():
            if not create:
                raise ConfigError("the pseudonym key file does not exist", path=path, field="key_file")
            created = _create_key_file(path)
        return cls(_read_key_file(path), shift_range=shift_range, source=str(path), created=created)

    # -- keyed functions ---------------------------------------------------------
    def _mac(self, domain: str, value: str) -> bytes:
        message = domain.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        """A short public tag of the key (to check two runs used the same key)."""
        return self._mac("fingerprint", "").hex()[:12]

    def pseudonym(self, value: str, kind: str = "patient") -> str:
        """``<PREFIX>-`` + 16 base32 characters, stable for this key, kind and value.

        ``value`` is stripped of surrounding blanks first (``" 123 "`` and
        ``"123"`` are the same patient).
        """
        try:
            prefix = PSEUDONYM_PREFIXES[kind]
        except KeyError:
            raise ConfigError(
                f"unknown pseudonym kind {kind!r}",
                field="kind",
                hint=f"Known kinds: {', '.join(sorted(PSEUDONYM_PREFIXES))}",
            ) from None
        digest = self._mac(f"pseudonym:{kind}", str(value).strip())
        return f"{prefix}-{base64.b32encode(digest).decode('ascii')[:_PSEUDONYM_CHARS]}"

    def remap_uid(self, uid: str) -> str:
        """A new DICOM UID ``2.25.<int>`` for ``uid``: same input, same output, at most 44 characters.

        The integer is 128 bits of the HMAC with the version/variant bits of an
        RFC 9562 version-8 (custom) UUID set, as the ``2.25`` root expects a UUID.
        """
        raw = bytearray(self._mac("uid", str(uid).strip().rstrip("\x00").strip())[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return f"2.25.{int.from_bytes(bytes(raw), 'big')}"

    def remap_uuid(self, value: str) -> str:
        """A UUID (RFC 9562 version 8) for ``value``, e.g. for ``urn:uuid:`` references."""
        import uuid

        raw = bytearray(self._mac("uuid", value)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return str(uuid.UUID(bytes=bytes(raw)))

    def date_shift_days(self, patient_id: str) -> int:
        """The patient's date offset in days, in ``shift_range``; the same for all their files."""
        low, high = self.shift_range
        number = int.from_bytes(self._mac("date-shift", str(patient_id).strip())[:8], "big")
        return low + number % (high - low + 1)


def _create_key_file(path: Path) -> bool:
    """Write 32 random bytes as hex to ``path`` (0600) in a 0700 folder; False if another process won."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(os.urandom(KEY_BYTES).hex() + "\n")
    os.chmod(path, 0o600)
    return True


def _read_key_file(path: Path) -> bytes:
    """The key in ``path``; refuses a file that others can read (like ssh does)."""
    if not path.is_file():
        raise ConfigError("the pseudonym key path is not a file", path=path, field="key_file")
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(
            "the pseudonym key file can be read by other users",
            path=path,
            field="key_file",
            hint=f"Restrict it with: chmod 600 {path}",
        )
    data = path.read_bytes()
    if len(data) == KEY_BYTES:
        return data  # raw binary key (text keys are 44 or 64 characters)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return _decode_key(text, where="key_file", path=path)


# -- date shifting ------------------------------------------------------------------
_COMPACT = re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})?(?P<d>\d{2})?(?P<rest>.*)$", re.S)
_DOTTED = re.compile(r"^(?P<y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2})(?P<rest>)$")  # ACR-NEMA DA
_ISO = re.compile(r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2}))?)?(?P<rest>.*)$", re.S)


def _shift_parts(match: re.Match[str], days: int, sep: str, value: str) -> str:
    year, month, day = match["y"], match["m"], match["d"]
    try:
        start = _dt.date(int(year), int(month or 1), int(day or 1))
        shifted = start + _dt.timedelta(days=int(days))
    except (ValueError, OverflowError):
        raise InvalidValueError(f"{value!r} is not a valid date", field="date") from None
    parts = [f"{shifted.year:04d}"]
    if month:
        parts.append(f"{shifted.month:02d}")
    if day:
        parts.append(f"{shifted.day:02d}")
    return sep.join(parts) + match["rest"]


def shift_date(value: str, days: int) -> str:
    """Move a date by ``days``, keeping its format: DICOM DA ``YYYYMMDD`` (or ``YYYY.MM.DD``) or ISO ``YYYY-MM-DD``.

    Raises :class:`InvalidValueError` if ``value`` is not a full date.
    """
    text = str(value).strip()
    for pattern, sep in _DATE_FORMATS:
        match = pattern.match(text)
        if match:
            return _shift_parts(match, days, sep, text)
    raise InvalidValueError(f"{value!r} is not a date (YYYYMMDD or YYYY-MM-DD)", field="date")


_DATE_FORMATS = (
    (re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})(?P<rest>)$"), ""),
    (re.compile(r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?P<rest>)$"), "-"),
    (_DOTTED, "."),
)


_TIME_REST_COMPACT = re.compile(r"^(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?([+-]\d{4})?$")
_TIME_REST_ISO = re.compile(r"^(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:\d{2})?$")


def shift_datetime(value: str, days: int) -> str:
    """Move a date-time by whole ``days``, keeping its precision, time and zone.

    Accepts DICOM DT / HL7 TS (``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``) and FHIR/ISO
    (``YYYY[-MM[-DD[Thh:mm[:ss[.f]][Z|+hh:mm]]]]``). A year or year-month value is
    shifted from its first day and keeps its precision. Raises
    :class:`InvalidValueError` if ``value`` is not a date-time.
    """
    text = str(value).strip()
    iso = _ISO.match(text)
    if iso and "-" in text[4:5] and _TIME_REST_ISO.match(iso["rest"]):
        return _shift_parts(iso, days, "-", text)
    compact = _COMPACT.match(text)
    if compact and _TIME_REST_COMPACT.match(compact["rest"]) and not (compact["rest"] and not compact["d"]):
        return _shift_parts(compact, days, "", text)
    raise InvalidValueError(f"{value!r} is not a date-time", field="datetime")


__all__ = [
    "DEFAULT_SHIFT_RANGE",
    "ENV_KEY",
    "PSEUDONYM_PREFIXES",
    "PseudonymKey",
    "default_key_path",
    "shift_date",
    "shift_datetime",
]
