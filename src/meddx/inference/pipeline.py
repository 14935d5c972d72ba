"""``Pipeline``: a trained model package plus its preprocessing, ready to predict.

``Pipeline.load(model)`` takes a run folder / package path or a registered
``name[:version]`` and reads ``package.json`` and ``model.safetensors``;
``predict`` (alias of ``predict_files``) reads DICOM/PNG/JPEG/NIfTI through
:func:`meddx.data.read`, applies the package's preprocessing and returns one
JSON-ready dict per file. Files the model cannot take (a volume where a 2-D
image is expected, a signal, an unreadable file) raise a clear error instead of
producing a guess.

Start-up cost matters (``meddx predict`` must answer in under 3 s cold): torch
is imported only when a model is built, and small inputs run on one thread,
since waking a thread pool costs more than a tiny forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError, ModelError

_ONE_THREAD_PIXELS = 16 * 64 * 64
"""Batches with fewer input pixels than this run on one thread (faster than a pool)."""


@contextmanager
def _threads_for(pixels: int) -> Iterator[None]:
    """Use one torch thread for small work; leave the setting alone otherwise."""
    import torch

    if pixels >= _ONE_THREAD_PIXELS or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class Pipeline:
    """A loaded model package."""

    folder: Path
    package: dict[str, Any]
    model: Any

    @classmethod
    def load(cls, model: str | Path) -> Pipeline:
        """Load a package from a folder path or a registered ``name[:version]`` (latest when no version)."""
        from meddx.models import create_model
        from meddx.models.registry import load_pretrained
        from meddx.packaging.registry import read_package, resolve

        folder = resolve(model)
        package = read_package(folder)
        if package.get("kind") == "backbone":
            raise ModelError(
                "this is a pretrained backbone without a classifier", path=folder, field="kind",
                hint=f"Fine-tune it first: meddx train DATA --pretrained {folder}",
            )
        for key in ("architecture", "num_classes", "class_names", "preprocess"):
            if key not in package:
                raise ModelError(f"package.json has no {key!r}", path=folder / "package.json", field=key,
                                 hint="Re-run `meddx train` to write a complete package")
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
        with torch.inference_mode(), _threads_for(int(np.prod(x.shape[:1] + x.shape[2:]))):
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
        while sample.format == "nifti" and array.ndim > 2 and array.shape[-1] == 1:
            array = array[..., 0]  # a 2-D image stored as (X, Y, 1): no slice to choose
        colour = array.ndim == 3 and array.shape[-1] in (3, 4) and sample.format != "nifti"
        if array.ndim == 3 and not colour or array.ndim == 4:
            if slice_index is None:
                raise InvalidValueError(
                    f"the file holds a volume of shape {array.shape}; this model expects a 2-D image",
                    path=path, field="shape", hint="Pass slice_index (CLI: --slice N) to choose a slice",
                )
            count = array.shape[2] if sample.format == "nifti" else array.shape[0]
            if not -count <= slice_index < count:
                raise InvalidValueError(
                    f"slice {slice_index} is outside the volume's {count} slices (shape {array.shape})",
                    path=path, field="slice", hint=f"Choose a slice from 0 to {count - 1}",
                )
            array = array[:, :, slice_index] if sample.format == "nifti" else array[slice_index]
            if array.ndim == 3 and sample.format == "nifti":
                array = array[..., 0]
        if colour:
            array = array[..., :3].mean(axis=-1) if self.package["preprocess"]["in_chans"] == 1 else array[..., :3]
        dtype = np.asarray(sample.array).dtype
        if sample.window and sample.format == "dicom":
            center, width = sample.window
            low, high = center - width / 2, center + width / 2
        elif dtype == np.uint8 and sample.format in ("image", "dicom"):
            low, high = 0.0, 255.0  # as in training (image folders, MedMNIST): 8-bit data as it is
        elif dtype == np.uint16 and sample.format == "image":
            low, high = 0.0, 65535.0  # 16-bit PNG/TIFF: scaled by 1/257, as the folder reader does
        else:
            low, high = float(np.min(array)), float(np.max(array))
        scaled = np.clip((array - low) / (high - low or 1.0), 0, 1) * 255
        return np.rint(scaled).astype(np.uint8)  # rint: 8-bit values come back exactly

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

    def predict(self, files: str | Path | list[str | Path], *, slice_index: int | None = None) -> list[dict[str, Any]]:
        """The Python API: ``Pipeline.load("name:1").predict(["a.dcm", "b.png"])`` (one dict per file)."""
        paths = [files] if isinstance(files, (str, Path)) else list(files)
        return self.predict_files(paths, slice_index=slice_index)
