"""WFDB records (PhysioNet): a ``.hea`` header plus ``.dat``/``.mat`` signal files.

The header is parsed and checked against the signal files *before* the samples
are decoded, so a header that claims more samples than its files hold is reported
as corrupt instead of being read as garbage. Signals come back in physical units
(``wfdb.rdrecord(physical=True)``); beat annotations from a sibling ``.atr`` file
are attached when present.

WFDB stores a missing sample as a reserved digital value that ``wfdb`` turns into
NaN. By default such samples are an error (a model cannot use them and would
silently propagate NaN); pass ``allow_nan=True`` to keep them as NaN and get the
count per channel in ``meta["nan_counts"]``.

Each signal line is checked field by field before ``wfdb`` sees it (``wfdb``'s
lenient pattern shifts a damaged field into the next one), and the samples are
verified against the header's 16-bit checksums, so a corrupted signal file is an
error rather than changed samples. Headers with non-ASCII bytes (``µV`` units,
Latin-1 or UTF-8 comments, a BOM) are read; units and comments keep those
characters.

This module is ``meddx.data.readers.wfdb``; with absolute imports, ``import wfdb``
below names the third-party library, not this module.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from meddx.data.readers._base import Reader, register_reader
from meddx.data.sample import SignalSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MeddxError,
    UnsupportedFormatError,
)

_OPTIONS = frozenset({"allow_nan", "annotations", "verify_checksum"})
_BOM = b"\xef\xbb\xbf"
MAX_HEADER_BYTES = 4 * 1024 * 1024
"""Largest ``.hea`` accepted (real headers are a few KB, long comment blocks included)."""

# Bytes per sample of each WFDB storage format (212 packs 2 samples in 3 bytes,
# 310/311 pack 3 in 4). The FLAC formats (508/516/524) are compressed: no check.
_BYTES_PER_SAMPLE: dict[str, float] = {
    "8": 1,
    "16": 2,
    "24": 3,
    "32": 4,
    "61": 2,
    "80": 1,
    "160": 2,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}

# The record line: name[/segments] n_sig [fs[/counter[(base)]] [sig_len [time [date]]]]
_RECORD_LINE = re.compile(
    r"""^[ \t]*[-\w]+(/\d+)?[ \t]+\d+
        ([ \t]+\d*\.?\d*(/-?\d*\.?\d*)?(\(-?\d*\.?\d*\))?
          ([ \t]+\d+
            ([ \t]+\d{1,2}(:\d{1,2}){0,2}(\.\d*)?
              ([ \t]+\d{1,2}/\d{1,2}/\d{1,4})?
            )?
          )?
        )?[ \t]*$""",
    re.VERBOSE,
)

# The format field of a signal line: fmt[xsamps_per_frame][:skew][+byte_offset].
_FORMAT_FIELD = re.compile(r"^(?P<fmt>\d+)(x(?P<spf>\d+))?(:(?P<skew>\d+))?(\+(?P<offset>\d+))?$")
# The gain field: gain[(baseline)][/units]; units may hold any non-blank character (µV).
_GAIN_FIELD = re.compile(
    r"^(?P<gain>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)(\((?P<baseline>-?\d+)\))?(/(?P<units>\S*))?$"
)
# The fields after the gain, in order: name and pattern.
_INT_FIELDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("adc_res", re.compile(r"^\d+$")),
    ("adc_zero", re.compile(r"^[-+]?\d+$")),
    ("init_value", re.compile(r"^[-+]?\d+$")),
    ("checksum", re.compile(r"^[-+]?\d+$")),
    ("block_size", re.compile(r"^\d+$")),
)
# A token that was meant as a number (digits with signs, points, exponents, separators).
_NUMBER_LIKE = re.compile(r"^[-+]?[\d.]*\d[\d.eExX_+-]*$")
_KNOWN_FORMATS = frozenset({"0", "8", "16", "24", "32", "61", "80", "160", "212", "310", "311", "508", "516", "524"})

_HEADER_SUFFIX = ".hea"
_SIGNAL_SUFFIXES = (".dat", ".mat")


def decode_header(raw: bytes) -> str:
    """Header bytes as text: a UTF-8 BOM dropped, UTF-8 if it decodes, else Latin-1.

    WFDB headers are ASCII by the spec, but real ones carry ``µV`` units and
    Latin-1 or UTF-8 comments; ``wfdb`` itself reads them (dropping those bytes).
    """
    raw = raw.removeprefix(_BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":  # a cut multi-byte char
            return raw[: exc.start].decode("utf-8")
        return raw.decode("latin-1")


def looks_like_wfdb_header(head: bytes) -> bool:
    """True if the first non-comment line of ``head`` parses as a WFDB record line."""
    text = decode_header(head)
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return bool(_RECORD_LINE.match(line))
    return False


def _names_signal_file(head: bytes, name: str) -> bool:
    """True if a signal line of the header text ``head`` starts with the file name ``name``."""
    text = decode_header(head)
    return any(line.split(None, 1)[:1] == [name] for line in text.splitlines()[1:])


def _header_lines(text: str) -> list[str]:
    """Non-blank lines that are not comments (the record line first)."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_signal_lines(text: str, header_path: Path) -> list[dict[str, Any]]:
    """Check every signal line of a single-segment header field by field (the WFDB spec, strictly).

    ``wfdb`` matches signal lines with a lenient pattern that silently shifts fields
    (``16-24`` became a gain of -24); here each field must have its own syntax, so
    a damaged line is refused naming the signal and the field. Returns one dict per
    signal (``fmt``, ``samps_per_frame``, ``byte_offset``, ``units``, ``checksum``...).
    Multi-segment headers (``name/segments``) give an empty list: their segments are
    records of their own.
    """
    lines = _header_lines(text)
    if not lines:
        return []
    record = lines[0].split()
    if "/" in record[0] or len(record) < 2:
        return []
    try:
        n_sig = int(record[1])
    except ValueError:
        raise CorruptFileError(
            f"the record line gives {record[1]!r} signals, not a whole number", path=header_path, field="n_sig"
        ) from None
    signal_lines = lines[1:]
    if len(signal_lines) < n_sig:
        raise CorruptFileError(
            f"the record line declares {n_sig} signals but {len(signal_lines)} signal lines follow",
            path=header_path,
            field="n_sig",
            hint="The header is truncated or corrupt; re-download the record",
        )
    signals = []
    for i, line in enumerate(signal_lines[:n_sig]):
        where = f"signal {i + 1}"
        tokens = line.split()

        def bad(name: str, value: str, expected: str, where: str = where) -> CorruptFileError:
            return CorruptFileError(
                f"{where}: the {name} field is {value!r}, expected {expected}",
                path=header_path,
                field=f"{name} of {where}",
                hint="The header is corrupt; re-download the record",
            )

        if len(tokens) < 2:
            raise bad("format", "", "file name then fmt[xframe][:skew][+offset]")
        match = _FORMAT_FIELD.match(tokens[1])
        if match is None:
            raise bad("format", tokens[1], "fmt[xsamples_per_frame][:skew][+byte_offset] with whole numbers >= 0")
        fmt = match["fmt"]
        if fmt not in _KNOWN_FORMATS:
            raise bad("format", tokens[1], f"a WFDB storage format ({', '.join(sorted(_KNOWN_FORMATS, key=int))})")
        spf = int(match["spf"]) if match["spf"] else 1
        if spf < 1:
            raise bad("samples per frame", tokens[1], "at least 1 sample per frame (fmt x N, N >= 1)")
        info: dict[str, Any] = {
            "file_name": tokens[0],
            "fmt": fmt,
            "samps_per_frame": spf,
            "byte_offset": int(match["offset"]) if match["offset"] else 0,
            "units": None,
            "checksum": None,
            "sig_name": None,
        }
        if len(tokens) > 2:
            gain = _GAIN_FIELD.match(tokens[2])
            if gain is None:
                raise bad("gain", tokens[2], "gain[(baseline)][/units], e.g. 200(0)/mV")
            if not math.isfinite(float(gain["gain"])):
                raise bad("gain", tokens[2], "a finite number")
            info["units"] = gain["units"] or None
        rest = tokens[3:]
        present = 0
        for (name, pattern), token in zip(_INT_FIELDS, rest, strict=False):
            if not pattern.match(token):
                break
            info[name] = int(token)
            present += 1
        if present < len(_INT_FIELDS) and present < len(rest):
            token = rest[present]
            if _NUMBER_LIKE.match(token):  # a damaged number, not the start of a description
                raise bad(_INT_FIELDS[present][0], token, "a whole number")
            # The spec wants every numeric field before a description; wfdb (and real headers)
            # also accept a description after fewer of them: so do we, when the text is no number.
        if len(rest) > present:
            info["sig_name"] = line.split(None, 3 + present)[-1].strip()
        signals.append(info)
    return signals


def _header_path(path: Path) -> Path:
    """The ``.hea`` file for ``path`` (a ``.hea``, or a signal file beside its header)."""
    if path.suffix.lower() == _HEADER_SUFFIX:
        return path
    return path.with_suffix(_HEADER_SUFFIX)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence wfdb's own deprecation noise (pandas ``inplace=``) around library calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"wfdb\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"wfdb\.")
        yield


def _import_wfdb() -> Any:
    try:
        with _quiet():
            import wfdb as _wfdb  # the PhysioNet library (absolute import)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(
            "reading WFDB records needs the 'wfdb' package",
            field="wfdb",
            hint="Install it with: pip install 'meddx[signals]'",
        ) from exc
    return _wfdb


@register_reader
class WfdbReader(Reader):
    """Reads a PhysioNet WFDB record into a :class:`SignalSample`.

    Options:
        allow_nan: keep invalid (missing) samples as NaN instead of raising
            :class:`InvalidValueError` (default False).
        annotations: extension of the annotation file to attach (default
            ``"atr"``, used only if the file exists; naming one explicitly makes
            it required). ``None`` skips annotations.
        verify_checksum: check every signal's samples against the header's
            checksum and raise :class:`CorruptFileError` on a mismatch (default
            True). False reads without the check and warns that it did so;
            ``meta["checksum_verified"]`` says whether every signal was checked.
    """

    name = "wfdb"
    suffixes = (_HEADER_SUFFIX,)

    def sniff(self, path: Path, head: bytes) -> bool:
        suffix = path.suffix.lower()
        if suffix == _HEADER_SUFFIX:
            return looks_like_wfdb_header(head)
        if suffix:  # a signal file (.dat, .mat, .xyz ...) that its sibling header names
            header = _header_path(path)
            if not header.is_file():
                return False
            try:
                with open(header, "rb") as fh:
                    hhead = fh.read(4096)
            except OSError:
                return False
            # The header must name this very file on a signal line.
            return looks_like_wfdb_header(hhead) and _names_signal_file(hhead, path.name)
        return False

    def accepts_suffix(self, path: Path) -> bool:
        suffix = path.suffix.lower()
        if suffix == _HEADER_SUFFIX:
            return True
        return suffix in _SIGNAL_SUFFIXES and _header_path(path).is_file()

    def read(self, path: Path, **options: Any) -> SignalSample:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown option(s) for the wfdb reader: {', '.join(sorted(unknown))}",
                path=path,
                field=sorted(unknown)[0],
                hint=f"Valid options: {', '.join(sorted(_OPTIONS))}",
            )
        allow_nan = bool(options.get("allow_nan", False))
        ann_explicit = "annotations" in options
        ann_ext = options.get("annotations", "atr")
        if ann_ext is not None and (not isinstance(ann_ext, str) or not ann_ext.isalnum()):
            raise ConfigError(
                f"annotations must be a file extension such as 'atr', not {ann_ext!r}",
                path=path,
                field="annotations",
            )

        _wfdb = _import_wfdb()
        header_path = _header_path(path)
        if not header_path.is_file():
            raise DataFileNotFoundError(
                f"the WFDB header {header_path.name} is missing",
                path=header_path,
                hint="A WFDB record needs its .hea header next to the signal files",
                field="header",
            )
        record_base = str(header_path.with_suffix(""))

        verify = options.get("verify_checksum", True)
        if not isinstance(verify, bool):
            raise ConfigError(
                f"verify_checksum must be True or False, not {verify!r}", path=path, field="verify_checksum"
            )
        header, signals, header_text = self._read_header(_wfdb, header_path, record_base)
        if isinstance(header, _wfdb.Record):
            self._check_signal_files(header, header_path)
        try:
            with _quiet():
                record = _wfdb.rdrecord(record_base, physical=True)
                checksums = self._verify_checksums(_wfdb, record_base, header_path, signals, verify)
        except MeddxError:
            raise
        except FileNotFoundError as exc:
            missing = getattr(exc, "filename", None) or str(exc)
            raise DataFileNotFoundError(
                f"a file of the record is missing: {missing}",
                path=missing if getattr(exc, "filename", None) else header_path,
                hint="Keep every file the header names next to the .hea",
                field="file_name",
            ) from exc
        except (
            ValueError, TypeError, IndexError, KeyError, OSError, EOFError, OverflowError, ZeroDivisionError
        ) as exc:
            raise CorruptFileError(
                f"cannot decode the WFDB record: {type(exc).__name__}: {exc}",
                path=header_path,
                field="signal files",
                hint="The header and the signal files disagree, or a file is corrupt",
            ) from exc

        fs = float(record.fs or 0.0)
        if not math.isfinite(fs) or fs <= 0:
            raise InvalidValueError(
                f"sampling frequency must be positive, the header gives {record.fs!r}",
                path=header_path,
                field="fs",
            )
        names = [str(n) for n in (record.sig_name or [])]
        units = [str(u) for u in (record.units or [])]
        comments = [str(c) for c in (record.comments or [])]
        if not header_text.isascii():  # wfdb drops non-ASCII bytes: take units and comments from our decoding
            units = [str(sig["units"] or u) for sig, u in zip(signals, units, strict=False)] + units[len(signals):]
            comments = [
                line.lstrip()[1:].strip() for line in header_text.splitlines() if line.lstrip().startswith("#")
            ]
        if record.p_signal is None:
            data = np.zeros((0, 0), dtype=np.float64)
        else:
            data = np.asarray(record.p_signal, dtype=np.float64)
            if data.ndim == 1:
                data = data[:, None]

        nan_counts = self._check_finite(data, names, record, header_path, allow_nan)

        annotations, aux, ann_file = self._read_annotations(
            _wfdb, header_path, record_base, ann_ext, ann_explicit, fs
        )
        if data.size == 0 and not annotations:
            raise EmptyDataError(
                "the record holds neither signal samples nor annotations",
                path=header_path,
                hint="Check that the header lists signals and a non-zero length",
                field="sig_len",
            )

        base_date = getattr(record, "base_date", None)
        base_time = getattr(record, "base_time", None)
        meta: dict[str, Any] = {
            "record_name": record.record_name,
            "header": str(header_path),
            "comments": comments,
            "base_date": base_date.isoformat() if base_date is not None else None,
            "base_time": base_time.isoformat() if base_time is not None else None,
            "n_sig": int(record.n_sig or 0),
            "sig_len": int(record.sig_len or 0),
            "adc_gain": [float(g) for g in (getattr(record, "adc_gain", None) or [])],
            "baseline": [int(b) for b in (getattr(record, "baseline", None) or [])],
            "fmt": [str(f) for f in (getattr(record, "fmt", None) or [])],
            "file_name": [str(f) for f in (getattr(record, "file_name", None) or [])],
        }
        meta["checksum_verified"] = checksums
        if nan_counts:
            meta["nan_counts"] = nan_counts
        if ann_file is not None:
            meta["annotation_file"] = str(ann_file)
            meta["annotation_aux"] = aux

        return SignalSample(
            path=path,
            format=self.name,
            patient_id=None,
            study_id=str(record.record_name),
            meta=meta,
            data=data,
            fs=fs,
            channel_names=names,
            units=units,
            annotations=annotations,
        )

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _read_header(_wfdb: Any, header_path: Path, record_base: str) -> tuple[Any, list[dict[str, Any]], str]:
        """Parse the header: our strict field check first, then ``wfdb.rdheader``.

        Returns the wfdb header, the checked signal lines and the decoded text.
        """
        try:
            size = header_path.stat().st_size
            if size > MAX_HEADER_BYTES:
                raise CorruptFileError(
                    f"the header is {size} bytes, more than the {MAX_HEADER_BYTES} a WFDB header may have",
                    path=header_path,
                    hint="Is this really a WFDB .hea header?",
                    field="header",
                )
            raw = header_path.read_bytes()
        except OSError as exc:
            raise CorruptFileError(f"cannot open the header: {exc}", path=header_path, field="header") from exc
        if not looks_like_wfdb_header(raw[:4096]):
            raise CorruptFileError(
                "the first line is not a WFDB record line (name n_sig fs sig_len ...)",
                path=header_path,
                field="record line",
                hint="Is this really a WFDB .hea header?",
            )
        text = decode_header(raw)
        signals = parse_signal_lines(text, header_path)
        try:
            with _quiet():
                header = _wfdb.rdheader(record_base)
        except (
            ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, ZeroDivisionError
        ) as exc:
            raise CorruptFileError(
                f"malformed WFDB header: {type(exc).__name__}: {exc}",
                path=header_path,
                field="record line" if not signals else "signal lines",
                hint="Each signal line needs: file format gain/units bits zero init checksum block name",
            ) from exc
        return header, signals, text

    @staticmethod
    def _verify_checksums(
        _wfdb: Any, record_base: str, header_path: Path, signals: list[dict[str, Any]], verify: bool
    ) -> bool:
        """Check each signal's samples against the header's 16-bit checksum; True if all were checked.

        The checksum is the sum of a signal's digital samples modulo 65536 (WFDB
        writes it signed, wfdb-python unsigned). A mismatch means the signal file
        or the header changed since the record was written. Some tools write 0
        for every signal instead of a checksum (the CinC 2017 records): when every
        stored checksum is 0, a mismatch is taken as "no checksum", and the record
        counts as not verified.
        """
        if not verify:
            warnings.warn(
                f"{header_path}: WFDB checksums not verified (verify_checksum=False); "
                "a corrupted signal file would read as valid samples",
                stacklevel=4,
            )
            return False
        stored = [(i, sig) for i, sig in enumerate(signals) if sig["checksum"] is not None and sig["file_name"] != "~"]
        if not stored:
            return False
        digital = _wfdb.rdrecord(record_base, physical=False, smooth_frames=False, return_res=64)
        samples = digital.e_d_signal or []
        checked = 0
        placeholders = all(int(sig["checksum"]) == 0 for _, sig in stored)
        for i, sig in stored:
            if i >= len(samples):
                return False
            actual = int(np.asarray(samples[i], dtype=np.int64).sum()) % 65536
            expected = int(sig["checksum"]) % 65536
            if placeholders and actual != 0:
                continue  # zeros written in place of checksums
            checked += 1
            if actual != expected:
                label = sig["sig_name"] or f"signal {i + 1}"
                raise CorruptFileError(
                    f"signal {i + 1} ({label}) in {sig['file_name']}: the samples sum to checksum "
                    f"{actual}, the header says {sig['checksum']}",
                    path=header_path.parent / sig["file_name"],
                    field=f"checksum of signal {i + 1} ({label})",
                    hint="The signal file or its header is corrupt; re-download the record, "
                    "or pass verify_checksum=False to read it anyway (with a warning)",
                )
        return checked == len(signals)

    @staticmethod
    def _check_signal_files(header: Any, header_path: Path) -> None:
        """Every signal file must exist and be at least as long as the header claims."""
        n_sig = int(header.n_sig or 0)
        if n_sig == 0:
            return
        file_names = list(header.file_name or [])
        fmts = list(header.fmt or [])
        spf = list(header.samps_per_frame or [1] * n_sig)
        offsets = list(header.byte_offset or [None] * n_sig)
        if not (len(file_names) == len(fmts) == n_sig):
            raise CorruptFileError(
                f"the record line declares {n_sig} signals but {len(file_names)} signal lines follow",
                path=header_path,
                field="n_sig",
            )
        sig_len = header.sig_len
        frame_bytes: dict[str, float] = {}
        offset_of: dict[str, int] = {}
        for name, fmt, per_frame, offset in zip(file_names, fmts, spf, offsets, strict=True):
            if name == "~":  # WFDB's null file: no samples stored
                continue
            file_path = header_path.parent / name
            if not file_path.is_file():
                raise DataFileNotFoundError(
                    f"signal file {name} named in the header is missing",
                    path=file_path,
                    field="file_name",
                    hint=f"Copy {name} next to {header_path.name}",
                )
            bps = _BYTES_PER_SAMPLE.get(str(fmt))
            if bps is None:
                frame_bytes[name] = math.nan  # compressed or unknown: no size check
                continue
            frame_bytes[name] = frame_bytes.get(name, 0.0) + bps * int(per_frame or 1)
            offset_of[name] = int(offset or 0)
        if not sig_len:
            return  # the length is then taken from the file size
        for name, per_frame_bytes in frame_bytes.items():
            if math.isnan(per_frame_bytes):
                continue
            file_path = header_path.parent / name
            size = file_path.stat().st_size
            needed = offset_of[name] + math.floor(int(sig_len) * per_frame_bytes)
            if needed > size:
                raise CorruptFileError(
                    f"header claims {int(sig_len)} samples per signal ({needed} bytes of {name}), "
                    f"but {name} holds only {size} bytes",
                    path=header_path,
                    field="sig_len",
                    hint="The header or the signal file is truncated or corrupt; re-download the record",
                )

    @staticmethod
    def _check_finite(
        data: np.ndarray, names: list[str], record: Any, header_path: Path, allow_nan: bool
    ) -> dict[str, int]:
        """Count NaN/inf per channel; raise unless ``allow_nan``."""
        if data.size == 0:
            return {}
        bad = ~np.isfinite(data)
        counts = bad.sum(axis=0)
        if not counts.any():
            return {}
        result = {
            (names[i] if i < len(names) else f"channel {i}"): int(c)
            for i, c in enumerate(counts)
            if c
        }
        if allow_nan:
            return result
        first = int(np.flatnonzero(counts)[0])
        channel = names[first] if first < len(names) else f"channel {first}"
        first_sample = int(np.flatnonzero(bad[:, first])[0])
        files = list(getattr(record, "file_name", None) or [])
        data_file = header_path.parent / files[first] if first < len(files) else header_path
        listing = ", ".join(f"{k} ({v})" for k, v in result.items())
        raise InvalidValueError(
            f"record {record.record_name}: channel {channel} has {result[channel]} NaN/inf samples "
            f"of {data.shape[0]} (first at sample {first_sample}); affected channels: {listing}",
            path=data_file,
            field=channel,
            hint="WFDB marks missing/invalid samples this way. Pass allow_nan=True to keep them as NaN, "
            "or clean the record first",
        )

    @staticmethod
    def _read_annotations(
        _wfdb: Any, header_path: Path, record_base: str, ext: str | None, explicit: bool, fs: float
    ) -> tuple[list[tuple[float, float, str]], list[str], Path | None]:
        """Annotations ``(onset_s, 0.0, symbol)`` from ``<record>.<ext>``, plus aux notes."""
        if ext is None:
            return [], [], None
        ann_path = header_path.with_suffix(f".{ext}")
        if not ann_path.is_file():
            if explicit:
                raise DataFileNotFoundError(
                    f"annotation file {ann_path.name} is missing",
                    path=ann_path,
                    field="annotations",
                    hint="Pass annotations=None to read the signals without annotations",
                )
            return [], [], None
        try:
            with _quiet():
                ann = _wfdb.rdann(record_base, ext)
        except (ValueError, TypeError, IndexError, KeyError, OSError, EOFError, OverflowError) as exc:
            raise CorruptFileError(
                f"cannot decode the annotation file: {type(exc).__name__}: {exc}",
                path=ann_path,
                field="annotations",
                hint="Pass annotations=None to read the signals without annotations",
            ) from exc
        samples = np.asarray(ann.sample, dtype=np.int64)
        symbols = list(ann.symbol or [])
        aux_notes = list(ann.aux_note or [""] * len(samples))
        annotations = [
            (float(s) / fs, 0.0, str(sym)) for s, sym in zip(samples, symbols, strict=False)
        ]
        aux = [str(a).rstrip("\x00") for a in aux_notes]
        return annotations, aux, ann_path


__all__ = ["WfdbReader", "decode_header", "looks_like_wfdb_header", "parse_signal_lines"]
