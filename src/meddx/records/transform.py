"""scikit-learn steps that turn a clinical table into model inputs.

The steps run in a :class:`sklearn.pipeline.Pipeline` saved inside the model
package, so training and prediction apply exactly the same rules:

1. :class:`UnitHarmoniser` converts columns given in another unit (``chol`` in
   mmol/L, glucose in mmol/L) to the unit the task declares. The units of a frame
   are read from ``frame.attrs["units"]`` (set by the FHIR/HL7 and CSV readers).
2. :class:`MissingCodes` turns declared "not measured" codes (``chol = 0``, Pima's
   zeros) and implausible values (outside the declared range, unknown categories)
   into NaN.
3. :func:`encoder` imputes (median for numbers, a ``missing`` level for categories),
   adds a 0/1 missingness indicator for each number that was missing in training,
   one-hot encodes categories and standardises numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from meddx.records.schema import TaskSchema


def _task(task: Any) -> TaskSchema:
    return task if isinstance(task, TaskSchema) else TaskSchema.from_dict(task)


class UnitHarmoniser(TransformerMixin, BaseEstimator):
    """Convert feature columns to the task's declared units (``X.attrs["units"]`` gives the source units)."""

    def __init__(self, task: Any = None) -> None:
        self.task = task

    def fit(self, X: Any, y: Any = None) -> UnitHarmoniser:
        self.fitted_ = True
        return self

    def transform(self, X: Any) -> Any:
        from meddx.exceptions import InvalidValueError
        from meddx.records.schema import unit_factor

        task = _task(self.task)
        units = dict(getattr(X, "attrs", {}).get("units") or {})
        if not units:
            return X
        X = X.copy()
        for f in task.features:
            unit = units.get(f.name)
            if not unit or f.kind == "categorical" or unit == f.unit:
                continue
            factor = unit_factor(f, unit)
            if factor is None:
                raise InvalidValueError(
                    f"column {f.name!r} is in {unit!r}, which meddx cannot convert to {f.unit!r}", field=f.name,
                    hint=f"Known units: {[f.unit, *f.conversions]}")
            X[f.name] = X[f.name].astype(float) * float(factor)
        X.attrs["units"] = {k: v for k, v in units.items() if k not in task.names}
        return X


class MissingCodes(TransformerMixin, BaseEstimator):
    """Declared missing-value codes and implausible values become NaN."""

    def __init__(self, task: Any = None) -> None:
        self.task = task

    def fit(self, X: Any, y: Any = None) -> MissingCodes:
        self.fitted_ = True
        return self

    def transform(self, X: Any) -> Any:
        task = _task(self.task)
        X = task.frame(X).copy()
        for f in task.features:
            col = X[f.name]
            if f.kind == "categorical":
                if f.categories is not None:
                    X[f.name] = col.where(col.isin(f.categories), np.nan)
                continue
            bad = col.isin([float(c) for c in f.missing_codes])
            if f.min is not None:
                bad |= col < f.min
            if f.max is not None:
                bad |= col > f.max
            X[f.name] = col.where(~bad, np.nan)
        return X


def encoder(task: TaskSchema) -> Any:
    """Impute (+ missingness indicators), one-hot encode and scale."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if task.numeric():
        parts.append(("num", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]), task.numeric()))
    if task.categorical():
        parts.append(("cat", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), task.categorical()))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def preprocessor(task: TaskSchema) -> Any:
    """The whole preprocessing pipeline for ``task``."""
    from sklearn.pipeline import Pipeline

    spec = task.to_dict()
    return Pipeline([("units", UnitHarmoniser(spec)), ("codes", MissingCodes(spec)), ("encode", encoder(task))])


def feature_groups(fitted_preprocessor: Any, task: TaskSchema) -> np.ndarray:
    """For each output column of a fitted :func:`preprocessor`, the index of the task feature it came from."""
    ct = fitted_preprocessor.named_steps["encode"]
    index = {n: i for i, n in enumerate(task.names)}
    groups: list[int] = []
    for name, pipe, cols in ct.transformers_:
        if name == "num":
            groups += [index[c] for c in cols]
            indicator = pipe.named_steps["impute"].indicator_
            if indicator is not None:
                groups += [index[cols[j]] for j in indicator.features_]
        elif name == "cat":
            for c, cats in zip(cols, pipe.named_steps["onehot"].categories_):
                groups += [index[c]] * len(cats)
    return np.asarray(groups, dtype=np.int64)


__all__ = ["MissingCodes", "UnitHarmoniser", "encoder", "feature_groups", "preprocessor"]
