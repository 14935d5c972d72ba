"""A registry of model builders, in the spirit of timm's ``register_model``/``create_model``.

Builders are plain functions ``(num_classes, in_chans, **kwargs) -> nn.Module``
registered under a name. ``pretrained`` accepts a state-dict file (``.pt``,
``.pth``, ``.safetensors``) or a meddx run folder / model package; weights whose
shapes do not fit (the classifier of another task, a 3-channel stem for a
1-channel model) are adapted or skipped and reported, never silently misloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddx.exceptions import ModelError
from meddx.models._builders import MODELS as _MODELS
from meddx.models._builders import Builder, register_model

__all__ = ["Builder", "create_model", "list_models", "load_pretrained", "register_model"]


def _load_builtin() -> None:
    """Import the built-in model families (each registers its builders in :mod:`meddx.models._builders`)."""
    import meddx.models.backbones  # noqa: F401
    import meddx.models.cnn  # noqa: F401


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    *,
    pretrained: str | Path | None = None,
    head: str = "linear",
    **kwargs: Any,
) -> Any:
    """Build model ``name`` for ``num_classes`` outputs and ``in_chans`` input channels.

    ``head="bayes"`` replaces the final linear layer with a Bayes-by-backprop layer
    (see :mod:`meddx.models.heads`); ``drop_rate`` sets the dropout in front of it.
    """
    _load_builtin()
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        raise ModelError(
            f"unknown model {name!r}", field="model",
            hint=(f"Did you mean {', '.join(close)}? " if close else "") + f"Known: {', '.join(sorted(_MODELS))}",
        )
    if "drop_rate" in kwargs and kwargs["drop_rate"] is None:
        kwargs.pop("drop_rate")
    model = _MODELS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    if head != "linear":
        from meddx.models.heads import set_head

        set_head(model, head)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def _read_state_dict(source: Path) -> dict[str, Any]:
    import torch

    if source.is_dir():
        for candidate in ("model.safetensors", "best.safetensors", "weights.safetensors"):
            if (source / candidate).is_file():
                source = source / candidate
                break
        else:
            raise ModelError("no weights file in folder", path=source, hint="Expected model.safetensors")
    if not source.is_file():
        raise ModelError("pretrained weights not found", path=source, field="pretrained")
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(source))
    state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError("file does not hold a state dict", path=source, field="pretrained")
    return state


def load_pretrained(model: Any, source: str | Path) -> dict[str, list[str]]:
    """Load matching weights from ``source`` into ``model``; adapt a 3→1 or 1→C channel stem.

    Returns ``{"loaded": [...], "adapted": [...], "skipped": [...]}`` so callers
    can log exactly what transferred.
    """
    state = _read_state_dict(Path(source))
    own = model.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "adapted": [], "skipped": []}
    new_state = {}
    for key, value in state.items():
        if key not in own:
            report["skipped"].append(key)
            continue
        target = own[key]
        if value.shape == target.shape:
            new_state[key] = value
            report["loaded"].append(key)
        elif value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0] \
                and value.shape[2:] == target.shape[2:] and target.shape[1] == 1:
            new_state[key] = value.sum(dim=1, keepdim=True)  # RGB stem -> grey (timm's rule)
            report["adapted"].append(key)
        elif value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0] \
                and value.shape[2:] == target.shape[2:] and value.shape[1] == 1:
            # grey stem (meddx pretrain) -> C channels: the same response to a grey image copied C times
            new_state[key] = value.repeat(1, target.shape[1], 1, 1) / target.shape[1]
            report["adapted"].append(key)
        else:
            report["skipped"].append(key)
    if not report["loaded"] and not report["adapted"]:
        raise ModelError(
            "no weight in the file fits this model", path=source, field="pretrained",
            hint="Check that the architecture matches the one the weights were trained with",
        )
    model.load_state_dict(new_state, strict=False)
    return report
