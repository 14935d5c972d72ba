"""Safe on data it never saw, through the service: every rejection and OOD path reaches the REST result, the
FHIR report and the result card; a batch never aborts on one bad file; the drift monitor alarms and resets.

The module's model is the tiny test model declared a chest X-ray model (CR/DX of the chest) with the OOD gate
training fitted (see conftest). Its real gate tells the cases apart: the training images are in distribution,
a blank white image and random noise are far outside it (scores in the hundreds and thousands against a
threshold in the tens).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests._factories import make_labelled_pngs
from tests.service.conftest import Service, dicom_bytes

SECRET_NAME = "SMITH_John_MRN123"
REJECTED_WORDS = "Not analysed: this input is not what the model was made for"
OOD_WORDS = "Refer: this image is unlike anything the model was trained on"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _nifti_volume() -> bytes:
    import gzip

    import nibabel as nib

    volume = nib.Nifti1Image((np.arange(16 * 16 * 4) % 200).astype(np.uint8).reshape(16, 16, 4), np.eye(4))
    return gzip.compress(volume.to_bytes())


@pytest.fixture(scope="module")
def training_pngs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The training images themselves (same generator and seed as the fixture model's): in distribution."""
    folder = make_labelled_pngs(tmp_path_factory.mktemp("train-like"), n=32, size=16)
    return [p.read_bytes() for p in sorted(folder.glob("*.png"))]


WHITE = _png(np.full((16, 16), 255, np.uint8))  # far outside the training data


def _upload(svc: Service, name: str, data: bytes, content_type: str = "application/octet-stream",
            **form: str) -> dict[str, Any]:
    response = svc.client.post("/api/studies", headers=svc.headers("clinician"),
                               files={"file": (name, data, content_type)}, data={"explain": "false", **form})
    assert response.status_code == 201, response.text
    return response.json()


def _web(svc: Service, role: str = "clinician") -> TestClient:
    return TestClient(svc.app, follow_redirects=False, cookies={"meddx_session": svc.tokens[role]})


def _fhir(svc: Service, study: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    bundle = svc.client.get(study["links"]["fhir"], headers=svc.headers("clinician")).json()
    resources = [e["resource"] for e in bundle["entry"]]
    (report,) = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    return report, [r for r in resources if r["resourceType"] == "Observation"]


def _text(html: str) -> str:
    """The page's visible text with whitespace collapsed (what a reader sees)."""
    import html as html_module

    return re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", " ", html)))


# --- rejections ----------------------------------------------------------------------------------------------------


REJECTIONS = {
    # name: (file bytes factory, what the reason says, whether a picture can still be drawn)
    "ct-slice": (lambda tmp: dicom_bytes(tmp, "Doe^Ct", "CT-1", modality="CT", body_part=None),
                 "this model reads paediatric frontal chest radiographs (CR/DX); this file is CT", True),
    "knee-radiograph": (lambda tmp: dicom_bytes(tmp, "Doe^Knee", "KN-1", body_part="KNEE"),
                        "this file shows the knee (BodyPartExamined)", True),
    "colour-photo": (lambda tmp: _png(np.stack([np.full((16, 16), 200), np.zeros((16, 16)), np.full((16, 16), 40)],
                                               axis=-1).astype(np.uint8)),
                     "this file is a colour image", True),
    "volume-without-slice": (lambda tmp: _nifti_volume(), "expects a 2-D image", False),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_input_reaches_result_fhir_and_card(service: Service, tmp_path: Path, case: str) -> None:
    make, says, drawable = REJECTIONS[case]
    study = _upload(service, f"{SECRET_NAME}.bin", make(tmp_path))
    p = study["prediction"]
    assert p["decision"]["decision"] == "rejected" and says in p["decision"]["reason"], p["decision"]
    assert p["prediction"] is None and p["probabilities"] == {} and p["calibrated_probabilities"] == {}
    assert p["uncertainty"] is None and p["ood"] is None and p["explanation"] is None
    assert p["input_check"]["passed"] is False and any(says in r for r in p["input_check"]["reasons"])
    assert "/tmp" not in str(p) and SECRET_NAME not in str(study)  # no server paths, no file names
    assert ("preview" in study["links"]) == drawable and "overlay" not in study["links"]

    h = service.headers("clinician")
    again = service.client.get(study["links"]["self"], headers=h).json()
    assert again["prediction"] == p  # the REST result keeps the check's verdict
    image = service.client.get(f"/api/results/{study['result_id']}/image.png", headers=h)
    assert image.status_code == (200 if drawable else 404)

    report, observations = _fhir(service, study)
    assert report["status"] == "cancelled" and "conclusionCode" not in report and "result" not in report
    assert observations == []  # never a finding
    assert report["conclusion"].startswith(REJECTED_WORDS) and says in report["conclusion"]

    page = _web(service).get(f"/results/{study['result_id']}")
    text = _text(page.text)
    assert page.status_code == 200 and REJECTED_WORDS in text and says in text
    assert "The model did not look at this file" in text and "Calibrated probabilities" not in text
    assert 'id="decision" class="decision rejected' in page.text
    assert ('id="image"' in page.text) == drawable

    listed = service.client.get("/api/studies", headers=h).json()
    assert any(s["result_id"] == study["result_id"] and s["decision"] == "rejected" for s in listed)


def test_upload_refusals_still_store_nothing(service: Service) -> None:
    """What the service will not keep at all (not an image) stays an HTTP error, not a stored rejection."""
    before = service.files("blobs")
    response = service.client.post("/api/studies", headers=service.headers("clinician"),
                                    files={"file": ("x.png", b"plain text, not an image", "image/png")})
    assert response.status_code == 415 and service.files("blobs") == before


# --- out of distribution --------------------------------------------------------------------------------------------


def test_ood_input_is_referred_everywhere(service: Service) -> None:
    study = _upload(service, "white.png", WHITE, "image/png", explain="true")
    p = study["prediction"]
    assert p["ood"]["flagged"] is True and p["ood"]["score"] > p["ood"]["threshold"]
    gate = service.ctx.pipeline(service.model).ood
    assert p["ood"]["method"] == gate.method and p["ood"]["flag_rate"] == pytest.approx(gate.flag_rate)
    assert p["decision"]["decision"] == "refer"
    assert p["decision"]["reason"].startswith("outside the model's training data")
    assert p["input_check"] == {"passed": True, "reasons": []} and p["calibrated_probabilities"]

    report, observations = _fhir(service, study)
    assert report["status"] == "preliminary" and report["conclusionCode"][0]["coding"][0]["code"] == "refer"
    assert report["conclusion"].startswith("Referred: the image is outside the model's training data")
    (ood,) = [o for o in observations if o["code"]["coding"][0]["code"] == "ood-score"]
    assert ood["interpretation"][0]["coding"][0]["code"] == "H"
    assert ood["valueQuantity"]["value"] > ood["referenceRange"][0]["high"]["value"]
    probabilities = [o for o in observations if o is not ood]
    assert len(probabilities) == 2 and all("Not a finding" in o["note"][-1]["text"] for o in probabilities)

    page = _web(service).get(f"/results/{study['result_id']}")
    text = _text(page.text)
    assert OOD_WORDS in text and "Outside the model's training data." in text and 'id="ood"' in page.text
    assert "not to be relied on" in text and 'id="overlay"' in page.text


def test_in_distribution_input_is_not_flagged(service: Service, training_pngs: list[bytes]) -> None:
    flags = []
    for data in training_pngs[:4]:
        p = _upload(service, "train.png", data, "image/png")["prediction"]
        assert p["decision"]["decision"] != "rejected" and p["input_check"]["passed"]
        flags.append(p["ood"]["flagged"])
        if not p["ood"]["flagged"]:
            assert not p["decision"]["reason"].startswith("outside the model's training data")
    assert flags.count(False) >= 3, flags  # the training images are in distribution (the gate flags ~5%)
    study = _upload(service, "train.png", training_pngs[0], "image/png")
    text = _text(_web(service).get(f"/results/{study['result_id']}").text)
    if not study["prediction"]["ood"]["flagged"]:
        assert "Like the model's training data" in text and OOD_WORDS not in text
    report, observations = _fhir(service, study)
    assert [o["interpretation"][0]["coding"][0]["code"] for o in observations
            if o["code"]["coding"][0]["code"] == "ood-score"] == ["H" if study["prediction"]["ood"]["flagged"] else "N"]


# --- batches -------------------------------------------------------------------------------------------------------


def test_batch_with_bad_files_returns_every_other_result(service: Service, tmp_path: Path,
                                                         training_pngs: list[bytes]) -> None:
    files = [("files", (f"{SECRET_NAME}-1.png", training_pngs[1], "image/png")),
             ("files", (f"{SECRET_NAME}-2.dcm", dicom_bytes(tmp_path, "Doe^Ct", "CT-2", modality="CT",
                                                             body_part=None), "application/dicom")),
             ("files", (f"{SECRET_NAME}-3.png", b"not an image at all", "image/png")),
             ("files", (f"{SECRET_NAME}-4.dcm", dicom_bytes(tmp_path, "Doe^Cr", "CR-4"), "application/dicom")),
             ("files", (f"{SECRET_NAME}-5.png", WHITE, "image/png"))]
    response = service.client.post("/api/studies/batch", headers=service.headers("clinician"), files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert SECRET_NAME not in response.text
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in body["results"]] == [201, 201, 415, 201, 201]
    assert (body["stored"], body["rejected"], body["refused"]) == (4, 1, 1)
    decisions = [r["study"]["prediction"]["decision"]["decision"] if r["study"] else None for r in body["results"]]
    assert decisions[1] == "rejected" and decisions[2] is None
    assert decisions[0] != "rejected" and decisions[3] != "rejected" and decisions[4] == "refer"
    assert "unsupported content" in body["results"][2]["error"]
    for item in body["results"]:
        if item["study"]:
            got = service.client.get(item["study"]["links"]["self"], headers=service.headers("clinician"))
            assert got.status_code == 200 and got.json()["prediction"] == item["study"]["prediction"]

    h = service.headers("clinician")
    assert service.client.post("/api/studies/batch", headers=h, files=[]).status_code == 422
    too_many = [("files", (f"{i}.png", b"x", "image/png")) for i in range(33)]
    assert service.client.post("/api/studies/batch", headers=h, files=too_many).status_code == 413
    assert service.client.post("/api/studies/batch", headers=service.headers("engineer"),
                               files=files[:1]).status_code == 403


def test_web_multi_file_upload_lists_each_outcome(service: Service, tmp_path: Path,
                                                  training_pngs: list[bytes]) -> None:
    client = _web(service)
    home = client.get("/")
    assert 'type="file" multiple' in home.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.text).group(1)
    files = [("file", ("a.png", training_pngs[2], "image/png")),
             ("file", ("b.dcm", dicom_bytes(tmp_path, "Doe^Ct", "CT-3", modality="CT", body_part=None),
                       "application/dicom")),
             ("file", ("c.png", b"junk", "image/png"))]
    page = client.post("/upload", files=files, data={"csrf": csrf})
    assert page.status_code == 200, page.text
    text = _text(page.text)
    assert "2 of 3 files analysed or screened; 1 not analysed" in text and "1 not accepted" in text
    assert REJECTED_WORDS in text and "Not accepted: unsupported content" in text
    assert len(re.findall(r'href="/results/[0-9a-f-]+"', page.text)) == 2


# --- drift monitor -------------------------------------------------------------------------------------------------


def test_drift_monitor_quiet_in_distribution_alarms_on_a_shifted_stream_and_resets(
        make_service: Any, tmp_path: Path, training_pngs: list[bytes]) -> None:
    from meddx.service.app import create_app
    from meddx.service.context import Settings

    svc = make_service()
    admin = svc.headers("admin")
    for data in training_pngs[:16]:  # in distribution
        _upload(svc, "train.png", data, "image/png")
    _upload(svc, "ct.dcm", dicom_bytes(tmp_path, "Doe^Ct", "CT-9", modality="CT", body_part=None))
    (m,) = svc.client.get("/api/admin/drift", headers=admin).json()
    assert m["monitored"] and m["model"] == svc.model and not m["alarm"] and not m["open_alarms"]
    assert m["studies"] == 17 and m["rejected"] == 1 and m["state"]["studies"] == 16  # rejected: counted only
    assert m["state"]["recent_flag_rate"] <= 0.25 and m["state"]["expected_flag_rate"] == pytest.approx(0.05)
    assert not m["score_test"] and "score test off" in m["note"]
    page = _web(svc, "admin").get("/admin")
    assert page.status_code == 200 and "Drift monitors" in page.text and "Drift alarm" not in page.text
    assert "17 (1 rejected before the model; 16 tested since the last reset)" in _text(page.text)

    rng = np.random.default_rng(3)
    for i in range(8):  # a new scanner, say: every study far outside the training data
        _upload(svc, "new.png", WHITE if i % 2 else _png(rng.integers(0, 255, (16, 16)).astype(np.uint8)),
                "image/png")
    (m,) = svc.client.get("/api/admin/drift", headers=admin, params={"history": 50}).json()
    assert m["alarm"] and len(m["open_alarms"]) == 1
    alarm = m["open_alarms"][0]
    assert "share of studies outside the training data rose" in alarm["reason"] and 18 <= alarm["at_study"] <= 25
    assert len(m["history"]) == 25 and m["history"][-1]["flagged"] and m["history"][16]["rejected"]
    audit = svc.client.get("/api/admin/audit", headers=admin).json()
    assert any(a["action"] == "drift.alarm" and a["model_version"].startswith(svc.model) for a in audit)
    assert svc.client.get("/api/admin/drift", headers=svc.headers("clinician")).status_code == 403

    page = _web(svc, "admin").get("/admin")
    text = _text(page.text)
    assert f"Drift alarm on {svc.model}" in text and alarm["reason"] in text and 'role="alert"' in page.text
    assert "Acknowledge and reset the monitor" in text and "<svg" in page.text

    with svc.active():  # a restart: a new app on the same home and database sees the same alarm
        restarted = create_app(Settings.from_env())
        with TestClient(restarted) as client:
            (again,) = client.get("/api/admin/drift", headers=admin).json()
            assert again["alarm"] and again["open_alarms"][0]["id"] == alarm["id"]

    web = _web(svc, "admin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/admin").text).group(1)
    assert web.post(f"/admin/drift/{m['id']}/reset", data={"csrf": "forged"}).status_code == 403
    done = web.post(f"/admin/drift/{m['id']}/reset", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"].startswith("/admin")
    (m,) = svc.client.get("/api/admin/drift", headers=admin).json()
    assert not m["alarm"] and m["state"]["studies"] == 0 and m["alarms"][0]["acknowledged_by"] == "admin"
    assert "Drift alarm" not in web.get("/admin").text
    reset = svc.client.post(f"/api/admin/drift/{m['id']}/reset", headers=admin)
    assert reset.status_code == 200 and reset.json() == {"monitor": m["id"], "acknowledged_alarms": []}
    assert svc.client.post("/api/admin/drift/999999/reset", headers=admin).status_code == 404
    assert svc.client.post(f"/api/admin/drift/{m['id']}/reset", headers=svc.headers("clinician")).status_code == 403
    actions = [a["action"] for a in svc.client.get("/api/admin/audit", headers=admin).json()]
    assert actions.count("drift.reset") == 2
    assert svc.client.get("/api/admin/audit/verify", headers=admin).json()["ok"]
