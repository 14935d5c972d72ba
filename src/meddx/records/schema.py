"""Declared feature schemas for clinical-record tasks.

A :class:`TaskSchema` says, for one prediction task, which columns are features
(numeric, binary or categorical), their units and plausible ranges, the codes that
mean "not measured" (``chol = 0`` in the UCI heart data, Pima's zeros), how the
label is made from the target column (``num > 0``), which columns are never
features (identifiers, the site, a follow-up time that leaks the outcome), and the
LOINC codes a FHIR Observation or HL7 v2 OBX may carry for each feature.

Column types, units, ranges and missing codes come from the table reader's built-in
schemas (:data:`meddx.data.readers.table.BUILTIN_SCHEMAS`), so reading a CSV and
building features share one declaration. :data:`TASKS` is the registry;
:func:`get_task` looks a task up, :func:`infer_task` builds one for any CSV file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, MissingFieldError

KINDS = ("numeric", "binary", "categorical")


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: column name.
        kind: ``numeric``, ``binary`` (0/1, bool) or ``categorical``.
        unit: the unit the model expects (values in other units are converted).
        min, max: plausible range in ``unit``. At prediction a value outside it is not imputed:
            the record is rejected with a reason naming the feature (a wrong unit or a typo
            would otherwise become a confident risk). Training tables never hold such values.
        missing_codes: values meaning "not measured" (turned into NaN before imputation).
        categories: allowed values of a categorical feature.
        loinc: LOINC codes whose Observation value fills this feature.
        conversions: other unit -> factor to multiply by to reach ``unit``.
        description: free text.
    """

    name: str
    kind: str = "numeric"
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    missing_codes: tuple[Any, ...] = ()
    categories: tuple[str, ...] | None = None
    loinc: tuple[str, ...] = ()
    conversions: Mapping[str, float] = field(default_factory=dict)
    description: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown feature kind {self.kind!r}", field=self.name, hint=f"Use one of {KINDS}")
        object.__setattr__(self, "missing_codes", tuple(self.missing_codes))
        object.__setattr__(self, "loinc", tuple(self.loinc))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
        object.__setattr__(self, "conversions", dict(self.conversions))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["missing_codes"] = list(self.missing_codes)
        d["loinc"] = list(self.loinc)
        d["categories"] = list(self.categories) if self.categories is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Feature:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TaskSchema:
    """A prediction task on a clinical table.

    Attributes:
        name: task / data-set name.
        features: the model inputs, in order.
        target: the label column.
        positive_rule: how the binary label is made: ``"> 0"`` (``num > 0``), ``"== 1"``...
        class_names: ``[negative, positive]``.
        table_schema: built-in reader schema used to type the CSV (None: inferred).
        file: the CSV inside the catalogue folder.
        site: column naming the hospital (for site-shift experiments), if any.
        excluded: columns never used as features, with the reason.
        default_model: the model meddx ships for this task (chosen by repeated CV in the bench).
        imputation: how missing values are filled (:data:`meddx.records.transform.ENCODERS`):
            ``indicator`` (median + missingness indicators) or ``conditional`` (conditional mean,
            no indicators: for pooled multi-site data whose missingness marks the site).
    """

    name: str
    features: tuple[Feature, ...]
    target: str
    positive_rule: str = "== 1"
    class_names: tuple[str, str] = ("negative", "positive")
    table_schema: str | None = None
    file: str | None = None
    site: str | None = None
    excluded: Mapping[str, str] = field(default_factory=dict)
    default_model: str = "logreg"
    imputation: str = "indicator"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "excluded", dict(self.excluded))
        _parse_rule(self.positive_rule)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise ConfigError(f"no feature {name!r} in task {self.name}", field=name, hint=f"Features: {self.names}")

    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind in ("numeric", "binary")]

    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    def without(self, names: list[str] | tuple[str, ...]) -> TaskSchema:
        """The same task with some features removed (e.g. ``ca``, ``thal``, ``slope``)."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ConfigError(f"no feature {unknown[0]!r} in task {self.name}", field=unknown[0])
        return TaskSchema(**{**self._fields(), "features": tuple(f for f in self.features if f.name not in names),
                             "excluded": {**self.excluded, **{n: "removed" for n in names}}})

    def _fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def label(self, values: Any) -> np.ndarray:
        """Binary labels (0/1) from the target column's values."""
        op, threshold = _parse_rule(self.positive_rule)
        v = np.asarray(values, dtype=float)
        if np.isnan(v).any():
            raise InvalidValueError(f"{int(np.isnan(v).sum())} rows have no label", field=self.target,
                                    hint="Drop unlabelled rows before training")
        return {">": v > threshold, ">=": v >= threshold, "==": v == threshold}[op].astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        d = self._fields()
        d["features"] = [f.to_dict() for f in self.features]
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskSchema:
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["features"] = tuple(Feature.from_dict(f) for f in d["features"])
        return cls(**kw)

    # ------------------------------------------------------------------ frames
    def frame(self, data: Any, *, require: bool = False, path: str | Path | None = None) -> Any:
        """The feature columns of ``data`` (a DataFrame), typed: numbers as float, categories as str.

        Absent columns are added as NaN (``require=False``) or raise a MissingFieldError
        naming the column. A cell of the wrong type raises an InvalidValueError naming the
        column and row.
        """
        import pandas as pd

        out = {}
        for f in self.features:
            if f.name not in data.columns:
                if require:
                    raise MissingFieldError(f"required column {f.name!r} is missing", path=path, field=f.name,
                                            hint=f"Columns present: {', '.join(map(str, data.columns))}")
                out[f.name] = pd.Series(np.nan, index=data.index, dtype=float if f.kind != "categorical" else object)
                continue
            col = data[f.name]
            if f.kind == "categorical":
                out[f.name] = col.astype(object).where(col.notna(), np.nan).map(
                    lambda v: v if isinstance(v, float) and np.isnan(v) else str(v))
            else:
                out[f.name] = _as_number(col, f, path)
        return pd.DataFrame(out, index=data.index)


def _as_number(col: Any, f: Feature, path: str | Path | None) -> Any:
    import pandas as pd

    if col.dtype == bool or str(col.dtype) == "boolean":
        return col.astype("float64")
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.astype("float64")
    text = col.astype(object)
    lowered = text.map(lambda v: str(v).strip().lower() if v is not None and v == v else None)
    mapping = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "t": 1.0, "f": 0.0}
    values = pd.to_numeric(lowered.map(lambda s: mapping.get(s, s) if f.kind == "binary" else s), errors="coerce")
    bad = lowered.notna() & values.isna() & ~lowered.isin(["", "na", "n/a", "nan", "null", "none"])
    if bool(bad.any()):
        i = bad.idxmax()
        row = list(col.index).index(i) + 1
        raise InvalidValueError(
            f"column {f.name!r} must hold {f.kind} values, but row {row} holds {text[i]!r}",
            path=path, field=f.name, hint=f"Expected {'a number' if f.kind == 'numeric' else '0/1 or true/false'}"
            + (f" in {f.unit}" if f.unit else ""))
    return values.astype("float64")


def _parse_rule(rule: str) -> tuple[str, float]:
    text = str(rule).strip()
    for op in (">=", "==", ">"):
        if text.startswith(op):
            try:
                return op, float(text[len(op):])
            except ValueError:
                break
    raise ConfigError(f"positive_rule {rule!r} is not '> N', '>= N' or '== N'", field="positive_rule")


# ---------------------------------------------------------------------------- registry
def _from_table_schema(name: str, *, target: str, drop: Mapping[str, str], loinc: Mapping[str, tuple[str, ...]],
                       conversions: Mapping[str, Mapping[str, float]] | None = None,
                       plausible: Mapping[str, tuple[float | None, float | None]] | None = None,
                       **kw: Any) -> TaskSchema:
    """A task from a built-in table schema; ``plausible`` narrows a column's (min, max) where the reader's
    range is only a sanity bound (``trestbps >= 0``) and a value inside it can still not be a patient's."""
    from meddx.data.readers.table import BUILTIN_SCHEMA_FILES, BUILTIN_SCHEMAS

    table = BUILTIN_SCHEMAS[name]
    conversions = conversions or {}
    plausible = plausible or {}
    features = []
    for col, spec in table.columns.items():
        if col == target or col in drop or not spec.required:
            continue
        if spec.dtype == "bool" or (spec.dtype == "int" and spec.min == 0 and spec.max == 1):
            kind = "binary"
        elif spec.dtype in ("category", "str"):
            kind = "categorical"
        else:
            kind = "numeric"
        low, high = plausible.get(col, (spec.min, spec.max))
        features.append(Feature(
            name=col, kind=kind, unit=spec.unit, min=low, max=high,
            missing_codes=tuple(c for c in spec.missing if not isinstance(c, str)),
            categories=spec.categories if kind == "categorical" else None, loinc=loinc.get(col, ()),
            conversions=conversions.get(col, {}), description=spec.description))
    return TaskSchema(name=name, features=tuple(features), target=target, table_schema=name,
                      file=BUILTIN_SCHEMA_FILES[name], excluded=dict(drop), **kw)


# LOINC codes (loinc.org): 30525-0 age, 8480-6 systolic BP, 8462-4 diastolic BP, 2093-3 cholesterol
# (mass/volume), 2345-7 glucose serum/plasma, 1558-6 fasting glucose, 39156-5 BMI, 8867-4 heart rate,
# 20448-7 insulin, 2160-0 creatinine, 2951-2 sodium, 2157-6 creatine kinase, 777-3 platelets,
# 10230-1 LV ejection fraction.
_CHOL = {"mmol/L": 38.67, "mg/dl": 1.0}
_GLUCOSE = {"mmol/L": 18.016, "mg/dl": 1.0}
# Plausible ranges (in the task's units) where the reader's bound is only ">= 0": wide physiological
# limits that hold every row of the mirror's tables (checked by tests/records/test_intended.py) and
# catch a value in the wrong unit (cholesterol 5.2 given without "mmol/L" is below 50 mg/dL).
_HEART_PLAUSIBLE = {"trestbps": (40.0, 300.0), "chol": (50.0, 1000.0), "thalch": (30.0, 250.0)}
_FAILURE_PLAUSIBLE = {"creatinine_phosphokinase": (0.0, 100000.0), "platelets": (1000.0, 2000000.0),
                      "serum_creatinine": (0.1, 30.0), "serum_sodium": (90.0, 200.0)}
_PIMA_PLAUSIBLE = {"Glucose": (20.0, 400.0), "BloodPressure": (20.0, 250.0), "BMI": (10.0, 100.0),
                   "DiabetesPedigreeFunction": (0.0, 10.0)}
_STROKE_PLAUSIBLE = {"avg_glucose_level": (20.0, 500.0)}

UNIT_ALIASES = {
    "mm[hg]": "mmhg", "mm hg": "mmhg", "/min": "bpm", "1/min": "bpm", "{beats}/min": "bpm", "beats/min": "bpm",
    "{beat}/min": "bpm", "a": "years", "yr": "years", "year": "years", "kg/m^2": "kg/m2", "kg/(m2)": "kg/m2",
    "m[iu]/l": "uu/ml", "mu/l": "uu/ml", "u[iu]/ml": "uu/ml", "uiu/ml": "uu/ml", "µu/ml": "uu/ml", "µiu/ml": "uu/ml",
    "µmol/l": "umol/l", "meq/l": "meq/l",
}
"""UCUM codes (what FHIR Observations carry: ``mm[Hg]``, ``/min``, ``a``) and common spellings, to the
units the schemas declare, compared case-insensitively."""


def canonical_unit(unit: str | None) -> str:
    """A unit for comparison: lower case, UCUM code or common spelling mapped to the schemas' own."""
    text = " ".join(str(unit or "").split()).lower()
    return UNIT_ALIASES.get(text, text)


def unit_factor(feature: Feature, unit: str | None) -> float | None:
    """Multiplier from ``unit`` to ``feature.unit`` (1 when no unit is given or it is the same), None if unknown."""
    if not unit or not str(unit).strip():
        return 1.0
    given = canonical_unit(unit)
    if feature.unit and given == canonical_unit(feature.unit):
        return 1.0
    return {canonical_unit(k): float(v) for k, v in feature.conversions.items()}.get(given)


TASKS: dict[str, TaskSchema] = {}


def register_task(task: TaskSchema) -> TaskSchema:
    TASKS[task.name] = task
    return task


register_task(_from_table_schema(
    "heart-disease-uci", target="num", positive_rule="> 0", class_names=("no disease", "disease"), site="dataset",
    drop={"id": "row identifier", "dataset": "hospital (site), kept for site-shift experiments"},
    loinc={"age": ("30525-0",), "trestbps": ("8480-6",), "chol": ("2093-3", "14647-2"), "thalch": ("8867-4",)},
    conversions={"chol": _CHOL, "trestbps": {"kPa": 7.50062}}, plausible=_HEART_PLAUSIBLE,
    # ca/thal/slope are missing mostly at one site: indicators would learn the site; the default was chosen on
    # leave-one-site-out and simulated-other-site checks (bench/results/records.md, "External checks")
    imputation="conditional", default_model="blend"))
register_task(_from_table_schema(
    "breast-cancer-wisconsin-diagnostic", target="target", positive_rule="== 0", class_names=("benign", "malignant"),
    drop={}, loinc={}))
register_task(_from_table_schema(
    "pima-indians-diabetes", target="Outcome", class_names=("no diabetes", "diabetes"), drop={},
    loinc={"Glucose": ("2345-7", "1558-6", "15074-8"), "BloodPressure": ("8462-4",), "Insulin": ("20448-7",),
           "BMI": ("39156-5",), "Age": ("30525-0",)},
    conversions={"Glucose": _GLUCOSE, "Insulin": {"pmol/L": 1 / 6.0}}, plausible=_PIMA_PLAUSIBLE))
register_task(_from_table_schema(
    "heart-failure-clinical-records", target="DEATH_EVENT", class_names=("survived", "died"),
    drop={"time": "follow-up time: short follow-up is caused by death, so it leaks the outcome"},
    loinc={"age": ("30525-0",), "creatinine_phosphokinase": ("2157-6",), "ejection_fraction": ("10230-1",),
           "platelets": ("777-3",), "serum_creatinine": ("2160-0",), "serum_sodium": ("2951-2",)},
    conversions={"serum_creatinine": {"umol/L": 1 / 88.42, "µmol/L": 1 / 88.42}, "serum_sodium": {"mmol/L": 1.0}},
    plausible=_FAILURE_PLAUSIBLE))
register_task(_from_table_schema(
    "stroke-kaggle", target="stroke", class_names=("no stroke", "stroke"), drop={"id": "row identifier"},
    loinc={"age": ("30525-0",), "avg_glucose_level": ("2345-7", "15074-8"), "bmi": ("39156-5",)},
    conversions={"avg_glucose_level": _GLUCOSE}, plausible=_STROKE_PLAUSIBLE))

SEX_VALUES: dict[str, dict[str, Any]] = {
    "heart-disease-uci": {"feature": "sex", "male": "Male", "female": "Female"},
    "stroke-kaggle": {"feature": "gender", "male": "Male", "female": "Female", "other": "Other"},
    "heart-failure-clinical-records": {"feature": "sex", "male": 1.0, "female": 0.0},
}
"""How FHIR ``Patient.gender`` / HL7 PID-8 fills each task's sex feature."""

AGE_FEATURE = {"heart-disease-uci": "age", "pima-indians-diabetes": "Age", "heart-failure-clinical-records": "age",
               "stroke-kaggle": "age"}
"""The feature computed from ``Patient.birthDate`` when no age Observation is given."""


def get_task(name: str) -> TaskSchema:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"no record task named {name!r}", field="data", hint=f"Known: {', '.join(TASKS)}") from None


TARGET_NAMES = ("target", "label", "outcome", "class", "y", "diagnosis", "death_event", "stroke", "num")


def infer_task(frame: Any, name: str, target: str | None = None) -> TaskSchema:
    """A task for an arbitrary CSV: the target is ``target``, else a column named like one, else the last."""
    import pandas as pd

    # A CSV that carries every column of a built-in task is that task.
    for task in TASKS.values():
        if task.target in frame.columns and all(f in frame.columns for f in task.names):
            return task
    cols = [str(c) for c in frame.columns]
    if target is None:
        target = next((c for c in cols if c.lower() in TARGET_NAMES), cols[-1])
    if target not in cols:
        raise MissingFieldError(f"no target column {target!r}", field=target, hint=f"Columns: {cols}")
    values = frame[target].dropna().unique()
    if len(values) != 2:
        raise InvalidValueError(f"target column {target!r} has {len(values)} distinct values; meddx records "
                                "models are binary", field=target, hint="Use a 0/1 target column")
    try:
        positive = sorted(float(v) for v in values)[1]
        rule, class_names = f"== {positive:g}", ("0", "1") if set(values) <= {0, 1} else (str(min(values)), str(max(values)))
    except (TypeError, ValueError):
        raise InvalidValueError(f"target column {target!r} is not numeric", field=target,
                                hint="Code the label as 0/1") from None
    features = []
    for c in cols:
        if c == target or c.lower() == "id":
            continue
        col = frame[c]
        if pd.api.types.is_bool_dtype(col) or set(col.dropna().unique()) <= {0, 1}:
            kind = "binary"
        elif pd.api.types.is_numeric_dtype(col):
            kind = "numeric"
        else:
            kind = "categorical"
        cats = tuple(sorted(str(v) for v in col.dropna().unique())) if kind == "categorical" else None
        features.append(Feature(name=c, kind=kind, categories=cats))
    return TaskSchema(name=name, features=tuple(features), target=target, positive_rule=rule,
                      class_names=class_names, excluded={"id": "row identifier"} if "id" in cols else {})


def load_table(data: str) -> tuple[TaskSchema, Any, Path]:
    """(task, typed DataFrame, file) for a catalogue name or a CSV path (rows without a label are dropped)."""
    from meddx.data.readers import read

    if data in TASKS:
        from meddx.data.catalogue import fetch

        task = TASKS[data]
        path = fetch(data) / str(task.file)
        frame = read(path, schema=task.table_schema).frame
    else:
        path = Path(data)
        if not path.is_file():
            raise ConfigError(f"{data!r} is neither a record task nor a CSV file", field="data",
                              hint=f"Tasks: {', '.join(TASKS)}")
        frame = read(path).frame
        task = infer_task(frame, path.stem)
        if task.table_schema:
            frame = read(path, schema=task.table_schema).frame
    frame = frame[frame[task.target].notna()].reset_index(drop=True)
    return task, frame, path


__all__ = ["AGE_FEATURE", "Feature", "SEX_VALUES", "TASKS", "TaskSchema", "UNIT_ALIASES", "canonical_unit",
           "get_task", "infer_task", "load_table", "register_task", "unit_factor"]
