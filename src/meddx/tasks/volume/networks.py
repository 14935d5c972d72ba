"""Small 3-D networks from MONAI: a DenseNet classifier and a UNet segmenter.

Sizes are deliberately small (a few ten thousand parameters): they train on
the phantoms of :mod:`meddx.tasks.volume.phantoms` in seconds on one CPU
thread, and scale up through the arguments for real volumes. MONAI is imported
when a network is built, not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meddx.exceptions import ConfigError


def classifier_3d(
    n_classes: int = 2,
    *,
    in_channels: int = 1,
    init_features: int = 8,
    growth_rate: int = 8,
    block_config: Sequence[int] = (2, 2),
    dropout: float = 0.0,
) -> Any:
    """A 3-D DenseNet (MONAI ``DenseNet``, ``spatial_dims=3``) returning ``n_classes`` logits per volume."""
    from monai.networks.nets import DenseNet

    if n_classes < 2:
        raise ConfigError(f"n_classes is {n_classes}", field="n_classes", hint="A classifier needs at least 2 classes")
    return DenseNet(
        spatial_dims=3, in_channels=in_channels, out_channels=n_classes, init_features=init_features,
        growth_rate=growth_rate, block_config=tuple(block_config), bn_size=2, dropout_prob=dropout,
    )


def segmenter_3d(
    n_classes: int = 2,
    *,
    in_channels: int = 1,
    channels: Sequence[int] = (8, 16, 32),
    strides: Sequence[int] = (2, 2),
    num_res_units: int = 1,
    spatial_dims: int = 3,
) -> Any:
    """A 3-D UNet (MONAI ``UNet``, ``spatial_dims=3``) returning ``n_classes`` logits per voxel (0 = background).

    Input sides must be divisible by the product of ``strides`` (4 by default).
    """
    from monai.networks.nets import UNet

    if n_classes < 2:
        raise ConfigError(f"n_classes is {n_classes}", field="n_classes",
                          hint="A segmenter needs background plus at least one class")
    if len(strides) != len(channels) - 1:
        raise ConfigError(f"{len(channels)} channel sizes need {len(channels) - 1} strides, not {len(strides)}",
                          field="strides")
    return UNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=n_classes, channels=tuple(channels),
        strides=tuple(strides), num_res_units=num_res_units,
    )


def segmenter_2d(n_classes: int = 2, **options: Any) -> Any:
    """The 2-D twin of :func:`segmenter_3d` (``spatial_dims=2``), for slice-wise work on volumes."""
    return segmenter_3d(n_classes, spatial_dims=2, **options)


__all__ = ["classifier_3d", "segmenter_2d", "segmenter_3d"]
