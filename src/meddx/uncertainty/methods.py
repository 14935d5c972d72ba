"""Uncertainty methods selectable at predict time, behind one registry.

Each method maps a batch to logits ``primary`` ``(N, C)`` (the deterministic
prediction, which calibration, conformal sets and the abstention policy were
fitted on) and ``samples`` ``(S, N, C)`` (the draws the uncertainty measures
come from). They are written to cost at most S single forward passes, and
usually much less:

- ``none``: one pass, no samples beyond it.
- ``mc-dropout``: the backbone runs once; the dropout in front of the classifier
  is kept on and the classifier runs S times on the same features (last-layer
  MC-dropout, Gal & Ghahramani 2016). Needs a model trained with dropout there.
- ``bayes``: the same, drawing the weights of a Bayes-by-backprop last layer
  (models trained with ``head="bayes"``).
- ``tta``: test-time augmentation: identity, flips and one-pixel shifts, all in
  one batched pass of S copies.
- ``ensemble``: one pass per member of a deep ensemble (``meddx train --ensemble M``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meddx.exceptions import ModelError

Method = Callable[..., "MethodOutput"]
METHODS: dict[str, Method] = {}


@dataclass
class MethodOutput:
    primary: Any  # torch.Tensor (N, C) logits
    samples: Any  # torch.Tensor (S, N, C) logits
    forward_passes: float  # cost in units of one full forward pass of one model


def register_method(name: str) -> Callable[[Method], Method]:
    def decorator(func: Method) -> Method:
        METHODS[name] = func
        return func

    return decorator


def list_methods() -> list[str]:
    return sorted(METHODS)


def run_method(name: str, models: Sequence[Any], x: Any, samples: int = 20, seed: int = 0) -> MethodOutput:
    """Run uncertainty method ``name`` on the normalised batch ``x`` with the package's ``models``."""
    if name not in METHODS:
        raise ModelError(f"unknown uncertainty method {name!r}", field="uncertainty",
                         hint=f"Known: {', '.join(list_methods())}")
    import torch

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the same input gives the same answer
    try:
        with torch.inference_mode():
            return METHODS[name](models, x, samples)
    finally:
        torch.random.set_rng_state(generator_state)


@register_method("none")
def _none(models: Sequence[Any], x: Any, samples: int) -> MethodOutput:
    logits = models[0](x)
    return MethodOutput(logits, logits[None], 1.0)


@register_method("mc-dropout")
def _mc_dropout(models: Sequence[Any], x: Any, samples: int) -> MethodOutput:
    from torch.nn import functional as F

    from meddx.models.heads import classifier, dropout_rate, embed

    model = models[0]
    p = dropout_rate(model)
    if p <= 0:
        raise ModelError("this model has no dropout in front of its classifier, so MC-dropout has nothing to sample",
                         field="uncertainty", hint="Train with --drop-rate 0.2, or use tta / ensemble")
    features = embed(model, x)
    head = classifier(model)
    repeated = features.unsqueeze(0).expand(samples, *features.shape).reshape(-1, features.shape[-1])
    draws = head(F.dropout(repeated, p=p, training=True)).reshape(samples, features.shape[0], -1)
    return MethodOutput(head(features), draws, 1.0)


@register_method("bayes")
def _bayes(models: Sequence[Any], x: Any, samples: int) -> MethodOutput:
    from meddx.models.heads import classifier, embed, is_bayes

    model = models[0]
    head = classifier(model)
    if not is_bayes(head):
        raise ModelError("this model has no Bayesian layer", field="uncertainty",
                         hint="Train with --head bayes, or use mc-dropout / tta / ensemble")
    features = embed(model, x)
    primary = head(features)
    repeated = features.unsqueeze(0).expand(samples, *features.shape).reshape(-1, features.shape[-1])
    head.sampling = True
    try:
        draws = head(repeated).reshape(samples, features.shape[0], -1)
    finally:
        head.sampling = False
    return MethodOutput(primary, draws, 1.0)


def _tta_views(x: Any, samples: int) -> Any:
    import torch

    views = [x, torch.flip(x, dims=[-1])]
    shifts = [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    for dy, dx in shifts:
        base = views[len(views) % 2]  # alternate the original and the flipped image
        views.append(torch.roll(base, shifts=(dy, dx), dims=(-2, -1)))
    while len(views) < samples:  # beyond 10 views: larger shifts
        k = len(views)
        views.append(torch.roll(views[k % 2], shifts=(2 * (k % 3 - 1), 2 * ((k // 3) % 3 - 1)), dims=(-2, -1)))
    return torch.stack(views[:max(samples, 1)])


TTA_CHUNK = 256
"""Images per forward pass for TTA: small inputs are batched together (cheaper than S passes),
large batches go view by view group so the cost stays linear in S (huge batches thrash the cache)."""


@register_method("tta")
def _tta(models: Sequence[Any], x: Any, samples: int) -> MethodOutput:
    import torch

    views = _tta_views(x, samples)
    per_chunk = max(1, TTA_CHUNK // max(1, x.shape[0]))
    logits = torch.cat([models[0](chunk.reshape(-1, *x.shape[1:])).reshape(chunk.shape[0], x.shape[0], -1)
                        for chunk in torch.split(views, per_chunk)])
    return MethodOutput(logits[0], logits, float(views.shape[0]))


@register_method("ensemble")
def _ensemble(models: Sequence[Any], x: Any, samples: int) -> MethodOutput:
    import torch

    if len(models) < 2:
        raise ModelError("this package holds one model, not an ensemble", field="uncertainty",
                         hint="Train one with `meddx train DATA --ensemble 5`")
    logits = torch.stack([m(x) for m in models])
    primary = torch.log(torch.softmax(logits, dim=-1).mean(dim=0))  # log of the averaged probabilities
    return MethodOutput(primary, logits, float(len(models)))
