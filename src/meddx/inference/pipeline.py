"""``Pipeline``: a trained model package plus its preprocessing, ready to predict.

``Pipeline.load(run_folder)`` reads ``package.json`` and ``model.safetensors``;
``predict_files`` reads DICOM/PNG/JPEG/NIfTI through :func:`meddx.data.read`,
applies the package's preprocessing and returns one JSON-ready dict per file.
Files the model cannot take (a volume where a 2-D image is expected, a signal,
an unreadable file) raise a clear error instead of producing a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError, ModelError


@dataclass
class Pipeline:
    """A loaded model package."""

    folder: Path
    package: dict[str, Any]
    model: Any

    @classmethod
    def load(cls, folder: str | Path) -> Pipeline:
        from meddx.models import create_model
        from meddx.models.registry import load_pretrained

        folder = Path(folder)
        meta = folder / "package.json"
        if not meta.is_file():
            raise ModelError(
                "not a meddx model package (package.json missing)", path=folder,
                hint="Pass a run folder written by `meddx train`",
            )
        package = json.loads(meta.read_text(encoding="utf-8"))
        model = create_model(
            package["architecture"], num_classes=package["num_classes"], in_chans=package["preprocess"]["in_chans"]
        )
        report = load_pretrained(model, folder)
        if report["skipped"]:
            raise ModelError(f"weights do not fit the architecture: {report['skipped'][:3]}", path=folder)
        model.eval()
        return cls(folder, package, model)

    @property
    def class_names(self) -> list[str]:
        return list(self.package["class_names"])

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)`` for uint8/uint16 images ``(N, H, W[, C])``."""
        import torch

        from meddx.training.trainer import prepare_arrays

        pre = self.package["preprocess"]
        x = prepare_arrays(images, pre["size"])
        if x.shape[1] != pre["in_chans"]:
            x = x.mean(axis=1, keepdims=True) if pre["in_chans"] == 1 else np.repeat(x, pre["in_chans"], axis=1)
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), 256):
                batch = (torch.from_numpy(np.ascontiguousarray(x[start:start + 256])) - pre["mean"]) / pre["std"]
                out.append(torch.softmax(self.model(batch), dim=1).numpy())
        return np.concatenate(out)

    def image_from_file(self, path: str | Path, *, slice_index: int | None = None) -> np.ndarray:
        """Read ``path`` and turn it into one uint8 2-D image the model can take."""
        from meddx.data.readers import read
        from meddx.data.sample import ImageSample

        sample = read(path)
        if not isinstance(sample, ImageSample):
            raise InvalidValueError(
                f"this model takes images, the file holds a {sample.kind}", path=path, field="modality",
                hint="Use a model trained on this kind of data",
            )
        array = np.asarray(sample.array, dtype=np.float64)
        colour = array.ndim == 3 and array.shape[-1] in (3, 4) and sample.format != "nifti"
        if array.ndim == 3 and not colour or array.ndim == 4:
            if slice_index is None:
                raise InvalidValueError(
                    f"the file holds a volume of shape {array.shape}; this model expects a 2-D image",
                    path=path, field="shape", hint="Pass slice_index (CLI: --slice N) to choose a slice",
                )
            array = array[..., slice_index] if sample.format == "nifti" else array[slice_index]
            if array.ndim == 3 and sample.format == "nifti":
                array = array[..., 0]
        if colour:
            array = array[..., :3].mean(axis=-1) if self.package["preprocess"]["in_chans"] == 1 else array[..., :3]
        if sample.window and sample.format == "dicom":
            center, width = sample.window
            low, high = center - width / 2, center + width / 2
        else:
            low, high = float(np.min(array)), float(np.max(array))
        scaled = np.clip((array - low) / (high - low or 1.0), 0, 1) * 255
        return scaled.astype(np.uint8)

    def predict_files(self, paths: list[str | Path], *, slice_index: int | None = None) -> list[dict[str, Any]]:
        """One result per file: probabilities per class, the top class, and the model version."""
        images = [self.image_from_file(p, slice_index=slice_index) for p in paths]
        results = []
        for path, image in zip(paths, images, strict=True):
            proba = self.predict_arrays(image[None])[0]
            results.append({
                "file": str(path),
                "probabilities": {name: float(p) for name, p in zip(self.class_names, proba, strict=True)},
                "prediction": self.class_names[int(np.argmax(proba))],
                "model": self.package["name"],
                "model_version": self.package["version"],
            })
        return results
