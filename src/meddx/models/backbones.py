"""timm backbones for medical images, 1 or 3 channels, 28 to 224 px.

Each builder calls ``timm.create_model`` so that the whole timm contract
(``forward_features``, ``reset_classifier``, ``in_chans`` adaptation of a
pretrained RGB stem) holds. ``imagenet=True`` asks timm for its public ImageNet
weights: downloaded from the hub when the machine has internet, or read from a
local file given as ``imagenet_file=`` through timm's own ``pretrained_cfg``
overlay (the same code path, which is how the tests exercise it offline).

``resnet18-28`` is the CIFAR-style ResNet-18 used by MedMNIST v2 at 28 px: a
3×3 stride-1 stem without max-pooling, so small images keep their resolution
(``densenet121-28`` likewise).
"""

from __future__ import annotations

from typing import Any

from meddx.models._builders import register_model

TIMM_NAMES = {
    "resnet18": "resnet18",
    "resnet18-28": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv3-small": "mobilenetv3_small_100",
    "mobilenetv3-large": "mobilenetv3_large_100",
    "efficientnet-b0": "efficientnet_b0",
    "densenet121": "densenet121",
    "densenet121-28": "densenet121",
}


def _timm(
    arch: str,
    num_classes: int,
    in_chans: int,
    *,
    imagenet: bool = False,
    imagenet_file: str | None = None,
    drop_rate: float = 0.0,
    **kwargs: Any,
) -> Any:
    import timm

    overlay = {"file": str(imagenet_file)} if imagenet_file else None
    return timm.create_model(
        arch,
        pretrained=bool(imagenet or imagenet_file),
        pretrained_cfg_overlay=overlay,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        **kwargs,
    )


def _cifar_stem(model: Any, in_chans: int) -> Any:
    """Swap the 7×7/2 stem and max-pool for a 3×3/1 stem (MedMNIST's ResNet-18 (28)).

    Works for timm ResNets (``conv1``/``maxpool``) and DenseNets
    (``features.conv0``/``features.pool0``); without it a 28 px image shrinks
    to 1×1 before the last stage (DenseNet then fails outright).
    """
    from torch import nn

    owner, conv_name, pool_name = (model, "conv1", "maxpool") if hasattr(model, "conv1") else (
        model.features, "conv0", "pool0")
    out = getattr(owner, conv_name).out_channels
    setattr(owner, conv_name, nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False))
    setattr(owner, pool_name, nn.Identity())
    return model


def _register(name: str, arch: str) -> None:
    @register_model(name)
    def build(num_classes: int, in_chans: int = 1, **kwargs: Any) -> Any:
        model = _timm(arch, num_classes, in_chans, **kwargs)
        if name.endswith("-28"):
            model = _cifar_stem(model, in_chans)
        return model

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"timm ``{arch}``" + (" with a CIFAR-style stem" if name.endswith("-28") else "")


for _name, _arch in TIMM_NAMES.items():
    _register(_name, _arch)
