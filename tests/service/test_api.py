"""The REST API end to end, on SQLite and PostgreSQL: tokens, models, studies, results, FHIR, jobs, users, audit.

One app per backend for the module (``service``); the tests run in file order
and build on the studies uploaded by the ``uploads`` fixture.
"""

from __future__ import annotations

import io
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.service.conftest import Service, checkpoint, dicom_bytes, pg_data_dir, png_bytes

PNG_PATIENT = "MRN-PNG-424242"
DICOM_PATIENT_ID = "MRN-DCM-777001"
DICOM_PATIENT_NAME = "Secretperson^Janeth^Q"
# What must never be stored anywhere in the home or the database, in any form we can think of.
SECRETS = [PNG_PATIENT, DICOM_PATIENT_ID, DICOM_PATIENT_NAME, "Secretperson", "Janeth", "Jane Secret-Doe"]
DECISIONS = {"positive", "negative", "refer"}  # what an accepted input gets (never "rejected")


def _secret_variants() -> list[bytes]:
    out = []
    for s in SECRETS:
        out += [s.encode(), s.encode("utf-16-le"), s.lower().encode(), s.upper().encode()]
    return out


# --- health, tokens, me ----------------------------------------------------------------------------------------


def test_health_needs_no_authentication(service: Service) -> None:
    response = service.client.get("/api/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_token_flow(service: Service) -> None:
    password = service.add_user("tokenflow", "clinician", one_time=True)
    ok = service.client.post("/api/auth/token", data={"username": "tokenflow", "password": password})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["token_type"] == "bearer" and body["role"] == "clinician"
    assert body["expires_in"] == 15 * 60 and body["must_change_password"] is True
    assert password not in ok.text

    wrong = service.client.post("/api/auth/token", data={"username": "tokenflow", "password": password + "x"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert service.client.post("/api/auth/token", data={"username": "nobody-here", "password": "x" * 12}
                               ).status_code == 401

    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    me = service.client.get("/api/me", headers=bearer)
    assert me.status_code == 200 and me.json() == {"username": "tokenflow", "role": "clinician"}
    # the one-time password opens nothing else until the account sets its own
    refused = service.client.get("/api/models", headers=bearer)
    assert refused.status_code == 403 and "one-time password" in refused.json()["detail"]
    new = "a long enough new passphrase"
    assert service.client.post("/api/me/password", headers=bearer,
                               json={"current_password": password, "new_password": new}).status_code == 204
    assert service.client.get("/api/models", headers=bearer).status_code == 200
    again = service.client.post("/api/auth/token", data={"username": "tokenflow", "password": new}).json()
    assert again["must_change_password"] is False
    assert service.client.post("/api/auth/token", data={"username": "tokenflow", "password": password}
                               ).status_code == 401


def test_login_rate_limit(service: Service) -> None:
    password = service.add_user("ratelimited", "engineer")
    for _ in range(5):
        response = service.client.post("/api/auth/token", data={"username": "ratelimited", "password": "wrong" * 3})
        assert response.status_code == 401
    sixth = service.client.post("/api/auth/token", data={"username": "ratelimited", "password": password})
    assert sixth.status_code == 429, sixth.text
    retry = int(sixth.headers["Retry-After"])
    assert 1 <= retry <= 61
    assert "access_token" not in sixth.text
    # another account from the same client is not affected
    assert service.client.post("/api/auth/token", data={"username": "clinician",
                                                        "password": service.passwords["clinician"]}
                               ).status_code == 200


@pytest.mark.parametrize("role", ["admin", "clinician", "engineer"])
def test_me(service: Service, role: str) -> None:
    response = service.client.get("/api/me", headers=service.headers(role))
    assert response.status_code == 200 and response.json() == {"username": role, "role": role}


# --- models ----------------------------------------------------------------------------------------------------


def test_models_list_and_card(service: Service) -> None:
    response = service.client.get("/api/models", headers=service.headers("engineer"))
    assert response.status_code == 200
    (info,) = [m for m in response.json() if m["name"] == service.model]
    assert info["classes"] == ["lesion", "normal"]
    assert info["architecture"] == "cnn-tiny" and info["modality"] == "image"
    assert info["calibration"] == "temperature" and info["uncertainty"] in {"none", "bayes", "ensemble"}
    assert "not for primary diagnosis" in info["intended_use"].lower()

    card = service.client.get(f"/api/models/{service.model}/card", headers=service.headers("clinician"))
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/plain")
    assert service.model in card.text and "not for primary diagnosis" in card.text.lower()
    assert service.client.get("/api/models/no-such-model/card", headers=service.headers("admin")).status_code == 404


# --- studies -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uploads(module_service: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """A PNG (twice, same patient id, once with MC dropout) and a DICOM (twice) uploaded by the clinician."""
    svc = module_service
    tmp = tmp_path_factory.mktemp("dicom")
    dicom = dicom_bytes(tmp, DICOM_PATIENT_NAME, DICOM_PATIENT_ID)
    out = {}
    with svc.active():
        for key, files, data in [
            ("png", {"file": ("scan-of-Secretperson.png", png_bytes(), "image/png")}, {"patient_id": PNG_PATIENT}),
            ("png2", {"file": ("x.png", png_bytes(seed=2), "image/png")},
             {"patient_id": PNG_PATIENT, "uncertainty": "mc-dropout"}),
            ("dicom", {"file": (f"{DICOM_PATIENT_ID}.dcm", dicom, "application/dicom")}, {}),
            ("dicom2", {"file": ("again.dcm", dicom, "application/octet-stream")}, {"explain": "false"}),
        ]:
            response = svc.client.post("/api/studies", headers=svc.headers("clinician"), files=files, data=data)
            assert response.status_code == 201, response.text
            out[key] = response.json()
            assert not any(s.encode() in response.content for s in SECRETS), response.text
    return out


def _check_prediction(p: dict[str, Any], model: str) -> None:
    assert p["schema_version"] == "meddx-prediction/1"
    assert p["model"] == model and p["class_names"] == ["lesion", "normal"] and p["modality"] == "image"
    for probs in (p["probabilities"], p["calibrated_probabilities"]):
        assert set(probs) == {"lesion", "normal"}
        assert all(0 <= v <= 1 for v in probs.values())
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
    assert p["calibration"] == "temperature"
    assert p["prediction"] == max(p["calibrated_probabilities"], key=p["calibrated_probabilities"].get)
    assert p["decision"]["decision"] in DECISIONS and p["decision"]["reason"].strip()
    assert p["prediction_set"] and set(p["prediction_set"]) <= {"lesion", "normal"}
    assert 0 < p["coverage"] < 1
    u = p["uncertainty"]
    assert u["samples"] >= 1 and u["predictive_entropy"] >= 0 and u["expected_entropy"] >= 0
    assert u["mutual_information"] >= -1e-9 and 0 < u["max_probability"] <= 1
    assert math.isclose(u["predictive_entropy"], u["expected_entropy"] + u["mutual_information"], abs_tol=1e-6)


def test_upload_png_full_prediction(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    study = uploads["png"]
    uuid.UUID(study["study_id"]), uuid.UUID(study["result_id"])
    p = study["prediction"]
    _check_prediction(p, service.model)
    assert p["uncertainty"]["method"] == "none" and p["uncertainty"]["samples"] == 1
    e = p["explanation"]
    assert e["method"] == "gradcam" and e["target"] == p["prediction"] and e["overlay"] is None  # no server path
    for name in ("sanity_spearman", "deletion_auc", "random_deletion_auc"):
        assert isinstance(e[name], float) and math.isfinite(e[name]), name
    assert -1 <= e["sanity_spearman"] <= 1 and 0 <= e["deletion_auc"] <= 1
    rid = study["result_id"]
    assert study["links"] == {"self": f"/api/results/{rid}", "fhir": f"/api/results/{rid}/fhir",
                              "preview": f"/api/results/{rid}/image.png", "overlay": f"/api/results/{rid}/overlay.png"}
    assert "Secretperson" not in p["input"] and ".png" not in p["input"]


def test_upload_with_mc_dropout(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    p = uploads["png2"]["prediction"]
    _check_prediction(p, service.model)
    assert p["uncertainty"]["method"] == "mc-dropout" and p["uncertainty"]["samples"] > 1
    assert set(p["uncertainty"]["sample_probabilities_sd"]) == {"lesion", "normal"}


def test_upload_dicom_full_prediction(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    study, again = uploads["dicom"], uploads["dicom2"]
    _check_prediction(study["prediction"], service.model)
    assert study["prediction"]["explanation"]["method"] == "gradcam"
    assert "explanation" not in again["prediction"] or again["prediction"]["explanation"] is None
    assert "overlay" not in again["links"]
    # the keyed pseudonym links two uploads of one patient, and is not the patient's id
    assert study["patient"] == again["patient"]
    assert study["study_id"] != again["study_id"]


def test_patient_is_pseudonymised(uploads: dict[str, dict[str, Any]]) -> None:
    for key in uploads:
        patient = uploads[key]["patient"]
        assert patient and all(s.lower() not in patient.lower() for s in SECRETS)
    assert uploads["png"]["patient"] == uploads["png2"]["patient"]  # same patient_id -> same pseudonym
    assert uploads["png"]["patient"] != uploads["dicom"]["patient"]


def test_identifiers_never_reach_the_disk_or_database(service: Service, uploads: dict[str, dict[str, Any]],
                                                      request: pytest.FixtureRequest) -> None:
    """De-identified before storage, encrypted at rest: no identifier and no plaintext image in any file."""
    needles = _secret_variants()
    pseudonym = uploads["dicom"]["patient"].encode()  # positive control: what is stored is found by the scans
    files = service.files()
    assert any(p.suffix == ".enc" for p in files) and any(p.name == "storage.key" for p in files)
    if service.backend == "sqlite":
        assert service.home / "meddx.db" in files
    seen = False
    for path in files:
        data = path.read_bytes()
        seen = seen or pseudonym in data
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path}"
    assert seen or service.backend != "sqlite"
    for path in service.files("blobs"):
        data = path.read_bytes()
        assert b"\x89PNG" not in data and b"DICM" not in data and b"IHDR" not in data, path  # ciphertext only
    assert not service.files("incoming"), "upload temporary files were left behind"

    dump = service.database_text()
    assert pseudonym in dump and all(n not in dump for n in needles)
    if service.backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        data_dir = pg_data_dir(url)
        if data_dir is not None:
            checkpoint(service.url)
            seen = False
            for path in data_dir.rglob("*"):
                if path.is_file():
                    data = path.read_bytes()
                    seen = seen or pseudonym in data
                    assert all(n not in data for n in needles), f"identifier found in the PostgreSQL file {path}"
            assert seen, "the scan of the PostgreSQL files did not even find the pseudonym"


def test_stored_study_is_deidentified(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    """Decrypt what was stored: the DICOM has no identifiers left, the PNG no text chunks."""
    import pydicom

    from meddx.storage.models import Study

    with service.ctx.sessions() as session:
        stored = {str(s.id): (s.modality, s.blob_id, s.display_name) for s in session.query(Study)}
    modality, blob, name = stored[uploads["dicom"]["study_id"]]
    assert modality == "dicom" and name == "dicom study"
    ds = pydicom.dcmread(io.BytesIO(service.ctx.blobs.get(blob)))
    assert str(ds.PatientID) == uploads["dicom"]["patient"]
    assert "Secretperson" not in str(ds.get("PatientName", "")) and DICOM_PATIENT_ID not in str(ds)
    assert str(ds.get("PatientIdentityRemoved", "")) == "YES"
    modality, blob, name = stored[uploads["png"]["study_id"]]
    assert modality == "png" and name == "png study"
    with Image.open(io.BytesIO(service.ctx.blobs.get(blob))) as image:
        assert image.size == (16, 16) and not image.text


def test_get_result(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    study = uploads["png"]
    response = service.client.get(study["links"]["self"], headers=service.headers("clinician"))
    assert response.status_code == 200
    body = response.json()
    assert body["result_id"] == study["result_id"] and body["study_id"] == study["study_id"]
    assert body["patient"] == study["patient"] and body["prediction"] == study["prediction"]
    assert body["links"] == study["links"]
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        assert service.client.get(f"/api/results/{missing}", headers=service.headers("admin")).status_code == 404


def _png(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["cache-control"] == "no-store"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG"
    return image


def test_overlay_and_preview_png(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    links, h = uploads["png"]["links"], service.headers("clinician")
    overlay = _png(service.client.get(links["overlay"], headers=h))
    assert overlay.width > 0 and overlay.height > 0
    preview = _png(service.client.get(links["preview"], headers=h))
    assert preview.size == (16, 16)
    _png(service.client.get(uploads["dicom"]["links"]["overlay"], headers=h))
    no_overlay = f"/api/results/{uploads['dicom2']['result_id']}/overlay.png"
    assert service.client.get(no_overlay, headers=h).status_code == 404
    assert service.client.get(f"/api/results/{uuid.uuid4()}/image.png", headers=h).status_code == 404


def test_fhir_bundle(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    study = uploads["dicom"]
    response = service.client.get(study["links"]["fhir"], headers=service.headers("clinician"))
    assert response.status_code == 200
    bundle = response.json()
    Bundle.model_validate(bundle)  # validates
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resources = [e["resource"] for e in bundle["entry"]]
    (report,) = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    observations = [r for r in resources if r["resourceType"] == "Observation"
                    and r["code"]["coding"][0]["code"] != "ood-score"]
    (ood,) = [r for r in resources if r["resourceType"] == "Observation" and r not in observations]
    assert len(observations) == 2 and len(report["result"]) == 3
    flagged = study["prediction"]["ood"]["flagged"]
    assert ood["interpretation"][0]["coding"][0]["code"] == ("H" if flagged else "N")
    assert ood["referenceRange"][0]["high"]["value"] == pytest.approx(study["prediction"]["ood"]["threshold"])
    assert report["subject"]["reference"] == f"Patient/{study['patient']}"
    assert report["conclusionCode"][0]["coding"][0]["code"] == study["prediction"]["decision"]["decision"]
    values = sorted(o["valueQuantity"]["value"] for o in observations)
    assert values == pytest.approx(sorted(study["prediction"]["calibrated_probabilities"].values()), abs=1e-6)
    assert not any(s in response.text for s in SECRETS)
    assert service.client.get(f"/api/results/{uuid.uuid4()}/fhir", headers=service.headers("admin")
                              ).status_code == 404


def test_patient_studies(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    h = service.headers("clinician")
    response = service.client.get(f"/api/patients/{uploads['png']['patient']}/studies", headers=h)
    assert response.status_code == 200
    rows = response.json()
    assert {r["study_id"] for r in rows} == {uploads["png"]["study_id"], uploads["png2"]["study_id"]}
    assert rows[0]["created_at"] >= rows[1]["created_at"]  # newest first
    for r in rows:
        assert r["modality"] == "png" and r["decision"] in DECISIONS and r["model"].startswith(service.model + ":")
    dicom_rows = service.client.get(f"/api/patients/{uploads['dicom']['patient']}/studies", headers=h).json()
    assert {r["result_id"] for r in dicom_rows} == {uploads["dicom"]["result_id"], uploads["dicom2"]["result_id"]}
    assert service.client.get("/api/patients/P-NOSUCHPATIENT00/studies", headers=h).status_code == 404
    assert service.client.get(f"/api/patients/{PNG_PATIENT}/studies", headers=h).status_code == 404  # not by MRN

    everything = service.client.get("/api/studies", params={"limit": 500}, headers=service.headers("admin"))
    assert {u["study_id"] for u in uploads.values()} <= {r["study_id"] for r in everything.json()}
    assert len(service.client.get("/api/studies", params={"limit": 1}, headers=h).json()) == 1
    assert service.client.get("/api/studies", params={"limit": 0}, headers=h).status_code == 422


# --- jobs --------------------------------------------------------------------------------------------------------


def _wait_for_job(service: Service, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = service.client.get(f"/api/jobs/{job_id}", headers=service.headers("engineer"))
        assert response.status_code == 200, response.text
        job = response.json()
        assert 0.0 <= job["progress"] <= 1.0
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_job_status_and_not_found(service: Service) -> None:
    h = service.headers("engineer")
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        assert service.client.get(f"/api/jobs/{job_id}", headers=h).status_code == 404
        assert service.client.get(f"/api/jobs/{job_id}/report.html", headers=h).status_code == 404
    bad = [({"model": "no-such-model", "data": "breastmnist"}, 404),
           ({"model": service.model, "data": "../etc/passwd"}, 422),
           ({"model": service.model, "data": ".hidden"}, 422),
           ({"model": service.model, "data": "breastmnist", "n_boot": 5}, 422),
           ({"model": service.model}, 422),
           ({"model": service.model, "data": "no-such-dataset"}, 422),  # catalogue names only
           ({"model": service.model, "data": "run"}, 422)]
    for body, code in bad:
        assert service.client.post("/api/jobs/report", json=body, headers=h).status_code == code, body

    # a job that fails (a catalogue set that holds no images) reports the failure; the service carries on
    started = service.client.post("/api/jobs/report", json={"model": service.model, "data": "heart-disease-uci",
                                                            "n_boot": 10}, headers=h)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] == "queued" and job["kind"] == "report"
    assert job["links"]["self"] == f"/api/jobs/{job['job_id']}"
    final = _wait_for_job(service, job["job_id"])
    assert final["status"] == "failed" and final["error"] and final["progress"] == 1.0
    assert "report" not in final["links"]
    report = service.client.get(f"/api/jobs/{job['job_id']}/report.html", headers=h)
    assert report.status_code == 409
    assert service.client.get("/api/health").status_code == 200


@pytest.mark.mirror
def test_report_job_on_the_mirror(service: Service, mirror: Path, tmp_path: Path) -> None:
    """A real validation report in the background (a cnn-tiny trained for 1 epoch on BreastMNIST; SQLite only)."""
    if service.backend != "sqlite":
        pytest.skip("the job runner does not depend on the backend; one real report (SQLite) is enough")
    from meddx.packaging.registry import read_package, register
    from meddx.training import TrainConfig, train

    run = train(TrainConfig(data="breastmnist", model="cnn-tiny", epochs=1, out=str(tmp_path / "run"), threads=1,
                            calibration="temperature"), progress=False)
    register(run)
    name = str(read_package(run)["name"])
    h = service.headers("engineer")
    started = service.client.post("/api/jobs/report", json={"model": name, "data": "breastmnist", "n_boot": 20},
                                  headers=h)
    assert started.status_code == 202, started.text
    final = _wait_for_job(service, started.json()["job_id"], timeout=60)
    assert final["status"] == "done", final
    report = service.client.get(final["links"]["report"], headers=h)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert b"<html" in report.content[:2000].lower()


# --- administration and audit -------------------------------------------------------------------------------


def test_admin_creates_a_user(service: Service) -> None:
    h = service.headers("admin")
    created = service.client.post("/api/admin/users", json={"username": "dr.new", "role": "clinician"}, headers=h)
    assert created.status_code == 201, created.text
    body = created.json()
    otp = body.pop("one_time_password")
    assert len(otp) >= 20 and body["username"] == "dr.new" and body["role"] == "clinician" and body["active"]
    assert service.client.post("/api/admin/users", json={"username": "dr.new", "role": "admin"},
                               headers=h).status_code == 409
    assert service.client.post("/api/admin/users", json={"username": "x", "role": "clinician"},
                               headers=h).status_code == 422
    assert service.client.post("/api/admin/users", json={"username": "dr.other", "role": "root"},
                               headers=h).status_code == 422

    listed = service.client.get("/api/admin/users", headers=h)
    assert listed.status_code == 200
    assert {"username": "dr.new", "role": "clinician", "active": True} in [
        {k: u[k] for k in ("username", "role", "active")} for u in listed.json()]
    assert otp not in listed.text and "password" not in listed.text and "argon2" not in listed.text  # shown once

    # the one-time password logs in, must be changed, and then the new one works
    token = service.login("dr.new", otp)
    assert service.client.post("/api/auth/token", data={"username": "dr.new", "password": otp}
                               ).json()["must_change_password"] is True
    auth = {"Authorization": f"Bearer {token}"}
    new = "correct horse battery staple"
    assert service.client.post("/api/me/password", json={"current_password": "wrong-password",
                                                         "new_password": new}, headers=auth).status_code == 403
    assert service.client.post("/api/me/password", json={"current_password": otp, "new_password": "short"},
                               headers=auth).status_code == 422
    assert service.client.post("/api/me/password", json={"current_password": otp, "new_password": new},
                               headers=auth).status_code == 204
    assert service.client.post("/api/auth/token", data={"username": "dr.new", "password": otp}).status_code == 401
    fresh = service.client.post("/api/auth/token", data={"username": "dr.new", "password": new})
    assert fresh.status_code == 200 and fresh.json()["must_change_password"] is False


def test_audit_log_and_verify(service: Service, uploads: dict[str, dict[str, Any]]) -> None:
    h = service.headers("admin")
    # the audited actions (also done by the tests above; repeated so that this test stands alone)
    links = uploads["png"]["links"]
    for path in (links["self"], links["overlay"], links["preview"], links["fhir"],
                 f"/api/patients/{uploads['png']['patient']}/studies"):
        assert service.client.get(path, headers=service.headers("clinician")).status_code == 200, path
    assert service.client.post("/api/auth/token", data={"username": "admin", "password": "not-the-password"}
                               ).status_code == 401
    assert service.client.post("/api/admin/users", json={"username": "audited.user", "role": "engineer"},
                               headers=h).status_code == 201

    response = service.client.get("/api/admin/audit", params={"limit": 1000}, headers=h)
    assert response.status_code == 200
    entries = response.json()
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and ids[-1] == 1  # newest first, the whole chain
    actions = {e["action"] for e in entries}
    assert {"auth.login", "auth.login_failed", "study.upload", "result.view", "result.overlay", "result.image",
            "result.fhir", "study.list", "user.create"} <= actions
    uploads_logged = [e for e in entries if e["action"] == "study.upload"]
    assert {e["patient_pseudonym"] for e in uploads_logged} >= {u["patient"] for u in uploads.values()}
    assert all(e["user"] == "clinician" and len(e["input_sha256"]) == 64 and e["model_version"].startswith(
        service.model + ":") for e in uploads_logged)
    assert not any(s in response.text for s in SECRETS)
    assert len(service.client.get("/api/admin/audit", params={"limit": 2}, headers=h).json()) == 2

    verify = service.client.get("/api/admin/audit/verify", headers=h)
    assert verify.status_code == 200
    result = verify.json()
    assert result["ok"] is True and result["problems"] == [] and result["entries"] >= len(entries)


def test_the_service_offers_only_image_models_from_the_registry(service: Service, monkeypatch) -> None:
    """Signal and record packages in the same registry are not offered for image uploads (nor break /models)."""
    from meddx.packaging import registry

    real = registry.list_models()
    fake = [*real, {**real[0], "name": "heart-disease-uci-logreg", "modality": "tabular"},
            {**real[0], "name": "ecg-cinc2017-af-cnn", "modality": "signal"}]
    monkeypatch.setattr(registry, "list_models", lambda: fake)
    refs = service.ctx.model_refs()
    assert "heart-disease-uci-logreg" not in refs and "ecg-cinc2017-af-cnn" not in refs and service.model in refs
    assert service.client.get("/api/models", headers=service.headers("engineer")).status_code == 200
