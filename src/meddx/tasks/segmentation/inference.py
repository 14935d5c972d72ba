"""Sliding-window inference: with torch (``monai.inferers.sliding_window_inference``) or with
ONNX Runtime and NumPy only (same Gaussian-weighted windows, no torch import)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROI = 128
OVERLAP = 0.25
SIGMA_SCALE = 0.125


def torch_logits(net: Any, x: np.ndarray, *, roi: int = ROI, overlap: float = OVERLAP, batch: int = 8,
                 mc_dropout: bool = False) -> np.ndarray:
    """Vessel logits (H, W) of a (C, H, W) input with MONAI's Gaussian sliding window.

    With ``mc_dropout`` the dropout layers stay active (one MC-dropout draw per call).
    """
    import torch
    from monai.inferers import sliding_window_inference

    net.eval()
    if mc_dropout:
        for module in net.modules():
            if isinstance(module, torch.nn.Dropout | torch.nn.Dropout2d):
                module.train()
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(x))[None], (roi, roi), batch, net,
                                       overlap=overlap, mode="gaussian", sigma_scale=SIGMA_SCALE, padding_mode="constant")
    net.eval()
    return out[0, 0].numpy()


def _gaussian(roi: int) -> np.ndarray:
    """MONAI's Gaussian importance map for a square window (peak 1, clipped away from 0)."""
    centre = (roi - 1) / 2
    sigma = roi * SIGMA_SCALE
    g = np.exp(-0.5 * ((np.arange(roi) - centre) / sigma) ** 2)
    m = np.outer(g, g).astype(np.float32)
    m /= m.max()
    return np.maximum(m, max(float(m[m > 0].min()), 1e-3))


def _starts(size: int, roi: int, overlap: float) -> list[int]:
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def numpy_logits(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, roi: int = ROI,
                 overlap: float = OVERLAP, batch: int = 8) -> np.ndarray:
    """Vessel logits (H, W) of a (C, H, W) input; ``run`` maps (N, C, roi, roi) → (N, 1, roi, roi)."""
    channels, height, width = x.shape
    pad_h, pad_w = max(0, roi - height), max(0, roi - width)
    if pad_h or pad_w:  # small images: pad symmetrically with zeros like MONAI
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
    H, W = x.shape[1:]
    weight = _gaussian(roi)
    total = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    corners = [(r, c) for r in _starts(H, roi, overlap) for c in _starts(W, roi, overlap)]
    for i in range(0, len(corners), batch):
        chunk = corners[i:i + batch]
        windows = np.stack([x[:, r:r + roi, c:c + roi] for r, c in chunk]).astype(np.float32)
        out = run(windows)
        for (r, c), logit in zip(chunk, out[:, 0], strict=True):
            total[r:r + roi, c:c + roi] += logit * weight
            norm[r:r + roi, c:c + roi] += weight
    logits = total / norm
    return logits[pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]


class OnnxModel:
    """An ONNX Runtime session over ``model.onnx`` (input ``image`` (N, C, H, W) → ``logits``)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: windows})[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
