"""The one exception tree of meddx.

Every error that meddx raises on purpose derives from :class:`MeddxError`, so a
caller (the CLI, the REST service, a fuzzer) can tell "bad input, explained"
from "bug in meddx"::

    MeddxError
    ├── ConfigError                 a setting or argument is wrong
    ├── DataError                   a file or data set cannot be used
    │   ├── DataFileNotFoundError   (also a FileNotFoundError)
    │   ├── UnsupportedFormatError  no reader takes this file
    │   ├── CorruptFileError        truncated, malformed or undecodable
    │   ├── MissingFieldError       a required tag, column or key is absent
    │   ├── LabelShapeError         labels do not fit the images
    │   ├── InvalidValueError       NaN/inf, out-of-range or inconsistent values
    │   ├── EmptyDataError          nothing to read
    │   └── ChecksumError           content differs from the catalogue
    ├── DatasetNotFoundError        not in the catalogue (also a KeyError)
    ├── DownloadError               fetching from the public source failed
    └── ModelError                  a model or package cannot be built or loaded

Messages follow one pattern: *where* (file and field), *what* went wrong, and
*what to do*.
"""

from __future__ import annotations

from os import PathLike


class MeddxError(Exception):
    """Base class of every error meddx raises on purpose.

    Args:
        message: what went wrong.
        path: the file or folder concerned, if any.
        field: the tag, column, key or option concerned, if any.
        hint: what the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if self.field:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text = f"{text}. {self.hint}" if not text.endswith(".") else f"{text} {self.hint}"
        return text

    def __reduce__(self):  # keep keyword-only arguments through pickling
        return (_rebuild, (type(self), self.message, self.path, self.field, self.hint))


def _rebuild(cls, message, path, field, hint):  # noqa: ANN001, ANN202
    return cls(message, path=path, field=field, hint=hint)


class ConfigError(MeddxError, ValueError):
    """A setting, option or argument has a value meddx cannot use."""


class DataError(MeddxError):
    """A file, folder or data set cannot be used as it is."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """The file or folder does not exist."""


class UnsupportedFormatError(DataError):
    """No registered reader accepts this file."""


class CorruptFileError(DataError):
    """The file is truncated, malformed or cannot be decoded."""


class MissingFieldError(DataError):
    """A required tag, column, key or header field is absent."""


class LabelShapeError(DataError):
    """Labels do not have the shape or count the images need."""


class InvalidValueError(DataError):
    """Values are NaN/inf, out of range or inconsistent with each other."""


class EmptyDataError(DataError):
    """The file or table holds no data."""


class ChecksumError(DataError):
    """A file's checksum differs from the one the catalogue expects."""


class DatasetNotFoundError(MeddxError, KeyError):
    """The name is not in the data catalogue."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self._format()


class DownloadError(MeddxError):
    """Fetching a file from its public source failed (offline, HTTP error, ...)."""


class ModelError(MeddxError):
    """A model, checkpoint or model package cannot be built or loaded."""


__all__ = [
    "ChecksumError",
    "ConfigError",
    "CorruptFileError",
    "DataError",
    "DataFileNotFoundError",
    "DatasetNotFoundError",
    "DownloadError",
    "EmptyDataError",
    "InvalidValueError",
    "LabelShapeError",
    "MeddxError",
    "MissingFieldError",
    "ModelError",
    "UnsupportedFormatError",
]
