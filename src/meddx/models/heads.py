"""Classifier heads and the split of a model into features → classifier.

Uncertainty methods need to run the last layer many times without re-running
the backbone: :func:`embed` gives the input of the final linear layer (after
pooling, before dropout) and :func:`classifier` the layer itself, for meddx's
small CNNs and timm backbones alike.

``head="bayes"`` swaps that final layer for :class:`BayesLinear`, a
mean-field Gaussian layer trained by Bayes-by-backprop (Blundell et al. 2015)
with the local reparameterisation trick (Kingma et al. 2015): a Bayesian
last layer, the part of a CNN where weight uncertainty matters most when
labelled data are scarce, at the cost of a linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from meddx.exceptions import ModelError

HEADS: dict[str, Callable[[Any], Any]] = {}


def register_head(name: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Decorator: ``factory(linear: nn.Linear) -> nn.Module`` replaces a model's final linear layer."""

    def decorator(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        HEADS[name] = func
        return func

    return decorator


def _bayes_linear_class() -> type:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BayesLinear(nn.Module):
        """Linear layer with a factorised Gaussian posterior over weights and bias.

        In ``train()`` mode, and in eval mode with ``sampling=True``, every call draws
        new pre-activations (local reparameterisation); otherwise it uses the
        posterior means, so a plain forward pass is deterministic.
        """

        def __init__(self, in_features: int, out_features: int, prior_sigma: float = 1.0,
                     init_sigma: float = 1e-3) -> None:
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.prior_sigma = prior_sigma
            self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
            self.weight_rho = nn.Parameter(torch.full((out_features, in_features), math.log(math.expm1(init_sigma))))
            self.bias_mu = nn.Parameter(torch.zeros(out_features))
            self.bias_rho = nn.Parameter(torch.full((out_features,), math.log(math.expm1(init_sigma))))
            nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))
            self.sampling = False

        @property
        def weight(self) -> Any:  # the posterior mean, for code that expects nn.Linear
            return self.weight_mu

        def forward(self, x: Any) -> Any:
            mean = F.linear(x, self.weight_mu, self.bias_mu)
            if not (self.training or self.sampling):
                return mean
            var = F.linear(x * x, F.softplus(self.weight_rho) ** 2, F.softplus(self.bias_rho) ** 2)
            return mean + var.clamp_min(1e-12).sqrt() * torch.randn_like(mean)

        def kl(self) -> Any:
            """KL(q || N(0, prior_sigma²)) summed over all weights and biases."""
            total = 0.0
            for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
                sigma = F.softplus(rho)
                total = total + (torch.log(self.prior_sigma / sigma)
                                 + (sigma ** 2 + mu ** 2) / (2 * self.prior_sigma ** 2) - 0.5).sum()
            return total

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, prior_sigma={self.prior_sigma}"

    return BayesLinear


_BAYES: type | None = None


def BayesLinear(in_features: int, out_features: int, **kwargs: Any) -> Any:  # noqa: N802 (a class factory)
    """Build a :class:`BayesLinear` layer (the class is created on first use, so torch loads lazily)."""
    global _BAYES
    if _BAYES is None:
        _BAYES = _bayes_linear_class()
    return _BAYES(in_features, out_features, **kwargs)


def is_bayes(module: Any) -> bool:
    return _BAYES is not None and isinstance(module, _BAYES)


@register_head("linear")
def _linear(linear: Any) -> Any:
    return linear


@register_head("bayes")
def _bayes(linear: Any) -> Any:
    layer = BayesLinear(linear.in_features, linear.out_features)
    return layer


def _classifier_slot(model: Any) -> tuple[Any, str]:
    """The module holding the final linear layer, and its attribute name."""
    if hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg"):
        path = model.pretrained_cfg.get("classifier", "fc")
        owner = model
        *parents, last = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        return owner, last
    head = getattr(model, "head", None)
    if head is not None and hasattr(head, "__getitem__"):
        return head, str(len(head) - 1)
    raise ModelError(f"{type(model).__name__} has no final linear layer meddx can find", field="model")


def classifier(model: Any) -> Any:
    """The model's final layer (``nn.Linear`` or :class:`BayesLinear`)."""
    owner, name = _classifier_slot(model)
    return owner[int(name)] if name.isdigit() else getattr(owner, name)


def set_head(model: Any, head: str) -> Any:
    """Replace the final linear layer with head ``head`` (see :data:`HEADS`); return the model."""
    if head not in HEADS:
        raise ModelError(f"unknown head {head!r}", field="head", hint=f"Known: {', '.join(sorted(HEADS))}")
    owner, name = _classifier_slot(model)
    new = HEADS[head](classifier(model))
    if name.isdigit():
        owner[int(name)] = new
    else:
        setattr(owner, name, new)
    return model


def dropout_rate(model: Any) -> float:
    """The dropout probability in front of the classifier (0 when the model has none)."""
    if hasattr(model, "drop_rate"):
        return float(model.drop_rate)
    head = getattr(model, "head", None)
    if head is not None:
        for module in head:
            if hasattr(module, "p") and type(module).__name__.startswith("Dropout"):
                return float(module.p)
    return 0.0


def embed(model: Any, x: Any) -> Any:
    """The input of the final layer for ``x``: pooled features, before dropout (eval-mode semantics)."""
    if hasattr(model, "forward_head") and hasattr(model, "forward_features"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    if hasattr(model, "features"):
        return model.features(x)
    raise ModelError(f"{type(model).__name__} cannot be split into features and classifier", field="model")


def logits_and_features(model: Any, x: Any) -> tuple[Any, Any]:
    """``(logits, penultimate features)`` for ``x`` in one pass (eval-mode semantics)."""
    features = embed(model, x)
    return classifier(model)(features), features


class WithFeatures:
    """A module factory: wraps ``model`` so ``forward`` returns ``(logits, features)`` (for the ONNX export)."""

    def __new__(cls, model: Any) -> Any:
        from torch import nn

        class _WithFeatures(nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any) -> Any:
                return logits_and_features(self.inner, x)

        return _WithFeatures(model).train(model.training)


def kl_divergence(model: Any) -> Any:
    """Sum of the KL terms of every Bayesian layer in ``model`` (0 when there is none)."""
    return sum((m.kl() for m in model.modules() if is_bayes(m)), 0.0)
