"""What a signal model was made to read, declared at training and checked before the model runs.

A rhythm model handed a finger PPG or an actigraphy trace should answer "this model reads
single-lead ECG in mV at 300 Hz; this record is a PPG channel at 100 Hz", not "AF, 71%".
:func:`signal_intended_input` writes the declaration (``package.json["intended_input"]``,
kind ``signal``, modality fields in ``extra``) from the training records; the check
registered for ``signal`` samples (:func:`check_signal`, via
:func:`meddx.trust.intended.register_check`) compares a read record against it:

* the channel kind, recognised from its name (:data:`CHANNEL_KINDS`: ``PLETH`` is PPG, ``ACT``
  is activity ...); a name it does not know is not a reason (it is left to the OOD gate);
* the physical unit: a voltage is converted to mV (:func:`to_model_units`), any other unit
  (``counts``, ``bpm``, ``NU``) is a reason;
* the sampling rate (the model resamples, within :data:`FS_RANGE`) and the duration;
* the amplitude (robust peak-to-peak in mV) against the span of the training records, which
  catches a trace whose header says mV but whose values are not an ECG's.

What passes here can still be unlike the training data; :mod:`meddx.signals.ood` looks at the
signal itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from meddx.trust.intended import IntendedInput, register_check

SIGNAL_TYPE = "ECG"
FS_RANGE = (100.0, 2000.0)
"""Rates the package accepts and resamples (Hz): below 100 Hz the 0.5-45 Hz band the model reads is lost."""
AMPLITUDE_WIDEN = 3.0
"""The accepted amplitude span is the training records' (0.1st-99.9th percentile) widened by this factor."""

CHANNEL_KINDS: dict[str, tuple[str, str]] = {
    # kind: (regex on the upper-case channel name, words for messages)
    "ECG": (r"ECG|EKG|^MLI+$|^V[1-6]$|^(I|II|III|AVR|AVL|AVF)$|^LEAD", "an ECG channel"),
    "PPG": (r"PPG|PLETH|BVP|PULSE", "a PPG channel"),
    "ACTIVITY": (r"^ACT|ACTIVITY|ACCEL|^ACC|COUNTS|STEPS|MOTION", "an activity (actigraphy) channel"),
    "EEG": (r"EEG|^FP[12Z]|^C[34Z]$|^O[12]$|^F[34Z]$|^P[34Z]$|^T[3-6]$", "an EEG channel"),
    "RESPIRATION": (r"RESP|THOR|ABDO|^ABD|AIRFLOW|NASAL", "a respiration channel"),
    "EMG": (r"EMG|CHIN", "an EMG channel"),
    "EOG": (r"EOG|^LOC$|^ROC$", "an EOG channel"),
    "SPO2": (r"SPO2|SAO2|OXY", "an oxygen-saturation channel"),
    "HEART_RATE": (r"^HR$|HEART.?RATE|^BPM$", "a heart-rate series"),
    "TEMPERATURE": (r"TEMP", "a temperature channel"),
}
"""Channel-name patterns per signal kind; add a kind by adding an entry."""

VOLT_TO_MV: dict[str, float] = {"MV": 1.0, "UV": 1e-3, "µV".upper(): 1e-3, "μV".upper(): 1e-3, "NV": 1e-6,
                                "V": 1e3}
"""Voltage units and their factor to mV (keys upper case)."""


def channel_kind(name: str) -> str | None:
    """The signal kind a channel name states (``"PPG"`` for ``"Pleth"``), or None when it says nothing."""
    upper = str(name or "").strip().upper()
    if not upper:
        return None
    for kind, (pattern, _) in CHANNEL_KINDS.items():
        if re.search(pattern, upper):
            return kind
    return None


def pick_channel(names: Sequence[str]) -> int:
    """The channel the model reads: the first one named as an ECG, else the first."""
    return next((i for i, n in enumerate(names) if channel_kind(n) == SIGNAL_TYPE), 0)


def mv_factor(unit: str | None) -> float | None:
    """Factor from ``unit`` to mV; 1.0 when no unit is given; None for a unit that is not a voltage."""
    key = str(unit or "").strip().upper()
    if not key:
        return 1.0
    return VOLT_TO_MV.get(key)


def to_model_units(x: np.ndarray, unit: str | None) -> np.ndarray:
    """``x`` converted to mV when its unit is another voltage (µV, V); unchanged otherwise."""
    factor = mv_factor(unit)
    return x * factor if factor not in (None, 1.0) else x


def robust_amplitude(x: Any) -> float:
    """Robust peak-to-peak amplitude: the 99th minus the 1st percentile (a few spikes do not count)."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    lo, hi = np.percentile(v, [1, 99])
    return float(hi - lo)


def signal_intended_input(signals: Sequence[np.ndarray], fs: float, *, min_seconds: float,
                          description: str = "single-lead ECG in mV", population: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    """The ``intended_input`` block of a rhythm package, from its training records (``fs`` Hz, mV).

    Durations and amplitudes are measured on the records themselves, so the check rejects what
    the model has never seen the like of (a 30-min Holter, a trace in ADC counts).
    """
    durations = np.asarray([len(s) / fs for s in signals], dtype=np.float64)
    amps = np.asarray([robust_amplitude(s) for s in signals], dtype=np.float64)
    amps = amps[amps > 0]
    lo, hi = (np.percentile(amps, [0.1, 99.9]) if amps.size else (0.0, math.inf))
    extra = {
        "signal_type": SIGNAL_TYPE,
        "leads": 1,
        "lead_choice": "the first channel named ECG/EKG (or a lead name such as II, V1), else the first channel",
        "units": "mV",
        "accepted_units": sorted({"mV", "uV", "µV", "V", "nV"}),
        "fs": float(fs),
        "fs_range": [FS_RANGE[0], FS_RANGE[1]],
        "min_seconds": float(min_seconds),
        "max_seconds": float(math.ceil(durations.max())) if durations.size else None,
        "amplitude_mv": [round(float(lo) / AMPLITUDE_WIDEN, 4), round(float(hi) * AMPLITUDE_WIDEN, 3)],
        "amplitude": "robust peak-to-peak (99th minus 1st percentile) of a record, in mV; the training "
                     f"records' 0.1-99.9% span widened {AMPLITUDE_WIDEN:g}x",
    }
    return IntendedInput(description=description, kind="signal", population=population or {},
                         extra=extra).to_dict()


def _reads(intended: IntendedInput) -> str:
    extra = intended.extra
    what = intended.description or "single-lead ECG"
    fs = extra.get("fs")
    return f"this model reads {what}" + (f" at {fs:g} Hz" if fs else "")


def _what(kind: str | None, name: str, fs: float) -> str:
    words = CHANNEL_KINDS[kind][1] if kind in CHANNEL_KINDS else f"channel {name!r}"
    return f"this record is {words}" + (f" ({name!r})" if kind in CHANNEL_KINDS and name else "") + f" at {fs:g} Hz"


@register_check("signal")
def check_signal(sample: Any, intended: IntendedInput) -> list[str]:
    """Reasons a :class:`~meddx.data.sample.SignalSample` contradicts ``intended`` (empty: none found)."""
    extra = intended.extra or {}
    reasons: list[str] = []
    data = np.asarray(getattr(sample, "data", np.zeros((0, 0))), dtype=np.float64)
    fs = float(getattr(sample, "fs", 0.0) or 0.0)
    names = [str(n) for n in (getattr(sample, "channel_names", None) or [])]
    units = [str(u) for u in (getattr(sample, "units", None) or [])]
    if data.ndim != 2 or data.size == 0:
        return ["the record holds no samples"]
    col = pick_channel(names) if names else 0
    name = names[col] if col < len(names) else ""
    unit = units[col] if col < len(units) else ""
    wanted = str(extra.get("signal_type") or "").upper()
    kind = channel_kind(name)
    if wanted and kind is not None and kind != wanted:
        reasons.append(f"{_reads(intended)}; {_what(kind, name, fs)}")
    factor = mv_factor(unit)
    if extra.get("units") and factor is None:
        reasons.append(("" if reasons else f"{_reads(intended)}; ")
                       + f"channel {name or col!r} is in {unit!r}, not a voltage "
                       f"(accepted: {', '.join(extra.get('accepted_units') or [extra['units']])})")
    fs_range = extra.get("fs_range")
    if fs <= 0:
        reasons.append("the record states no sampling rate")
    elif fs_range and not fs_range[0] <= fs <= fs_range[1]:
        reasons.append(f"{_reads(intended)} (it accepts {fs_range[0]:g}-{fs_range[1]:g} Hz and resamples); "
                       f"this record is sampled at {fs:.4g} Hz")
    if fs > 0:
        seconds = data.shape[0] / fs
        lo, hi = extra.get("min_seconds"), extra.get("max_seconds")
        if lo and seconds < lo:
            reasons.append(f"the record lasts {seconds:.1f} s; this model needs at least {lo:g} s")
        if hi and seconds > hi:
            reasons.append(f"the record lasts {seconds:.4g} s; this model was trained on records of at most "
                           f"{hi:g} s: cut it into windows (e.g. `meddx stream`) or use a model made for long "
                           "recordings")
    span = extra.get("amplitude_mv")
    if span and factor is not None and not reasons:  # a wrong kind or unit already says why
        amp = robust_amplitude(data[:, col] * factor)
        if not span[0] <= amp <= span[1]:
            reasons.append(f"{_reads(intended)}; this record's amplitude (robust peak-to-peak {amp:.4g} mV) is "
                           f"outside the {span[0]:g}-{span[1]:g} mV of the ECGs it was trained on: check the "
                           "channel and its units")
    return reasons


__all__ = ["CHANNEL_KINDS", "FS_RANGE", "channel_kind", "check_signal", "mv_factor", "pick_channel",
           "robust_amplitude", "signal_intended_input", "to_model_units"]
