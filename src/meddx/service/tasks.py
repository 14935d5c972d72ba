"""Segmentation and detection models in the clinician service: a thin adapter over their handler.

:meth:`meddx.service.context.ServiceContext.pipeline` gives a
:class:`~meddx.inference.Pipeline` for an image classifier and a :class:`TaskModel`
for any other task. A :class:`TaskModel` offers what the upload flow needs
(package, name and version, class names, task, the intended-input screen, a
``rejected`` prediction) and runs the package's own handler
(:func:`meddx.modalities.handler_for_package`) on one stored image, so the
service never branches on a task: what it stores follows from the prediction's
parts (see :class:`meddx.inference.schema.Prediction`):

* a ``mask``: the label mask PNG (``mask.png``) and, for a DICOM upload, a DICOM
  Segmentation (``seg.dcm``, :func:`meddx.outputs.write_seg`);
* ``boxes``: for a DICOM upload, a TID 1500 Structured Report (``sr.dcm``,
  :func:`meddx.outputs.write_sr`);
* either: a transparent overlay PNG of the mask colours and the box outlines
  with their labels, on the input's own pixel grid, which the result card blends
  over the preview with its opacity slider;
* a ``synthetic`` part (restoration, translation): the synthetic image as the
  handler wrote it, with the ``SYNTHETIC`` banner burnt in (``synthetic.png``),
  and for a DICOM upload the new DICOM instance marked ``DERIVED``
  (``synthetic.dcm``); the handler runs on the de-identified DICOM itself so that
  it can write that instance. No overlay (the card shows the synthetic image
  beside the input), and the banner-less 16-bit ``.raw.png`` is not kept: every
  picture the service hands out is marked.

The handler writes its files into a temporary folder that is removed at once;
the stored prediction names none of them (file fields become API links once the
result has an id: :func:`link_outputs`).
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import InvalidValueError, MeddxError

PALETTE = [(0, 200, 83), (230, 25, 75), (60, 120, 240), (255, 190, 0), (145, 30, 180), (70, 220, 230)]
"""Colours of the foreground classes, in class order (the overlay and the legend use the same)."""
FILES = {"mask": ("mask.png", "image/png"), "seg": ("seg.dcm", "application/dicom"),
         "sr": ("sr.dcm", "application/dicom"), "synthetic": ("synthetic.png", "image/png"),
         "synthetic_dicom": ("synthetic.dcm", "application/dicom")}
"""What a task result may store besides its overlay: key -> (file name under /api/results/{id}/, media type)."""
UPLOAD = "the upload"
SYNTHESIS = ("restoration", "translation")
"""Tasks whose output is a synthetic image (:class:`meddx.inference.schema.Synthetic`)."""
OPTIONS = {"restoration": ("dose",), "translation": ("direction",)}
"""Upload options a task's handler takes (form fields / query parameters of ``POST /api/studies``)."""
BANNER = "SYNTHETIC \u2013 not acquired"
"""The banner the result card shows over every synthetic image (the PNG has its own burnt in)."""


@dataclass
class TaskOutputs:
    """One task prediction and the files the service stores with it (bytes, keyed as in :data:`FILES`)."""

    prediction: dict[str, Any]
    overlay: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def is_task_model(model: Any) -> bool:
    return isinstance(model, TaskModel)


class TaskModel:
    """A segmentation, detection, restoration or translation package served through its handler's ``predict``."""

    def __init__(self, folder: str | Path, package: dict[str, Any]) -> None:
        from meddx.modalities import handler_for_package, task_of_package

        self.folder = Path(folder)
        self.package = package
        self.task = task_of_package(package)
        self.handler = handler_for_package(package)  # a ConfigError naming the known ones when there is none
        self.ood = None  # no out-of-distribution gate: the drift monitor leaves these models alone

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.package.get("class_names") or []]

    @property
    def intended_input(self) -> dict[str, Any] | None:
        return self.package.get("intended_input")

    def default_uncertainty(self) -> str:
        return str((self.package.get("uncertainty") or {}).get("method") or
                   ("mc-dropout" if (self.folder / "model_mc.onnx").is_file() else "none"))

    def rejection(self, input: str, reasons: list[str]) -> Any:
        """The schema's ``rejected`` prediction (with this model's task) for an input it will not read."""
        from meddx.inference.schema import Prediction

        return Prediction.rejected(input=input, modality=str(self.package.get("modality") or "image"),
                                   model=str(self.package["name"]), model_version=str(self.package["version"]),
                                   class_names=self.class_names, reasons=reasons,
                                   intended_use=self.package.get("intended_use")).model_copy(update={"task": self.task})

    # reading --------------------------------------------------------------------------------------------------
    def image_from_file(self, path: str | Path, *, slice_index: int | None = None) -> np.ndarray:
        """The uint8 image (grey or RGB) on the file's own pixel grid, windowed as the file says."""
        from meddx.data.readers import read

        return image_from_sample(read(path), path, slice_index)

    def screen_file(self, path: str | Path, *, slice_index: int | None = None) -> tuple[np.ndarray | None, list[str]]:
        """``(image, [])``, or ``(None, reasons)`` for a file it cannot read or was not made for."""
        from meddx.data.readers import read
        from meddx.trust.intended import check_sample

        try:
            sample = read(path)
            reasons = check_sample(sample, self.intended_input) if self.intended_input else []
            if reasons:
                return None, reasons
            return image_from_sample(sample, path, slice_index), []
        except MeddxError as exc:
            return None, [str(exc)]

    # predicting -----------------------------------------------------------------------------------------------
    @property
    def synthetic(self) -> bool:
        """True for a model whose output is a synthetic image (restoration, translation)."""
        return self.task in SYNTHESIS

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse, by name, an upload option this model's task does not take (an InvalidValueError)."""
        for key, value in options.items():
            if value is not None and key not in OPTIONS.get(self.task, ()):
                takes = [t for t, keys in OPTIONS.items() if key in keys]
                raise InvalidValueError(f"{key} does not apply to {self.task} models", field=key,
                                        hint=f"Give {key} to {' or '.join(takes) or 'no'} models only")

    def run(self, image: np.ndarray, *, uncertainty: str = "auto", dicom: bytes | None = None,
            options: dict[str, Any] | None = None) -> TaskOutputs:
        """Predict on ``image`` with the handler; the scrubbed prediction, the overlay and the files to keep.

        ``dicom``: the de-identified DICOM the image came from, the source of the SEG / SR written here
        (a synthesis model reads the DICOM itself and writes its derived instance).
        A DICOM object that cannot be written is a warning in the prediction, never a lost result.
        ``options``: the task's own upload options (:data:`OPTIONS`: ``dose``, ``direction``), None left out.
        """
        from PIL import Image

        from meddx.modalities import call

        extra = {k: v for k, v in (options or {}).items() if v is not None}
        self.check_options(extra)
        with tempfile.TemporaryDirectory(prefix="meddx-task-") as tmp:
            work = Path(tmp)
            source = work / "upload.png"
            Image.fromarray(image).save(source)
            options = {"out_dir": str(work / "out"), **extra}
            if uncertainty != "auto":
                options["uncertainty"] = uncertainty
            if self.synthetic:
                return self._synthesize(source, dicom, work, options)
            [prediction] = call(self.handler.handler().predict, self.folder, self.package, [str(source)],
                                what=f"{self.task}", **options)
            mask_file = (prediction.get("mask") or {}).get("mask")
            mask = np.asarray(Image.open(mask_file)) if mask_file else None
            prediction = scrub(prediction, (str(source), str(work)))
            outputs = TaskOutputs(prediction)
            if prediction["decision"]["decision"] == "rejected":
                return outputs
            outputs.overlay = png(overlay(image.shape[:2], prediction, mask))
            if mask is not None:
                outputs.files["mask"] = png(mask.astype(np.uint8))
            if dicom is not None:
                outputs.files.update(self._dicom(prediction, mask, dicom, work))
        return outputs

    def _synthesize(self, source: Path, dicom: bytes | None, work: Path, options: dict[str, Any]) -> TaskOutputs:
        """A restoration or translation: the handler on the upload (the DICOM itself when there is one), its
        synthetic PNG (banner burnt in) and derived DICOM kept; the raw PNG left behind."""
        from meddx.modalities import call

        paths = [str(source), str(work)]
        if dicom is not None:
            source = work / "upload.dcm"
            source.write_bytes(dicom)
            paths.insert(0, str(source))
        [prediction] = call(self.handler.handler().predict, self.folder, self.package, [str(source)],
                            what=f"{self.task}", **options)
        synthetic = prediction.get("synthetic") or {}
        files: dict[str, bytes] = {}
        if synthetic.get("image"):
            files["synthetic"] = Path(synthetic["image"]).read_bytes()
        if synthetic.get("dicom"):
            files["synthetic_dicom"] = Path(synthetic["dicom"]).read_bytes()
        prediction = scrub(prediction, tuple(paths))
        if dicom is not None and prediction["decision"]["decision"] != "rejected" and "synthetic_dicom" not in files:
            prediction.setdefault("warnings", []).append("no DICOM of the synthetic image was written")
        return TaskOutputs(prediction, files=files if prediction["decision"]["decision"] != "rejected" else {})

    def _dicom(self, prediction: dict[str, Any], mask: np.ndarray | None, data: bytes, work: Path) -> dict[str, bytes]:
        """The DICOM SEG of the mask and the SR of the boxes, on the de-identified source."""
        import pydicom

        from meddx.outputs import write_seg, write_sr

        source = work / "source.dcm"
        source.write_bytes(data)
        frames = int(getattr(pydicom.dcmread(source, stop_before_pixels=True), "NumberOfFrames", 1) or 1)
        warnings = prediction.setdefault("warnings", [])
        if frames != 1:
            warnings.append(f"no DICOM SEG/SR: the upload has {frames} frames and the result is on one of them")
            return {}
        name, version = str(self.package["name"]), str(self.package["version"])
        out: dict[str, bytes] = {}

        def attempt(key: str, what: str, write: Any) -> None:
            try:
                out[key] = write().read_bytes()
            except Exception as exc:  # noqa: BLE001 - the prediction stands; say why its DICOM object is missing
                logging.getLogger(__name__).warning("DICOM %s not written", what, exc_info=True)
                reason = str(exc) if isinstance(exc, MeddxError) else f"{type(exc).__name__}: {exc}"
                warnings.append(f"no DICOM {what}: {reason.replace(str(source), UPLOAD).replace(str(work), UPLOAD)}")

        if mask is not None:
            classes = list(prediction["mask"]["classes"])[1:]
            if mask.any():
                attempt("seg", "SEG", lambda: write_seg(source, mask, classes=classes, out=work / "seg.dcm",
                                                        algorithm=name, version=version))
            else:
                warnings.append("no DICOM SEG: the mask is empty")
        if prediction.get("boxes") is not None:
            rows, cols = _shape(source)
            findings = [{"label": b["label"], "score": min(max(float(b["score"]), 0.0), 1.0),
                         "box": _clip(b["box"], cols, rows)} for b in prediction["boxes"]]
            findings = [f for f in findings if f["box"][0] < f["box"][2] and f["box"][1] < f["box"][3]]
            attempt("sr", "SR", lambda: write_sr(source, findings=findings, out=work / "sr.dcm", algorithm=name,
                                                 version=version))
        return out


def _shape(source: Path) -> tuple[int, int]:
    import pydicom

    ds = pydicom.dcmread(source, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


def _clip(box: list[float], cols: int, rows: int) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [min(max(x0, 0.0), cols), min(max(y0, 0.0), rows), min(max(x1, 0.0), cols), min(max(y1, 0.0), rows)]


def image_from_sample(sample: Any, path: str | Path, slice_index: int | None) -> np.ndarray:
    """A read sample as one uint8 2-D image (grey or RGB) on its own grid: a volume needs ``slice_index``."""
    from meddx.data.sample import ImageSample

    if not isinstance(sample, ImageSample):
        raise InvalidValueError(f"this model takes images, the file holds a {sample.kind}", path=path,
                                field="modality", hint="Use a model trained on this kind of data")
    array = np.asarray(sample.array)
    while sample.format == "nifti" and array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    colour = array.ndim == 3 and array.shape[-1] in (3, 4) and sample.format != "nifti"
    if array.ndim == 4 or array.ndim == 3 and not colour:
        if slice_index is None:
            raise InvalidValueError(f"the file holds a volume of shape {array.shape}; this model reads 2-D images",
                                    path=path, field="shape", hint="Choose a slice (slice_index)")
        count = array.shape[2] if sample.format == "nifti" else array.shape[0]
        if not -count <= slice_index < count:
            raise InvalidValueError(f"slice {slice_index} is outside the volume's {count} slices", path=path,
                                    field="slice", hint=f"Choose a slice from 0 to {count - 1}")
        array = array[:, :, slice_index] if sample.format == "nifti" else array[slice_index]
        colour = array.ndim == 3 and array.shape[-1] in (3, 4)
    if colour:
        array = array[..., :3]
    if array.dtype == np.uint8 and not (sample.window and sample.format == "dicom"):
        return np.ascontiguousarray(array)
    values = array.astype(np.float64)
    if sample.window and sample.format == "dicom":
        centre, width = sample.window
        low, high = centre - width / 2, centre + width / 2
    elif array.dtype == np.uint16 and sample.format == "image":
        low, high = 0.0, 65535.0
    else:
        low, high = float(values.min()), float(values.max())
    return np.rint(np.clip((values - low) / (high - low or 1.0), 0, 1) * 255).astype(np.uint8)


# --- what the service stores and shows ------------------------------------------------------------------------


def scrub(value: Any, paths: tuple[str, ...]) -> Any:
    """``value`` with every server path gone: the handler's file fields emptied (:func:`link_outputs` fills
    them with links), ``input`` "upload", and the temporary folder named "the upload" in any text."""
    if isinstance(value, dict):
        out = {k: scrub(v, paths) for k, v in value.items()}
        if isinstance(out.get("mask"), dict):
            for key in ("mask", "probability_map", "uncertainty_map", "overlay", "dicom_seg"):
                out["mask"][key] = None
        if isinstance(out.get("explanation"), dict):
            out["explanation"]["overlay"] = None
        if "input" in out and "decision" in out:
            out["input"] = "upload"
        if "dicom_sr" in out:
            out["dicom_sr"] = None
        if isinstance(out.get("synthetic"), dict):
            for key in ("image", "image_raw", "dicom"):
                out["synthetic"][key] = None
        return out
    if isinstance(value, list):
        return [scrub(v, paths) for v in value]
    if isinstance(value, str):
        for path in paths:  # the longer (file) path first, then its folder
            value = value.replace(path, UPLOAD)
        return value
    return value


def link_outputs(prediction: dict[str, Any], result_id: str, files: dict[str, Any], overlay: bool) -> None:
    """Point the prediction's file fields at this result's API links (in place)."""
    base = f"/api/results/{result_id}"
    mask = prediction.get("mask")
    if isinstance(mask, dict):
        mask["mask"] = f"{base}/mask.png" if "mask" in files else None
        mask["overlay"] = f"{base}/overlay.png" if overlay else None
        mask["dicom_seg"] = f"{base}/seg.dcm" if "seg" in files else None
    if "sr" in files:
        prediction["dicom_sr"] = f"{base}/sr.dcm"
    if isinstance(prediction.get("explanation"), dict) and overlay:
        prediction["explanation"]["overlay"] = f"{base}/overlay.png"
    synthetic = prediction.get("synthetic")
    if isinstance(synthetic, dict):
        synthetic["image"] = f"{base}/synthetic.png" if "synthetic" in files else None
        synthetic["dicom"] = f"{base}/synthetic.dcm" if "synthetic_dicom" in files else None


def foreground(prediction: dict[str, Any]) -> list[str]:
    """The classes drawn in colour: a mask's classes after the background, else the model's classes."""
    mask = prediction.get("mask")
    if isinstance(mask, dict) and mask.get("classes"):
        return [str(c) for c in mask["classes"][1:]]
    return [str(c) for c in prediction.get("class_names") or []]


def colour(prediction: dict[str, Any], name: str) -> tuple[int, int, int]:
    classes = foreground(prediction)
    return PALETTE[(classes.index(name) if name in classes else len(classes)) % len(PALETTE)]


def overlay(shape: tuple[int, ...], prediction: dict[str, Any], mask: np.ndarray | None) -> np.ndarray:
    """RGBA on the input's grid: transparent, the mask in its class colours, box outlines with their labels."""
    from PIL import Image, ImageDraw

    rows, cols = int(shape[0]), int(shape[1])
    rgba = np.zeros((rows, cols, 4), np.uint8)
    if mask is not None:
        for k, name in enumerate(foreground(prediction), start=1):
            rgba[mask == k] = (*colour(prediction, name), 255)
    picture = Image.fromarray(rgba, mode="RGBA")
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(rows, cols) / 300))
    for box in reversed(prediction.get("boxes") or []):  # the highest score drawn last, on top
        ink = (*colour(prediction, box["label"]), 255)
        x0, y0, x1, y1 = _clip(box["box"], cols - 1, rows - 1)
        draw.rectangle([x0, y0, x1, y1], outline=ink, width=width)
        draw.text((x0 + 2, y0 + 1), f"{box['label']} {float(box['score']):.2f}", fill=ink)
    return np.asarray(picture)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def legend(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per coloured class for the result card: name, colour, count (boxes) and/or share (mask)."""
    if prediction.get("mask") is None and prediction.get("boxes") is None:
        return []
    counts = prediction.get("counts") or {}
    fraction = (prediction.get("mask") or {}).get("fraction") or {}
    rows = []
    for name in foreground(prediction):
        r, g, b = colour(prediction, name)
        rows.append({"name": name, "colour": f"#{r:02x}{g:02x}{b:02x}", "count": counts.get(name),
                     "fraction": fraction.get(name)})
    return rows


def summary(prediction: dict[str, Any]) -> str:
    """The task's findings in one line ("3 RBC, 1 WBC detected"; "vessel 12.3% of the analysed area, mean
    uncertainty 0.041"); empty for a classifier's prediction."""
    parts = []
    if prediction.get("counts") is not None:
        counts = prediction["counts"]
        found = ", ".join(f"{n} {c}" for c, n in counts.items() if n)
        parts.append(f"{found or 'no object'} detected")
    synthetic = prediction.get("synthetic")
    if isinstance(synthetic, dict):
        parts.append(synthetic_summary(prediction))
    mask = prediction.get("mask")
    if isinstance(mask, dict):
        shares = ", ".join(f"{c} {100 * float(mask['fraction'].get(c, 0.0)):.1f}%" for c in foreground(prediction))
        line = f"{shares} of the analysed area"
        if mask.get("mean_uncertainty") is not None:
            line += f", mean uncertainty {float(mask['mean_uncertainty']):.3f}"
        parts.append(line)
    return "; ".join(parts)


# --- synthetic images --------------------------------------------------------------------------------------


def _n(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def synthetic_checks(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """The hallucination checks of a synthetic prediction in words: ``[{"text", "flag"}]`` (flag: look again)."""
    synthetic = prediction.get("synthetic")
    if not isinstance(synthetic, dict):
        return []
    checks = synthetic.get("checks") or {}
    rows: list[dict[str, Any]] = []
    residual = checks.get("residual")
    if isinstance(residual, dict):
        n = _n(residual.get("regions"))
        if n:
            rows.append({"text": f"{n} region(s) changed beyond the expected noise ({_n(residual.get('brighter'))} "
                                 f"brighter, {_n(residual.get('darker'))} darker) \u2013 compare with the input",
                         "flag": True})
        else:
            rows.append({"text": "No region changed beyond the expected noise: what was removed looks like noise",
                         "flag": False})
    if checks.get("noise_sd") is not None:
        rows.append({"text": f"Noise level estimated at the given dose: SD {float(checks['noise_sd']):.3f} "
                             "(of the full intensity range)", "flag": False})
    downstream = checks.get("downstream")
    if isinstance(downstream, dict):
        changed = bool(downstream.get("decision_changed"))
        rows.append({"text": f"Classifier {downstream.get('classifier')}: decision "
                             + ("CHANGED between the input and the synthetic image" if changed
                                else "the same on the input and the synthetic image"), "flag": changed})
    if "structures_added" in checks:
        added = _n(checks.get("structures_added"))
        rows.append({"text": (f"{added} structure(s) in the synthetic image have no counterpart in the input "
                              "\u2013 compare with the input") if added else
                             "No structure added: every edge in the synthetic image has one in the input",
                     "flag": added > 0})
    if "structures_removed" in checks:
        rows.append({"text": f"{_n(checks.get('structures_removed'))} input structure(s) not reproduced",
                     "flag": _n(checks.get("structures_removed")) > 0})
    if checks.get("structure_ssim") is not None:
        rows.append({"text": f"Structure similarity to the input (SSIM of gradients): "
                             f"{float(checks['structure_ssim']):.3f}", "flag": False})
    if checks.get("cycle_psnr") is not None:
        rows.append({"text": f"Translated back, the input is recovered at PSNR {float(checks['cycle_psnr']):.1f} dB",
                     "flag": False})
    if checks.get("target_domain_probability") is not None:
        rows.append({"text": f"Domain classifier: {100 * float(checks['target_domain_probability']):.0f}% that it "
                             "looks like the target modality", "flag": False})
    if checks.get("compared_at"):
        rows.append({"text": f"Compared at {checks['compared_at']}", "flag": False})
    return rows


def synthetic_summary(prediction: dict[str, Any]) -> str:
    """One line: what the synthetic image is and what its checks found."""
    synthetic = prediction.get("synthetic") or {}
    kind = str(synthetic.get("kind") or prediction.get("task") or "synthesis")
    what = f"synthetic {kind} image (not acquired)"
    if synthetic.get("dose") is not None:
        what += f" from an input at dose {float(synthetic['dose']):g} of the full dose"
    elif synthetic.get("source_modality") and synthetic.get("target_modality"):
        what += f", {synthetic['source_modality']} to {synthetic['target_modality']}"
    flagged = [row["text"] for row in synthetic_checks(prediction) if row["flag"]]
    return what + (": " + "; ".join(flagged) if flagged else "")
