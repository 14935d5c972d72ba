"""The reader contract and registry behind :func:`meddx.data.read`.

A reader is a small class that knows one format: which suffixes it owns, how to
recognise its content from the first bytes (``sniff``), and how to turn a file
into a typed :class:`~meddx.data.sample.Sample`. Readers register themselves with
:func:`register_reader`; :func:`read` picks one by content first, then by suffix,
so a DICOM file without ``.dcm`` or a PNG named ``.jpg`` still reads correctly.
"""

from __future__ import annotations

import importlib
import struct
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from meddx.data.sample import Sample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MeddxError,
    UnsupportedFormatError,
)

HEAD_BYTES = 1024
"""How many leading bytes readers get to recognise their format."""

# Exceptions that decoding libraries raise on malformed bytes. A reader may widen
# or narrow this; :func:`read` turns them into CorruptFileError naming the file.
DEFAULT_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    EOFError,
    struct.error,
    zlib.error,
    OverflowError,
    UnicodeDecodeError,
)


class Reader(ABC):
    """Reads one format into a :class:`Sample`.

    Subclasses set ``name`` and ``suffixes``, may override :meth:`sniff` to
    recognise content, and implement :meth:`read`. They validate what they read
    and raise errors from :mod:`meddx.exceptions` that name the file and field.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    directories: ClassVar[bool] = False
    """True if the reader accepts a folder (a DICOM series, an image folder)."""
    decode_errors: ClassVar[tuple[type[BaseException], ...]] = DEFAULT_DECODE_ERRORS

    def sniff(self, path: Path, head: bytes) -> bool:
        """True if ``head`` (the first bytes of ``path``) is surely this format."""
        return False

    def accepts_suffix(self, path: Path) -> bool:
        name = path.name.lower()
        return any(name.endswith(s) for s in self.suffixes)

    def accepts_directory(self, path: Path) -> bool:
        """True if this reader can read the folder ``path``."""
        return False

    @abstractmethod
    def read(self, path: Path, **options: Any) -> Sample:
        """Read ``path``; raise a :class:`~meddx.exceptions.MeddxError` on bad input."""


_DEFAULT_FIELDS: dict[str, str] = {
    "dicom": "DICOM data set",
    "nifti": "NIfTI header or voxel data",
    "image": "image data",
    "npz": "archive member",
    "wfdb": "signal files",
    "edf": "data records",
    "fhir": "JSON document",
    "hl7v2": "segments",
    "table": "table cells",
}
"""What a wrapped library error is about when nothing more precise is known, per reader."""


@contextmanager
def decoding_field(field: str) -> Iterator[None]:
    """Mark library exceptions raised inside the block as concerning ``field`` (innermost mark wins).

    :func:`read` and :func:`decoding` name that field in the CorruptFileError they
    raise, so a wrapped library error says which tag, header field or member failed.
    """
    try:
        yield
    except MeddxError:
        raise
    except Exception as exc:
        if getattr(exc, "meddx_field", None) is None:
            try:
                exc.meddx_field = field  # type: ignore[attr-defined]
            except AttributeError:  # pragma: no cover - exceptions with __slots__
                pass
        raise


def _tag_text(tag: Any) -> str | None:
    """``(7FE0,0010) PixelData`` for a DICOM tag local of pydicom's parser (if pydicom is loaded)."""
    try:
        value = int(tag)
    except (TypeError, ValueError, OverflowError):
        return None
    if not 0 <= value <= 0xFFFFFFFF:
        return None
    text = f"({value >> 16:04X},{value & 0xFFFF:04X})"
    datadict = sys.modules.get("pydicom.datadict")
    if datadict is not None:
        try:
            keyword = datadict.keyword_for_tag(value)
        except Exception:  # noqa: BLE001 - a name is a nicety, never a reason to fail
            keyword = ""
        if keyword:
            text = f"{text} {keyword}"
    return text


def field_of(exc: BaseException, default: str | None = None) -> str | None:
    """The field a library exception concerns, as precisely as can be told.

    In order: a field marked with :func:`decoding_field`; the DICOM tag or PNG
    chunk that the library was parsing (read from its frames' variables); the key
    of a KeyError; ``default``.
    """
    marked = getattr(exc, "meddx_field", None)
    if isinstance(marked, str) and marked:
        return marked
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first
        module = frame.f_globals.get("__name__", "")
        local = frame.f_locals
        if module.startswith("pydicom") and "tag" in local:
            text = _tag_text(local["tag"])
            if text:
                return f"tag {text}"
        if module.startswith("PIL") and isinstance(local.get("cid"), bytes):
            return f"{local['cid'].decode('latin-1')} chunk"
        if module.startswith("nibabel") and isinstance(local.get("key"), str):
            return f"header field {local['key']}"
    if isinstance(exc, KeyError) and exc.args:
        return f"key {str(exc.args[0])[:60]!r}"
    return default


@contextmanager
def decoding(
    path: Path,
    errors: tuple[type[BaseException], ...],
    *,
    what: str,
    hint: str,
    row: str = "",
    field: str | None = None,
) -> Iterator[None]:
    """Turn a decoding library's exceptions on malformed bytes into CorruptFileError naming ``path``.

    ``what`` completes "cannot decode ..." (e.g. ``"as DICOM"``); ``row`` prefixes
    the message when one file of a collection failed; ``field`` is what the block
    decodes (a tag, a header field), used when the exception tells nothing better.
    """
    try:
        yield
    except MeddxError:
        raise
    except MemoryError as exc:
        raise CorruptFileError(
            f"{row}declares more data than fits in memory", path=path, field=field,
            hint="The header is probably corrupt",
        ) from exc
    except errors as exc:
        named = field_of(exc, field or what.removeprefix("as ").removeprefix("the "))
        raise CorruptFileError(
            f"{row}cannot decode {what} ({named}): {type(exc).__name__}: {exc}", path=path, field=named, hint=hint
        ) from exc


def check_options(options: dict[str, Any], allowed: frozenset[str] | set[str], path: Path, reader: str) -> None:
    """Reject reader options the reader does not know, listing the ones it does."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for the {reader} reader",
            path=path,
            field=unknown[0],
            hint=f"Options are: {', '.join(sorted(allowed))}",
        )


def read_bounded(path: Path, max_bytes: int, *, hint: str = "Pass max_bytes= to read a larger file") -> bytes:
    """The bytes of ``path``, refusing an empty file or one larger than ``max_bytes`` (text formats)."""
    size = path.stat().st_size
    if size == 0:
        raise EmptyDataError("the file is empty", path=path, field="size")
    if size > max_bytes:
        raise InvalidValueError(
            f"file is {size} bytes, more than the {max_bytes} bytes allowed", path=path, field="max_bytes", hint=hint
        )
    return path.read_bytes()


def import_optional(module: str, *, extra: str, purpose: str, path: Path | None = None) -> Any:
    """Import an optional library, or explain which meddx extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(
            f"{purpose} needs the '{module}' package", path=path, field=module,
            hint=f"Install it with: pip install 'meddx[{extra}]'",
        ) from exc


_REGISTRY: dict[str, Reader] = {}

R = TypeVar("R", bound=type[Reader])


def register_reader(cls: R) -> R:
    """Class decorator: add a reader to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"a reader named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def list_readers() -> list[str]:
    """Names of the registered readers, in registration order."""
    _load_builtin_readers()
    return list(_REGISTRY)


def get_reader(name: str) -> Reader:
    """The reader registered as ``name``."""
    _load_builtin_readers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedFormatError(
            f"no reader named {name!r}",
            field="reader",
            hint=f"Choose one of: {', '.join(_REGISTRY)}",
        ) from None


def find_reader(path: Path) -> Reader:
    """Pick a reader for ``path``: content sniffing first, then the suffix."""
    _load_builtin_readers()
    readers = list(_REGISTRY.values())
    if path.is_dir():
        for reader in readers:
            if reader.directories and reader.accepts_directory(path):
                return reader
        raise UnsupportedFormatError(
            "no reader takes this folder",
            path=path,
            hint="A folder must hold a DICOM series, or images with a labels.csv (file,label)",
            field="folder contents",
        )
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    for reader in readers:
        if reader.sniff(path, head):
            return reader
    for reader in readers:
        if reader.accepts_suffix(path):
            return reader
    known = sorted({s for r in readers for s in r.suffixes})
    raise UnsupportedFormatError(
        "unsupported format (content not recognised, suffix not known)",
        path=path,
        hint=f"meddx reads {', '.join(known)}; pass reader=NAME to force one of {', '.join(_REGISTRY)}",
        field="format",
    )


def read(path: str | Path, *, reader: str | None = None, **options: Any) -> Sample:
    """Read a medical file or folder into a typed sample.

    Args:
        path: a file (DICOM, NIfTI, PNG/JPEG, ``.npz``, WFDB ``.hea``, EDF, CSV,
            FHIR JSON, HL7 v2) or a folder (DICOM series, images with ``labels.csv``).
        reader: force a reader by name instead of detecting the format.
        **options: passed to the reader (e.g. ``schema=`` for CSV tables).

    Raises:
        DataFileNotFoundError: ``path`` does not exist.
        UnsupportedFormatError: no reader recognises it.
        CorruptFileError: the reader's library could not decode it.
        MeddxError: any other validation failure, naming the file and field.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(
            "no such file or folder", path=path, hint="Check the path and the current directory",
            field="path",
        )
    chosen = get_reader(reader) if reader else find_reader(path)
    try:
        return chosen.read(path, **options)
    except MeddxError:
        raise
    except MemoryError as exc:
        raise CorruptFileError(
            "declares more data than fits in memory", path=path, field=field_of(exc, "declared size"),
            hint="The header is probably corrupt",
        ) from exc
    except RecursionError as exc:
        raise CorruptFileError(
            f"{chosen.name} structure is nested too deeply", path=path,
            field=field_of(exc, _DEFAULT_FIELDS.get(chosen.name, f"{chosen.name} structure")),
            hint="The file is probably corrupt",
        ) from exc
    except chosen.decode_errors as exc:
        field = field_of(exc, _DEFAULT_FIELDS.get(chosen.name, f"{chosen.name} content"))
        raise CorruptFileError(
            f"cannot decode as {chosen.name} ({field}): {type(exc).__name__}: {exc}",
            path=path,
            field=field,
            hint="The file is truncated or corrupt; re-export or re-download it",
        ) from exc


_BUILTINS_LOADED = False


def _load_builtin_readers() -> None:
    """Import the built-in reader modules once (they register themselves)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    for module in _BUILTIN_MODULES:
        if f"meddx.data.readers.{module}" not in sys.modules:
            importlib.import_module(f"meddx.data.readers.{module}")
    _BUILTINS_LOADED = True


# Order matters only for suffix fallback; sniffing is unambiguous.
_BUILTIN_MODULES: tuple[str, ...] = (
    "dicom",
    "nifti",
    "image",
    "npz",
    "wfdb",
    "edf",
    "fhir",
    "hl7v2",
    "table",
)

Loader = Callable[[Path], Sample]
