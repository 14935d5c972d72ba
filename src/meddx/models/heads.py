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


def feature_layers(model: Any) -> list[Any]:
    """The intermediate stages whose activations the OOD gate summarises (early to late).

    timm models list theirs in ``feature_info``; meddx's small CNN uses its conv blocks.
    """
    import torch.nn as nn

    if hasattr(model, "feature_info"):
        return [model.get_submodule(info["module"]) for info in model.feature_info]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [m for m in features if isinstance(m, nn.Sequential)]
    return []


def logits_and_features(model: Any, x: Any) -> tuple[Any, Any]:
    """``(logits, features)`` for ``x`` in one pass (eval-mode semantics).

    ``features`` is the penultimate layer, followed by the per-channel mean and standard
    deviation of every intermediate stage (:func:`feature_layers`), then a 7×7 thumbnail of
    the input with its mean and SD: early stages and the layout carry the image statistics
    (texture, contrast, anatomy's place) that tell a CT slice or a blood smear from a
    radiograph even where the last layer cannot. :func:`feature_groups` gives the layout.
    """
    import torch

    captured: list[Any] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out)) for layer in feature_layers(model)]
    try:
        penultimate = embed(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    stats = [torch.cat([a.mean(dim=(2, 3)), a.std(dim=(2, 3), unbiased=False)], dim=1)
             for a in captured if a.ndim == 4]
    return classifier(model)(penultimate), torch.cat([penultimate, *stats, _input_summary(x)], dim=1)


INPUT_GRID = 7


def _input_summary(x: Any) -> Any:
    """The input itself, coarsely: a 7×7 thumbnail of each standardised channel plus its mean and SD."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    mean, sd = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), unbiased=False, keepdim=True)
    # the layout, apart from brightness and contrast (which vary most between radiographs and would
    # hide a flat or textured image along those directions)
    thumb = F.adaptive_avg_pool2d((x - mean) / (sd + 1e-3), INPUT_GRID).flatten(1)
    return torch.cat([thumb, mean.flatten(1), sd.flatten(1)], dim=1)


def feature_groups(model: Any, in_chans: int, size: int) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` column ranges of :func:`logits_and_features`' features: ``penultimate``, ``stage1``, ..."""
    import torch

    was_training = model.training
    model.eval()
    try:
        captured: list[Any] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
                 for layer in feature_layers(model)]
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                penultimate = embed(model, torch.zeros(1, in_chans, size, size, device=device))
        finally:
            for hook in hooks:
                hook.remove()
    finally:
        model.train(was_training)
    groups, start = [("penultimate", 0, int(penultimate.shape[1]))], int(penultimate.shape[1])
    for k, a in enumerate((a for a in captured if a.ndim == 4), 1):
        groups.append((f"stage{k}", start, start + 2 * int(a.shape[1])))
        start += 2 * int(a.shape[1])
    groups.append(("input", start, start + in_chans * (INPUT_GRID * INPUT_GRID + 2)))
    return groups


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
