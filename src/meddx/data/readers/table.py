"""CSV/TSV tables read against a declared schema.

A clinical table is only useful when every column has the type, unit and
missing-value convention its authors meant: in the Pima data ``0`` means
"not measured" in Glucose or BMI, in the stroke data ``N/A`` means a missing BMI.
A :class:`TableSchema` declares this per column (:class:`ColumnSpec`); the reader
reads every cell as text, turns the declared missing codes into NA, converts each
column to its dtype and checks ranges and categories, and reports the first bad
cell by file, column, row number and value.

Without a schema, pandas infers the dtypes (and only the usual NA spellings count
as missing). :data:`BUILTIN_SCHEMAS` holds schemas for the tabular data sets of
the mirror; pass ``schema="pima-indians-diabetes"`` to use one.

Row numbers in messages count data rows from 1, the header not counted (with no
blank lines or multi-line quoted cells, row ``r`` is on line ``r + 1``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meddx.data.readers._base import Reader, register_reader
from meddx.data.sample import TableSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

DTYPES = ("float", "int", "category", "bool", "str", "datetime")

DEFAULT_NA_VALUES: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
"""Text that means "missing" in every column of a schema-read table."""

TRUE_VALUES: tuple[str, ...] = ("1", "1.0", "true", "t", "yes", "y")
FALSE_VALUES: tuple[str, ...] = ("0", "0.0", "false", "f", "no", "n")

_OPTIONS = frozenset({"schema", "delimiter", "encoding"})


@dataclass(frozen=True)
class ColumnSpec:
    """What one column holds.

    Attributes:
        dtype: one of ``float``, ``int``, ``category``, ``bool``, ``str``, ``datetime``.
        unit: physical unit (``mg/dL``, ``years``...), copied to ``TableSample.units``.
        missing: codes that mean "missing" in this column, besides the table's
            ``na_values`` (e.g. ``[0]`` for Pima Glucose, ``["?"]``).
        required: the column must be present (an absent optional column is added as NA).
        min, max: allowed range for numbers (inclusive).
        categories: allowed values for ``category`` (and ``str``) columns.
        thousands: thousands separator inside numbers (``"265,000"``).
        format: ``strftime`` format for ``datetime`` columns (default: ISO 8601).
        description: free text.
    """

    dtype: str = "str"
    unit: str | None = None
    missing: tuple[Any, ...] = ()
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] | None = None
    thousands: str | None = None
    format: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"unknown column dtype {self.dtype!r}",
                field="dtype",
                hint=f"Use one of: {', '.join(DTYPES)}",
            )
        # Accept lists in the constructor; store tuples so specs stay hashable.
        object.__setattr__(self, "missing", tuple(self.missing))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))

    @classmethod
    def from_value(cls, value: ColumnSpec | str | Mapping[str, Any]) -> ColumnSpec:
        """A spec from a spec, a dtype name, or a dict of the attributes."""
        if isinstance(value, ColumnSpec):
            return value
        if isinstance(value, str):
            return cls(dtype=value)
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ConfigError(
                    f"unknown column spec key(s): {', '.join(sorted(unknown))}",
                    field=sorted(unknown)[0],
                    hint=f"Valid keys: {', '.join(cls.__dataclass_fields__)}",
                )
            return cls(**value)
        raise ConfigError(
            f"a column spec must be a ColumnSpec, dtype name or dict, not {value!r}", field="schema"
        )


@dataclass(frozen=True)
class TableSchema:
    """The columns a table must have and how to type them.

    Attributes:
        columns: column name -> :class:`ColumnSpec`.
        target: the label column for supervised learning, if any.
        na_values: text that means missing in every column.
        extra_columns: what to do with columns the schema does not declare:
            ``"keep"`` (inferred dtype), ``"drop"`` or ``"error"``.
        name: the schema's name (the data set it describes).
    """

    columns: Mapping[str, ColumnSpec]
    target: str | None = None
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    extra_columns: str = "keep"
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "columns", {k: ColumnSpec.from_value(v) for k, v in self.columns.items()}
        )
        object.__setattr__(self, "na_values", tuple(self.na_values))
        if self.extra_columns not in ("keep", "drop", "error"):
            raise ConfigError(
                f"extra_columns must be 'keep', 'drop' or 'error', not {self.extra_columns!r}",
                field="extra_columns",
            )
        if self.target is not None and self.target not in self.columns:
            raise ConfigError(
                f"target column {self.target!r} is not declared in the schema", field="target"
            )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TableSchema:
        """``{"columns": {name: spec}, "target": ...}`` or a plain ``{name: spec}`` mapping."""
        if "columns" in value and isinstance(value["columns"], Mapping):
            options = {k: v for k, v in value.items() if k != "columns"}
            unknown = set(options) - set(cls.__dataclass_fields__)
            if unknown:
                raise ConfigError(
                    f"unknown schema key(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
                )
            return cls(columns=dict(value["columns"]), **options)
        return cls(columns=dict(value))

    @property
    def units(self) -> dict[str, str]:
        return {name: spec.unit for name, spec in self.columns.items() if spec.unit}


def _resolve_schema(schema: Any) -> TableSchema | None:
    if schema is None or isinstance(schema, TableSchema):
        return schema
    if isinstance(schema, str):
        try:
            return BUILTIN_SCHEMAS[schema]
        except KeyError:
            raise ConfigError(
                f"no built-in table schema named {schema!r}",
                field="schema",
                hint=f"Built-in schemas: {', '.join(BUILTIN_SCHEMAS)}",
            ) from None
    if isinstance(schema, Mapping):
        return TableSchema.from_dict(schema)
    raise ConfigError(
        f"schema must be a TableSchema, a dict or a built-in name, not {type(schema).__name__}",
        field="schema",
    )


def _sniff_delimiter(path: Path, sample: str) -> str:
    if path.name.lower().endswith(".tsv"):
        return "\t"
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else ",", ",;\t|").delimiter
    except csv.Error:
        return ","


def _bad_cell(
    path: Path, column: str, frame_index: Any, value: Any, problem: str, hint: str | None = None
) -> InvalidValueError:
    row = int(frame_index) + 1
    return InvalidValueError(
        f"row {row}: value {value!r} {problem}",
        path=path,
        field=column,
        hint=hint,
    )


class _ColumnConverter:
    """Turns one text column into its declared dtype, or names the first bad cell."""

    def __init__(self, path: Path, name: str, spec: ColumnSpec) -> None:
        self.path, self.name, self.spec = path, name, spec

    def __call__(self, text: pd.Series, missing: pd.Series) -> pd.Series:
        import pandas as pd

        spec = self.spec
        present = ~missing
        if spec.dtype in ("float", "int"):
            cleaned = text.str.strip()
            if spec.thousands:
                cleaned = cleaned.str.replace(spec.thousands, "", regex=False)
            numbers = pd.to_numeric(cleaned.where(present), errors="coerce").astype("float64")
            self._first_bad(present & numbers.isna(), text, f"is not a {spec.dtype} number")
            finite = numbers.abs() != float("inf")
            self._first_bad(present & ~finite, text, "is infinite")
            if spec.dtype == "int":
                self._first_bad(present & (numbers % 1 != 0), text, "is not a whole number")
            self._check_range(numbers, present, text)
            if spec.dtype == "int":
                return numbers.astype("Int64")
            return numbers
        if spec.dtype == "bool":
            lowered = text.str.strip().str.lower()
            is_true = lowered.isin(TRUE_VALUES)
            is_false = lowered.isin(FALSE_VALUES)
            self._first_bad(
                present & ~(is_true | is_false),
                text,
                "is not a boolean",
                hint=f"Booleans are one of {', '.join(TRUE_VALUES + FALSE_VALUES)}",
            )
            out = pd.Series(pd.NA, index=text.index, dtype="boolean")
            out[present & is_true] = True
            out[present & is_false] = False
            return out
        if spec.dtype == "datetime":
            values = pd.to_datetime(
                text.where(present), format=spec.format or "ISO8601", errors="coerce"
            )
            expected = f"format {spec.format!r}" if spec.format else "ISO 8601"
            self._first_bad(present & values.isna(), text, f"is not a date/time ({expected})")
            return values
        # category / str
        values = text.where(present)
        if spec.categories is not None:
            allowed = [str(c) for c in spec.categories]
            self._first_bad(
                present & ~values.isin(allowed),
                text,
                "is not an allowed category",
                hint=f"Allowed: {', '.join(allowed)}",
            )
        if spec.dtype == "category":
            categories = (
                [str(c) for c in spec.categories]
                if spec.categories is not None
                else sorted(values.dropna().unique())
            )
            return pd.Series(
                pd.Categorical(values, categories=categories), index=text.index, name=text.name
            )
        return values.astype("string")

    def _check_range(self, numbers: pd.Series, present: pd.Series, text: pd.Series) -> None:
        spec = self.spec
        if spec.min is not None:
            self._first_bad(present & (numbers < spec.min), text, f"is below the minimum {spec.min}")
        if spec.max is not None:
            self._first_bad(present & (numbers > spec.max), text, f"is above the maximum {spec.max}")

    def _first_bad(
        self, mask: pd.Series, text: pd.Series, problem: str, hint: str | None = None
    ) -> None:
        if bool(mask.any()):
            index = mask.idxmax()
            raise _bad_cell(
                self.path,
                self.name,
                index,
                text[index],
                problem,
                hint
                or "Fix the cell, or declare its code in the column's missing=[...] so it reads as NA",
            )


@register_reader
class TableReader(Reader):
    """Reads a CSV/TSV file into a :class:`TableSample`, typed by a schema.

    Options:
        schema: a :class:`TableSchema`, a dict (see :meth:`TableSchema.from_dict`),
            the name of a built-in schema, or None to infer dtypes.
        delimiter: field separator (default: tab for ``.tsv``, else sniffed).
        encoding: text encoding (default ``utf-8-sig``, which also reads plain UTF-8).
    """

    name = "table"
    suffixes = (".csv", ".tsv")

    def read(self, path: Path, **options: Any) -> TableSample:
        import pandas as pd

        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown option(s) for the table reader: {', '.join(sorted(unknown))}",
                path=path,
                field=sorted(unknown)[0],
                hint=f"Valid options: {', '.join(sorted(_OPTIONS))}",
            )
        try:
            schema = _resolve_schema(options.get("schema"))
        except ConfigError as exc:
            raise ConfigError(exc.message, path=path, field=exc.field, hint=exc.hint) from exc
        encoding = options.get("encoding") or "utf-8-sig"

        if path.stat().st_size == 0:
            raise EmptyDataError(
                "the file is empty", path=path, hint="Expected a header line and data rows", field="rows"
            )
        try:
            with open(path, encoding=encoding, newline="") as fh:
                sample = fh.read(65536)
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                f"not valid {encoding} text: {exc.reason} at byte {exc.start}",
                path=path,
                hint="Pass encoding='latin-1' (or the file's real encoding)",
                field="encoding",
            ) from exc
        except LookupError as exc:
            raise ConfigError(f"unknown encoding {encoding!r}", path=path, field="encoding") from exc
        if not sample.strip():
            raise EmptyDataError("the file holds only blank lines", path=path, field="rows")
        delimiter = options.get("delimiter") or _sniff_delimiter(path, sample)

        common: dict[str, Any] = {"sep": delimiter, "encoding": encoding, "skip_blank_lines": True}
        try:
            if schema is None:
                frame = pd.read_csv(path, **common)
            else:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, **common)
        except pd.errors.EmptyDataError as exc:
            raise EmptyDataError("no header and no data", path=path, field="header row") from exc
        except pd.errors.ParserError as exc:
            raise CorruptFileError(
                f"malformed {('TSV' if delimiter == chr(9) else 'CSV')}: {exc}",
                path=path,
                hint="A row has more fields than the header, or a quote is not closed",
                field="rows",
            ) from exc
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                f"not valid {encoding} text: {exc.reason}",
                path=path,
                hint="Pass encoding='latin-1' (or the file's real encoding)",
                field="encoding",
            ) from exc

        header = next(csv.reader([sample.lstrip("\r\n").splitlines()[0]], delimiter=delimiter), [])
        seen: set[str] = set()
        for column in (c.strip() for c in header):
            if column in seen:
                raise CorruptFileError(
                    f"duplicate column name {column!r} in the header",
                    path=path,
                    field=column,
                    hint="Rename one of the columns",
                )
            seen.add(column)
        if len(frame) == 0:
            raise EmptyDataError(
                f"the table has a header ({len(frame.columns)} columns) but no data rows", path=path,
                field="rows",
            )

        units: dict[str, str] = {}
        meta: dict[str, Any] = {"delimiter": delimiter, "encoding": encoding}
        if schema is None:
            _refuse_infinite(path, frame)
        if schema is not None:
            frame = self._apply_schema(path, frame, schema)
            units = schema.units
            meta.update({"schema": schema.name, "target": schema.target})
        meta["n_missing"] = {str(c): int(n) for c, n in frame.isna().sum().items() if n}
        return TableSample(
            path=path,
            format=self.name,
            meta=meta,
            frame=frame,
            units=units,
        )

    @staticmethod
    def _apply_schema(path: Path, frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
        import pandas as pd

        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [
            name for name, spec in schema.columns.items() if spec.required and name not in frame.columns
        ]
        if missing:
            raise MissingFieldError(
                f"required column {missing[0]!r} is missing"
                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""),
                path=path,
                field=missing[0],
                hint=f"Columns in the file: {', '.join(frame.columns)}",
            )
        extra = [c for c in frame.columns if c not in schema.columns]
        if extra and schema.extra_columns == "error":
            raise InvalidValueError(
                f"column {extra[0]!r} is not declared in the schema",
                path=path,
                field=extra[0],
                hint="Declare it, or use extra_columns='keep' or 'drop'",
            )
        out: dict[str, pd.Series] = {}
        for name, spec in schema.columns.items():
            if name not in frame.columns:
                out[name] = pd.Series(index=frame.index, dtype=_na_dtype(spec.dtype))
                continue
            text = frame[name].astype(str)
            stripped = text.str.strip()
            codes = set(schema.na_values) | {str(m) for m in spec.missing}
            is_missing = stripped.isin(codes)
            numeric_codes = _numeric_codes(spec)
            if numeric_codes and spec.dtype in ("float", "int"):
                as_number = pd.to_numeric(stripped, errors="coerce")
                is_missing |= as_number.isin(numeric_codes)
            out[name] = _ColumnConverter(path, name, spec)(text, is_missing)
        typed = pd.DataFrame(out, index=frame.index)
        if extra and schema.extra_columns == "keep":
            rest = frame[extra].replace(list(schema.na_values), pd.NA)
            for column in extra:
                converted = pd.to_numeric(rest[column], errors="coerce")
                rest[column] = converted if converted.notna().sum() == rest[column].notna().sum() else rest[column]
            order = [c for c in frame.columns if c in schema.columns or c in extra]
            typed = pd.concat([typed, rest], axis=1)[order]
        return typed


def _refuse_infinite(path: Path, frame: pd.DataFrame) -> None:
    """An inferred float column holding ``inf``/``-inf`` text is an error naming the column and row.

    pandas reads ``inf`` as infinity; no clinical measurement is infinite, so such a
    cell is a data-entry or export fault, not a value to train on.
    """
    import numpy as np

    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind != "f":
            continue
        infinite = np.isinf(values.to_numpy(dtype="float64", na_value=np.nan))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0]) + 1
            raise InvalidValueError(
                f"row {row}: value {values.iloc[row - 1]!r} is infinite ({int(infinite.sum())} such cells)",
                path=path,
                field=str(column),
                hint="Fix the cells, or read with a schema whose column declares the code in missing=[...]",
            )


def _numeric_codes(spec: ColumnSpec) -> list[float]:
    codes = []
    for code in spec.missing:
        if isinstance(code, bool):
            continue
        if isinstance(code, int | float):
            codes.append(float(code))
    return codes


def _na_dtype(dtype: str) -> str:
    return {
        "float": "float64",
        "int": "Int64",
        "bool": "boolean",
        "datetime": "datetime64[ns]",
        "category": "category",
    }.get(dtype, "string")


def _spec(dtype: str, **kwargs: Any) -> ColumnSpec:
    return ColumnSpec(dtype=dtype, **kwargs)


def _wdbc_columns() -> dict[str, ColumnSpec]:
    features = [
        "radius", "texture", "perimeter", "area", "smoothness", "compactness",
        "concavity", "concave points", "symmetry", "fractal dimension",
    ]  # fmt: skip
    units = {"radius": "mm", "perimeter": "mm", "area": "mm2"}
    columns: dict[str, ColumnSpec] = {}
    for prefix in ("mean", None, "worst"):
        for feature in features:
            name = f"{prefix} {feature}" if prefix else f"{feature} error"
            columns[name] = _spec("float", unit=units.get(feature), min=0)
    columns["target"] = _spec("int", categories=None, min=0, max=1, description="0 = malignant, 1 = benign")
    columns["target_name"] = _spec("category", categories=("malignant", "benign"), required=False)
    return columns


def _stroke_bmi_spec() -> ColumnSpec:
    return _spec("float", unit="kg/m2", missing=("N/A",), min=5, max=150)


BUILTIN_SCHEMAS: dict[str, TableSchema] = {
    "heart-disease-uci": TableSchema(
        name="heart-disease-uci",
        target="num",
        columns={
            "id": _spec("int", min=0),
            "age": _spec("int", unit="years", min=0, max=120),
            "sex": _spec("category", categories=("Male", "Female")),
            "dataset": _spec(
                "category", categories=("Cleveland", "Hungary", "Switzerland", "VA Long Beach")
            ),
            "cp": _spec(
                "category",
                categories=("typical angina", "atypical angina", "non-anginal", "asymptomatic"),
                description="chest pain type",
            ),
            "trestbps": _spec("float", unit="mmHg", missing=(0,), min=0, max=300, description="resting blood pressure"),
            "chol": _spec("float", unit="mg/dL", missing=(0,), min=0, max=1000, description="serum cholesterol (0 = not measured)"),
            "fbs": _spec("bool", description="fasting blood sugar > 120 mg/dL"),
            "restecg": _spec("category", categories=("normal", "st-t abnormality", "lv hypertrophy")),
            "thalch": _spec("float", unit="bpm", min=0, max=250, description="maximum heart rate achieved"),
            "exang": _spec("bool", description="exercise-induced angina"),
            "oldpeak": _spec("float", unit="mm", min=-10, max=10, description="ST depression induced by exercise"),
            "slope": _spec("category", categories=("upsloping", "flat", "downsloping")),
            "ca": _spec("int", min=0, max=4, description="major vessels coloured by fluoroscopy"),
            "thal": _spec("category", categories=("normal", "fixed defect", "reversable defect")),
            "num": _spec("int", min=0, max=4, description="diagnosis of heart disease (0 = none)"),
        },
    ),
    "heart-failure-clinical-records": TableSchema(
        name="heart-failure-clinical-records",
        target="DEATH_EVENT",
        columns={
            "age": _spec("float", unit="years", min=0, max=120),
            "anaemia": _spec("bool"),
            "creatinine_phosphokinase": _spec("float", unit="mcg/L", min=0),
            "diabetes": _spec("bool"),
            "ejection_fraction": _spec("float", unit="%", min=0, max=100),
            "high_blood_pressure": _spec("bool"),
            "platelets": _spec("float", unit="kiloplatelets/mL", thousands=",", min=0),
            "serum_creatinine": _spec("float", unit="mg/dL", min=0),
            "serum_sodium": _spec("float", unit="mEq/L", min=0),
            "sex": _spec("int", min=0, max=1, description="1 = man, 0 = woman"),
            "smoking": _spec("bool"),
            "time": _spec("int", unit="days", min=0, description="follow-up period"),
            "DEATH_EVENT": _spec("int", min=0, max=1),
        },
    ),
    "pima-indians-diabetes": TableSchema(
        name="pima-indians-diabetes",
        target="Outcome",
        columns={
            "Pregnancies": _spec("int", min=0, max=30),
            "Glucose": _spec("float", unit="mg/dL", missing=(0,), min=0, max=400, description="2-h plasma glucose (OGTT)"),
            "BloodPressure": _spec("float", unit="mmHg", missing=(0,), min=0, max=250, description="diastolic blood pressure"),
            "SkinThickness": _spec("float", unit="mm", missing=(0,), min=0, max=120, description="triceps skinfold"),
            "Insulin": _spec("float", unit="uU/mL", missing=(0,), min=0, max=1000, description="2-h serum insulin"),
            "BMI": _spec("float", unit="kg/m2", missing=(0,), min=0, max=100),
            "DiabetesPedigreeFunction": _spec("float", min=0),
            "Age": _spec("int", unit="years", min=0, max=120),
            "Outcome": _spec("int", min=0, max=1),
        },
    ),
    "breast-cancer-wisconsin-diagnostic": TableSchema(
        name="breast-cancer-wisconsin-diagnostic",
        target="target",
        columns=_wdbc_columns(),
    ),
    "stroke-kaggle": TableSchema(
        name="stroke-kaggle",
        target="stroke",
        columns={
            "id": _spec("int", min=0),
            "gender": _spec("category", categories=("Male", "Female", "Other")),
            "age": _spec("float", unit="years", min=0, max=120),
            "hypertension": _spec("bool"),
            "heart_disease": _spec("bool"),
            "ever_married": _spec("bool"),
            "work_type": _spec(
                "category",
                categories=("children", "Govt_job", "Never_worked", "Private", "Self-employed"),
            ),
            "Residence_type": _spec("category", categories=("Rural", "Urban")),
            "avg_glucose_level": _spec("float", unit="mg/dL", min=0, max=500),
            "bmi": _stroke_bmi_spec(),
            "smoking_status": _spec(
                "category",
                categories=("formerly smoked", "never smoked", "smokes", "Unknown"),
                description="'Unknown' is a category of the source data, not NA",
            ),
            "stroke": _spec("int", min=0, max=1),
        },
    ),
}
"""Schemas for the tabular data sets of the mirror, keyed by data-set name."""

BUILTIN_SCHEMA_FILES: dict[str, str] = {
    "heart-disease-uci": "heart_disease_uci_cleveland_hungary.csv",
    "heart-failure-clinical-records": "heart_failure_clinical_records_dataset.csv",
    "pima-indians-diabetes": "diabetes.csv",
    "breast-cancer-wisconsin-diagnostic": "wdbc_with_header.csv",
    "stroke-kaggle": "healthcare-dataset-stroke-data.csv",
}
"""The file each built-in schema describes, inside its data-set folder."""


__all__ = [
    "BUILTIN_SCHEMAS",
    "BUILTIN_SCHEMA_FILES",
    "ColumnSpec",
    "DEFAULT_NA_VALUES",
    "TableReader",
    "TableSchema",
]
