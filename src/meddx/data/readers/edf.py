"""EDF, EDF+ and BDF recordings (EEG, PSG, ECG) via pyedflib.

pyedflib wraps the C library EDFlib, which can crash or misbehave on a corrupt
header. So the fixed 256-byte header and the per-signal header fields are parsed
and checked in pure Python first (:func:`parse_edf_header`): numbers must parse,
the header size must be ``256 * (n_signals + 1)``, and the declared data records
must fit in the file. Only a file that passes is handed to pyedflib.

EDF lets every channel have its own sampling rate; a :class:`SignalSample` has one.
The rule is explicit:

* all selected channels share a rate: they are all returned;
* rates differ and ``fs`` is not given: the channels at the **highest** rate are
  returned and the others are listed in ``meta["dropped_channels"]``;
* ``fs=RATE``: the channels recorded at ``RATE`` are returned;
* ``resample=True``: every selected channel is resampled (polyphase filter,
  :func:`scipy.signal.resample_poly`) to ``fs`` (default: the highest rate).

``meta["channel_fs"]`` always holds the rate of every signal in the file.
EDF+ annotations (``EDF Annotations`` channels) become ``annotations``; an
annotations-only file gives ``data`` of shape ``(0, 0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from meddx.data.readers._base import Reader, decoding_field, import_optional, register_reader
from meddx.data.sample import SignalSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    InvalidValueError,
    MissingFieldError,
)

_OPTIONS = frozenset({"fs", "resample", "channels"})

EDF_MAGIC = b"0       "
BDF_MAGIC = b"\xffBIOSEMI"
_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
_MAX_SIGNALS = 4096  # far beyond any real montage; guards absurd headers

# Per-signal header fields: name, width in bytes (EDF spec, section 2.1.3).
_SIGNAL_FIELDS: tuple[tuple[str, int], ...] = (
    ("label", 16),
    ("transducer", 80),
    ("physical_dimension", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefilter", 80),
    ("n_samples", 8),
    ("reserved", 32),
)


@dataclass
class EdfSignalHeader:
    """One signal's header fields, parsed and checked."""

    label: str
    transducer: str
    physical_dimension: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    n_samples: int  # samples per data record
    fs: float  # n_samples / record duration (0 if the duration is 0)
    plus: bool = True  # the file is EDF+/BDF+ (only there is "EDF Annotations" special)

    @property
    def is_annotation(self) -> bool:
        """An EDF+ annotation channel; in a plain EDF/BDF that label is an ordinary signal."""
        return self.plus and self.label in _ANNOTATION_LABELS


@dataclass
class EdfHeader:
    """The fixed header of an EDF/BDF file, parsed and checked against the file size."""

    kind: str  # "EDF", "EDF+C", "EDF+D", "BDF", "BDF+C", ...
    patient: str
    recording: str
    start_date: str
    start_time: str
    header_bytes: int
    n_records: int
    record_duration: float
    bytes_per_sample: int
    file_size: int
    signals: list[EdfSignalHeader] = field(default_factory=list)
    trailing_bytes: int = 0

    @property
    def ordinary(self) -> list[EdfSignalHeader]:
        """Signals that hold samples (not EDF+ annotation channels)."""
        return [s for s in self.signals if not s.is_annotation]

    @property
    def is_plus(self) -> bool:
        return "+" in self.kind


def _field_text(raw: bytes) -> str:
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        # The spec demands ASCII; tolerate Latin-1 text fields, never numeric ones.
        return raw.decode("latin-1").strip()


def _parse_int(raw: bytes, path: Path, name: str) -> int:
    text = raw.decode("latin-1").strip()
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value == int(value):
            return int(value)
        raise CorruptFileError(
            f"header field {name} is {text!r}, not an integer",
            path=path,
            field=name,
            hint="The EDF header is corrupt; re-export the recording",
        ) from None


def _parse_float(raw: bytes, path: Path, name: str) -> float:
    text = raw.decode("latin-1").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CorruptFileError(
            f"header field {name} is {text!r}, not a number",
            path=path,
            field=name,
            hint="The EDF header is corrupt; re-export the recording",
        )
    return value


def parse_edf_header(path: Path) -> EdfHeader:
    """Parse and check the EDF/BDF header of ``path`` in pure Python.

    Raises:
        CorruptFileError: truncated, non-numeric or inconsistent header fields, or
            fewer data bytes than the header declares.
    """
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        fixed = fh.read(256)
        if len(fixed) < 256:
            raise CorruptFileError(
                f"truncated: the fixed EDF header needs 256 bytes, the file has {file_size}",
                path=path,
                hint="The file is truncated; re-copy or re-export it",
                field="fixed header",
            )
        version = fixed[0:8]
        if version == EDF_MAGIC:
            bytes_per_sample, family = 2, "EDF"
            dig_lo, dig_hi = -32768, 32767
        elif version == BDF_MAGIC:
            bytes_per_sample, family = 3, "BDF"
            dig_lo, dig_hi = -8388608, 8388607
        else:
            raise CorruptFileError(
                f"version field is {version!r}; EDF starts with '0' and 7 spaces, BDF with 0xFF'BIOSEMI'",
                path=path,
                field="version",
            )
        patient = _field_text(fixed[8:88])
        recording = _field_text(fixed[88:168])
        start_date = _field_text(fixed[168:176])
        start_time = _field_text(fixed[176:184])
        header_bytes = _parse_int(fixed[184:192], path, "header_bytes")
        reserved = _field_text(fixed[192:236])
        n_records = _parse_int(fixed[236:244], path, "n_records")
        record_duration = _parse_float(fixed[244:252], path, "record_duration")
        n_signals = _parse_int(fixed[252:256], path, "n_signals")

        if not 1 <= n_signals <= _MAX_SIGNALS:
            raise CorruptFileError(
                f"header declares {n_signals} signals (expected 1 to {_MAX_SIGNALS})",
                path=path,
                field="n_signals",
                hint="The EDF header is corrupt",
            )
        if header_bytes != 256 * (n_signals + 1):
            raise CorruptFileError(
                f"header size field is {header_bytes} bytes, but {n_signals} signals need "
                f"{256 * (n_signals + 1)}",
                path=path,
                field="header_bytes",
                hint="The EDF header is corrupt",
            )
        if file_size < header_bytes:
            raise CorruptFileError(
                f"truncated: the header needs {header_bytes} bytes, the file has {file_size}",
                path=path,
                field="header_bytes",
                hint="The file is truncated; re-copy or re-export it",
            )
        if record_duration < 0:
            raise CorruptFileError(
                f"negative data record duration {record_duration}",
                path=path,
                field="record_duration",
            )
        sig_raw = fh.read(256 * n_signals)

    columns: dict[str, list[bytes]] = {}
    offset = 0
    for name, width in _SIGNAL_FIELDS:
        columns[name] = [
            sig_raw[offset + i * width : offset + (i + 1) * width] for i in range(n_signals)
        ]
        offset += width * n_signals

    if family == "EDF" and reserved.startswith("EDF+"):
        kind = reserved[:5]
    elif family == "BDF" and reserved.startswith("BDF+"):
        kind = reserved[:5]
    else:
        kind = family
    signals: list[EdfSignalHeader] = []
    for i in range(n_signals):
        label = _field_text(columns["label"][i])
        where = f"signal {i + 1} ({label or 'no label'})"
        pmin = _parse_float(columns["physical_min"][i], path, f"physical_min of {where}")
        pmax = _parse_float(columns["physical_max"][i], path, f"physical_max of {where}")
        dmin = _parse_int(columns["digital_min"][i], path, f"digital_min of {where}")
        dmax = _parse_int(columns["digital_max"][i], path, f"digital_max of {where}")
        nsamp = _parse_int(columns["n_samples"][i], path, f"n_samples of {where}")
        if nsamp < 1:
            raise CorruptFileError(
                f"{where} declares {nsamp} samples per data record",
                path=path,
                field="n_samples",
            )
        if not (dig_lo <= dmin < dmax <= dig_hi):
            raise CorruptFileError(
                f"{where} has digital range {dmin}..{dmax}; {family} needs {dig_lo} <= min < max <= {dig_hi}",
                path=path,
                field="digital_min",
            )
        if pmin == pmax:
            raise CorruptFileError(
                f"{where} has equal physical minimum and maximum ({pmin}): no scale to physical units",
                path=path,
                field="physical_min",
            )
        signals.append(
            EdfSignalHeader(
                label=label,
                transducer=_field_text(columns["transducer"][i]),
                physical_dimension=_field_text(columns["physical_dimension"][i]),
                physical_min=pmin,
                physical_max=pmax,
                digital_min=dmin,
                digital_max=dmax,
                prefilter=_field_text(columns["prefilter"][i]),
                n_samples=nsamp,
                fs=nsamp / record_duration if record_duration > 0 else 0.0,
                plus="+" in kind,
            )
        )

    if record_duration == 0 and any(not s.is_annotation for s in signals):
        raise CorruptFileError(
            "data record duration is 0, allowed only in annotations-only EDF+ files",
            path=path,
            field="record_duration",
            hint="The EDF header is corrupt",
        )
    record_bytes = sum(s.n_samples for s in signals) * bytes_per_sample
    data_bytes = file_size - header_bytes
    if n_records == -1:  # allowed while recording: derive from the size
        n_records = data_bytes // record_bytes
    if n_records < 0:
        raise CorruptFileError(
            f"header declares {n_records} data records", path=path, field="n_records"
        )
    needed = n_records * record_bytes
    if needed > data_bytes:
        raise CorruptFileError(
            f"truncated: the header declares {n_records} data records of {record_bytes} bytes "
            f"({needed} bytes), but only {data_bytes} bytes of data follow the header",
            path=path,
            field="n_records",
            hint="The file is truncated; re-copy or re-export it",
        )
    return EdfHeader(
        kind=kind,
        patient=patient,
        recording=recording,
        start_date=start_date,
        start_time=start_time,
        header_bytes=header_bytes,
        n_records=n_records,
        record_duration=record_duration,
        bytes_per_sample=bytes_per_sample,
        file_size=file_size,
        signals=signals,
        trailing_bytes=data_bytes - needed,
    )


def _patient_id(header: EdfHeader) -> str | None:
    """EDF+: the first subfield of the patient field ("X" = unknown); EDF: the whole field."""
    if not header.patient:
        return None
    if header.is_plus:
        code = header.patient.split(" ")[0]
        return None if code in ("", "X") else code
    return header.patient


def _resample(x: np.ndarray, rate: float, target: float) -> np.ndarray:
    from scipy.signal import resample_poly

    ratio = Fraction(target / rate).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def _import_pyedflib() -> Any:
    return import_optional("pyedflib", extra="signals", purpose="reading EDF")


@register_reader
class EdfReader(Reader):
    """Reads EDF/EDF+/BDF into a :class:`SignalSample` (physical units, one rate).

    Options:
        channels: labels of the channels to read (default: all ordinary signals).
        fs: sampling rate to return; with differing rates, the channels at this
            rate (default: the highest rate).
        resample: resample every selected channel to ``fs`` (default False).
    """

    name = "edf"
    suffixes = (".edf", ".bdf")

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[:8] not in (EDF_MAGIC, BDF_MAGIC) or len(head) < 256:
            return False
        try:
            int(head[184:192].decode("ascii").strip())
            int(head[252:256].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return False
        return True

    def read(self, path: Path, **options: Any) -> SignalSample:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown option(s) for the edf reader: {', '.join(sorted(unknown))}",
                path=path,
                field=sorted(unknown)[0],
                hint=f"Valid options: {', '.join(sorted(_OPTIONS))}",
            )
        header = parse_edf_header(path)
        ordinary = header.ordinary
        selected = self._select_channels(path, ordinary, options.get("channels"))
        target_fs, chosen, dropped = self._choose_rate(
            path, selected, options.get("fs"), bool(options.get("resample", False))
        )

        pyedflib = _import_pyedflib()
        try:
            reader = pyedflib.EdfReader(str(path))
        except OSError as exc:
            raise CorruptFileError(
                f"pyedflib rejects the file: {exc}",
                path=path,
                field="EDF header",
                hint="The file does not follow the EDF(+)/BDF(+) specification; re-export it",
            ) from exc
        try:
            lib_labels = [str(label).strip() for label in reader.getSignalLabels()]
            if lib_labels != [s.label for s in ordinary]:
                raise CorruptFileError(
                    f"pyedflib sees signals {lib_labels}, the header lists {[s.label for s in ordinary]}",
                    path=path,
                    field="label",
                )
            index = {id(s): i for i, s in enumerate(ordinary)}
            columns = []
            for sig in chosen:
                with decoding_field(f"samples of signal {sig.label}"):
                    x = np.asarray(reader.readSignal(index[id(sig)]), dtype=np.float64)
                if target_fs and sig.fs != target_fs:
                    x = _resample(x, sig.fs, target_fs)
                columns.append(x)
            with decoding_field("EDF Annotations"):
                onsets, durations, texts = reader.readAnnotations()
            start = reader.getStartdatetime()
        finally:
            reader.close()

        if columns:
            n = min(len(c) for c in columns)
            data = np.stack([c[:n] for c in columns], axis=1)
        else:
            data = np.zeros((0, 0), dtype=np.float64)
        if data.size and not np.isfinite(data).all():
            bad = int(np.flatnonzero(~np.isfinite(data).all(axis=0))[0])
            raise InvalidValueError(
                f"channel {chosen[bad].label} holds NaN/inf after scaling to physical units",
                path=path,
                field=chosen[bad].label,
                hint="Check the physical/digital minimum and maximum of this signal",
            )
        annotations = [
            (float(o), max(float(d), 0.0), str(t))
            for o, d, t in zip(onsets, durations, texts, strict=False)
        ]
        meta: dict[str, Any] = {
            "edf_type": header.kind,
            "patient": header.patient,
            "recording": header.recording,
            "start_datetime": start.isoformat() if start is not None else None,
            "n_records": header.n_records,
            "record_duration_s": header.record_duration,
            "file_duration_s": header.n_records * header.record_duration,
            "channel_fs": {s.label: s.fs for s in ordinary},
            "dropped_channels": {s.label: s.fs for s in dropped},
            "resampled": bool(options.get("resample", False)),
            "transducer": [s.transducer for s in chosen],
            "prefilter": [s.prefilter for s in chosen],
            "physical_min": [s.physical_min for s in chosen],
            "physical_max": [s.physical_max for s in chosen],
            "digital_min": [s.digital_min for s in chosen],
            "digital_max": [s.digital_max for s in chosen],
            "n_annotations": len(annotations),
        }
        if header.trailing_bytes:
            meta["trailing_bytes"] = header.trailing_bytes
        return SignalSample(
            path=path,
            format=self.name,
            patient_id=_patient_id(header),
            study_id=None,
            meta=meta,
            data=data,
            fs=float(target_fs or 0.0),
            channel_names=[s.label for s in chosen],
            units=[s.physical_dimension for s in chosen],
            annotations=annotations,
        )

    @staticmethod
    def _select_channels(
        path: Path, ordinary: list[EdfSignalHeader], channels: Any
    ) -> list[EdfSignalHeader]:
        if channels is None:
            return list(ordinary)
        if isinstance(channels, str):
            channels = [channels]
        by_label = {s.label: s for s in ordinary}
        chosen = []
        for label in channels:
            if label not in by_label:
                raise MissingFieldError(
                    f"no signal labelled {label!r}",
                    path=path,
                    field=str(label),
                    hint=f"Signals in this file: {', '.join(by_label) or 'none'}",
                )
            chosen.append(by_label[label])
        return chosen

    @staticmethod
    def _choose_rate(
        path: Path, selected: list[EdfSignalHeader], fs: Any, resample: bool
    ) -> tuple[float, list[EdfSignalHeader], list[EdfSignalHeader]]:
        """The output rate, the channels kept, and the channels dropped (rule in the module doc)."""
        if not selected:
            return 0.0, [], []
        rates = sorted({s.fs for s in selected})
        if fs is not None:
            try:
                fs = float(fs)
            except (TypeError, ValueError):
                fs = math.nan
            if not math.isfinite(fs) or fs <= 0:
                raise ConfigError(
                    f"fs must be a positive number, not {fs!r}", path=path, field="fs"
                )
        if resample:
            target = fs if fs is not None else rates[-1]
            if any(s.fs <= 0 for s in selected):
                raise InvalidValueError(
                    "cannot resample: the data record duration is 0", path=path, field="fs"
                )
            return target, list(selected), []
        target = fs if fs is not None else rates[-1]
        chosen = [s for s in selected if math.isclose(s.fs, target, rel_tol=1e-9)]
        if not chosen:
            raise ConfigError(
                f"no selected channel is sampled at {target} Hz",
                path=path,
                field="fs",
                hint=f"Rates in this file: {', '.join(f'{r:g}' for r in rates)} Hz; "
                "or pass resample=True",
            )
        kept = {id(s) for s in chosen}
        dropped = [s for s in selected if id(s) not in kept]
        return target, chosen, dropped


__all__ = ["EdfHeader", "EdfReader", "EdfSignalHeader", "parse_edf_header"]
