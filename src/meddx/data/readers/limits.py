"""Decompression and size limits shared by the readers and the upload check.

A few hundred kilobytes of deflate, gzip, PNG or JPEG 2000 can declare or inflate
to gigabytes (a *decompression bomb*). Every reader that decodes a compressed
container asks :func:`check_expansion` before it allocates anything, and inflates
with :func:`inflate_counted`, which streams and stops as soon as the output
passes the allowance, so a refused file costs kilobytes of memory, not gigabytes.

The allowance for ``encoded`` bytes of compressed data is::

    min(max_bytes, max(free_bytes, max_ratio * encoded))

so any file may decode to ``free_bytes`` (256 MiB) whatever its ratio (sparse
label maps compress 500:1), larger outputs need a plausible ratio (at most
200:1), and nothing decodes past ``max_bytes`` (2 GiB). The environment
variables ``MEDDX_MAX_DECODED_MB``, ``MEDDX_FREE_DECODED_MB`` and
``MEDDX_MAX_EXPANSION_RATIO`` change them for genuine large files.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from meddx.exceptions import ConfigError, CorruptFileError, InvalidValueError

MiB = 1 << 20
MAX_DECODED_BYTES = 2048 * MiB
"""No file decodes to more than this many bytes (``MEDDX_MAX_DECODED_MB``)."""

FREE_DECODED_BYTES = 256 * MiB
"""Any file may decode to this many bytes whatever its ratio (``MEDDX_FREE_DECODED_MB``)."""

MAX_EXPANSION_RATIO = 200.0
"""Beyond the free allowance, decoded/encoded may be at most this (``MEDDX_MAX_EXPANSION_RATIO``)."""

CHUNK = 1 << 16
"""Compressed bytes read per step while inflating."""

OUT_CHUNK = 1 << 20
"""Most decompressed bytes produced per step (zlib ``max_length``)."""

_ENV = {
    "max_bytes": ("MEDDX_MAX_DECODED_MB", MiB),
    "free_bytes": ("MEDDX_FREE_DECODED_MB", MiB),
    "max_ratio": ("MEDDX_MAX_EXPANSION_RATIO", 1),
}
HINT = (
    "If the file is genuine, raise the limits with MEDDX_MAX_DECODED_MB, MEDDX_FREE_DECODED_MB or "
    "MEDDX_MAX_EXPANSION_RATIO; otherwise it is corrupt or a decompression bomb"
)


class LimitExceededError(InvalidValueError):
    """A file declares, or inflates to, more decoded bytes than the limits allow (a decompression bomb?)."""


@dataclass(frozen=True)
class DecodeLimits:
    """How far compressed data may expand (see the module docstring)."""

    max_bytes: int = MAX_DECODED_BYTES
    free_bytes: int = FREE_DECODED_BYTES
    max_ratio: float = MAX_EXPANSION_RATIO

    def allowed(self, encoded: int) -> int:
        """The most bytes ``encoded`` compressed bytes may decode to."""
        return int(min(self.max_bytes, max(self.free_bytes, self.max_ratio * max(encoded, 0))))

    def describe(self, encoded: int) -> str:
        return (
            f"the limit for {encoded:,} compressed bytes is {self.allowed(encoded):,} "
            f"(at most {self.max_ratio:g}:1 beyond {self.free_bytes // MiB} MiB, never over "
            f"{self.max_bytes // MiB} MiB)"
        )


def decode_limits() -> DecodeLimits:
    """The limits in force: the defaults, overridden by the ``MEDDX_*`` environment variables."""
    values: dict[str, float] = {}
    for name, (variable, unit) in _ENV.items():
        raw = os.environ.get(variable)
        if raw in (None, ""):
            continue
        try:
            number = float(raw)
        except ValueError:
            number = -1.0
        if not number > 0:
            raise ConfigError(
                f"{variable} is {raw!r}, not a positive number", field=variable,
                hint="Unset it for the default, or give a positive number",
            )
        values[name] = number * unit
    return DecodeLimits(
        max_bytes=int(values.get("max_bytes", MAX_DECODED_BYTES)),
        free_bytes=int(values.get("free_bytes", FREE_DECODED_BYTES)),
        max_ratio=float(values.get("max_ratio", MAX_EXPANSION_RATIO)),
    )


def check_expansion(
    declared: int,
    encoded: int | None,
    *,
    path: str | os.PathLike[str] | None,
    field: str,
    what: str,
    limits: DecodeLimits | None = None,
) -> None:
    """Refuse (LimitExceededError) if ``declared`` decoded bytes exceed the allowance for ``encoded``.

    ``encoded=None`` means uncompressed data (only the absolute cap applies).
    ``what`` describes the declaration for the message (``"Rows 512 x Columns 512 x ..."``).
    """
    limits = limits or decode_limits()
    allowed = limits.max_bytes if encoded is None else limits.allowed(encoded)
    if declared > allowed:
        where = (
            f"{declared:,} bytes, above the {limits.max_bytes // MiB} MiB limit"
            if encoded is None
            else f"{declared:,} bytes from {encoded:,} compressed; {limits.describe(encoded)}"
        )
        raise LimitExceededError(f"{what} decodes to {where}", path=path, field=field, hint=HINT)


def inflate_counted(
    stream: BinaryIO,
    *,
    encoded: int,
    path: str | os.PathLike[str] | None,
    field: str,
    what: str,
    wbits: int = -zlib.MAX_WBITS,
    limits: DecodeLimits | None = None,
    allowed: int | None = None,
    sink: Callable[[bytes], object] | None = None,
) -> int:
    """Inflate ``stream`` to its end in bounded steps and return the decompressed size.

    Nothing is kept unless ``sink`` is given (it receives each decompressed
    chunk). Stops with LimitExceededError as soon as the output passes
    ``allowed`` (default: the allowance of ``limits`` for ``encoded`` bytes) and
    with CorruptFileError when the stream is broken or ends early. ``wbits`` is
    zlib's: ``-15`` raw deflate (DICOM), ``31`` gzip (one member), ``47`` auto.
    """
    limits = limits or decode_limits()
    cap = limits.allowed(encoded) if allowed is None else allowed
    inflater = zlib.decompressobj(wbits)
    total = 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail or stream.read(CHUNK)
            out = inflater.decompress(data, OUT_CHUNK)  # b"": output zlib still holds from consumed input
            if not data and not out:
                raise CorruptFileError(
                    f"the compressed {what} ends before its end-of-stream marker",
                    path=path, field=field, hint="The file is truncated; copy or download it again",
                )
            total += len(out)
            if total > cap:
                raise LimitExceededError(
                    f"{what} inflates to more than {cap:,} bytes from {encoded:,} compressed; "
                    f"{limits.describe(encoded)}",
                    path=path, field=field, hint=HINT,
                )
            if sink is not None and out:
                sink(out)
    except zlib.error as exc:
        raise CorruptFileError(
            f"the compressed {what} is corrupt: {exc}", path=path, field=field,
            hint="The file is damaged; re-export or re-download it",
        ) from exc
    return total


__all__ = [
    "FREE_DECODED_BYTES",
    "MAX_DECODED_BYTES",
    "MAX_EXPANSION_RATIO",
    "DecodeLimits",
    "LimitExceededError",
    "check_expansion",
    "decode_limits",
    "inflate_counted",
]
