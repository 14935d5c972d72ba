"""Clinical feature preparation with explicit missingness.

:func:`clean_clinical` turns text into numbers and sets implausible values missing
(°F temperatures are converted to °C), counting every change. :class:`ClinicalPrep`
is fitted on training rows only: numeric columns get median imputation, a
missingness indicator and z-scoring; text columns become one-hot categories plus a
missingness indicator. A row with no clinical value at all is "clinical modality
absent" (:attr:`ClinicalPrep.present`), which the fusion models treat as a missing
modality rather than as a patient with median values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: plausible range per known column (values outside are set missing and counted)
PLAUSIBLE = {
    "age": (0.0, 110.0),
    "temperature": (30.0, 45.0),  # °C; 86-113 read as °F and converted first
    "pO2_saturation": (20.0, 100.0),  # % (values above 100 cannot be a saturation)
    "leukocyte_count": (0.0, 100.0),  # 10^9/L
    "neutrophil_count": (0.0, 100.0),
    "lymphocyte_count": (0.0, 50.0),
}
CATEGORICAL = {"sex"}
_MISSING_TEXT = {"", "?", "na", "nan", "none", "unknown", "null"}


def clean_clinical(table: Any) -> tuple[Any, dict[str, dict[str, int]]]:
    """Numbers for numeric columns, stripped text for categorical ones; implausible values -> NaN.

    Returns the cleaned frame and ``{column: {"unparsed": n, "implausible": n, "fahrenheit": n}}``.
    """
    import pandas as pd

    out = pd.DataFrame(index=table.index)
    report: dict[str, dict[str, int]] = {}
    for column in table.columns:
        raw = table[column].astype(object).where(table[column].notna(), None)
        text = raw.map(lambda v: None if v is None or str(v).strip().lower() in _MISSING_TEXT else str(v).strip())
        numbers = pd.to_numeric(text, errors="coerce")
        numeric_share = numbers.notna().sum() / max(text.notna().sum(), 1)
        if column in CATEGORICAL or (column not in PLAUSIBLE and numeric_share < 0.9):
            out[column] = text
            report[column] = {"unparsed": 0, "implausible": 0}
            continue
        counts = {"unparsed": int((text.notna() & numbers.isna()).sum()), "implausible": 0}
        if column == "temperature":
            fahrenheit = numbers.between(86.0, 113.0)
            counts["fahrenheit"] = int(fahrenheit.sum())
            numbers = numbers.where(~fahrenheit, (numbers - 32.0) * 5.0 / 9.0)
        if column in PLAUSIBLE:
            lo, hi = PLAUSIBLE[column]
            bad = numbers.notna() & ~numbers.between(lo, hi)
            counts["implausible"] = int(bad.sum())
            numbers = numbers.where(~bad)
        out[column] = numbers.astype(float)
        report[column] = counts
    return out, report


class ClinicalPrep:
    """Fit on training rows; transform any rows (missing columns are treated as missing values)."""

    def __init__(self) -> None:
        self.numeric: list[str] = []
        self.categorical: dict[str, list[str]] = {}
        self.median: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        self.columns: list[str] = []

    def fit(self, table: Any) -> ClinicalPrep:
        import pandas as pd

        self.columns = list(table.columns)
        for column in self.columns:
            values = table[column]
            if pd.api.types.is_numeric_dtype(values):
                self.numeric.append(column)
                observed = values.dropna().astype(float)
                median = float(observed.median()) if len(observed) else 0.0
                filled = values.astype(float).fillna(median)
                self.median[column] = median
                self.mean[column] = float(filled.mean()) if len(filled) else 0.0
                std = float(filled.std(ddof=0)) if len(filled) else 1.0
                self.std[column] = std if std > 1e-8 else 1.0
            else:
                counts = values.dropna().astype(str).value_counts()
                self.categorical[column] = [str(c) for c in counts.index if counts[c] >= 2][:10]
        return self

    @property
    def feature_names(self) -> list[str]:
        names = []
        for column in self.numeric:
            names += [column, f"{column}_missing"]
        for column, cats in self.categorical.items():
            names += [f"{column}={c}" for c in cats] + [f"{column}_missing"]
        return names

    def transform(self, table: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(X, present)``: the feature matrix and, per row, whether any clinical value was observed."""
        import pandas as pd

        n = len(table)
        blocks, observed = [], np.zeros(n, dtype=bool)
        for column in self.numeric:
            values = (pd.to_numeric(table[column], errors="coerce") if column in table.columns
                      else pd.Series([np.nan] * n, index=table.index)).astype(float)
            missing = values.isna().to_numpy()
            observed |= ~missing
            z = (values.fillna(self.median[column]).to_numpy() - self.mean[column]) / self.std[column]
            blocks += [z, missing.astype(float)]
        for column, cats in self.categorical.items():
            values = table[column] if column in table.columns else pd.Series([None] * n, index=table.index)
            text = values.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
            missing = text.isna().to_numpy()
            observed |= ~missing
            blocks += [(text == c).to_numpy().astype(float) for c in cats] + [missing.astype(float)]
        X = np.stack(blocks, axis=1).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
        return X, observed

    def missing_features(self, row: dict[str, Any]) -> list[str]:
        """Names of this model's clinical inputs that ``row`` lacks."""
        out = []
        for column in [*self.numeric, *self.categorical]:
            value = row.get(column)
            if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
                out.append(column)
        return out

    def state(self) -> dict[str, Any]:
        return {"numeric": self.numeric, "categorical": self.categorical, "median": self.median,
                "mean": self.mean, "std": self.std, "columns": self.columns}
