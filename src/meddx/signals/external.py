"""External ECG collections for rhythm models: the CinC 2017 model on other devices and patients.

A rhythm model trained on ``ecg-cinc2017-af`` (AliveCor handheld, single lead, 300 Hz, 9-61 s
records) is scored here on ECGs from another device, population and era, so ``meddx validate``
can put an external figure beside the internal one.

**MIT-BIH Arrhythmia** (``ecg-mitbih-arrhythmia``: 1975-79 Holter tapes, 360 Hz, two leads)
becomes a CinC-like collection:

* each record with beat/rhythm annotations (``.atr``) is cut into non-overlapping
  :data:`SEGMENT_S`-second segments from its start (the tail shorter than a segment is dropped);
* the lead is the one closest to the CinC lead (:data:`LEAD_ORDER`): AliveCor records lead I
  (left minus right hand). MIT-BIH has no lead I; its upper channel is modified lead II (MLII,
  45 of 48 records), a limb-type lead in the same frontal plane with an upright QRS and visible
  P waves (what AF takes away); the other channel is a precordial lead (V1, V2, V4 or V5) in the
  horizontal plane, farther from lead I;
* each segment is resampled to the model's 300 Hz and labelled from the rhythm annotations
  (:data:`RHYTHM_CLASSES`): ``(N`` -> N, ``(AFIB`` -> A, every other rhythm -> O; atrial flutter
  (``(AFL``) is left out, because CinC 2017 did not define it (flutter with regular conduction
  reads as O, with variable conduction as A); a segment that straddles a rhythm change is left
  out; so is one before the record's first rhythm annotation, unless that annotation comes
  within :data:`LEAD_IN_S` of the start (the first beat; the rhythm holds from there);
* segments are grouped by record (one record is one patient) for the bootstrap CIs.

MIT-BIH marks signal quality with separate ``~`` annotations, not with a rhythm; noisy segments
keep their rhythm label (CinC's ``~`` class means "unreadable", which MIT-BIH does not say).

The mirror holds record 100 as raw WFDB (with ``.atr``) and the 12 records' signals as npz
*without* rhythm annotations (beat positions and PVC flags only); those records cannot be labelled
and are listed under ``skipped``. A PhysioNet download of the set (``records/*.hea|dat|atr``)
labels all 12. None of these 12 records holds AF, so the AF-vs-rest AUC needs another source
(a user folder, or MIT-BIH records with AF added to the mirror).

Collections register per training set (:func:`register_collection`); ``meddx validate`` scores
every collection of the package's set (:func:`collections_for`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import DataFileNotFoundError, InvalidValueError

SEGMENT_S = 30.0
"""Segment length (s): the most common CinC 2017 record length (1,105 of the 1,600 mirrored ones)."""
LEAD_IN_S = 1.0
"""The first rhythm annotation counts from sample 0 when it comes within this many seconds."""
LEAD_ORDER = ("I", "MLI", "AVL", "II", "MLII", "III", "MLIII")
"""Leads in order of closeness to lead I (the CinC 2017 AliveCor lead); upper case, compared so."""
RHYTHM_CLASSES: dict[str, str | None] = {"(N": "N", "(AFIB": "A", "(AFL": None}
"""Rhythm annotation -> CinC class; ``None`` leaves the segment out; any other rhythm is ``O``."""
OTHER = "O"
TARGET_FS = 300.0


def rhythm_class(code: str) -> str | None:
    """The CinC class of a WFDB rhythm annotation (``(N``, ``(AFIB``, ...), None for one left out."""
    code = code.strip().rstrip("\x00")
    return RHYTHM_CLASSES.get(code, OTHER)


@dataclass(frozen=True)
class Segment:
    """One cut of a record: samples ``[start, stop)``, its class (None: left out) and why."""

    start: int
    stop: int
    label: str | None
    rhythm: str | None
    reason: str = ""


def rhythm_intervals(samples: Sequence[int], notes: Sequence[str], n: int, fs: float,
                     *, lead_in_s: float = LEAD_IN_S) -> list[tuple[int, int, str]]:
    """``(start, stop, rhythm)`` spans from WFDB rhythm annotations (``aux_note`` starting with ``(``).

    A rhythm holds from its annotation to the next one (or the end, ``n``); the first one is taken
    back to sample 0 when it comes within ``lead_in_s`` seconds.
    """
    marks = sorted((int(s), str(a).strip().rstrip("\x00")) for s, a in zip(samples, notes, strict=True)
                   if str(a).strip().startswith("("))
    out: list[tuple[int, int, str]] = []
    for i, (start, code) in enumerate(marks):
        if i == 0 and start <= lead_in_s * fs:
            start = 0
        stop = marks[i + 1][0] if i + 1 < len(marks) else n
        if stop > start:
            out.append((start, stop, code))
    return out


def segment_record(n: int, fs: float, samples: Sequence[int], notes: Sequence[str],
                   *, seconds: float = SEGMENT_S, lead_in_s: float = LEAD_IN_S) -> list[Segment]:
    """Cut ``n`` samples into non-overlapping ``seconds``-long segments and label each from the rhythm
    annotations (see the module docstring); left-out segments carry ``label=None`` and a reason."""
    if fs <= 0 or seconds <= 0:
        raise InvalidValueError(f"fs ({fs}) and seconds ({seconds}) must be positive", field="seconds")
    width = int(round(seconds * fs))
    spans = rhythm_intervals(samples, notes, n, fs, lead_in_s=lead_in_s)
    out = []
    for start in range(0, n - width + 1, width):
        stop = start + width
        inside = [(a, b, code) for a, b, code in spans if a < stop and b > start]
        if not inside or inside[0][0] > start:
            out.append(Segment(start, stop, None, None, "before the first rhythm annotation"))
        elif len({code for *_, code in inside}) > 1:
            out.append(Segment(start, stop, None, None, "straddles a rhythm change"))
        else:
            code = inside[0][2]
            label = rhythm_class(code)
            out.append(Segment(start, stop, label, code, "" if label else f"rhythm {code} left out"))
    return out


def pick_lead(names: Sequence[str]) -> int:
    """The channel closest to lead I (:data:`LEAD_ORDER`), else the first one."""
    upper = [str(n).strip().upper() for n in names]
    for lead in LEAD_ORDER:
        if lead in upper:
            return upper.index(lead)
    return 0


@dataclass
class ExternalSet:
    """Labelled segments of an external collection, at :data:`TARGET_FS`, grouped by record."""

    source: str
    signals: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    names: list[str]
    leads: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """Counts for the JSON: segments per class, records, leads, what was left out and why."""
        return {"segments": len(self.signals), "records": int(len(np.unique(self.groups))) if len(self.groups) else 0,
                "class_counts": dict(Counter(str(v) for v in self.labels)), "leads": self.leads,
                "excluded_segments": self.excluded, "skipped_records": self.skipped}


def _resample(x: np.ndarray, fs: float, target: float) -> np.ndarray:
    from meddx.signals.rhythm import _resample

    return _resample(np.asarray(x, dtype=float), fs, target) if abs(fs - target) > 1e-9 else np.asarray(x, float)


def annotated_records(folder: Path) -> list[Path]:
    """WFDB records (header paths without suffix) under ``folder`` that have an ``.atr`` beside them."""
    return sorted(h.with_suffix("") for h in folder.rglob("*.hea") if h.with_suffix(".atr").is_file())


def segment_wfdb_records(records: Sequence[Path], *, seconds: float = SEGMENT_S, target_fs: float = TARGET_FS,
                         source: str = "wfdb") -> ExternalSet:
    """Labelled ``seconds``-long segments (lead closest to lead I, resampled to ``target_fs``) of
    WFDB records with rhythm annotations in their ``.atr`` files."""
    import wfdb

    signals, labels, groups, names = [], [], [], []
    leads: dict[str, str] = {}
    excluded: Counter[str] = Counter()
    skipped: dict[str, str] = {}
    for rec in records:
        if not rec.with_suffix(".hea").is_file():
            raise DataFileNotFoundError("WFDB header not found", path=rec.with_suffix(".hea"))
        try:
            ann = wfdb.rdann(str(rec), "atr")
        except Exception as exc:  # noqa: BLE001 - name the file, go on with the others
            skipped[rec.name] = f"cannot read {rec.name}.atr: {type(exc).__name__}: {exc}"
            continue
        notes = list(ann.aux_note or [""] * len(ann.sample))
        if not any(str(a).strip().startswith("(") for a in notes):
            skipped[rec.name] = "no rhythm annotations in the .atr file"
            continue
        r = wfdb.rdrecord(str(rec))
        col = pick_lead(r.sig_name or [])
        x = np.nan_to_num(np.asarray(r.p_signal[:, col], dtype=float))
        fs = float(r.fs)
        leads[rec.name] = str(r.sig_name[col]) if r.sig_name else "channel 0"
        for seg in segment_record(x.size, fs, ann.sample, notes, seconds=seconds):
            if seg.label is None:
                excluded[seg.reason] += 1
                continue
            signals.append(_resample(x[seg.start:seg.stop], fs, target_fs))
            labels.append(seg.label)
            groups.append(rec.name)
            names.append(f"{rec.name}@{seg.start / fs:.0f}s")
    return ExternalSet(source, signals, np.asarray(labels, dtype=str), np.asarray(groups, dtype=str), names,
                       leads, dict(excluded), skipped)


def load_mitbih(folder: str | Path | None = None, *, seconds: float = SEGMENT_S, target_fs: float = TARGET_FS,
                records: Sequence[str] | None = None) -> ExternalSet:
    """``ecg-mitbih-arrhythmia`` as CinC-like labelled segments (see the module docstring).

    Reads every WFDB record with an ``.atr`` under the set's folder (the mirror's
    ``wfdb_record_100/``, a download's ``records/``); the npz-only records of ``tpcp_subset/`` are
    listed in ``skipped`` (no rhythm annotations). ``records`` keeps only these record names.
    """
    if folder is None:
        from meddx.data.catalogue import fetch

        folder = fetch("ecg-mitbih-arrhythmia")
    base = Path(folder)
    found = annotated_records(base)
    if records is not None:
        wanted = {str(r) for r in records}
        found = [p for p in found if p.name in wanted]
    out = segment_wfdb_records(found, seconds=seconds, target_fs=target_fs, source="ecg-mitbih-arrhythmia")
    labelled = {p.name for p in found}
    subset = base / "tpcp_subset"
    if subset.is_dir():
        for npz in sorted(subset.glob("*.npz")):
            if npz.stem not in labelled and (records is None or npz.stem in set(records)):
                out.skipped[npz.stem] = "npz with beats and PVC flags only: no rhythm annotations to label from"
    out.note = (f"MIT-BIH Arrhythmia (Holter, 360 Hz -> {target_fs:g} Hz), {seconds:g}-s segments of the lead "
                f"closest to lead I ({', '.join(sorted(set(out.leads.values()))) or 'none'}), labelled from the "
                f"rhythm annotations, grouped by record; {len(labelled)} record(s) labelled, "
                f"{len(out.skipped)} without rhythm annotations skipped")
    if not out.signals:
        raise DataFileNotFoundError("no MIT-BIH record with rhythm annotations", path=base,
                                    hint="The set needs WFDB records with .atr files (e.g. wfdb_record_100/100)")
    return out


@dataclass(frozen=True)
class Collection:
    """An external collection a model trained on some catalogue set is validated on."""

    name: str
    load: Callable[[], ExternalSet]
    description: str = ""


_COLLECTIONS: dict[str, list[Collection]] = {}


def register_collection(dataset: str, collection: Collection) -> Collection:
    """Validate models trained on ``dataset`` on ``collection`` too (replaces one of the same name)."""
    items = [c for c in _COLLECTIONS.get(dataset, []) if c.name != collection.name]
    _COLLECTIONS[dataset] = [*items, collection]
    return collection


def collections_for(dataset: str | None) -> list[Collection]:
    """The external collections registered for models trained on ``dataset`` (none for a folder)."""
    return list(_COLLECTIONS.get(dataset or "", []))


register_collection("ecg-cinc2017-af", Collection(
    "ecg-mitbih-arrhythmia", load_mitbih,
    "MIT-BIH Arrhythmia: Holter (1975-79), 360 Hz, lead MLII; other device, population and era than CinC 2017"))

__all__ = ["LEAD_ORDER", "RHYTHM_CLASSES", "SEGMENT_S", "Collection", "ExternalSet", "Segment", "annotated_records",
           "collections_for", "load_mitbih", "pick_lead", "register_collection", "rhythm_class", "rhythm_intervals",
           "segment_record", "segment_wfdb_records"]
