"""The detector: FCOS (torchvision, BSD) on a small from-scratch backbone with an FPN.

Anchor-free FCOS fits cells well: each location of the stride-8/16/32 maps predicts its class,
the distances to the four box sides and a centre-ness, so there are no anchor shapes to tune;
FCOS assigns an object to the level whose range holds its half-size (P3 up to 64 px, P4 up to
128 px, P5 beyond), which puts platelets (about 25 px at the default input) and red cells on the
finest map and white cells on P4.

Backbones (``arch``):

* ``slim`` (default): a from-scratch residual CNN (BatchNorm, widths 24-32-64-128-192), about
  1.4 M parameters: no pretrained weights are needed and one CPU core trains it in under an hour;
* ``resnet18``: torchvision's ResNet-18 trunk, which can start from a user-supplied ImageNet
  state dict (``imagenet=path/to/resnet18.pth`` or ``.safetensors``; meddx downloads nothing).

The head is torchvision's ``FCOSHead`` (GroupNorm) with ``head_convs`` convolutions per tower.
:class:`ExportHead` is what ``model.onnx`` holds: normalisation, backbone, FPN and head on a
padded image, one (class logits, box distances, centre-ness) triple per level; box decoding
and NMS run in numpy (:mod:`meddx.tasks.detection.decode`), so prediction needs no torch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

from meddx.exceptions import ConfigError, ModelError

STRIDES = (8, 16, 32)
ARCHS = ("slim", "resnet18")


@dataclass
class DetectorConfig:
    """Architecture settings stored in ``package.json`` (``detector``)."""

    arch: str = "slim"
    num_classes: int = 3
    fpn_channels: int = 96
    head_convs: int = 2
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    center_sampling_radius: float = 1.5

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """A residual block (two 3x3 convolutions), striding in the first when ``stride`` is 2."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = _conv_bn(cin, cout, stride)
        self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(self.c1(x)) + self.skip(x))


class _PyramidBackbone(nn.Module):
    """A trunk's stride-8/16/32 stages (``stem``, ``s8``, ``s16``, ``s32``) through an FPN (``fpn``)."""

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c3 = self.s8(self.stem(x))
        c4 = self.s16(c3)
        c5 = self.s32(c4)
        return self.fpn(OrderedDict([("p3", c3), ("p4", c4), ("p5", c5)]))


class SlimBackbone(_PyramidBackbone):
    """Stride-8/16/32 features of a small residual CNN, through an FPN (``out_channels`` each)."""

    widths = (24, 32, 64, 128, 192)

    def __init__(self, out_channels: int = 96) -> None:
        super().__init__()
        w = self.widths
        self.stem = nn.Sequential(_conv_bn(3, w[0], 2), _Block(w[0], w[1], 2))  # stride 4
        self.s8 = nn.Sequential(_Block(w[1], w[2], 2), _Block(w[2], w[2]))
        self.s16 = nn.Sequential(_Block(w[2], w[3], 2), _Block(w[3], w[3]))
        self.s32 = nn.Sequential(_Block(w[3], w[4], 2), _Block(w[4], w[4]))
        self.fpn = FeaturePyramidNetwork([w[2], w[3], w[4]], out_channels)
        self.out_channels = out_channels


class ResNet18Backbone(_PyramidBackbone):
    """torchvision ResNet-18 layers 2-4 (strides 8/16/32) through an FPN; optional ImageNet state dict."""

    def __init__(self, out_channels: int = 96, imagenet: str | Path | None = None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        trunk = resnet18(weights=None)
        if imagenet is not None:
            load_imagenet(trunk, imagenet)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1)
        self.s8, self.s16, self.s32 = trunk.layer2, trunk.layer3, trunk.layer4
        self.fpn = FeaturePyramidNetwork([128, 256, 512], out_channels)
        self.out_channels = out_channels


def load_imagenet(trunk: nn.Module, path: str | Path) -> None:
    """Load a user-supplied ResNet-18 ImageNet state dict (``.pth``/``.pt`` or ``.safetensors``) into ``trunk``;
    the classifier (``fc.*``) is ignored. Errors name the file and the keys that do not fit."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("ImageNet state dict not found", path=path, field="imagenet",
                         hint="Pass the file of torchvision's resnet18 weights (resnet18-f37072fd.pth)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot read the state dict: {exc}", path=path, field="imagenet") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    try:
        missing, unexpected = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit
        raise ModelError(f"state dict does not fit ResNet-18: {str(exc).splitlines()[-1].strip()}", path=path,
                         field="imagenet", hint="Pass a torchvision resnet18 state dict") from exc
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ModelError(f"state dict does not fit ResNet-18 (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         path=path, field="imagenet", hint="Pass a torchvision resnet18 state dict")


class _NoResize(GeneralizedRCNNTransform):
    """torchvision's transform without its resize: meddx resizes images itself (training scales, input size)."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):  # noqa: ANN201
        return image, target


def build_detector(cfg: DetectorConfig, imagenet: str | Path | None = None) -> FCOS:
    """An FCOS detector for ``cfg`` (untrained unless ``imagenet`` gives the ResNet-18 trunk's weights)."""
    if cfg.arch == "slim":
        if imagenet is not None:
            raise ConfigError("ImageNet weights need arch='resnet18'", field="imagenet",
                              hint="Use model='resnet18' with imagenet=<state dict>")
        backbone: nn.Module = SlimBackbone(cfg.fpn_channels)
    elif cfg.arch == "resnet18":
        backbone = ResNet18Backbone(cfg.fpn_channels, imagenet)
    else:
        raise ConfigError(f"unknown detector architecture {cfg.arch!r}", field="model", hint=f"Use one of {ARCHS}")
    anchors = AnchorGenerator(sizes=tuple((s,) for s in STRIDES), aspect_ratios=((1.0,),) * len(STRIDES))
    head = FCOSHead(cfg.fpn_channels, 1, cfg.num_classes, num_convs=cfg.head_convs)
    model = FCOS(backbone, cfg.num_classes, anchor_generator=anchors, head=head,
                 center_sampling_radius=cfg.center_sampling_radius, score_thresh=0.05, nms_thresh=0.5,
                 detections_per_img=200, topk_candidates=1000)
    model.transform = _NoResize(min_size=512, max_size=512, image_mean=list(cfg.mean), image_std=list(cfg.std),
                                size_divisible=32)
    return model


class ExportHead(nn.Module):
    """What ``model.onnx`` holds: ``image`` (1, 3, H, W) in 0-1, H and W multiples of 32, to per-level
    ``cls_i`` (1, h*w, C) logits, ``reg_i`` (1, h*w, 4) side distances in units of the stride,
    ``ctr_i`` (1, h*w, 1) centre-ness logits, for the levels of :data:`STRIDES`."""

    def __init__(self, model: FCOS, cfg: DetectorConfig) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor):  # noqa: ANN201
        feats = list(self.backbone((image - self.mean) / self.std).values())
        out = []
        for f in feats:
            n, _, h, w = f.shape
            o = self.head([f])
            out += [o["cls_logits"], o["bbox_regression"], o["bbox_ctrness"]]
        return tuple(out)


def export_onnx(model: FCOS, cfg: DetectorConfig, path: Path, size: tuple[int, int]) -> Path:
    """Write ``path`` (opset 17, dynamic height and width) for :class:`ExportHead`."""
    wrapper = ExportHead(model, cfg).eval()
    names = [f"{k}_{i}" for i in range(len(STRIDES)) for k in ("cls", "reg", "ctr")]
    dummy = torch.zeros(1, 3, *size)
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=["image"], output_names=names, opset_version=17,
                          dynamic_axes={"image": {2: "height", 3: "width"}, **{n: {1: f"n_{n}"} for n in names}},
                          dynamo=False)
    return path
