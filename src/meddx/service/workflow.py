"""The work behind ``POST /api/studies``: de-identify, store encrypted, predict, explain, audit.

Kept apart from the HTTP layer so the REST route, the web form and the tests
run exactly the same steps:

1. the upload has been checked (:mod:`meddx.service.uploads`);
2. identifiers are removed before anything is stored: DICOM through the PS3.15
   Basic Profile (:mod:`meddx.privacy.deid`), PNG/JPEG re-encoded without
   metadata, NIfTI with its free-text header fields cleared; the patient is known
   from here on by a keyed pseudonym only;
3. the de-identified input is stored encrypted (AES-GCM) and its SHA-256 kept;
4. the input is screened against the model's declared intended input
   (:func:`screen_upload`): a file the model was not made for (a CT slice given
   to a chest X-ray model, a volume without a slice, a file the reader cannot
   take) gets a ``rejected`` prediction with the reasons, stored like any other
   result, and the model never runs on it;
5. otherwise the model predicts through the micro-batcher, with calibrated
   probabilities, uncertainty, conformal set, OOD verdict and decision, and
   (optionally) a Grad-CAM overlay with its sanity and faithfulness checks;
6. the result is stored encrypted, the model's drift monitor sees the study
   (:mod:`meddx.service.drift`) and the access is written to the audit log.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.service.uploads import Upload, UploadRejected


def deidentify_upload(upload: Upload, key: Any, patient_hint: str | None) -> tuple[bytes, str, str]:
    """(de-identified bytes, patient pseudonym, file suffix) for a checked upload."""
    if upload.kind == "dicom":
        from meddx.data.readers.dicom import open_dataset
        from meddx.privacy.deid import deidentify_dataset

        ds = open_dataset(upload.path)  # the one guarded open (bounded Deflated inflation)
        original = str(ds.get("PatientID", "") or patient_hint or "")
        try:
            deidentify_dataset(ds, key)
        except Exception as exc:  # burned-in annotations, broken tags: refuse, store nothing
            raise UploadRejected(422, f"the DICOM file cannot be de-identified: {exc}") from exc
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        patient = str(ds.PatientID) if original else key.pseudonym(secrets.token_hex(16))
        return buffer.getvalue(), patient, ".dcm"
    patient = key.pseudonym(patient_hint) if patient_hint else key.pseudonym(secrets.token_hex(16))
    if upload.kind in ("png", "jpeg"):
        from PIL import Image

        with Image.open(upload.path) as image:
            clean = image.copy()
        clean.info = {}  # no text chunks, EXIF, ICC comments or other metadata carried over
        buffer = io.BytesIO()
        clean.save(buffer, format="PNG")
        return buffer.getvalue(), patient, ".png"
    if upload.kind == "nifti":
        import nibabel as nib

        img = nib.load(str(upload.path))
        header = img.header.copy()
        for name in ("descrip", "aux_file", "db_name", "intent_name"):
            if name in header:
                header[name] = b""
        clean = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, header)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.nii.gz"
            nib.save(clean, path)
            return path.read_bytes(), patient, ".nii.gz"
    raise UploadRejected(415, f"unsupported content {upload.kind}")


def read_image(pipeline: Any, data: bytes, suffix: str, slice_index: int | None) -> np.ndarray:
    """The windowed uint8 image the model takes, from de-identified bytes (errors become 422)."""
    from meddx.exceptions import MeddxError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return pipeline.image_from_file(path, slice_index=slice_index)
        except MeddxError as exc:
            raise UploadRejected(422, str(exc).replace(str(path), "the upload")) from exc


@dataclass
class Screened:
    """An upload screened against the model: the image it takes, or the reasons it was rejected.

    ``preview`` is the windowed image for the result card (also for a rejected file
    when it can be drawn, so the clinician sees what was sent); ``image`` is None
    exactly when ``reasons`` says why the model will not read it.
    """

    image: np.ndarray | None
    preview: np.ndarray | None
    reasons: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.image is None


def screen_upload(pipeline: Any, data: bytes, suffix: str, slice_index: int | None) -> Screened:
    """Screen de-identified bytes with :meth:`Pipeline.screen_file` (intended input, readability, slice).

    Reasons name "the upload", never the server's temporary path.
    """
    from meddx.exceptions import MeddxError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        image, reasons = pipeline.screen_file(path, slice_index=slice_index)
        if image is not None:
            return Screened(image, image)
        try:  # the picture of what was refused, where there is one to draw
            preview = pipeline.image_from_file(path, slice_index=slice_index)
        except MeddxError:
            preview = None
        for folder in (str(path), tmp):
            reasons = [r.replace(folder, "the upload") for r in reasons]
        return Screened(None, preview, reasons or ["the model cannot read this file"])


def model_input(pipeline: Any, image: np.ndarray) -> np.ndarray:
    """Resize to the model's input size (so requests batch together)."""
    from PIL import Image

    size = pipeline.package["preprocess"]["size"]
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def predict_batch(pipeline: Any, uncertainty: str) -> Any:
    """The function the micro-batcher calls: a stack of images -> one prediction dict each."""

    def run(images: np.ndarray) -> list[dict[str, Any]]:
        return [p.to_json_dict() for p in pipeline.predict_detailed(images, uncertainty=uncertainty)]

    return run


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def explanation(pipeline: Any, image: np.ndarray, target: str, method: str = "gradcam") -> tuple[dict[str, Any], bytes]:
    """The explanation record and the overlay PNG bytes for one image."""
    from meddx.inference.explanations import explain_image

    with tempfile.TemporaryDirectory() as tmp:
        record = explain_image(pipeline, image, target, method=method, out_dir=Path(tmp), stem="overlay")
        overlay = Path(record.overlay).read_bytes() if record.overlay else b""
    data = record.model_dump(mode="json")
    data["overlay"] = None  # served by the API, never a server path
    return data, overlay


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output_summary(prediction: dict[str, Any]) -> str:
    """What the audit log hashes of a result: decision, prediction, calibrated probabilities, OOD flag (and a
    detection's counts, a segmentation's class shares, a synthetic image's kind, dose and checks)."""
    ood = prediction.get("ood") or {}
    summary = {"decision": prediction["decision"]["decision"], "prediction": prediction["prediction"],
               "calibrated": prediction["calibrated_probabilities"], "ood_flagged": ood.get("flagged")}
    if prediction.get("counts") is not None:
        summary["counts"] = prediction["counts"]
    if prediction.get("mask"):
        summary["fraction"] = prediction["mask"].get("fraction")
    if prediction.get("synthetic"):  # a synthetic image: what it is and what its checks found
        synthetic = prediction["synthetic"]
        summary["synthetic"] = {k: synthetic.get(k) for k in ("kind", "method", "dose", "checks")}
    return json.dumps(summary, sort_keys=True)
