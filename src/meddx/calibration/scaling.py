"""Post-hoc calibrators fitted on validation logits.

Deep networks are usually over-confident: their softmax says 99% where they are
right 90% of the time. A calibrator is a small map from logits to probabilities,
fitted on held-out validation logits ``(N, C)`` and labels ``(N,)`` by
minimising the negative log-likelihood, that fixes this without changing the
network (and, for ``temperature``, without changing any prediction).

=============  ==========================================  =====================
name           map                                         parameters
=============  ==========================================  =====================
identity       ``softmax(z)``                              none
temperature    ``softmax(z / T)``                          1 (Guo et al. 2017)
vector         ``softmax(w * z + b)``                      2C (L2 towards identity)
dirichlet      ``softmax(W log softmax(z) + b)``           C^2 + C, ODIR (Kull et al. 2019)
=============  ==========================================  =====================

Every calibrator round-trips through JSON (``to_dict`` / :func:`calibrator_from_dict`)
so that it can be stored in a model package's ``package.json``. Fitting is
deterministic (L-BFGS-B from the identity map, on numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from meddx.calibration.metrics import _check_labels, _check_logits, _lookup
from meddx.exceptions import ConfigError, InvalidValueError

CALIBRATORS: dict[str, type[Calibrator]] = {}


def register_calibrator(name: str) -> Callable[[type[Calibrator]], type[Calibrator]]:
    """Class decorator: register a :class:`Calibrator` subclass under ``name``."""

    def deco(cls: type[Calibrator]) -> type[Calibrator]:
        cls.name = name
        CALIBRATORS[name] = cls
        return cls

    return deco


def list_calibrators() -> list[str]:
    """Names accepted by :func:`create_calibrator`, sorted."""
    return sorted(CALIBRATORS)


def create_calibrator(name: str, **kwargs: Any) -> Calibrator:
    """A new, unfitted calibrator, e.g. ``create_calibrator("dirichlet", reg_lambda=1e-2)``."""
    cls = _lookup(CALIBRATORS, name, "calibrator", "method")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InvalidValueError(f"bad options for calibrator {name!r}: {exc}", field="method") from None


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator written by :meth:`Calibrator.to_dict` (fitted or not)."""
    if not isinstance(d, dict) or "name" not in d:
        raise InvalidValueError("a calibrator dict needs a 'name' key", field="name",
                                hint=f"Expected the output of Calibrator.to_dict(); known names: {list_calibrators()}")
    obj = create_calibrator(d["name"], **dict(d.get("params") or {}))
    state = d.get("state")
    if state is not None:
        n_classes = d.get("n_classes")
        if not isinstance(n_classes, int) or n_classes < 2:
            raise InvalidValueError(f"n_classes must be an integer >= 2, got {n_classes!r}", field="n_classes")
        obj.n_classes_ = n_classes
        obj._set_state(state)
    return obj


# --------------------------------------------------------------------------- numerics


def softmax(logits: Any) -> np.ndarray:
    """Softmax over the last axis (classes), computed stably (float64); any leading shape."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: Any) -> np.ndarray:
    """Row-wise log-softmax, computed stably (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _nll_and_grad(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of ``softmax(z)`` and its gradient with respect to ``z``."""
    n = len(labels)
    logp = log_softmax(z)
    loss = float(-np.mean(logp[np.arange(n), labels]))
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    return loss, grad / n


def _minimize(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int,
              bounds: list[tuple[float, float]] | None = None) -> np.ndarray:
    from scipy.optimize import minimize

    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-12})
    return np.asarray(res.x, dtype=np.float64)


def _floats(values: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
    """A state entry read back from JSON, with its expected shape."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{field} must be numbers", field=field) from None
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise InvalidValueError(f"{field} must be finite with shape {shape}, got {arr.shape}", field=field)
    return arr


# --------------------------------------------------------------------------- calibrators


class Calibrator:
    """Base class: a map from logits ``(N, C)`` to calibrated probabilities ``(N, C)``.

    Subclasses implement ``_fit``, ``_logits`` (the calibrated logits), ``_state``
    and ``_set_state``; hyper-parameters are constructor arguments returned by
    :meth:`get_params`.
    """

    name: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.n_classes_: int | None = None

    # -- public API
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON types)."""
        return {}

    @property
    def is_fitted(self) -> bool:
        return self.n_classes_ is not None

    def fit(self, logits: Any, labels: Any) -> Calibrator:
        """Fit on validation ``logits`` ``(N, C)`` and integer ``labels`` ``(N,)``; returns ``self``."""
        z = _check_logits(logits)
        y = _check_labels(labels, len(z), z.shape[1])
        self._fit(z, y)
        self.n_classes_ = int(z.shape[1])
        return self

    def transform_logits(self, logits: Any) -> np.ndarray:
        """Calibrated logits ``(N, C)`` (their softmax is :meth:`transform`)."""
        if not self.is_fitted:
            raise ConfigError(f"the {self.name!r} calibrator is not fitted", field="calibrator",
                              hint="Call fit(logits, labels) on validation data first")
        return self._logits(_check_logits(logits, n_classes=self.n_classes_))

    def transform(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities ``(N, C)``; rows sum to 1."""
        return softmax(self.transform_logits(logits))

    def fit_transform(self, logits: Any, labels: Any) -> np.ndarray:
        return self.fit(logits, labels).transform(logits)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "params", "n_classes", "state"}`` in plain JSON types (``state`` None if unfitted)."""
        return {
            "name": self.name,
            "params": self.get_params(),
            "n_classes": self.n_classes_,
            "state": self._state() if self.n_classes_ is not None else None,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- subclass hooks
    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass


@register_calibrator("identity")
class IdentityCalibrator(Calibrator):
    """Plain softmax: the baseline (and a placeholder when no calibration is wanted).

    It has nothing to learn, so it is usable unfitted: a package saved without a
    trust layer still predicts (with plain softmax probabilities).
    """

    @property
    def is_fitted(self) -> bool:
        return True

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        pass

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        return logits


@register_calibrator("temperature")
class TemperatureScaling(Calibrator):
    """``softmax(z / T)`` with one temperature ``T > 0`` (Guo et al. 2017).

    ``T`` minimises the validation NLL; ``log T`` is optimised (so ``T`` stays
    positive) within ``[t_min, t_max]``. Predictions (argmax) are unchanged.

    The default bounds ``[0.05, 10]`` (issue 17): on a few dozen validation cases an
    uninformative model drove ``T`` to 29, squashing every probability to about 0.5;
    a temperature at a bound is recorded (``state["at_bound"]``) as a sign that the
    validation set cannot determine it.
    """

    T_MIN, T_MAX = 0.05, 10.0

    def __init__(self, t_min: float = T_MIN, t_max: float = T_MAX, max_iter: int = 200) -> None:
        super().__init__()
        if not 0 < t_min < t_max:
            raise InvalidValueError(f"need 0 < t_min < t_max, got {t_min}, {t_max}", field="t_min")
        self.t_min, self.t_max, self.max_iter = float(t_min), float(t_max), int(max_iter)
        self.temperature_: float = 1.0

    def get_params(self) -> dict[str, Any]:
        return {"t_min": self.t_min, "t_max": self.t_max, "max_iter": self.max_iter}

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            s = float(np.exp(-theta[0]))  # 1 / T
            loss, g = _nll_and_grad(s * logits, labels)
            return loss, np.array([-s * float(np.sum(g * logits))])

        bounds = [(float(np.log(self.t_min)), float(np.log(self.t_max)))]
        t = float(np.exp(_minimize(fun, np.zeros(1), self.max_iter, bounds)[0]))
        self.temperature_ = float(np.clip(t, self.t_min, self.t_max))  # exp(log bound) can overshoot by 1 ulp

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        return logits / self.temperature_

    def _state(self) -> dict[str, Any]:
        at_bound = bool(np.isclose(self.temperature_, self.t_min, rtol=1e-3)
                        or np.isclose(self.temperature_, self.t_max, rtol=1e-3))
        return {"temperature": self.temperature_, "at_bound": at_bound}

    def _set_state(self, state: dict[str, Any]) -> None:
        t = float(_floats(state.get("temperature"), (), "temperature"))
        if t <= 0:
            raise InvalidValueError(f"temperature must be > 0, got {t}", field="temperature")
        self.temperature_ = t


@register_calibrator("vector")
class VectorScaling(Calibrator):
    """``softmax(w * z + b)``: a scale and a bias per class (Guo et al. 2017).

    ``reg`` is an L2 penalty pulling ``w`` towards 1 and ``b`` towards 0 (it also
    fixes the bias, which softmax would otherwise leave free up to a constant).
    """

    def __init__(self, reg: float = 1e-3, max_iter: int = 1000) -> None:
        super().__init__()
        if reg < 0:
            raise InvalidValueError(f"reg must be >= 0, got {reg}", field="reg")
        self.reg, self.max_iter = float(reg), int(max_iter)
        self.scale_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        return {"reg": self.reg, "max_iter": self.max_iter}

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        c = logits.shape[1]

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:c], theta[c:]
            loss, g = _nll_and_grad(logits * w + b, labels)
            loss += self.reg * (np.sum((w - 1.0) ** 2) + np.sum(b ** 2))
            gw = np.sum(g * logits, axis=0) + 2 * self.reg * (w - 1.0)
            gb = np.sum(g, axis=0) + 2 * self.reg * b
            return loss, np.concatenate([gw, gb])

        theta = _minimize(fun, np.concatenate([np.ones(c), np.zeros(c)]), self.max_iter)
        self.scale_, self.bias_ = theta[:c], theta[c:]

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        return logits * self.scale_ + self.bias_

    def _state(self) -> dict[str, Any]:
        return {"scale": self.scale_.tolist(), "bias": self.bias_.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        c = self.n_classes_
        self.scale_ = _floats(state.get("scale"), (c,), "scale")
        self.bias_ = _floats(state.get("bias"), (c,), "bias")


@register_calibrator("dirichlet")
class DirichletCalibrator(Calibrator):
    """``softmax(W log softmax(z) + b)``: Dirichlet calibration (Kull et al. 2019).

    Fitted with ODIR regularisation: ``reg_lambda / (C (C - 1))`` times the sum
    of squared off-diagonal weights plus ``reg_mu / C`` times the sum of squared
    biases (the diagonal is free). Starting from ``W = I, b = 0`` (plain softmax),
    it can correct class-specific over/under-confidence that one temperature cannot.
    ``reg_mu=None`` uses ``reg_lambda``.
    """

    def __init__(self, reg_lambda: float = 1e-3, reg_mu: float | None = None, max_iter: int = 1000) -> None:
        super().__init__()
        if reg_lambda < 0 or (reg_mu is not None and reg_mu < 0):
            raise InvalidValueError(f"reg_lambda and reg_mu must be >= 0, got {reg_lambda}, {reg_mu}",
                                    field="reg_lambda")
        self.reg_lambda = float(reg_lambda)
        self.reg_mu = None if reg_mu is None else float(reg_mu)
        self.max_iter = int(max_iter)
        self.weights_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        return {"reg_lambda": self.reg_lambda, "reg_mu": self.reg_mu, "max_iter": self.max_iter}

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        c = logits.shape[1]
        x = log_softmax(logits)
        off = 1.0 - np.eye(c)
        lam = self.reg_lambda / (c * (c - 1))
        mu = (self.reg_lambda if self.reg_mu is None else self.reg_mu) / c

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[: c * c].reshape(c, c), theta[c * c:]
            loss, g = _nll_and_grad(x @ w.T + b, labels)
            loss += lam * np.sum((w * off) ** 2) + mu * np.sum(b ** 2)
            gw = g.T @ x + 2 * lam * w * off
            gb = np.sum(g, axis=0) + 2 * mu * b
            return loss, np.concatenate([gw.ravel(), gb])

        theta = _minimize(fun, np.concatenate([np.eye(c).ravel(), np.zeros(c)]), self.max_iter)
        self.weights_, self.bias_ = theta[: c * c].reshape(c, c), theta[c * c:]

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits) @ self.weights_.T + self.bias_

    def _state(self) -> dict[str, Any]:
        return {"weights": self.weights_.tolist(), "bias": self.bias_.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        c = self.n_classes_
        self.weights_ = _floats(state.get("weights"), (c, c), "weights")
        self.bias_ = _floats(state.get("bias"), (c,), "bias")


__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "DirichletCalibrator",
    "IdentityCalibrator",
    "TemperatureScaling",
    "VectorScaling",
    "calibrator_from_dict",
    "create_calibrator",
    "list_calibrators",
    "log_softmax",
    "register_calibrator",
    "softmax",
]
