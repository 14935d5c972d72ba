"""The five model kinds for clinical records, as scikit-learn classifiers on encoded features.

``logreg``   L2 logistic regression, C chosen by inner 5-fold CV on log-loss (calibrated by its loss).
``mlp``      a small PyTorch MLP (2 hidden layers, dropout, AdamW, early stopping).
``tabnet``   pytorch-tabnet's TabNetClassifier (early stopping).
``catboost`` gradient-boosted trees (CatBoost, early stopping).
``hybrid``   TabNet and CatBoost averaged (the IoMT heart-disease hybrid of the literature).
``blend``    logistic regression and monotone gradient boosting (scikit-learn's
             HistGradientBoosting with the risk directions of :data:`MONOTONE`) averaged: the
             heart default, chosen on leave-one-site-out and simulated-other-site checks.

Every model except ``logreg`` holds out a stratified 20% of its training rows for early
stopping and fits Platt scaling (a 2-parameter logistic map of the logit) on that same
held-out part, so every model's probabilities are calibrated; the hybrid averages its
members' calibrated probabilities. All of them run on one CPU thread by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from meddx.exceptions import ConfigError

EPS = 1e-6


def logit(p: Any) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


class Platt(BaseEstimator):
    """Logistic recalibration ``sigmoid(a * logit(p) + b)``; also used to recalibrate at a new site.

    ``intercept_only=True`` keeps ``a = 1`` and fits ``b`` alone (recalibration-in-the-large,
    the choice for small local samples, where a slope estimate is noisy).
    """

    def __init__(self, C: float = 1e4, intercept_only: bool = False) -> None:
        self.C = C
        self.intercept_only = intercept_only

    def fit(self, p: Any, y: Any) -> Platt:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        self.a_, self.b_ = 1.0, 0.0
        if len(np.unique(y)) < 2:
            return self
        z = logit(p)
        if self.intercept_only:
            from scipy.optimize import minimize_scalar

            def loss(b: float) -> float:
                q = np.clip(1.0 / (1.0 + np.exp(-(z + b))), EPS, 1 - EPS)
                return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

            self.b_ = float(minimize_scalar(loss, bounds=(-10, 10), method="bounded").x)
            return self
        lr = LogisticRegression(C=self.C, max_iter=1000).fit(z[:, None], y)
        self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def transform(self, p: Any) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a_ * logit(p) + self.b_)))

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a_, "b": self.b_, "intercept_only": self.intercept_only}


def _split(X: np.ndarray, y: np.ndarray, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    return train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)


class _Base(ClassifierMixin, BaseEstimator):
    kind = "base"

    def predict_proba(self, X: Any) -> np.ndarray:
        p1 = self.positive_proba(np.asarray(X, dtype=np.float32))
        return np.column_stack([1 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


class _HeldOut(_Base):
    """Fits the core model with early stopping on a held-out 20%, then Platt-scales on it."""

    def fit(self, X: Any, y: Any) -> _HeldOut:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.array([0, 1])
        tr, va = _split(X, y, self.seed)
        self._fit_core(X[tr], y[tr], X[va], y[va])
        self.platt_ = Platt().fit(self._raw(X[va]), y[va])
        self.n_features_in_ = X.shape[1]
        return self

    def raw_proba(self, X: Any) -> np.ndarray:
        return self._raw(np.asarray(X, dtype=np.float32))

    def positive_proba(self, X: np.ndarray) -> np.ndarray:
        return self.platt_.transform(self._raw(X))


class LogReg(_Base):
    kind = "logreg"

    def __init__(self, seed: int = 0, Cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)) -> None:
        self.seed = seed
        self.Cs = Cs

    def fit(self, X: Any, y: Any) -> LogReg:
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        import warnings

        y = np.asarray(y)
        self.classes_ = np.array([0, 1])
        with warnings.catch_warnings():  # scikit-learn 1.9 announces 1.10 API changes; the fit is the same
            warnings.simplefilter("ignore", FutureWarning)
            self.model_ = LogisticRegressionCV(
                Cs=list(self.Cs), cv=StratifiedKFold(5, shuffle=True, random_state=self.seed),
                scoring="neg_log_loss", max_iter=5000).fit(X, y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def positive_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X.astype(np.float64))[:, 1]

    def decision_function(self, X: Any) -> np.ndarray:
        return self.model_.decision_function(np.asarray(X, dtype=np.float64))


class MLP(_HeldOut):
    kind = "mlp"

    def __init__(self, seed: int = 0, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.2, lr: float = 3e-3,
                 weight_decay: float = 1e-2, batch_size: int = 128, max_epochs: int = 200, patience: int = 20) -> None:
        self.seed, self.hidden, self.dropout, self.lr = seed, hidden, dropout, lr
        self.weight_decay, self.batch_size, self.max_epochs, self.patience = weight_decay, batch_size, max_epochs, patience

    def _build(self, d: int) -> Any:
        import torch.nn as nn

        layers: list[Any] = []
        for h in self.hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(self.dropout)]
            d = h
        layers.append(nn.Linear(d, 1))
        return nn.Sequential(*layers)

    def _fit_core(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray) -> None:
        import torch

        torch.manual_seed(self.seed)
        net = self._build(X.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.float32))
        Xvt, yvt = torch.from_numpy(Xv), torch.from_numpy(yv.astype(np.float32))
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, wait = float("inf"), None, 0
        for _ in range(self.max_epochs):
            net.train()
            for idx in torch.randperm(len(yt), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss_fn(net(Xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = float(loss_fn(net(Xvt).squeeze(1), yvt))
            if val < best - 1e-4:
                best, wait = val, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                wait += 1
                if wait >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.in_features_ = X.shape[1]

    def _raw(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.net_(torch.from_numpy(X)).squeeze(1)).numpy().astype(float)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.contiguous() for k, v in self.net_.state_dict().items()}


class TabNet(_HeldOut):
    kind = "tabnet"

    def __init__(self, seed: int = 0, n_d: int = 8, n_steps: int = 3, gamma: float = 1.3, lr: float = 2e-2,
                 lambda_sparse: float = 1e-4, max_epochs: int = 100, patience: int = 15, batch_size: int = 256) -> None:
        self.seed, self.n_d, self.n_steps, self.gamma, self.lr = seed, n_d, n_steps, gamma, lr
        self.lambda_sparse, self.max_epochs, self.patience, self.batch_size = lambda_sparse, max_epochs, patience, batch_size

    def _fit_core(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray) -> None:
        import torch
        from pytorch_tabnet.tab_model import TabNetClassifier

        batch = int(min(self.batch_size, max(16, len(y) // 2)))
        self.model_ = TabNetClassifier(
            n_d=self.n_d, n_a=self.n_d, n_steps=self.n_steps, gamma=self.gamma, lambda_sparse=self.lambda_sparse,
            optimizer_fn=torch.optim.Adam, optimizer_params={"lr": self.lr}, seed=self.seed, verbose=0,
            device_name="cpu")
        self.model_.fit(X, y, eval_set=[(Xv, yv)], eval_metric=["logloss"], max_epochs=self.max_epochs,
                        patience=self.patience, batch_size=batch, virtual_batch_size=min(64, batch),
                        drop_last=True, compute_importance=False)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1].astype(float)

    def masks(self, X: Any) -> np.ndarray:
        """TabNet's own per-row feature-selection mask (rows sum to 1 over encoded columns)."""
        explain, _ = self.model_.explain(np.asarray(X, dtype=np.float32))
        return explain / np.clip(explain.sum(1, keepdims=True), 1e-12, None)


class CatBoost(_HeldOut):
    kind = "catboost"

    def __init__(self, seed: int = 0, iterations: int = 1000, depth: int = 4, learning_rate: float = 0.05,
                 l2_leaf_reg: float = 3.0, early_stopping: int = 50, threads: int = 1) -> None:
        self.seed, self.iterations, self.depth, self.learning_rate = seed, iterations, depth, learning_rate
        self.l2_leaf_reg, self.early_stopping, self.threads = l2_leaf_reg, early_stopping, threads

    def _fit_core(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray) -> None:
        from catboost import CatBoostClassifier

        self.model_ = CatBoostClassifier(
            iterations=self.iterations, depth=self.depth, learning_rate=self.learning_rate,
            l2_leaf_reg=self.l2_leaf_reg, random_seed=self.seed, thread_count=self.threads, verbose=False,
            allow_writing_files=False, early_stopping_rounds=self.early_stopping)
        self.model_.fit(X, y, eval_set=(Xv, yv), use_best_model=True)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1].astype(float)

    def shap_values(self, X: Any) -> np.ndarray:
        """TreeSHAP values (log-odds of the uncalibrated trees), one column per encoded feature."""
        from catboost import Pool

        return self.model_.get_feature_importance(Pool(np.asarray(X, dtype=np.float32)), type="ShapValues")[:, :-1]


class Hybrid(_Base):
    """TabNet + CatBoost, their calibrated probabilities averaged (``weight`` on TabNet)."""

    kind = "hybrid"

    def __init__(self, seed: int = 0, weight: float = 0.5) -> None:
        self.seed = seed
        self.weight = weight

    def fit(self, X: Any, y: Any) -> Hybrid:
        self.classes_ = np.array([0, 1])
        self.tabnet_ = TabNet(seed=self.seed).fit(X, y)
        self.catboost_ = CatBoost(seed=self.seed).fit(X, y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    @classmethod
    def from_members(cls, tabnet: TabNet, catboost: CatBoost, weight: float = 0.5) -> Hybrid:
        h = cls(seed=tabnet.seed, weight=weight)
        h.classes_, h.tabnet_, h.catboost_, h.n_features_in_ = np.array([0, 1]), tabnet, catboost, tabnet.n_features_in_
        return h

    def positive_proba(self, X: np.ndarray) -> np.ndarray:
        return self.weight * self.tabnet_.positive_proba(X) + (1 - self.weight) * self.catboost_.positive_proba(X)


MONOTONE: dict[str, dict[str, int]] = {
    "heart-disease-uci": {"age": 1, "sex=Male": 1, "cp=asymptomatic": 1, "trestbps": 1, "chol": 1, "fbs": 1,
                          "thalch": -1, "exang": 1, "oldpeak": 1, "ca": 1}}
"""Per task, encoded columns whose risk may only rise (+1) or fall (-1) with the value: clinical
knowledge imposed on the boosted trees so they cannot learn a site's quirks the other way round."""


class Blend(_Base):
    """Logistic regression and monotone gradient boosting, their probabilities averaged.

    ``monotone`` is the constraint per encoded column (+1, -1, 0), set by :func:`make_pipeline`
    from :data:`MONOTONE`. The boosted trees stop early on a held-out 20% (log-loss); both
    members are fitted by log-loss, so the average needs no separate calibrator.
    """

    kind = "blend"

    def __init__(self, seed: int = 0, monotone: tuple[int, ...] | None = None, weight: float = 0.5,
                 max_depth: int = 3, learning_rate: float = 0.05, max_iter: int = 200) -> None:
        self.seed, self.monotone, self.weight = seed, monotone, weight
        self.max_depth, self.learning_rate, self.max_iter = max_depth, learning_rate, max_iter

    def fit(self, X: Any, y: Any) -> Blend:
        from sklearn.ensemble import HistGradientBoostingClassifier

        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.array([0, 1])
        self.logreg_ = LogReg(seed=self.seed).fit(X, y)
        cst = list(self.monotone) if self.monotone is not None and len(self.monotone) == X.shape[1] else None
        self.trees_ = HistGradientBoostingClassifier(
            max_depth=self.max_depth, learning_rate=self.learning_rate, max_iter=self.max_iter,
            l2_regularization=1.0, monotonic_cst=cst, early_stopping=True, validation_fraction=0.2,
            random_state=self.seed).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def positive_proba(self, X: np.ndarray) -> np.ndarray:
        trees = self.trees_.predict_proba(np.asarray(X, dtype=np.float32))[:, 1]
        return self.weight * self.logreg_.positive_proba(X) + (1 - self.weight) * trees


MODELS: dict[str, Callable[..., Any]] = {"logreg": LogReg, "mlp": MLP, "tabnet": TabNet, "catboost": CatBoost,
                                         "hybrid": Hybrid, "blend": Blend}
ARCHITECTURES = {"logreg": "logistic regression (L2, inner-CV C)", "mlp": "MLP 64-32 (PyTorch)",
                 "tabnet": "TabNet (pytorch-tabnet)", "catboost": "CatBoost gradient boosting",
                 "hybrid": "TabNet + CatBoost average",
                 "blend": "logistic regression + monotone gradient boosting (scikit-learn) average"}


def make_model(kind: str, seed: int = 0, **params: Any) -> Any:
    try:
        return MODELS[kind](seed=seed, **params)
    except KeyError:
        raise ConfigError(f"unknown records model {kind!r}", field="model", hint=f"Choose one of {list(MODELS)}") from None


def make_pipeline(task: Any, kind: str, seed: int = 0, **params: Any) -> Any:
    """Preprocessing + model, one scikit-learn Pipeline."""
    from sklearn.pipeline import Pipeline

    from meddx.records.transform import ConditionalEncoder, preprocessor

    if kind == "blend" and "monotone" not in params and task.imputation == "conditional":
        directions = MONOTONE.get(task.name, {})
        params["monotone"] = tuple(directions.get(c, 0) for c in ConditionalEncoder.columns_of(task))
    return Pipeline([("pre", preprocessor(task)), ("model", make_model(kind, seed, **params))])


def select_model(task: Any, frame: Any, y: np.ndarray, candidates: tuple[str, ...] = ("logreg", "catboost", "mlp"),
                 *, repeats: int = 2, folds: int = 5, seed: int = 0, margin: float = 0.005) -> tuple[str, dict[str, float]]:
    """Choose a model by repeated stratified CV on the training rows only (never the test rows).

    Logistic regression is kept unless another model's mean CV AUC beats it by more than ``margin``.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    scores: dict[str, list[float]] = {c: [] for c in candidates}
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for tr, te in cv.split(frame, y):
        for c in candidates:
            pipe = make_pipeline(task, c, seed).fit(frame.iloc[tr], y[tr])
            scores[c].append(roc_auc_score(y[te], pipe.predict_proba(frame.iloc[te])[:, 1]))
    means = {c: float(np.mean(v)) for c, v in scores.items()}
    best = max(means, key=means.get)
    if "logreg" in means and means[best] - means["logreg"] <= margin:
        best = "logreg"
    return best, means


__all__ = ["ARCHITECTURES", "Blend", "CatBoost", "Hybrid", "LogReg", "MLP", "MODELS", "MONOTONE", "Platt", "TabNet",
           "logit",
           "make_model", "make_pipeline", "select_model"]
