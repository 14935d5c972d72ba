"""Running a detection package: ONNX Runtime (no torch) when ``model.onnx`` exists, else torch.

:class:`Detector` loads a run folder and turns an RGB image into boxes in the image's own pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ModelError
from meddx.tasks.detection.decode import decode, suppress

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "model.safetensors"


def to_input(image: np.ndarray, long_side: int, pad_value: float = 0.5) -> tuple[np.ndarray, float, tuple[int, int]]:
    """``image`` (H, W, 3) uint8 resized so its long side is ``long_side`` and padded to multiples of 32:
    (3, H', W') float32 in 0-1, the scale, the resized (height, width). Padding is ``pad_value`` (the
    normalisation mean: 0 once normalised, as torchvision pads in training). Numpy and PIL only."""
    from PIL import Image

    h, w = image.shape[:2]
    s = long_side / max(w, h)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), dtype=np.float32) / 255.0
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    out = np.full((3, ph, pw), pad_value, np.float32)
    out[:, :nh, :nw] = resized.transpose(2, 0, 1)
    return out, s, (nh, nw)


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file (grey repeated to three channels); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    from meddx.exceptions import CorruptFileError, DataFileNotFoundError

    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError("image not found", path=path)
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CorruptFileError(f"cannot read the image: {exc}", path=path,
                               hint="Pass a PNG, JPEG, BMP or TIFF image") from exc


class Detector:
    """A loaded detection package: ``Detector(folder, package).detect(rgb)`` -> boxes, scores, labels."""

    def __init__(self, folder: Path, package: dict[str, Any], *, backend: str | None = None) -> None:
        self.folder = Path(folder)
        self.package = package
        pre = package.get("preprocess") or {}
        self.long_side = int(pre.get("long_side", 416))
        self.pad_value = float((pre.get("mean") or [0.5])[0])
        self.nms_iou = float(package.get("nms_iou", 0.5))
        onnx = self.folder / ONNX_FILE
        self.backend = backend or ("onnx" if onnx.is_file() else "torch")
        if self.backend == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(package.get("onnx_threads", 0) or 0)
            try:
                self.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot load the ONNX model: {exc}", path=onnx, hint="Re-run `meddx train`") from exc
        else:
            self.model = load_torch_model(self.folder, package)

    def raw(self, x: np.ndarray) -> list[np.ndarray]:
        """The per-level head outputs for one padded input (3, H, W)."""
        if self.backend == "onnx":
            return self.session.run(None, {"image": x[None]})
        import torch

        from meddx.tasks.detection.model import DetectorConfig, ExportHead

        head = ExportHead(self.model, DetectorConfig.from_dict(self.package["detector"])).eval()
        with torch.no_grad():
            return [o.numpy() for o in head(torch.from_numpy(x)[None])]

    def detect(self, rgb: np.ndarray, score_thresh: float = 0.05, tta: list[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4) in ``rgb``'s pixels, scores and labels, highest score first.

        ``tta`` (default: the package's ``tta``) adds flipped views (``hflip``, ``vflip``): each view's
        boxes are mapped back and all are suppressed together (class-wise NMS)."""
        x, s, (nh, nw) = to_input(rgb, self.long_side, self.pad_value)
        ph, pw = x.shape[1:]
        views = ["none", *(self.package.get("tta") or [] if tta is None else tta)]
        found = []
        for view in views:
            xv = {"none": x, "hflip": x[:, :, ::-1], "vflip": x[:, ::-1, :]}[view]
            b, sc, lab = decode(self.raw(np.ascontiguousarray(xv)), ph, pw, score_thresh=score_thresh,
                                nms_iou=self.nms_iou)
            if view == "hflip":
                b = np.stack([pw - b[:, 2], b[:, 1], pw - b[:, 0], b[:, 3]], 1)
            elif view == "vflip":
                b = np.stack([b[:, 0], ph - b[:, 3], b[:, 2], ph - b[:, 1]], 1)
            found.append((b.reshape(-1, 4), sc, lab))
        if len(found) == 1:
            boxes, scores, labels = found[0]
        else:
            boxes, scores, labels = suppress(*(np.concatenate(z) for z in zip(*found)), nms_iou=self.nms_iou)
        boxes = boxes.astype(np.float32).copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, nw) / s
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, nh) / s
        h, w = rgb.shape[:2]
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        return boxes[ok], scores[ok], labels[ok]


def load_torch_model(folder: Path, package: dict[str, Any]) -> Any:
    """The FCOS model of a package, weights loaded, in eval mode (imports torch)."""
    from safetensors.torch import load_file

    from meddx.tasks.detection.model import DetectorConfig, build_detector

    model = build_detector(DetectorConfig.from_dict(package["detector"]))
    path = Path(folder) / WEIGHTS_FILE
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load the detector weights: {exc}", path=path, hint="Re-run `meddx train`") from exc
    return model.eval()
