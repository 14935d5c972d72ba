"""Networks of the translators: a small U-Net generator and a PatchGAN discriminator.

- generator: MONAI's ``BasicUNet`` (2-D, 1 → 1 channel, features 8-16-32-64-128-8, 4 down-samplings,
  batch norm, full-resolution first and last blocks) with a *linear* output, clipped to [0, 1] when
  used (:func:`translate`); a sigmoid or instance-normalised output learned several times slower
  on one CPU thread (L1 0.26-0.34 vs 0.03 after 100 steps on the phantoms);
- discriminator: a 70×70-style PatchGAN (Isola et al. 2017) cut down to 3 strided convolutions
  (4×4 kernels, 32-64-128 channels, instance norm, leaky ReLU) and a 1-channel score map; each score
  judges one overlapping patch (receptive field 34 px), so at 64 px it sees local texture, not layout.

Both are small enough to train on one CPU thread at 64×64 (about 0.49 M generator parameters).
"""

from __future__ import annotations

from typing import Any

MULTIPLE = 16
"""Image sides must be a multiple of this (the U-Net down-samples 4 times)."""
CHANNELS = (8, 16, 32, 64, 128, 8)


def generator(channels: tuple[int, ...] = CHANNELS) -> Any:
    """(N, 1, H, W) in [0, 1] → (N, 1, H, W) (linear; clip to [0, 1]); H, W multiples of :data:`MULTIPLE`."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(channels), norm="batch")


def discriminator(in_channels: int = 1, width: int = 32) -> Any:
    """PatchGAN: (N, in_channels, H, W) → (N, 1, H/4 - 2, W/4 - 2) real/fake scores (LSGAN: no sigmoid)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, width * 2, 4, stride=2, padding=1), nn.InstanceNorm2d(width * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * 2, width * 4, 4, stride=1, padding=1), nn.InstanceNorm2d(width * 4),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * 4, 1, 4, stride=1, padding=1),
    )


def translate(net: Any, images: list[Any], *, batch: int = 64) -> list[Any]:
    """Run generator ``net`` on float32 [0, 1] images of one size (a multiple of 16); outputs clipped to [0, 1]."""
    import numpy as np
    import torch

    out: list[Any] = []
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[i:i + batch]).astype(np.float32)[:, None])
            out.extend(np.clip(net(x)[:, 0].numpy(), 0, 1).astype(np.float32))
    return out
