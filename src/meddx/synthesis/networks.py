"""Learned restorers: residual networks that predict the noise given the image and its noise level.

Each takes two channels, the observed image and its noise-level map (FFDNet-style conditioning, so
one model serves every dose), and returns the restored image ``observed - predicted noise``.

- ``unet``: MONAI's residual U-Net (3 down-samplings, 32-256 channels, no normalisation);
- ``dncnn``: DnCNN (Zhang et al. 2017): 3×3 conv + batch norm + ReLU, 12 layers of 48 channels;
- ``redcnn``: RED-CNN (Chen et al. 2017, low-dose CT): 5 conv / 5 deconv with symmetric shortcuts;
- ``unet-bn``: the same with batch norm (trains less stably: batch statistics mix the noise levels of a
  batch's crops into every crop's features);
- ``dncnn-small``: 5 layers of 16 channels, for tests and quick trials.
"""

from __future__ import annotations

from typing import Any

from meddx.exceptions import ConfigError

NOISE_SCALE = 10.0
"""The noise-level channel is ``sd * NOISE_SCALE`` (levels 0.005-0.1 become 0.05-1)."""
MULTIPLE = 8
"""Inputs are padded to a multiple of this (the U-Net down-samples 3 times)."""


def _unet(norm: Any = None) -> Any:
    from monai.networks.nets import UNet

    # no normalisation: MONAI's default instance norm erases the absolute intensity and the constant noise-level
    # channel (which say how much noise and Rician bias to remove); batch norm mixes the noise levels of a batch's
    # crops into every crop's features, and validation PSNR then swung by 1-2 dB from one check to the next
    return UNet(spatial_dims=2, in_channels=2, out_channels=1, channels=(32, 64, 128, 256), strides=(2, 2, 2),
                num_res_units=2, norm=norm)


def _dncnn(depth: int = 12, width: int = 48) -> Any:
    from torch import nn

    layers: list[Any] = [nn.Conv2d(2, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(width, 1, 3, padding=1))
    return nn.Sequential(*layers)


def _redcnn(width: int = 48) -> Any:
    import torch
    from torch import nn

    class REDCNN(nn.Module):
        """Five 5×5 convolutions down, five deconvolutions up, shortcuts after the 2nd and 4th layers."""

        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList([nn.Conv2d(2 if i == 0 else width, width, 5) for i in range(5)])
            self.dec = nn.ModuleList([nn.ConvTranspose2d(width, 1 if i == 4 else width, 5) for i in range(5)])
            self.act = nn.ReLU(inplace=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            h = x
            for i, conv in enumerate(self.enc):
                h = self.act(conv(h))
                if i in (1, 3):
                    skips.append(h)
            for i, deconv in enumerate(self.dec):
                h = deconv(h)
                if i in (1, 3):
                    h = h + skips.pop()
                if i < 4:
                    h = self.act(h)
            return h  # the noise estimate (the final shortcut, input minus it, is in restore_tensor)

    return REDCNN()


NETWORKS = {"unet": _unet, "unet-bn": lambda: _unet(norm="batch"), "dncnn": _dncnn, "redcnn": _redcnn,
            "dncnn-small": lambda: _dncnn(depth=5, width=16)}
DEFAULT = "unet"


def build(name: str) -> Any:
    """A restorer whose ``forward`` maps (N, 2, H, W) to the noise estimate (N, 1, H, W)."""
    if name not in NETWORKS:
        raise ConfigError(f"unknown restoration network {name!r}", field="model", hint=f"Use one of {sorted(NETWORKS)}")
    return NETWORKS[name]()


def restore_tensor(net: Any, x: Any, level: Any) -> Any:
    """Restored images (N, 1, H, W) from observed ``x`` and noise-level maps ``level`` (same shape)."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
    inp = torch.cat([x, level * NOISE_SCALE], dim=1)
    if ph or pw:
        inp = F.pad(inp, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return (inp[:, :1] - net(inp))[..., :h, :w]
