"""``Pipeline``: a trained model package plus its preprocessing, ready to predict.

``Pipeline.load(model)`` takes a run folder / package path or a registered
``name[:version]`` and reads ``package.json`` and ``model.safetensors``;
``predict`` (alias of ``predict_files``) reads DICOM/PNG/JPEG/NIfTI through
:func:`meddx.data.read`, applies the package's preprocessing and returns one
JSON-ready dict per file. Files the model cannot take (a volume where a 2-D
image is expected, a signal, an unreadable file) raise a clear error instead of
producing a guess.

Start-up cost matters (``meddx predict`` must answer in under 3 s cold): plain
predictions run the package's ONNX export (:mod:`meddx.inference.runtime`), so
torch is imported only when a torch model is built; there, small inputs run on
one thread, since waking a thread pool costs more than a tiny forward pass.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, ModelError
from meddx.inference.runtime import ONNX_METHODS

if TYPE_CHECKING:
    from meddx.inference.schema import Prediction

_ONE_THREAD_PIXELS = 16 * 64 * 64
"""Batches with fewer input pixels than this run on one thread (faster than a pool)."""


def _threads_for(pixels: int) -> Any:
    """One torch thread for small inputs; leave the setting alone otherwise."""
    from meddx._threads import one_thread_below

    return one_thread_below(pixels, _ONE_THREAD_PIXELS)


class Pipeline:
    """A loaded model package.

    Plain predictions (``uncertainty`` ``none`` or ``ensemble``) run the package's
    ONNX export with ONNX Runtime when it has a valid one (see
    :mod:`meddx.inference.runtime`); the torch modules (:attr:`members`) are built
    on first use, for Grad-CAM and the sampling uncertainty methods.
    """

    def __init__(self, folder: str | Path, package: dict[str, Any], members: list[Any] | None = None, *,
                 networks: list[Any] | None = None) -> None:
        self.folder = Path(folder)
        self.package = package
        self._members = list(members) if members is not None else None
        self.networks = networks
        self._trust = None
        self._ood: Any = False  # False: not loaded yet; None: the package has no detector
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | Path, *, runtime: str | None = None) -> Pipeline:
        """Load a package from a folder path or a registered ``name[:version]`` (latest when no version).

        A deep-ensemble package (``kind: ensemble``) loads every member listed in it.
        ``runtime`` (default ``$MEDDX_RUNTIME`` or ``auto``): ``auto`` predicts with the
        ONNX export when it is valid, ``onnx`` requires it, ``torch`` never uses it.
        """
        from meddx.inference.runtime import RUNTIMES, default_runtime, load_networks
        from meddx.packaging.registry import read_package, resolve

        runtime = runtime or default_runtime()
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}", field="runtime")
        folder = resolve(model)
        package = read_package(folder)
        modality = str(package.get("modality") or "image")
        if modality != "image":
            raise ModelError(f"this is a {modality} model; Pipeline reads images", path=folder, field="modality",
                             hint="Use `meddx predict`/`meddx evaluate` (they route every modality), or "
                                  "`meddx stream run` for signal models")
        if package.get("kind") == "backbone":
            raise ModelError(
                "this is a pretrained backbone without a classifier", path=folder, field="kind",
                hint=f"Fine-tune it first: meddx train DATA --pretrained {folder}",
            )
        for key in ("architecture", "num_classes", "class_names", "preprocess"):
            if key not in package:
                raise ModelError(f"package.json has no {key!r}", path=folder / "package.json", field=key,
                                 hint="Re-run `meddx train` to write a complete package")
        pipeline = cls(folder, package)
        if runtime != "torch":
            folders = pipeline.member_folders()
            packages = [package] if folders == [folder] else [read_package(f) for f in folders]
            pipeline.networks = load_networks(folders, packages, required=runtime == "onnx")
        if pipeline.networks is None:
            pipeline._members = [_build(package, f) for f in pipeline.member_folders()]
        return pipeline

    def member_folders(self) -> list[Path]:
        """The folders of the package's networks: its ensemble members, or the package itself."""
        return [self.folder / m for m in self.package.get("members", [])] or [self.folder]

    @property
    def members(self) -> list[Any]:
        """The torch modules, one per ensemble member, built on first use."""
        if self._members is None:
            with self._lock:
                if self._members is None:
                    self._members = [_build(self.package, f) for f in self.member_folders()]
        return self._members

    @property
    def model(self) -> Any:
        """The (first) torch module."""
        return self.members[0]

    @property
    def runtime(self) -> str:
        """``onnx`` when plain predictions run on ONNX Runtime, else ``torch``."""
        return "onnx" if self.networks else "torch"

    @property
    def trust(self) -> Any:
        """The package's calibration, conformal predictor and abstention policy."""
        if self._trust is None:
            from meddx.inference.trust import TrustLayer

            self._trust = TrustLayer.from_package(self.package)
        return self._trust

    @property
    def ood(self) -> Any:
        """The package's out-of-distribution gate (:class:`meddx.trust.ood.OODGate`), or None."""
        if self._ood is False:
            from meddx.trust.ood import load_gate

            self._ood = load_gate(self.folder, self.package)
        return self._ood

    @property
    def intended_input(self) -> dict[str, Any] | None:
        """What the model was made to read (``package.json["intended_input"]``), or None."""
        return self.package.get("intended_input")

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8/uint16 images ``(N, H, W[, C])`` → the network's float32 input ``(N, C, size, size)``."""
        pre = self.package["preprocess"]
        return (self._inputs(images) - np.float32(pre["mean"])) / np.float32(pre["std"])

    def logits_and_features(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(N, C)`` and penultimate features ``(N, D)`` of the first network, for the OOD gate."""
        x = self.normalise(images)
        batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
        if self.networks and self.networks[0].has_features:
            outputs = [self.networks[0].logits_and_features(batch) for batch in batches]
        else:
            model = self.members[0]
            import torch

            from meddx.models.heads import logits_and_features

            with torch.inference_mode(), _threads_for(int(np.prod(x.shape))):
                outputs = [tuple(t.float().numpy() for t in logits_and_features(model, torch.from_numpy(b)))
                           for b in batches]
        return (np.concatenate([z for z, _ in outputs]).astype(np.float64),
                np.concatenate([f for _, f in outputs]).astype(np.float64))

    def assess_ood(self, images: np.ndarray, method: str | None = None) -> list[dict[str, Any]] | None:
        """One OOD verdict per image (``method``, ``score``, ``threshold``, ``flagged``), or None without a gate."""
        gate = self.ood
        if gate is None:
            return None
        logits, features = self.logits_and_features(images)
        return [{**r.to_dict(), "flag_rate": gate.flag_rate}
                for r in gate.assess(features, logits, method, negative_class=self.negative_class)]

    @property
    def negative_class(self) -> int | None:
        """Index of the class a binary model's ``negative`` answer names (None for other tasks)."""
        names = self.class_names
        positive = self.package.get("positive_class")
        if len(names) != 2 or positive not in names:
            return None
        return 1 - names.index(positive)

    @property
    def class_names(self) -> list[str]:
        return list(self.package["class_names"])

    def _inputs(self, images: np.ndarray) -> np.ndarray:
        from meddx.preprocess.arrays import prepare_arrays

        pre = self.package["preprocess"]
        x = prepare_arrays(images, pre["size"])
        if x.shape[1] != pre["in_chans"]:
            x = x.mean(axis=1, keepdims=True) if pre["in_chans"] == 1 else np.repeat(x, pre["in_chans"], axis=1)
        return x

    def run_uncertainty(self, images: np.ndarray, method: str = "none", samples: int = 20,
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Primary logits ``(N, C)`` and sampled logits ``(S, N, C)`` for uint8/uint16 images ``(N, H, W[, C])``."""
        x = self.normalise(images)
        batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
        if self.networks and method in ONNX_METHODS:
            from meddx.inference.runtime import run_networks

            outputs = [run_networks(self.networks, batch, method) for batch in batches]
        else:
            members = self.members  # first: a clear error where torch is not installed
            import torch

            from meddx.uncertainty import run_method

            with _threads_for(int(np.prod(x.shape[:1] + x.shape[2:])) * (samples if method == "tta" else 1)):
                outputs = [(out.primary.float().numpy(), out.samples.float().numpy())
                           for out in (run_method(method, members, torch.from_numpy(np.ascontiguousarray(batch)),
                                                  samples=samples) for batch in batches)]
        return (np.concatenate([p for p, _ in outputs]).astype(np.float64),
                np.concatenate([d for _, d in outputs], axis=1).astype(np.float64))

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """The model's logits ``(N, C)`` (an ensemble: log of its members' mean probability)."""
        method = "ensemble" if len(self.member_folders()) > 1 else "none"
        return self.run_uncertainty(images, method)[0]

    def predict_arrays(self, images: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Class probabilities ``(N, C)`` for uint8/uint16 images ``(N, H, W[, C])``.

        ``calibrated`` applies the package's calibrator (fitted on validation data);
        ``False`` gives the model's own softmax output.
        """
        logits = self.predict_logits(images)
        if calibrated:
            return self.trust.calibrator.transform(logits)
        from meddx.calibration.scaling import softmax

        return softmax(logits)

    def predict_detailed(self, images: np.ndarray, inputs: list[str] | None = None, *, uncertainty: str = "auto",
                         samples: int = 20) -> list[Prediction]:
        """The full prediction schema for each image: calibration, uncertainty, set, OOD verdict, decision."""
        from meddx.inference.schema import OOD, Decision, InputCheck, Prediction, Uncertainty
        from meddx.trust.decide import decide
        from meddx.uncertainty import decompose

        method = self.default_uncertainty() if uncertainty == "auto" else uncertainty
        from meddx.calibration.scaling import softmax

        primary, draws = self.run_uncertainty(images, method, samples)
        sample_probs = softmax(draws)
        measures = decompose(sample_probs)
        raw = softmax(primary)
        names = self.class_names
        trusted = self.trust.apply(primary, names, self.package.get("positive_class"))
        calibration = (self.package.get("trust") or {}).get("calibration", {}).get("name", "identity")
        ood = self.assess_ood(images)
        results = []
        for i, t in enumerate(trusted):
            sd = sample_probs[:, i].std(axis=0) if sample_probs.shape[0] > 1 else None
            results.append(Prediction(
                input=inputs[i] if inputs else str(i),
                modality=self.package.get("modality", "image"),
                model=self.package["name"], model_version=str(self.package["version"]), class_names=names,
                probabilities={n: float(p) for n, p in zip(names, raw[i], strict=True)},
                calibrated_probabilities={n: float(p) for n, p in zip(names, t["calibrated"], strict=True)},
                calibration=calibration,
                prediction=names[int(np.argmax(t["calibrated"]))],
                uncertainty=Uncertainty(
                    method=method, samples=int(sample_probs.shape[0]),
                    predictive_entropy=float(measures["predictive_entropy"][i]),
                    expected_entropy=float(measures["expected_entropy"][i]),
                    mutual_information=float(measures["mutual_information"][i]),
                    max_probability=float(measures["max_probability"][i]),
                    sample_probabilities_sd={n: float(v) for n, v in zip(names, sd, strict=True)}
                    if sd is not None else None),
                prediction_set=t["set"],
                coverage=1 - self.trust.alpha if self.trust.alpha is not None else None,
                decision=Decision(**decide(t["decision"], ood=ood[i] if ood else None)),
                ood=OOD(**ood[i]) if ood else None,
                input_check=InputCheck(passed=True) if self.intended_input else None,
                intended_use=self.package.get("intended_use"),
            ))
        return results

    def default_uncertainty(self) -> str:
        """The package's natural method: its ensemble, its Bayesian layer, or none."""
        if len(self.member_folders()) > 1:
            return "ensemble"
        if "head" in self.package:  # written by every trainer since heads exist: no need to build the model
            return "bayes" if self.package["head"] == "bayes" else "none"
        from meddx.models.heads import classifier, is_bayes

        try:
            if is_bayes(classifier(self.model)):
                return "bayes"
        except ModelError:
            pass
        return "none"

    def image_from_file(self, path: str | Path, *, slice_index: int | None = None) -> np.ndarray:
        """Read ``path`` and turn it into one uint8 2-D image the model can take."""
        from meddx.data.readers import read

        return self.image_from_sample(read(path), path, slice_index=slice_index)

    def check_input(self, sample: Any) -> list[str]:
        """Why ``sample`` contradicts the package's intended input (empty: no contradiction found)."""
        from meddx.trust.intended import check_sample

        return check_sample(sample, self.intended_input)

    def image_from_sample(self, sample: Any, path: str | Path, *, slice_index: int | None = None) -> np.ndarray:
        """Turn a read sample into one uint8 2-D image the model can take."""
        from meddx.data.sample import ImageSample

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

    def predict_files(self, paths: list[str | Path], *, slice_index: int | None = None, uncertainty: str = "auto",
                      samples: int = 20, explain: str | None = None,
                      explain_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """One prediction (see :mod:`meddx.inference.schema`) per file, as JSON-ready dicts.

        ``explain`` (``gradcam``, ``gradcam++``, ``scorecam``) adds a saliency map saved
        as a PNG overlay in ``explain_dir`` with its sanity and faithfulness checks.
        """
        if explain:
            self.members  # noqa: B018 - saliency needs the torch model: build it now, or say what is missing
        results = []
        for path in paths:
            image, reasons = self.screen_file(path, slice_index=slice_index)
            if image is None:
                results.append({"file": str(path), **self.rejection(str(path), reasons).to_json_dict()})
                continue
            prediction = self.predict_detailed(image[None], [str(path)], uncertainty=uncertainty,
                                               samples=samples)[0]
            if explain:
                from meddx.inference.explanations import explain_image

                prediction.explanation = explain_image(self, image, prediction.prediction, method=explain,
                                                       out_dir=Path(explain_dir or "."), stem=Path(path).stem)
            results.append({"file": str(path), **prediction.to_json_dict()})
        return results

    def screen_file(self, path: str | Path, *, slice_index: int | None = None) -> tuple[np.ndarray | None, list[str]]:
        """Read ``path`` and check it against the intended input: ``(image, [])`` or ``(None, reasons)``.

        An unreadable file or one the model cannot take is a rejection with the
        reader's message, so one bad file never aborts a batch.
        """
        from meddx.data.readers import read
        from meddx.exceptions import MeddxError

        try:
            sample = read(path)
            reasons = self.check_input(sample)
            if reasons:
                return None, reasons
            return self.image_from_sample(sample, path, slice_index=slice_index), []
        except MeddxError as exc:
            return None, [str(exc)]

    def rejection(self, input: str, reasons: list[str]) -> Prediction:
        """The schema's ``rejected`` prediction for an input the model was not made for."""
        from meddx.inference.schema import Prediction

        return Prediction.rejected(input=input, modality=self.package.get("modality", "image"),
                                   model=self.package["name"], model_version=str(self.package["version"]),
                                   class_names=self.class_names, reasons=reasons,
                                   intended_use=self.package.get("intended_use"))

    def predict(self, files: str | Path | list[str | Path], *, slice_index: int | None = None,
                uncertainty: str = "auto", samples: int = 20, explain: str | None = None,
                explain_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """The Python API: ``Pipeline.load("name:1").predict(["a.dcm", "b.png"])`` (one dict per file)."""
        paths = [files] if isinstance(files, (str, Path)) else list(files)
        return self.predict_files(paths, slice_index=slice_index, uncertainty=uncertainty, samples=samples,
                                  explain=explain, explain_dir=explain_dir)


def _build(package: dict[str, Any], folder: Path) -> Any:
    """One model of a package, with its weights, in eval mode."""
    try:
        from meddx.models import create_model
        from meddx.models.registry import load_pretrained

        model = create_model(package["architecture"], num_classes=package["num_classes"],
                             in_chans=package["preprocess"]["in_chans"], head=package.get("head", "linear"),
                             drop_rate=package.get("drop_rate"))
    except ImportError as exc:  # a predict-only install (meddx[runtime]) has no torch
        raise ModelError(f"this needs the torch model, and {exc.name or exc} is not installed", path=folder,
                         field="runtime", hint="pip install 'meddx[train]'; without it, plain predictions "
                         "(--uncertainty none) run on the package's ONNX export") from exc
    report = load_pretrained(model, folder)
    if report["skipped"]:
        raise ModelError(f"weights do not fit the architecture: {report['skipped'][:3]}", path=folder)
    model.eval()
    return model
