"""Restoration and translation models in the clinician service: the synthetic image is stored, served with its
banner (``synthetic.png``), a DICOM upload gets a DICOM marked DERIVED (``synthetic.dcm``), and the result card
shows it beside the input under a red "SYNTHETIC – not acquired" banner with the dose and the hallucination checks.

A tiny restorer (DnCNN-small, 30 steps on 10 phantoms) and a tiny pix2pix translator (4 steps on phantom pairs)
are trained once for this module (about 10 s on one thread) beside the classifier of ``conftest.py``.
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

from tests.service.conftest import Service, serving


@pytest.fixture(scope="module")
def synth_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("monai")
    import torch

    from meddx.synthesis import package as restoration
    from meddx.synthesis.translation import package as translation
    from tests.synthesis.test_restoration import write_phantoms

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("synth-models")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MEDDX_HOME", str(base / "home"))
            restorer = restoration.train(str(write_phantoms(base / "phantoms", 10)), noise="xray-poisson",
                                         out=base / "restore", steps=30, patch=32, batch=4, eval_every=15, n_boot=50,
                                         progress=False, model="dncnn-small", threads=1)
            translator = translation.train("phantom-pairs:12", steps=4, out=base / "translate", progress=False,
                                           eval_every=2, n_boot=50, batch=4, threads=1)
    finally:
        torch.set_num_threads(threads)
    return {"restoration": restorer, "translation": translator}


@pytest.fixture(scope="module")
def module_svc(trained_run: Path, synth_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[tuple[Service, dict[str, str]]]:
    with serving(trained_run, synth_runs, tmp_path_factory.mktemp("svc-synth") / "home", request) as served:
        yield served


@pytest.fixture
def svc(module_svc: tuple[Service, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> tuple[Service, dict[str, str]]:
    import torch

    module_svc[0].set_env(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module_svc
    torch.set_num_threads(threads)


def _low_dose_png(seed: int = 5) -> tuple[bytes, tuple[int, int]]:
    from meddx.synthesis import dose
    from tests.synthesis.test_restoration import phantom

    noisy = dose.get("xray-poisson").degrade(phantom(64, seed), 0.1, 0)
    buffer = io.BytesIO()
    Image.fromarray((noisy * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue(), noisy.shape


def _upload(svc: Service, model: str, name: str, content: bytes, *, status: int = 201, params: dict | None = None,
            **form: Any) -> dict[str, Any]:
    response = svc.client.post("/api/studies", headers=svc.headers("clinician"), params=params or {},
                               files={"file": (name, content)}, data={"model": model, "patient_id": "P-9", **form})
    assert response.status_code == status, response.text
    return response.json()


def _get(svc: Service, url: str, user: str = "clinician") -> Any:
    return svc.client.get(url, headers=svc.headers(user))


def _page(svc: Service, result_id: str) -> str:
    svc.client.cookies.set("meddx_session", svc.tokens["clinician"])
    try:
        page = svc.client.get(f"/results/{result_id}")
        picture = svc.client.get(f"/results/{result_id}/synthetic.png")
    finally:
        svc.client.cookies.clear()
    assert page.status_code == 200, page.text
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    return page.text


def _no_server_paths(study: dict[str, Any], svc: Service) -> None:
    text = json.dumps(study)
    for folder in (tempfile.gettempdir(), str(svc.home)):
        assert folder not in text, f"a server path ({folder}) leaked into the prediction"
    assert "meddx-task-" not in text and "upload.png" not in text and "upload.dcm" not in text


def test_models_list_their_synthesis_task(svc: tuple[Service, dict[str, str]]) -> None:
    service, names = svc
    listed = {m["name"]: m for m in _get(service, "/api/models").json()}
    assert listed[names["restoration"]]["task"] == "restoration"
    assert listed[names["translation"]]["task"] == "translation"


def test_png_to_a_restorer_stores_a_marked_synthetic_image_and_the_card_shows_it(
        svc: tuple[Service, dict[str, str]]) -> None:
    from meddx.storage.models import AuditEntry

    service, names = svc
    content, shape = _low_dose_png()
    study = _upload(service, names["restoration"], "low.png", content, dose="0.1")
    p, rid, links = study["prediction"], study["result_id"], study["links"]
    synthetic = p["synthetic"]
    assert p["task"] == "restoration" and p["decision"]["decision"] in ("restored", "review")
    assert synthetic["derived"] is True and synthetic["dose"] == 0.1 and synthetic["banner"].startswith("SYNTHETIC")
    assert "regions" in synthetic["checks"]["residual"]
    assert synthetic["image"] == links["synthetic"] == f"/api/results/{rid}/synthetic.png"
    assert synthetic["image_raw"] is None and synthetic["dicom"] is None  # no unmarked picture is handed out
    assert "synthetic_dicom" not in links and "overlay" not in links
    assert not any("no dose given" in w for w in p["warnings"])
    _no_server_paths(study, service)
    response = _get(service, links["synthetic"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert picture.shape[0] / picture.shape[1] > shape[0] / shape[1], "the banner band makes it taller"
    top = picture[:8].reshape(-1, 3).astype(int)
    assert (top[:, 0] - top[:, 1]).mean() > 80, "a red band across the top"
    same = _get(service, f"/api/studies/{study['study_id']}/synthetic.png")
    assert same.status_code == 200 and same.content == response.content
    assert _get(service, f"/api/results/{rid}/synthetic.dcm").status_code == 404
    assert _get(service, links["synthetic"], "outsider").status_code == 404
    assert _get(service, links["synthetic"], "engineer").status_code == 403
    html = _page(service, rid)
    assert 'id="synthetic-banner"' in html and "SYNTHETIC – not acquired" in html
    assert 'id="synthetic-image"' in html and f'src="/results/{rid}/synthetic.png"' in html and 'id="image"' in html
    assert 'id="dose"' in html and "0.1 of the full dose" in html
    assert 'id="synthetic-checks"' in html and "Hallucination checks" in html
    assert "expected noise" in html and "Calibrated probabilities" not in html
    with service.ctx.sessions() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.patient_pseudonym == study["patient"]).all()
        actions = {(r.action, r.user) for r in rows}
    assert ("study.upload", "clinician") in actions and ("result.synthetic", "clinician") in actions
    bundle = _get(service, links["fhir"]).json()
    assert "SYNTHETIC" in bundle["entry"][0]["resource"]["conclusion"]


def test_dose_by_query_none_given_and_refused_options(svc: tuple[Service, dict[str, str]]) -> None:
    service, names = svc
    content, _ = _low_dose_png(6)
    by_query = _upload(service, names["restoration"], "low.png", content, params={"dose": "0.25"})
    assert by_query["prediction"]["synthetic"]["dose"] == 0.25
    assumed = _upload(service, names["restoration"], "low.png", content)
    warnings = assumed["prediction"]["warnings"]
    assert any(w.startswith("no dose given: assumed") for w in warnings)
    html = _page(service, assumed["result_id"])
    assert 'id="warnings"' in html and "no dose given: assumed" in html
    assert "dose" in _upload(service, service.model, "x.png", content, status=422, dose="0.1")["detail"]
    assert "direction" in _upload(service, names["restoration"], "x.png", content, status=422,
                                  direction="a2b")["detail"]
    _upload(service, names["restoration"], "x.png", content, status=422, dose="1.5")


@pytest.mark.mirror
def test_dicom_to_a_restorer_gives_a_dicom_marked_derived(svc: tuple[Service, dict[str, str]], tmp_path: Path,
                                                          format_samples: Path) -> None:
    import pydicom

    from meddx.synthesis.derived import is_marked_derived

    service, names = svc
    source = format_samples / "dicom" / "CT_small.dcm"
    study = _upload(service, names["restoration"], "ct.dcm", source.read_bytes(), dose="0.1")
    p, links = study["prediction"], study["links"]
    assert p["decision"]["decision"] in ("restored", "review"), p["decision"]
    assert p["synthetic"]["dicom"] == links["synthetic_dicom"] == f"/api/results/{study['result_id']}/synthetic.dcm"
    _no_server_paths(study, service)
    response = _get(service, links["synthetic_dicom"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    assert "attachment" in response.headers["content-disposition"]
    (tmp_path / "synthetic.dcm").write_bytes(response.content)
    assert is_marked_derived(tmp_path / "synthetic.dcm")
    ds, src = pydicom.dcmread(tmp_path / "synthetic.dcm"), pydicom.dcmread(source)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.Rows == src.Rows
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.PatientID == study["patient"] != src.PatientID
    by_study = _get(service, f"/api/studies/{study['study_id']}/synthetic.dcm")
    assert by_study.status_code == 200 and by_study.content == response.content
    html = _page(service, study["result_id"])
    assert f'href="/api/results/{study["result_id"]}/synthetic.dcm"' in html and "ImageType DERIVED" in html


def test_png_to_a_translator_is_served_marked(svc: tuple[Service, dict[str, str]]) -> None:
    from meddx.synthesis.translation import phantoms

    service, names = svc
    ct, _, _ = phantoms.pair(64, seed=40)
    buffer = io.BytesIO()
    Image.fromarray((ct * 255).astype(np.uint8)).save(buffer, format="PNG")
    study = _upload(service, names["translation"], "ct.png", buffer.getvalue())
    p, links = study["prediction"], study["links"]
    assert p["task"] == "translation" and p["synthetic"]["kind"] == "translation"
    assert p["synthetic"]["image"] == links["synthetic"] and "structures_added" in p["synthetic"]["checks"]
    _no_server_paths(study, service)
    picture = Image.open(io.BytesIO(_get(service, links["synthetic"]).content))
    assert picture.height / picture.width > 1.0  # a square input, taller by the banner
    html = _page(service, study["result_id"])
    assert 'id="synthetic-banner"' in html and "SYNTHETIC – not acquired" in html and 'id="dose"' not in html
    assert "structure(s)" in html or "No structure added" in html
    refused = _upload(service, names["translation"], "ct.png", buffer.getvalue(), status=422, direction="b2a")
    assert "b2a" in refused["detail"] or "direction" in refused["detail"]


def test_checks_in_words_flag_changed_regions() -> None:
    from meddx.service import tasks, web

    prediction = {"task": "restoration", "decision": {"decision": "review", "reason": "x"},
                  "synthetic": {"kind": "restoration", "dose": 0.05, "checks": {
                      "residual": {"regions": 2, "brighter": 1, "darker": 1}, "noise_sd": 0.04}}}
    rows = tasks.synthetic_checks(prediction)
    assert rows[0]["flag"] and rows[0]["text"].startswith("2 region(s) changed beyond the expected noise")
    assert "compare with the input" in rows[0]["text"]
    assert "2 region(s) changed" in tasks.summary(prediction) and "dose 0.05" in tasks.summary(prediction)
    assert web.headline(prediction).startswith("Review:")
