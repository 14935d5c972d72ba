"""Similar confirmed cases in the service: ``GET /api/studies/{id}/similar``, case thumbnails, the result card's
panel, and the start-up check of each configured case index against the served model.

A tiny case index is built (``meddx.retrieval.build.build_index``) from 16 generated PNGs with a ``sex``
column, with the session's tiny trained model, and its thumbnails written beside it
(:func:`meddx.service.similar.thumbnails_from_source`); an app serves it with ``indexes={model: folder}``.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from meddx.exceptions import ModelError
from tests._factories import make_labelled_pngs
from tests.service.conftest import Service, dicom_bytes

pytest.importorskip("faiss")
SECRET_NAME, SECRET_ID = "Secretname^Jane", "PID-SECRET-4711"


@pytest.fixture(scope="module")
def case_index(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat case index of 16 labelled cases (half of them F), with thumbnails."""
    from meddx.retrieval.build import build_index
    from meddx.service.similar import thumbnails_from_source

    base = tmp_path_factory.mktemp("similar")
    data = make_labelled_pngs(base / "gallery", n=16, size=16, seed=7)
    rows = (data / "labels.csv").read_text().splitlines()
    (data / "labels.csv").write_text("\n".join(["file,label,sex"] + [f"{r},{'F' if i % 4 < 2 else 'M'}"
                                                                     for i, r in enumerate(rows[1:])]) + "\n")
    out = base / "index"
    build_index(trained_run, data, out, progress=False, chunk_size=8)
    assert thumbnails_from_source(out, trained_run) == 16
    return out


def _cases(index: Path) -> list[dict[str, Any]]:
    return json.loads((index / "cases.json").read_text())


def _model_name(run: Path) -> str:
    from meddx.packaging.registry import read_package

    return str(read_package(run)["name"])


def _upload(svc: Service, tmp: Path, user: str = "clinician", modality: str = "CR") -> dict[str, Any]:
    files = {"file": ("study.dcm", dicom_bytes(tmp, SECRET_NAME, SECRET_ID, modality=modality), "application/dicom")}
    response = svc.client.post("/api/studies", headers=svc.headers(user), files=files)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _public_row(case_id: str) -> int:
    match = re.fullmatch(r"case-(\d+)", case_id)
    assert match, f"a folder-built index's case ids are file names: the service must show case-<row>, not {case_id}"
    return int(match.group(1))


def test_clinician_sees_similar_confirmed_cases(make_service: Any, trained_run: Path, case_index: Path,
                                                tmp_path: Path) -> None:
    svc = make_service(indexes={_model_name(trained_run): str(case_index)})
    study = _upload(svc, tmp_path)
    assert study["prediction"]["decision"]["decision"] != "rejected"
    url = f"/api/studies/{study['study_id']}/similar"
    h = svc.headers("clinician")

    response = svc.client.get(url, params={"k": 5}, headers=h)
    assert response.status_code == 200, response.text
    body = response.json()
    hits = body["hits"]
    assert body["k"] == 5 and len(hits) == 5 and body["model"] == svc.model and body["study_id"] == study["study_id"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    assert all(set(hit) == {"rank", "case_id", "label", "similarity", "thumbnail"} for hit in hits)
    assert {hit["label"] for hit in hits} <= {"lesion", "normal"}
    sims = [hit["similarity"] for hit in hits]
    assert sims == sorted(sims, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in sims)
    cases = _cases(case_index)
    for hit in hits:  # the label is the indexed case's confirmed diagnosis
        assert cases[_public_row(hit["case_id"])]["label"] == hit["label"]

    # no identifiers, no file names or server paths anywhere in the answer
    text = response.text
    for secret in (SECRET_NAME, SECRET_ID, "Secretname", study["patient"], "img0", ".png\"", str(case_index),
                   str(trained_run), "labels.csv", "\"file\""):
        assert secret not in text, secret

    # thumbnails: small greyscale PNGs, clinicians only
    for hit in hits:
        assert hit["thumbnail"] and hit["thumbnail"].startswith(f"/api/cases/{hit['case_id']}/thumbnail.png")
        picture = svc.client.get(hit["thumbnail"], headers=h)
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(picture.content)) as image:
            assert image.mode == "L" and max(image.size) <= 64
    assert svc.client.get(hits[0]["thumbnail"], headers=svc.headers("engineer")).status_code == 403
    assert svc.client.get(hits[0]["thumbnail"]).status_code == 401
    assert svc.client.get("/api/cases/case-999/thumbnail.png", headers=h).status_code == 404
    assert svc.client.get("/api/cases/img000.png/thumbnail.png", headers=h).status_code == 404

    # k and the filters are respected (inside the search: still k hits when enough cases match)
    assert len(svc.client.get(url, params={"k": 3}, headers=h).json()["hits"]) == 3
    lesions = svc.client.get(url, params={"k": 6, "label": "lesion"}, headers=h).json()
    assert lesions["filters"] == {"label": "lesion"} and len(lesions["hits"]) == 6
    assert {hit["label"] for hit in lesions["hits"]} == {"lesion"}
    women = svc.client.get(url, params={"k": 20, "sex": "F"}, headers=h).json()["hits"]
    assert len(women) == 8 and all(cases[_public_row(hit["case_id"])]["sex"] == "F" for hit in women)
    both = svc.client.get(url, params={"k": 20, "sex": "M", "label": "normal"}, headers=h).json()["hits"]
    assert both and all(cases[_public_row(x["case_id"])]["sex"] == "M" and x["label"] == "normal" for x in both)
    assert svc.client.get(url, params={"k": 0}, headers=h).status_code == 422
    assert svc.client.get(url, params={"k": 51}, headers=h).status_code == 422

    # audited like a result read
    entries = svc.client.get("/api/admin/audit", params={"limit": 1000}, headers=svc.headers("admin")).json()
    similar = [e for e in entries if e["action"] == "result.similar" and e["user"] == "clinician"]
    assert len(similar) >= 5 and similar[0]["patient_pseudonym"] == study["patient"]
    assert similar[0]["model_version"].startswith(svc.model + ":")

    # access: engineers 403, another clinician 404 (as for an unknown study), break-glass opens it
    assert svc.client.get(url, headers=svc.headers("engineer")).status_code == 403
    assert svc.client.get(url).status_code == 401
    svc.add_user("otherdoc", "clinician")
    svc.login("otherdoc")
    other = svc.headers("otherdoc")
    refused = svc.client.get(url, headers=other)
    assert refused.status_code == 404 and hits[0]["case_id"] not in refused.text
    assert svc.client.get(f"/api/studies/{uuid.uuid4()}/similar", headers=h).status_code == 404
    assert svc.client.get("/api/studies/not-a-uuid/similar", headers=h).status_code == 404
    grant = svc.client.post("/api/break-glass", headers=other,
                            json={"reason": "patient deteriorating in the emergency room", "patient": study["patient"]})
    assert grant.status_code == 201, grant.text
    assert svc.client.get(url, headers=other).status_code == 200
    entries = svc.client.get("/api/admin/audit", params={"limit": 50}, headers=svc.headers("admin")).json()
    assert any(e["action"] == "access.break_glass_use" and e["user"] == "otherdoc" for e in entries)

    # the result card shows the panel with its thumbnails to the clinician
    page = TestClient(svc.app, follow_redirects=False, cookies={"meddx_session": svc.tokens["clinician"]})
    card = page.get(f"/results/{study['result_id']}")
    assert card.status_code == 200 and 'id="similar"' in card.text and "Similar confirmed cases" in card.text
    thumbs = re.findall(r'class="case-thumb" src="([^"]+)"', card.text)
    assert thumbs and all(page.get(t.replace("&amp;", "&")).status_code == 200 for t in thumbs)
    assert re.search(r"\d+% similar", card.text)
    assert svc.client.get("/api/admin/audit/verify", headers=svc.headers("admin")).json()["ok"] is True


def test_rejected_inputs_and_models_without_an_index_get_no_similar_cases(make_service: Any, trained_run: Path,
                                                                         case_index: Path, tmp_path: Path) -> None:
    svc = make_service(indexes={_model_name(trained_run): str(case_index)})
    ct = _upload(svc, tmp_path, modality="CT")  # the chest X-ray model is not made for CT: rejected, stored
    assert ct["prediction"]["decision"]["decision"] == "rejected"
    assert svc.client.get(f"/api/studies/{ct['study_id']}/similar", headers=svc.headers("clinician")).status_code == 409
    page = TestClient(svc.app, follow_redirects=False, cookies={"meddx_session": svc.tokens["clinician"]})
    card = page.get(f"/results/{ct['result_id']}")
    assert card.status_code == 200 and 'id="similar"' not in card.text

    plain = make_service()  # no index configured: 404 from the route, no panel on the card
    study = _upload(plain, tmp_path)
    response = plain.client.get(f"/api/studies/{study['study_id']}/similar", headers=plain.headers("clinician"))
    assert response.status_code == 404 and "no case index" in response.text
    page = TestClient(plain.app, follow_redirects=False, cookies={"meddx_session": plain.tokens["clinician"]})
    card = page.get(f"/results/{study['result_id']}")
    assert card.status_code == 200 and 'id="decision"' in card.text and 'id="similar"' not in card.text


def test_query_parameters_never_cause_a_server_error(make_service: Any, trained_run: Path, case_index: Path,
                                                     tmp_path: Path) -> None:
    """Schemathesis cannot guess a real study id, so the query string is fuzzed here on a real study."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    svc = make_service(indexes={_model_name(trained_run): str(case_index)})
    url = f"/api/studies/{_upload(svc, tmp_path)['study_id']}/similar"
    text = st.text(max_size=80)
    params = st.fixed_dictionaries({}, optional={"k": st.one_of(st.integers(-5, 80), text), "label": text,
                                                 "sex": text, "age_band": text, "site": text, "modality": text})

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(params)
    def call(query: dict[str, Any]) -> None:
        response = svc.client.get(url, params=query, headers=svc.headers("clinician"))
        assert response.status_code in (200, 422), (query, response.status_code, response.text)

    call()


def test_an_index_of_another_model_stops_the_start_up(make_service: Any, trained_run: Path, case_index: Path,
                                                      tmp_path: Path) -> None:
    other = tmp_path / "other-index"
    shutil.copytree(case_index, other)
    info = json.loads((other / "index.json").read_text())
    info["model"]["version"] = "99.0"
    (other / "index.json").write_text(json.dumps(info))
    with pytest.raises(ModelError) as caught:
        make_service(indexes={_model_name(trained_run): str(other)})
    message = str(caught.value)
    assert str(other) in message and _model_name(trained_run) in message and "99.0" in message
    with pytest.raises(ModelError, match="does not serve"):
        make_service(indexes={"no-such-model": str(case_index)})


def test_indexes_come_from_the_environment_and_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.exceptions import ConfigError
    from meddx.service.context import Settings
    from meddx.service.similar import parse_indexes, public_id

    monkeypatch.setenv("MEDDX_INDEXES", "chest=/srv/idx/chest, brain = /srv/idx/brain")
    assert Settings.from_env().indexes == {"chest": "/srv/idx/chest", "brain": "/srv/idx/brain"}
    monkeypatch.delenv("MEDDX_INDEXES")
    assert Settings.from_env().indexes == {}
    assert parse_indexes(["a=x", "b=y=z"]) == {"a": "x", "b": "y=z"}
    for bad in ("a", "=x", "a="):
        with pytest.raises(ConfigError):
            parse_indexes([bad])
    assert public_id({"case_id": "train:57"}, 57) == "train:57"
    for case in ({"case_id": "img001.png", "file": "img001.png"}, {"case_id": "sub/dir/x"}, {"case_id": "P-1.dcm"},
                 {"case_id": "x" * 80}, {"case_id": "case-3"}):
        assert public_id(case, 4) == "case-4", case
