"""scikit-learn steps that turn a clinical table into model inputs.

The steps run in a :class:`sklearn.pipeline.Pipeline` saved inside the model
package, so training and prediction apply exactly the same rules:

1. :class:`UnitHarmoniser` converts columns given in another unit (``chol`` in
   mmol/L, glucose in mmol/L) to the unit the task declares. The units of a frame
   are read from ``frame.attrs["units"]`` (set by the FHIR/HL7 and CSV readers).
2. :class:`MissingCodes` turns declared "not measured" codes (``chol = 0``, Pima's
   zeros) and implausible values (outside the declared range, unknown categories)
   into NaN.
3. :func:`encoder` imputes and encodes, by the task's ``imputation`` (:data:`ENCODERS`):

   * ``indicator``: median for numbers, a ``missing`` level for categories, a 0/1
     missingness indicator for each number that was missing in training, one-hot, scaling.
     Good when missingness means the same thing everywhere (Pima's unmeasured insulin).
   * ``conditional``: categories one-hot with the whole row left missing when the value is,
     then every column imputed from the others (:class:`sklearn.impute.IterativeImputer`,
     a conditional mean), then scaling; **no** indicators and no ``missing`` level. Meant
     for pooled multi-site data: when a column is missing mostly at one site (``ca``, ``thal``
     at Hungary), an indicator learns "this is that site" and shifts every prediction at a
     new hospital where the column is absent; the conditional mean instead fills the gap
     from the patient's other values (close to a model refitted without the column).

:func:`missing_reasons` counts, per feature, why values of a raw table are missing
(blank, the declared "not measured" code such as ``chol = 0``, implausible, column absent).
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


def indicator_encoder(task: TaskSchema) -> Any:
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


class ConditionalEncoder(TransformerMixin, BaseEstimator):
    """One-hot (missing stays missing), conditional-mean imputation of every column, numbers scaled; no indicators.

    ``method="mean"`` imputes each column's training mean instead (the plain baseline).

    ``columns_`` names each output column (``feature`` or ``feature=level``) and
    ``feature_of_`` the task feature it came from (for grouping attributions).
    """

    def __init__(self, task: Any = None, method: str = "iterative", max_iter: int = 10, seed: int = 0) -> None:
        self.task = task
        self.method = method
        self.max_iter = max_iter
        self.seed = seed

    @staticmethod
    def columns_of(task: Any) -> list[str]:
        """Output column names for a task whose categoricals all declare their categories."""
        task = _task(task)
        return [f.name if f.kind != "categorical" else f"{f.name}={c}" for f in task.features
                for c in ((None,) if f.kind != "categorical" else f.categories or ())]

    def _matrix(self, X: Any) -> np.ndarray:
        task = _task(self.task)
        cols = []
        for f in task.features:
            v = X[f.name]
            if f.kind == "categorical":
                for level in f.categories or self.levels_.get(f.name, ()):
                    cols.append(np.where(v.isna(), np.nan, (v == level).astype(float)))
            else:
                cols.append(v.astype(float).to_numpy())
        return np.column_stack(cols) if cols else np.zeros((len(X), 0))

    def fit(self, X: Any, y: Any = None) -> ConditionalEncoder:
        import warnings

        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer
        from sklearn.preprocessing import StandardScaler

        task = _task(self.task)
        self.levels_ = {f.name: tuple(sorted(X[f.name].dropna().astype(str).unique()))
                        for f in task.features if f.kind == "categorical" and f.categories is None}
        self.columns_, self.feature_of_ = [], []
        for f in task.features:
            levels = (f.categories or self.levels_.get(f.name, ())) if f.kind == "categorical" else (None,)
            for level in levels:
                self.columns_.append(f.name if level is None else f"{f.name}={level}")
                self.feature_of_.append(f.name)
        M = self._matrix(X)
        if self.method == "mean":
            from sklearn.impute import SimpleImputer

            self.imputer_ = SimpleImputer(strategy="mean", keep_empty_features=True)
        else:
            self.imputer_ = IterativeImputer(max_iter=self.max_iter, random_state=self.seed,
                                             keep_empty_features=True)
        with warnings.catch_warnings():  # "early stopping criterion not reached" is harmless at 10 rounds
            warnings.simplefilter("ignore")
            filled = self.imputer_.fit_transform(M)
        # numbers are standardised; one-hot levels stay 0/1 (imputed: a probability), as in the indicator encoder,
        # so a rare level does not become a huge z-score for the OOD distance
        self.numeric_ = np.asarray(["=" not in c for c in self.columns_], dtype=bool)
        self.scaler_ = StandardScaler().fit(filled[:, self.numeric_])
        self.n_features_in_ = len(task.features)
        return self

    def transform(self, X: Any) -> np.ndarray:
        out = self.imputer_.transform(self._matrix(X))
        out[:, self.numeric_] = self.scaler_.transform(out[:, self.numeric_])
        return out


ENCODERS: dict[str, Any] = {"indicator": indicator_encoder,
                            "conditional": lambda task: ConditionalEncoder(task.to_dict())}
"""Imputation + encoding per ``TaskSchema.imputation`` (see the module docstring)."""


def encoder(task: TaskSchema) -> Any:
    """The task's imputation + encoding step (:data:`ENCODERS`)."""
    from meddx.exceptions import ConfigError

    try:
        return ENCODERS[task.imputation](task)
    except KeyError:
        raise ConfigError(f"unknown imputation {task.imputation!r} for task {task.name}", field="imputation",
                          hint=f"Use one of {sorted(ENCODERS)}") from None


def missing_reasons(raw: Any, task: TaskSchema) -> dict[str, dict[str, int]]:
    """Per feature, how many values of a raw table (cells as read, before typing) are missing, and why.

    Reasons: ``column absent`` (the whole source lacks it), ``blank``, ``code V (not measured)``
    (a declared missing-value code such as ``chol = 0``), ``outside plausible range``,
    ``unknown category``, ``not a number``. Features with nothing missing are left out.
    """
    import pandas as pd

    out: dict[str, dict[str, int]] = {}
    n = len(raw)
    for f in task.features:
        if f.name not in raw.columns:
            out[f.name] = {"column absent": int(n)}
            continue
        col = raw[f.name]
        text = col.astype(object).map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                                      or v is pd.NA else str(v).strip())
        counts: dict[str, int] = {}
        blank = text.str.lower().isin(["", "na", "n/a", "nan", "null", "none", "?"])
        if blank.any():
            counts["blank"] = int(blank.sum())
        rest = text[~blank]
        if f.kind == "categorical":
            if f.categories is not None and (~rest.isin(f.categories)).any():
                counts["unknown category"] = int((~rest.isin(f.categories)).sum())
        else:
            mapped = rest.str.lower().map({"true": "1", "false": "0", "yes": "1", "no": "0"}).fillna(rest)
            values = pd.to_numeric(mapped, errors="coerce")
            if values.isna().any():
                counts["not a number"] = int(values.isna().sum())
            for code in f.missing_codes:
                hit = values == float(code)
                if hit.any():
                    counts[f"code {float(code):g} (not measured)"] = int(hit.sum())
                values = values.where(~hit)
            low = values < f.min if f.min is not None else pd.Series(False, index=values.index)
            high = values > f.max if f.max is not None else pd.Series(False, index=values.index)
            if (low | high).any():
                counts["outside plausible range"] = int((low | high).sum())
        if counts:
            out[f.name] = counts
    return out


def preprocessor(task: TaskSchema) -> Any:
    """The whole preprocessing pipeline for ``task``."""
    from sklearn.pipeline import Pipeline

    spec = task.to_dict()
    return Pipeline([("units", UnitHarmoniser(spec)), ("codes", MissingCodes(spec)), ("encode", encoder(task))])


def feature_groups(fitted_preprocessor: Any, task: TaskSchema) -> np.ndarray:
    """For each output column of a fitted :func:`preprocessor`, the index of the task feature it came from."""
    ct = fitted_preprocessor.named_steps["encode"]
    index = {n: i for i, n in enumerate(task.names)}
    if isinstance(ct, ConditionalEncoder):
        return np.asarray([index[f] for f in ct.feature_of_], dtype=np.int64)
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


__all__ = ["ENCODERS", "ConditionalEncoder", "MissingCodes", "UnitHarmoniser", "encoder", "feature_groups",
           "indicator_encoder", "missing_reasons", "preprocessor"]
