"""Segmentation and detection models in the clinician service: upload, stored prediction, overlay, label mask,
DICOM SEG / SR downloads, FHIR, the result card, access control and the audit log.

A tiny detector and a tiny vessel segmenter (``_task_models.py``, about 15 s together on one
thread) are trained once for this module and registered beside the classifier of ``conftest.py``
in one SQLite app.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.service._task_models import cells_voc, fundus, train_tiny_detector, train_tiny_segmenter
from tests.service.conftest import Service, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnxruntime")
    base = tmp_path_factory.mktemp("task-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDX_HOME", str(base / "home"))
        return {"detection": train_tiny_detector(base), "segmentation": train_tiny_segmenter(base)}


@pytest.fixture(scope="module")
def module_svc(trained_run: Path, task_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[tuple[Service, dict[str, str]]]:
    with serving(trained_run, task_runs, tmp_path_factory.mktemp("svc-tasks") / "home", request) as served:
        yield served


@pytest.fixture
def svc(module_svc: tuple[Service, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> tuple[Service, dict[str, str]]:
    module_svc[0].set_env(monkeypatch)
    return module_svc


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _dicom(tmp: Path, pixels: np.ndarray, patient_id: str = "MRN-SECRET-77") -> bytes:
    """A grey DICOM with the UIDs a real study has (the SEG/SR writers need the study and series)."""
    import pydicom
    from pydicom.uid import generate_uid

    from tests._factories import write_dicom

    path = write_dicom(tmp / "study.dcm", pixels, modality="OT")
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID = "Secret^Jane", patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _upload(svc: Service, model: str, name: str, content: bytes, **form: Any) -> dict[str, Any]:
    response = svc.client.post("/api/studies", headers=svc.headers("clinician"),
                               files={"file": (name, content)}, data={"model": model, "patient_id": "P-1", **form})
    assert response.status_code == 201, response.text
    return response.json()


def _get(svc: Service, url: str, user: str = "clinician") -> Any:
    return svc.client.get(url, headers=svc.headers(user))


def _no_server_paths(study: dict[str, Any], svc: Service) -> None:
    text = json.dumps(study)
    for folder in (tempfile.gettempdir(), str(svc.home)):
        assert folder not in text, f"a server path ({folder}) leaked into the prediction"
    assert "meddx-task-" not in text and "upload.png" not in text


def _overlay_rgba(svc: Service, study: dict[str, Any]) -> np.ndarray:
    response = _get(svc, study["links"]["overlay"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.mode == "RGBA", "the overlay must be transparent where nothing was found"
        return np.asarray(image)


def test_models_list_their_task(svc: tuple[Service, dict[str, str]]) -> None:
    service, names = svc
    listed = {m["name"]: m for m in _get(service, "/api/models").json()}
    assert listed[names["detection"]]["task"] == "detection"
    assert listed[names["detection"]]["classes"] == ["dot", "bar"]
    assert listed[names["segmentation"]]["task"] == "segmentation"
    assert listed[service.model]["task"] == "classification"


def test_png_to_a_detector_stores_boxes_and_a_box_overlay(svc: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    service, names = svc
    image = np.asarray(Image.open(cells_voc(tmp_path / "voc", n=1) / "JPEGImages" / "img00.png"))
    study = _upload(service, names["detection"], "cells.png", _png(image))
    p = study["prediction"]
    assert p["task"] == "detection" and p["input"] == "upload" and p["decision"]["decision"] != "rejected"
    assert p["boxes"], "the lowered threshold keeps some boxes"
    assert sum(p["counts"].values()) == len(p["boxes"])
    assert p["explanation"]["overlay"] == study["links"]["overlay"]
    _no_server_paths(study, service)
    rgba = _overlay_rgba(service, study)
    assert rgba.shape[:2] == image.shape[:2]
    assert 0 < (rgba[..., 3] > 0).mean() < 0.9, "box outlines only, the rest transparent"
    for box in p["boxes"]:  # every box's outline is drawn where the box is
        x0, y0, x1, y1 = (int(round(v)) for v in box["box"])
        assert rgba[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1, 3].any(), box
    assert "sr" not in study["links"] and "seg" not in study["links"] and "mask" not in study["links"]
    assert _get(service, f"/api/results/{study['result_id']}/sr.dcm").status_code == 404


def test_jpeg_to_a_segmenter_stores_the_mask_and_a_mask_overlay(svc: tuple[Service, dict[str, str]]) -> None:
    service, names = svc
    image, _ = fundus(11, (90, 100))
    study = _upload(service, names["segmentation"], "eye.jpg", _png(image, "JPEG"))
    p, rid = study["prediction"], study["result_id"]
    assert p["task"] == "segmentation" and p["decision"]["decision"] != "rejected"
    mask_info = p["mask"]
    assert mask_info["shape"] == [90, 100] and mask_info["classes"] == ["background", "vessel"]
    assert sum(mask_info["fraction"].values()) == pytest.approx(1.0)
    assert mask_info["mean_uncertainty"] is not None and p["uncertainty"]["method"] == "mc-dropout"
    assert mask_info["mask"] == f"/api/results/{rid}/mask.png" == study["links"]["mask"]
    assert mask_info["overlay"] == study["links"]["overlay"]
    assert mask_info["probability_map"] is None and mask_info["uncertainty_map"] is None
    _no_server_paths(study, service)
    response = _get(service, study["links"]["mask"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == (90, 100) and set(np.unique(mask)) <= {0, 1}
    assert mask.any() and mask.mean() <= mask_info["fraction"]["vessel"] + 1e-9  # the fraction is of the FOV
    rgba = _overlay_rgba(service, study)
    assert rgba.shape[:2] == (90, 100)
    assert np.array_equal(rgba[..., 3] > 0, mask > 0), "the overlay is opaque exactly on the mask"
    # stored, and read back alike
    again = _get(service, f"/api/results/{rid}").json()
    assert again["prediction"] == p and again["links"] == study["links"]
    assert _get(service, f"/api/results/{rid}/seg.dcm").status_code == 404  # a JPEG gets no DICOM SEG


def test_dicom_to_a_segmenter_gives_a_dicom_seg(svc: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    import pydicom

    from meddx.outputs import read_seg

    service, names = svc
    image, _ = fundus(12)
    grey = np.asarray(Image.fromarray(image).convert("L"))
    study = _upload(service, names["segmentation"], "eye.dcm", _dicom(tmp_path, grey))
    rid, p = study["result_id"], study["prediction"]
    assert study["links"]["seg"] == f"/api/results/{rid}/seg.dcm" == p["mask"]["dicom_seg"]
    response = _get(service, study["links"]["seg"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    assert "attachment" in response.headers["content-disposition"]
    (tmp_path / "seg.dcm").write_bytes(response.content)
    labels, classes, geometry = read_seg(tmp_path / "seg.dcm")
    assert classes == ["vessel"] and labels.shape == (1, *grey.shape)
    mask = np.asarray(Image.open(io.BytesIO(_get(service, study["links"]["mask"]).content)))
    assert np.array_equal(labels[0] > 0, mask > 0)
    assert geometry["algorithm"] == names["segmentation"]
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.PatientID == study["patient"] and "SECRET" not in str(seg.PatientID).upper()
    assert "Secret" not in str(seg.get("PatientName", ""))


def test_dicom_to_a_detector_gives_a_tid1500_sr(svc: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    from meddx.outputs import read_sr

    service, names = svc
    image = np.asarray(Image.open(cells_voc(tmp_path / "voc", n=1) / "JPEGImages" / "img00.png").convert("L"))
    study = _upload(service, names["detection"], "cells.dcm", _dicom(tmp_path, image))
    p = study["prediction"]
    assert p["boxes"] and study["links"]["sr"] == p["dicom_sr"] == f"/api/results/{study['result_id']}/sr.dcm"
    assert "seg" not in study["links"]
    response = _get(service, study["links"]["sr"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    (tmp_path / "sr.dcm").write_bytes(response.content)
    findings = read_sr(tmp_path / "sr.dcm")
    boxes = [f for f in findings if "box" in f]
    assert sorted(b["label"] for b in boxes) == sorted(b["label"] for b in p["boxes"])
    counts = {f["label"]: f["count"] for f in findings if "count" in f}
    assert counts == {c: n for c, n in p["counts"].items() if n}
    _no_server_paths(study, service)


def test_other_clinicians_and_engineers_get_nothing_and_reads_are_audited(svc: tuple[Service, dict[str, str]],
                                                                          tmp_path: Path) -> None:
    from meddx.storage.models import AuditEntry

    service, names = svc
    image, _ = fundus(13)
    study = _upload(service, names["segmentation"], "eye.dcm",
                    _dicom(tmp_path, np.asarray(Image.fromarray(image).convert("L"))))
    rid = study["result_id"]
    paths = [f"/api/results/{rid}/{name}" for name in ("seg.dcm", "sr.dcm", "mask.png", "overlay.png")]
    for path in paths:
        assert _get(service, path, "outsider").status_code == 404, path
        assert _get(service, path, "engineer").status_code == 403, path
    assert _get(service, paths[0]).status_code == 200 and _get(service, paths[2]).status_code == 200
    with service.ctx.sessions() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.patient_pseudonym == study["patient"]).all()
        actions = [(r.action, r.user, r.model_version) for r in rows]
    version = f"{names['segmentation']}:{study['prediction']['model_version']}"
    assert ("study.upload", "clinician", version) in actions
    assert ("result.seg", "clinician", version) in actions and ("result.mask", "clinician", version) in actions
    assert not any(user == "outsider" for _, user, _ in actions), "a refused read leaves no patient entry"


def test_fhir_of_task_results_states_the_task_and_findings(svc: tuple[Service, dict[str, str]],
                                                          tmp_path: Path) -> None:
    service, names = svc
    image = np.asarray(Image.open(cells_voc(tmp_path / "voc", n=1) / "JPEGImages" / "img00.png"))
    det = _upload(service, names["detection"], "cells.png", _png(image))
    bundle = _get(service, det["links"]["fhir"]).json()
    report = bundle["entry"][0]["resource"]
    assert "detection" in report["code"]["text"] and "detected" in report["conclusion"]
    counts = {e["resource"]["code"]["text"]: e["resource"].get("valueInteger") for e in bundle["entry"][1:]}
    for label, n in det["prediction"]["counts"].items():
        assert counts[f"Number of {label} detected"] == n
    seg = _upload(service, names["segmentation"], "eye.png", _png(fundus(14)[0]))
    bundle = _get(service, seg["links"]["fhir"]).json()
    report = bundle["entry"][0]["resource"]
    assert "segmentation" in report["code"]["text"] and "vessel" in report["conclusion"]
    share = [e["resource"] for e in bundle["entry"][1:] if "segmented as vessel" in e["resource"]["code"]["text"]]
    assert share[0]["valueQuantity"]["unit"] == "%"
    assert share[0]["valueQuantity"]["value"] == pytest.approx(100 * seg["prediction"]["mask"]["fraction"]["vessel"],
                                                               abs=1e-3)


def test_batch_upload_and_a_refused_uncertainty(svc: tuple[Service, dict[str, str]]) -> None:
    service, names = svc
    files = [("files", (f"eye{i}.png", _png(fundus(20 + i)[0]))) for i in range(2)]
    files.append(("files", ("broken.png", b"\x89PNG not really")))
    response = service.client.post("/api/studies/batch", headers=service.headers("clinician"), files=files,
                                   data={"model": names["segmentation"], "patient_id": "P-2"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["stored"] == 2 and out["refused"] == 1
    for item in out["results"][:2]:
        assert item["study"]["prediction"]["mask"]["mask"] == item["study"]["links"]["mask"]
    refused = service.client.post("/api/studies", headers=service.headers("clinician"),
                                  files={"file": ("eye.png", _png(fundus(30)[0]))},
                                  data={"model": names["segmentation"], "uncertainty": "tta"})
    assert refused.status_code == 422 and "tta" in refused.json()["detail"]


def test_result_card_shows_the_overlay_legend_and_downloads(svc: tuple[Service, dict[str, str]],
                                                            tmp_path: Path) -> None:
    service, names = svc
    image, _ = fundus(15)
    study = _upload(service, names["segmentation"], "eye.dcm",
                    _dicom(tmp_path, np.asarray(Image.fromarray(image).convert("L"))))
    rid = study["result_id"]
    client = service.client
    client.cookies.set("meddx_session", service.tokens["clinician"])
    try:
        page = client.get(f"/results/{rid}")
        overlay = client.get(f"/results/{rid}/overlay.png")
    finally:
        client.cookies.clear()
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="overlay"' in html and 'id="opacity"' in html and "Overlay opacity" in html
    assert 'id="legend"' in html and "vessel" in html and "% of the analysed area" in html
    assert 'id="mean-uncertainty"' in html
    assert f'href="/api/results/{rid}/seg.dcm"' in html and f'href="/api/results/{rid}/mask.png"' in html
    assert "Prediction set" not in html and "Explanation checks" not in html
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"


def test_detection_card_lists_counts_and_the_sr(svc: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    service, names = svc
    image = np.asarray(Image.open(cells_voc(tmp_path / "voc", n=1) / "JPEGImages" / "img00.png").convert("L"))
    study = _upload(service, names["detection"], "cells.dcm", _dicom(tmp_path, image))
    rid, counts = study["result_id"], study["prediction"]["counts"]
    client = service.client
    client.cookies.set("meddx_session", service.tokens["clinician"])
    try:
        html = client.get(f"/results/{rid}").text
    finally:
        client.cookies.clear()
    for label, n in counts.items():
        assert f"{label}: {n} found" in html
    assert f'href="/api/results/{rid}/sr.dcm"' in html and "seg.dcm" not in html and "mask.png" not in html
    assert 'id="mean-uncertainty"' not in html and "Explanation checks" not in html
