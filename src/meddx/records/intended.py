"""What a record model accepts, and the check each record (CSV row, FHIR/HL7 patient) passes first.

A heart model handed ``chol = 5.2`` without a unit, ``age = 640`` or ``cp = "banana"``
used to impute the value and answer with a confident risk. A record package now declares
its intended input in ``package.json["intended_input"]`` (kind ``record``), built from the
task's feature schema: for every feature its kind, its unit and the other units meddx
converts, its plausible range (in the model's unit), its missing-value codes and its
categories (``extra["features"]``). :func:`check_record`, registered for sample kind
``record`` in :mod:`meddx.trust.intended`, returns one reason per contradiction, each
naming the feature and the fix; a record with any reason is rejected (decision
``rejected``, no probabilities) instead of being imputed.

Genuinely missing values (an empty cell, ``NA``, a declared missing code such as
``chol = 0``, an absent column or Observation) are not contradictions: they stay
"missing, imputed and flagged" as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from meddx.records.schema import TaskSchema
from meddx.trust.intended import IntendedInput, register_check

KIND = "record"
NA_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
"""Cell text that means "not measured" in every record column."""
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
"""A number written as text: digits, sign, decimal point, exponent (``1_000``, ``0x10``, ``nan`` are not)."""

TRUE_TEXT = {"1": 1.0, "1.0": 1.0, "true": 1.0, "t": 1.0, "yes": 1.0, "y": 1.0}
FALSE_TEXT = {"0": 0.0, "0.0": 0.0, "false": 0.0, "f": 0.0, "no": 0.0, "n": 0.0}
UNIT_SUFFIX = "_unit"
"""A CSV column ``<feature>_unit`` gives that feature's unit row by row (``chol_unit = mmol/L``)."""


@dataclass
class RecordRow:
    """One patient's raw feature values (as read: numbers, text or None) and the units they came in.

    ``kind`` is ``record`` so :func:`meddx.trust.intended.check_sample` dispatches to :func:`check_record`.
    """

    input: str
    values: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KIND


def intended_input(task: TaskSchema, *, sites: list[str] | None = None, n: int | None = None) -> dict[str, Any]:
    """``package.json["intended_input"]`` for a model of ``task``: units, ranges, codes and categories."""
    features: dict[str, dict[str, Any]] = {}
    for f in task.features:
        spec: dict[str, Any] = {"kind": f.kind}
        if f.unit:
            spec["unit"] = f.unit
        if f.conversions:
            spec["conversions"] = {u: float(k) for u, k in f.conversions.items()}
        if f.min is not None:
            spec["min"] = float(f.min)
        if f.max is not None:
            spec["max"] = float(f.max)
        if f.missing_codes:
            spec["missing_codes"] = [float(c) for c in f.missing_codes]
        if f.kind == "categorical" and f.categories is not None:
            spec["categories"] = list(f.categories)
        features[f.name] = spec
    population = {k: v for k, v in (("sites", sites), ("n", n)) if v}
    return IntendedInput(
        description=f"clinical records with the {len(task.names)} features of {task.name} "
                    "(CSV rows, FHIR R4 Observations, HL7 v2 OBX)",
        kind=KIND, population=population, extra={"features": features}).to_dict()


def _reads(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else repr(value)


def _is_missing(raw: Any) -> bool:
    if raw is None:
        return True
    if isinstance(raw, float) and math.isnan(raw):
        return True
    if isinstance(raw, str) and raw.strip().lower() in NA_TEXT:
        return True
    try:  # pandas.NA and friends
        import pandas as pd

        return bool(pd.isna(raw)) if not isinstance(raw, str | bytes) else False
    except (TypeError, ValueError):
        return False


def _factor(spec: dict[str, Any], unit: str | None) -> float | None:
    """Multiplier from ``unit`` to the feature's unit (1 when no unit is given), or None when unknown."""
    from meddx.records.schema import Feature, unit_factor

    feature = Feature(name="x", unit=spec.get("unit"), conversions=spec.get("conversions") or {})
    return unit_factor(feature, unit)


def _units_hint(name: str, spec: dict[str, Any]) -> str:
    units: dict[str, str] = {}
    for u in [spec.get("unit"), *(spec.get("conversions") or {})]:
        if u:
            units.setdefault(str(u).lower(), str(u))
    return f"{name} in {' or '.join(units.values())}" if units else f"{name} as a plain number"


def parse(name: str, spec: dict[str, Any], raw: Any, unit: str | None = None) -> tuple[Any, str | None]:
    """``(value in the feature's own form, None)`` or ``(None, reason)``.

    Numbers come back in the unit they were given in (the package's UnitHarmoniser
    converts them); missing values come back as NaN (numbers) or None (categories).
    """
    kind = spec.get("kind", "numeric")
    if _is_missing(raw):
        return (None if kind == "categorical" else math.nan), None
    if kind == "categorical":
        text = str(raw).strip()
        categories = spec.get("categories")
        if categories is not None and text not in categories:
            return None, (f"{name}={text!r} is not a category this model knows: use one of "
                          f"{', '.join(map(repr, categories))}, or leave {name} empty if unknown")
        return text, None
    if kind == "binary" and isinstance(raw, str):
        text = raw.strip().lower()
        if text in TRUE_TEXT or text in FALSE_TEXT:
            return TRUE_TEXT.get(text, FALSE_TEXT.get(text)), None
        return None, f"{name}={raw!r} is not a yes/no value: give 0/1 or true/false, or leave {name} empty if unknown"
    try:
        if isinstance(raw, str) and not _DECIMAL_TEXT.match(raw.strip()) and raw.strip().lower() not in (
            "nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"
        ):
            raise ValueError(raw)  # float() would take '1_000' or ' 1e5 '-like oddities silently
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError, OverflowError):
        return None, (f"{name}={raw!r} is not a number: give {_units_hint(name, spec)}, "
                      f"or leave {name} empty if not measured")
    if not math.isfinite(value):
        return None, f"{name}={raw!r} is not a finite number: give {_units_hint(name, spec)}"
    if kind == "binary" and value not in (0.0, 1.0):
        return None, f"{name}={_reads(value)} is not 0 or 1: give 0/1 or true/false"
    return value, None


def check_value(name: str, spec: dict[str, Any], raw: Any, unit: str | None = None) -> str | None:
    """Why one feature value contradicts the intended input (None: it does not)."""
    value, reason = parse(name, spec, raw, unit)
    if reason is not None:
        return reason
    if spec.get("kind", "numeric") == "categorical" or (isinstance(value, float) and math.isnan(value)):
        return None
    if unit and str(unit).strip() and spec.get("kind") == "numeric" and _factor(spec, unit) is None:
        return (f"{name} is given in {str(unit).strip()!r}, a unit this model cannot convert: "
                f"give {_units_hint(name, spec)}")
    if value in set(spec.get("missing_codes") or ()):
        return None  # a declared "not measured" code: missing, imputed and flagged
    factor = _factor(spec, unit) if spec.get("kind") == "numeric" else 1.0
    converted = value * float(factor or 1.0)
    low, high = spec.get("min"), spec.get("max")
    if (low is not None and converted < low) or (high is not None and converted > high):
        own = spec.get("unit") or ""
        given = f"{_reads(value)} {str(unit).strip()}" if unit and str(unit).strip() else _reads(value)
        shown = f" (= {converted:.4g} {own})" if factor not in (None, 1.0) else (f" {own}" if not unit and own else "")
        bounds = f"{'' if low is None else f'{low:g}'}–{'' if high is None else f'{high:g}'} {own}".strip()
        other = [u for u in (spec.get("conversions") or {}) if str(u).lower() != str(own).lower()]
        fix = (f"check the value and its unit (a value in {' or '.join(other)} must say so, e.g. a "
               f"'{name}{UNIT_SUFFIX}' column or the Observation's unit)" if other and not unit
               else "check the value for a typo")
        return (f"{name}={given}{shown} is outside the plausible range {bounds}: {fix}, "
                f"or leave {name} empty if not measured")
    return None


@register_check(KIND)
def check_record(sample: Any, intended: IntendedInput) -> list[str]:
    """Reasons a :class:`RecordRow` contradicts ``intended`` (unknown units, unparseable or implausible values)."""
    specs: dict[str, dict[str, Any]] = (intended.extra or {}).get("features") or {}
    values = getattr(sample, "values", {}) or {}
    units = getattr(sample, "units", {}) or {}
    reasons = []
    for name, spec in specs.items():
        if name not in values:
            continue
        reason = check_value(name, spec, values[name], units.get(name))
        if reason:
            reasons.append(reason)
    return reasons


def typed_row(row: RecordRow, task: TaskSchema) -> Any:
    """A one-row DataFrame of the task's features (numbers float, categories str, missing NaN) with
    ``attrs["units"]``, ready for the package's pipeline; call only after :func:`check_record` passed."""
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {}
    specs = {f.name: {"kind": f.kind, "categories": f.categories} for f in task.features}
    for f in task.features:
        value, _ = parse(f.name, specs[f.name], row.values.get(f.name), row.units.get(f.name))
        out[f.name] = [np.nan if value is None else value]
    frame = pd.DataFrame(out, index=[row.input])
    frame = frame.astype({f.name: float for f in task.features if f.kind != "categorical"})
    frame = frame.astype({f.name: object for f in task.features if f.kind == "categorical"})
    frame.attrs["units"] = {k: str(v).strip() for k, v in row.units.items()
                            if k in task.names and v and str(v).strip()}
    return frame


__all__ = ["KIND", "RecordRow", "UNIT_SUFFIX", "check_record", "check_value", "intended_input", "parse",
           "typed_row"]
