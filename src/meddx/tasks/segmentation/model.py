"""A trained segmentation model: its files in a run folder, and probability maps from it.

A run folder holds ``model.safetensors`` (the torch weights), ``model.onnx`` (the same network
for ONNX Runtime, dynamic batch and size) and ``model_mc.onnx`` (the network with its dropout
always on: one MC-dropout draw per run, so uncertainty needs no torch either).
:class:`SegModel` prefers ONNX Runtime and imports torch only when there is no ONNX file
(or ``backend="torch"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, ModelError
from meddx.tasks.segmentation import data as D
from meddx.tasks.segmentation.fov import field_of_view
from meddx.tasks.segmentation.inference import OVERLAP, ROI, OnnxModel, numpy_logits, sigmoid, torch_logits

WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
ONNX_MC_FILE = "model_mc.onnx"
BACKENDS = ("auto", "onnx", "torch")


def _always_dropout(net: Any) -> Any:
    """A copy of ``net`` whose dropout layers sample in eval mode too (exports as ONNX RandomUniformLike)."""
    import copy

    import torch

    class AlwaysDropout(torch.nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * (torch.rand_like(x) >= self.p).to(x.dtype) / (1 - self.p)

    mc = copy.deepcopy(net).eval()

    def swap(module: Any) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Dropout | torch.nn.Dropout2d):
                setattr(module, name, AlwaysDropout(float(child.p)))
            else:
                swap(child)

    swap(mc)
    return mc


def save(run: Path, net: Any, in_channels: int) -> list[str]:
    """Write the weights and both ONNX graphs into ``run``; returns the file names beside the weights."""
    import warnings

    import torch
    from safetensors.torch import save_file

    net = net.eval()
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(run / WEIGHTS_FILE))
    example = torch.zeros(1, in_channels, ROI, ROI)
    axes = {"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}}
    written = []
    for model, name in ((net, ONNX_FILE), (_always_dropout(net), ONNX_MC_FILE)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(run / name), input_names=["image"], output_names=["logits"],
                              dynamic_axes=axes, dynamo=False, opset_version=17)
        written.append(name)
    return written


class SegModel:
    """Probability maps from a run folder (ONNX Runtime when ``model.onnx`` exists, else torch)."""

    def __init__(self, folder: Path, package: dict[str, Any], *, backend: str = "auto",
                 threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}", field="backend", hint=f"Use one of {list(BACKENDS)}")
        self.folder = Path(folder)
        self.package = package
        self.threads = threads
        seg = package.get("segmentation") or {}
        self.preprocessing = str(seg.get("preprocessing", "green-clahe"))
        self.in_channels = int(seg.get("in_channels", 1))
        self.roi = int(seg.get("roi", ROI))
        self.overlap = float(seg.get("overlap", OVERLAP))
        self.temperature = float(seg.get("temperature", 1.0))
        self.threshold = float(seg.get("threshold", 0.5))
        self.network = str(seg.get("network", "unet-small"))
        self.dropout = float(seg.get("dropout", 0.1))
        self.tta = bool(seg.get("tta", False))
        onnx = self.folder / ONNX_FILE
        self.backend = ("onnx" if onnx.is_file() else "torch") if backend == "auto" else backend
        self._onnx: OnnxModel | None = None
        self._onnx_mc: OnnxModel | None = None
        self._net: Any = None
        if self.backend == "onnx":
            if not onnx.is_file():
                raise ModelError(f"no {ONNX_FILE} in the package", path=self.folder, field="backend",
                                 hint="Use backend torch, or re-run `meddx train`")
            self._onnx = OnnxModel(onnx, threads=threads)
        else:
            self._net = self.torch_net()

    def torch_net(self) -> Any:
        """The torch network with the package's weights (imports torch)."""
        from safetensors.torch import load_file

        from meddx.tasks.segmentation.network import build

        weights = self.folder / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError(f"no {WEIGHTS_FILE} in the package", path=self.folder, hint="Re-run `meddx train`")
        net = build(self.network, in_channels=self.in_channels, dropout=self.dropout)
        net.load_state_dict(load_file(str(weights)))
        return net.eval()

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(network input (C, H, W), field of view (H, W))`` of an RGB image."""
        fov = field_of_view(image)
        return D.preprocess(image, fov, self.preprocessing), fov

    def logits(self, x: np.ndarray, *, mc: bool = False) -> np.ndarray:
        """Uncalibrated vessel logits (H, W); ``mc`` = one MC-dropout draw. With the package's ``tta``
        (deterministic maps only) the mean logit over the image and its horizontal, vertical and both flips."""
        if self.tta and not mc:
            total = np.zeros(x.shape[1:], np.float32)
            for rows, cols in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                flipped = np.ascontiguousarray(x[:, ::rows, ::cols])
                total += self._logits(flipped, mc=False)[::rows, ::cols]
            return total / 4
        return self._logits(x, mc=mc)

    def _logits(self, x: np.ndarray, *, mc: bool) -> np.ndarray:
        if self.backend == "torch":
            return torch_logits(self._net, x, roi=self.roi, overlap=self.overlap, mc_dropout=mc)
        session = self._onnx
        if mc:
            if self._onnx_mc is None:
                path = self.folder / ONNX_MC_FILE
                if not path.is_file():
                    raise ModelError(f"no {ONNX_MC_FILE} for MC-dropout", path=self.folder, field="uncertainty",
                                     hint="Use --uncertainty none, or re-run `meddx train`")
                self._onnx_mc = OnnxModel(path, threads=self.threads)
            session = self._onnx_mc
        return numpy_logits(session, x, roi=self.roi, overlap=self.overlap)

    def probability(self, x: np.ndarray, fov: np.ndarray) -> np.ndarray:
        """Calibrated vessel probability (H, W), 0 outside the FOV."""
        return np.where(fov, sigmoid(self.logits(x) / self.temperature), 0.0).astype(np.float32)

    def mc_dropout(self, x: np.ndarray, fov: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, standard deviation and mean binary entropy (nats) over ``samples`` MC-dropout draws of the
        calibrated probability (each 0 outside the FOV)."""
        draws = np.stack([sigmoid(self.logits(x, mc=True) / self.temperature) for _ in range(samples)])
        q = np.clip(draws, 1e-7, 1 - 1e-7)
        entropy = -(q * np.log(q) + (1 - q) * np.log(1 - q)).mean(0)
        return tuple(np.where(fov, a, 0.0).astype(np.float32) for a in (draws.mean(0), draws.std(0), entropy))
