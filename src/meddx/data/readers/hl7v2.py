"""HL7 v2 messages (ADT, ORU, ORM, OML ...) as typed patient and observation rows.

Files in the wild end segments with ``\\n`` or ``\\r\\n``; HL7 wants ``\\r``. Line
endings are normalised, a UTF-8 BOM, MLLP framing bytes and blank lines are
removed, and each message (a file may hold several, optionally inside
FHS/BHS batch segments) is parsed with the ``hl7`` library.

Rows (same leading columns as the FHIR reader):

* PID -> ``patients``: id (PID-3, first identifier), family/given (PID-5),
  sex (PID-8 mapped to FHIR's male/female/other/unknown), birth_date (PID-7,
  ISO date);
* OBX -> ``observations``: code/display/system from OBX-3 (the alternate
  coding, components 4-6, when the first is empty; ``LN`` is reported as
  ``http://loinc.org``), ``value`` from OBX-5 typed by OBX-2 (NM and plain SN
  as float, CE/CWE as the text component), unit OBX-6, status OBX-11, time
  OBX-14 (else the parent OBR-7), and the patient of the preceding PID.

A non-numeric NM value raises :class:`InvalidValueError` unless ``strict=False``
(then it is kept as text and listed in ``meta["warnings"]``). Placeholder or
unparseable dates are left empty and listed in ``meta["warnings"]``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from meddx.data.readers._base import Reader, read_bounded, register_reader
from meddx.data.readers.fhir import (
    LOINC,
    OBSERVATION_COLUMNS,
    PATIENT_COLUMNS,
    make_frame,
)
from meddx.data.sample import RecordSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
    UnsupportedFormatError,
)

MAX_BYTES = 64 * 1024 * 1024
_OPTIONS = frozenset({"strict", "max_bytes"})
_BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
_SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown"}
_SYSTEMS = {
    "LN": LOINC,
    "LOINC": LOINC,
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
}
_TS = re.compile(
    r"^(?P<Y>\d{4})(?P<m>\d{2})?(?P<d>\d{2})?(?P<H>\d{2})?(?P<M>\d{2})?(?P<S>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<z>[+-]\d{4})?$"
)
_MLLP = str.maketrans("", "", "\x0b\x1c")
_NM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
"""HL7's NM syntax: optional sign, digits, optional decimal point (``nan``, ``inf``, ``1_000``, ``1e5`` are not NM)."""


def parse_nm(text: str) -> float | None:
    """An HL7 NM value as float, or None when ``text`` is not NM syntax or overflows."""
    text = text.strip()
    if not _NM.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_hl7_ts(text: str) -> tuple[str | None, str | None]:
    """HL7 TS/DTM ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`` -> (ISO date-time, ISO date).

    Returns ``(None, None)`` when ``text`` is not a valid timestamp.
    """
    text = text.strip()
    match = _TS.match(text)
    if not match:
        return None, None
    parts = match.groupdict()
    year, month, day = parts["Y"], parts["m"], parts["d"]
    try:
        if month and not 1 <= int(month) <= 12:
            return None, None
        if day and not 1 <= int(day) <= 31:
            return None, None
        if parts["H"] and int(parts["H"]) > 23:
            return None, None
        if parts["M"] and int(parts["M"]) > 59:
            return None, None
        if parts["S"] and int(parts["S"]) > 60:
            return None, None
    except ValueError:  # pragma: no cover - the regex admits digits only
        return None, None
    date = "-".join(p for p in (year, month, day) if p)
    iso = date
    if parts["H"]:
        iso += f"T{parts['H']}:{parts['M'] or '00'}"
        if parts["S"]:
            iso += f":{parts['S']}"
            if parts["f"]:
                iso += f".{parts['f']}"
        if parts["z"]:
            iso += f"{parts['z'][:3]}:{parts['z'][3:]}"
    return iso, (date if day else None)


def _check_msh_delimiters(path: Path, message: str, number: int) -> None:
    """MSH-1 (field separator) and MSH-2 (encoding characters) must be usable delimiters."""
    segment = message.split("\r", 1)[0]
    problem = None
    if len(segment) < 8:
        problem = f"MSH segment {segment!r} is too short"
    else:
        separator = segment[3]
        end = segment.find(separator, 4)
        encoding = segment[4:] if end == -1 else segment[4:end]
        delimiters = separator + encoding
        if separator.isalnum() or separator.isspace():
            problem = f"field separator {separator!r} is a letter, digit or space"
        elif not 4 <= len(encoding) <= 5:
            problem = f"MSH-2 encoding characters {encoding!r} are not 4 (or 5) characters"
        elif len(set(delimiters)) != len(delimiters) or any(c.isalnum() or c.isspace() for c in delimiters):
            problem = f"MSH-2 encoding characters {encoding!r} repeat or include letters, digits or spaces"
    if problem:
        raise CorruptFileError(
            f"message {number}: {problem}",
            path=path,
            field="MSH-2",
            hint="A message starts with 'MSH|^~\\&|'",
        )


def _split_messages(text: str) -> list[str]:
    """Split normalised text (``\\r`` between segments) into messages that start with MSH."""
    messages: list[list[str]] = []
    for segment in text.split("\r"):
        segment = segment.strip("\n")
        if not segment.strip():
            continue
        tag = segment[:3]
        if tag in _BATCH_SEGMENTS:
            continue
        if tag == "MSH":
            messages.append([segment])
        elif messages:
            messages[-1].append(segment)
        else:
            messages.append([segment])  # leading junk: reported by the caller
    return ["\r".join(m) for m in messages]


@register_reader
class Hl7v2Reader(Reader):
    """Reads an HL7 v2 message file into a :class:`RecordSample`.

    Options:
        strict: a non-numeric NM value raises (default True); False keeps it as text.
        max_bytes: largest file accepted (default 64 MiB).
    """

    name = "hl7v2"
    suffixes = (".hl7",)

    def sniff(self, path: Path, head: bytes) -> bool:
        text = head.lstrip(b"\xef\xbb\xbf\x0b \t\r\n")
        return text[:4] in (b"MSH|", b"FHS|", b"BHS|")

    def read(self, path: Path, **options: Any) -> RecordSample:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown option(s) for the hl7v2 reader: {', '.join(sorted(unknown))}",
                path=path,
                field=sorted(unknown)[0],
                hint=f"Valid options: {', '.join(sorted(_OPTIONS))}",
            )
        strict = bool(options.get("strict", True))
        max_bytes = int(options.get("max_bytes", MAX_BYTES))
        text, encoding = self._load_text(path, max_bytes)

        try:
            import hl7
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise UnsupportedFormatError(
                "reading HL7 v2 needs the 'hl7' package",
                path=path,
                field="hl7",
                hint="Install it with: pip install 'meddx[records]'",
            ) from exc

        chunks = _split_messages(text)
        if not chunks:
            raise EmptyDataError("the file holds no segments", path=path, field="segments")
        if not any(chunk.startswith("MSH") for chunk in chunks):
            first = chunks[0][:3]
            raise MissingFieldError(
                f"no MSH segment (the first segment is {first!r}): not an HL7 v2 message",
                path=path,
                field="MSH",
                hint="An HL7 v2 message starts with an MSH header segment",
            )
        if not chunks[0].startswith("MSH"):
            raise CorruptFileError(
                f"text before the first MSH segment: {chunks[0][:40]!r}",
                path=path,
                field="MSH",
                hint="Remove what precedes the MSH segment",
            )

        patients: list[dict[str, Any]] = []
        observations: list[dict[str, Any]] = []
        counts: Counter[str] = Counter()
        warnings: list[str] = []
        messages_meta: list[dict[str, Any]] = []
        for number, chunk in enumerate(chunks, start=1):
            _check_msh_delimiters(path, chunk, number)
            try:
                message = hl7.parse(chunk)
            except (hl7.exceptions.HL7Exception, IndexError, ValueError, KeyError, AssertionError) as exc:
                raise CorruptFileError(
                    f"message {number} cannot be parsed: {type(exc).__name__}: {exc}",
                    path=path,
                    field="MSH",
                    hint="Check the MSH segment: 'MSH|^~\\&|...'",
                ) from exc
            messages_meta.append(self._message_meta(path, message, number))
            self._rows(path, message, number, strict, patients, observations, counts, warnings)

        patient_ids = {p["id"] for p in patients if p.get("id")}
        first = messages_meta[0]
        meta: dict[str, Any] = {
            **first,
            "n_messages": len(messages_meta),
            "encoding": encoding,
            "warnings": warnings,
        }
        if len(messages_meta) > 1:
            meta["messages"] = messages_meta
        return RecordSample(
            path=path,
            format=self.name,
            patient_id=next(iter(patient_ids)) if len(patient_ids) == 1 else None,
            study_id=first.get("control_id"),
            meta=meta,
            patients=make_frame(patients, PATIENT_COLUMNS),
            observations=make_frame(observations, OBSERVATION_COLUMNS),
            resources=dict(counts),
        )

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _load_text(path: Path, max_bytes: int) -> tuple[str, str]:
        raw = read_bounded(path, max_bytes, hint="Pass max_bytes= to read a larger file")
        if b"\x00" in raw:
            raise UnsupportedFormatError(
                "binary content (NUL bytes): not an HL7 v2 text message", path=path,
                field="encoding",
            )
        try:
            text, encoding = raw.decode("utf-8-sig"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = raw.decode("latin-1"), "latin-1"  # HL7's usual 8859/1
        text = text.translate(_MLLP).replace("\r\n", "\r").replace("\n", "\r").strip()
        if not text:
            raise EmptyDataError("the file holds only whitespace", path=path, field="segments")
        return text, encoding

    @staticmethod
    def _message_meta(path: Path, message: Any, number: int) -> dict[str, Any]:
        msh = message.segment("MSH")
        message_type = _field(msh, 9)
        if not message_type:
            raise MissingFieldError(
                f"message {number}: MSH-9 (message type) is empty",
                path=path,
                field="MSH-9",
                hint="MSH-9 names the message, e.g. ORU^R01",
            )
        time_iso, _ = parse_hl7_ts(_component(msh, 7, 1))
        return {
            "message_type": message_type,
            "control_id": _field(msh, 10) or None,
            "sending_application": _hd(msh, 3),
            "sending_facility": _hd(msh, 4),
            "receiving_facility": _hd(msh, 6),
            "message_time": time_iso,
            "version": _component(msh, 12, 1) or None,
        }

    @staticmethod
    def _rows(
        path: Path,
        message: Any,
        number: int,
        strict: bool,
        patients: list[dict[str, Any]],
        observations: list[dict[str, Any]],
        counts: Counter[str],
        warnings: list[str],
    ) -> None:
        patient_id: str | None = None
        obr_time: str | None = None
        for index, segment in enumerate(message, start=1):
            tag = str(segment[0])
            counts[tag] += 1
            where = f"message {number}, segment {index} ({tag})"
            if tag == "PID":
                patient_id = (
                    _component(segment, 3, 1) or _component(segment, 2, 1) or _component(segment, 4, 1)
                ) or None
                raw_birth = _component(segment, 7, 1)
                _, birth = parse_hl7_ts(raw_birth)
                if raw_birth and birth is None:
                    warnings.append(f"{where}: PID-7 birth date {raw_birth!r} is not an HL7 date")
                raw_sex = _component(segment, 8, 1)
                sex = _SEX.get(raw_sex.upper()) if raw_sex else None
                if raw_sex and sex is None:
                    warnings.append(f"{where}: PID-8 sex {raw_sex!r} is not an HL7 table 0001 code")
                given = " ".join(
                    p for p in (_component(segment, 5, 2), _component(segment, 5, 3)) if p
                )
                patients.append(
                    {
                        "id": patient_id,
                        "family": _component(segment, 5, 1) or None,
                        "given": given or None,
                        "sex": sex,
                        "birth_date": birth,
                    }
                )
            elif tag == "OBR":
                obr_time, _ = parse_hl7_ts(_component(segment, 7, 1))
            elif tag == "OBX":
                observations.append(
                    Hl7v2Reader._obx_row(path, message, segment, where, strict, patient_id, obr_time, warnings)
                )

    @staticmethod
    def _obx_row(
        path: Path,
        message: Any,
        segment: Any,
        where: str,
        strict: bool,
        patient_id: str | None,
        obr_time: str | None,
        warnings: list[str],
    ) -> dict[str, Any]:
        value_type = _component(segment, 2, 1).upper()
        code, display, system = (_component(segment, 3, i) for i in (1, 2, 3))
        if not code:  # the alternate identifier (components 4-6)
            code, display, system = (_component(segment, 3, i) for i in (4, 5, 6))
        raw_value = _field(segment, 5)
        value = math.nan
        value_string: str | None = message.unescape(raw_value) if raw_value else None
        if value_type == "NM" and raw_value.strip():
            number = parse_nm(raw_value)
            if number is not None:
                value = number
                value_string = None
            else:
                if strict:
                    raise InvalidValueError(
                        f"{where}: OBX-5 value {raw_value[:40]!r} has type NM but is not an HL7 number "
                        "(digits with an optional sign and decimal point; nan, inf, 1_000, 1e5 are not)",
                        path=path,
                        field=f"OBX-5 ({where})",
                        hint="Pass strict=False to keep such values as text",
                    )
                warnings.append(f"{where}: OBX-5 NM value {raw_value[:40]!r} is not a number; kept as text")
        elif value_type == "SN" and raw_value:
            comparator, number_text = _component(segment, 5, 1), _component(segment, 5, 2)
            if comparator in ("", "=") and number_text and not _component(segment, 5, 3):
                number = parse_nm(number_text)
                if number is not None:
                    value = number
                else:
                    warnings.append(
                        f"{where}: OBX-5 SN number {number_text[:40]!r} is not a number; kept as text"
                    )
        elif value_type in ("CE", "CWE", "CNE", "CF") and raw_value:
            text = _component(segment, 5, 2) or _component(segment, 5, 1)
            value_string = text or None
        raw_time = _component(segment, 14, 1)
        time, _ = parse_hl7_ts(raw_time)
        if raw_time and time is None:
            warnings.append(f"{where}: OBX-14 time {raw_time!r} is not an HL7 timestamp")
        return {
            "patient_id": patient_id,
            "code": code or None,
            "system": _SYSTEMS.get(system.upper(), system) if system else None,
            "display": display or None,
            "value": value,
            "value_string": value_string,
            "unit": _component(segment, 6, 1) or None,
            "time": time or obr_time,
            "status": _component(segment, 11, 1) or None,
            "value_type": value_type or None,
        }


def _field(segment: Any, n: int) -> str:
    """Field ``n`` of ``segment`` as text ('' if absent)."""
    if len(segment) <= n:
        return ""
    return str(segment[n])


def _hd(segment: Any, n: int) -> str | None:
    """An HD field (namespace^universal id^type): the namespace, else the universal id."""
    return _component(segment, n, 1) or _component(segment, n, 2) or None


def _component(segment: Any, n: int, c: int) -> str:
    """Component ``c`` (1-based) of the first repetition of field ``n``, unescaped ('' if absent)."""
    try:
        return str(segment.extract_field(1, n, 1, c, 1))
    except IndexError:
        return ""


__all__ = ["Hl7v2Reader", "parse_hl7_ts", "parse_nm"]
