"""The segmentation networks meddx compares (MONAI 2-D U-Nets small enough to train on a CPU)."""

from __future__ import annotations

from typing import Any

from meddx.exceptions import ConfigError

NETWORKS: dict[str, dict[str, Any]] = {
    "unet-small": {"net": "UNet", "channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1},
    "unet": {"net": "UNet", "channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
    "basicunet": {"net": "BasicUNet", "features": (16, 16, 32, 64, 128, 16)},
    "attention-unet": {"net": "AttentionUnet", "channels": (16, 32, 64, 128), "strides": (2, 2, 2)},
}
"""Name → MONAI class and its arguments (see docs/segmentation.md)."""
DEFAULT = "unet"
"""The default: on CHASE_DB1's 4 validation images the 5-level ``unet`` reached AUC 0.979 against 0.978 for
``unet-small`` with the same 50-minute CPU budget (docs/segmentation.md); ``unet-small`` trains ~1.7x faster."""


def build(name: str, *, in_channels: int = 1, dropout: float = 0.1):  # noqa: ANN201 (torch is imported lazily)
    """A MONAI network with 1 output channel (vessel logit) and dropout for MC-dropout uncertainty."""
    from monai.networks import nets

    if name not in NETWORKS:
        raise ConfigError(f"unknown segmentation network {name!r}", field="model",
                          hint=f"Use one of {sorted(NETWORKS)}")
    spec = dict(NETWORKS[name])
    kind = spec.pop("net")
    if kind == "BasicUNet":
        return nets.BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, dropout=dropout, **spec)
    return getattr(nets, kind)(spatial_dims=2, in_channels=in_channels, out_channels=1, dropout=dropout, **spec)
