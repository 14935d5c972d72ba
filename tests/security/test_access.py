"""Per-clinician scoping (issue 18, item 6): own studies, care-team shares, audited break-glass.

Runs against the real app (``TestClient`` on :func:`meddx.service.app.create_app`) on SQLite and
PostgreSQL (fixtures of ``tests/service/conftest.py``). On the code before the access model every
clinician read every other clinician's results, FHIR reports, overlays and patient lists.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from meddx.cli.users import app as users_app
from tests.service.conftest import Service, png_bytes  # fixtures: conftest.py

runner = CliRunner()


def _clinician(svc: Service, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    svc.add_user(name, "clinician")
    svc.login(name)
    return name


def _upload(svc: Service, username: str, patient: str) -> dict[str, Any]:
    response = svc.client.post("/api/studies", headers=svc.headers(username), data={"patient_id": patient},
                               files={"file": ("x.png", png_bytes(seed=len(patient)), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()


def _reads(svc: Service, username: str, study: dict[str, Any]) -> dict[str, int]:
    """Status of every route that shows the study, for ``username``."""
    h = svc.headers(username)
    links = study["links"]
    codes = {name: svc.client.get(links[name], headers=h).status_code for name in ("self", "fhir", "preview")}
    codes["patient"] = svc.client.get(f"/api/patients/{study['patient']}/studies", headers=h).status_code
    listed = svc.client.get("/api/studies", params={"limit": 500}, headers=h)
    assert listed.status_code == 200
    codes["listed"] = 200 if study["study_id"] in {r["study_id"] for r in listed.json()} else 404
    return codes


def _audit(svc: Service, action: str) -> list[Any]:
    from meddx.storage.models import AuditEntry

    with svc.ctx.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                    .order_by(AuditEntry.id)).all())


def _web_client(svc: Service, username: str) -> TestClient:
    """A browser of its own, logged in through the login form."""
    client = TestClient(svc.app, base_url="https://testserver")
    page = client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    response = client.post("/login", data={"username": username, "password": svc.passwords[username],
                                           "csrf": match.group(1)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


ALL_OK = {"self": 200, "fhir": 200, "preview": 200, "patient": 200, "listed": 200}
NONE = {"self": 404, "fhir": 404, "preview": 404, "patient": 404, "listed": 404}


def test_a_clinician_reads_own_studies_only(service: Service) -> None:
    alice, bob = _clinician(service, "alice"), _clinician(service, "bob")
    study = _upload(service, alice, f"MRN-A-{secrets.token_hex(3)}")
    assert _reads(service, alice, study) == ALL_OK
    assert _reads(service, bob, study) == NONE
    overlay = study["links"].get("overlay")
    if overlay:
        assert service.client.get(overlay, headers=service.headers(bob)).status_code == 404
    # the refusal looks exactly like an unknown id (no existence oracle) and says what to do
    refused = service.client.get(study["links"]["self"], headers=service.headers(bob)).json()["detail"]
    unknown = service.client.get("/api/results/00000000-0000-0000-0000-000000000000",
                                 headers=service.headers(bob)).json()["detail"]
    assert refused == unknown and "break-glass" in refused
    # admins read everything (audited like everyone), engineers no patient data at all
    assert _reads(service, "admin", study) == ALL_OK
    assert service.client.get(study["links"]["self"], headers=service.headers("engineer")).status_code == 403


def test_the_web_pages_are_scoped_too(service: Service) -> None:
    alice, bob = _clinician(service, "alice"), _clinician(service, "bob")
    study = _upload(service, alice, f"MRN-W-{secrets.token_hex(3)}")
    mine, theirs = _web_client(service, alice), _web_client(service, bob)
    result = f"/results/{study['result_id']}"
    assert mine.get(result).status_code == 200
    for path in (result, f"{result}/image.png"):
        assert theirs.get(path).status_code == 404, path
    assert study["result_id"] in mine.get("/studies").text  # the page links each study's latest result
    assert study["result_id"] not in theirs.get("/studies").text


def test_care_team_sharing_is_managed_by_admins(service: Service) -> None:
    alice, bob, carol = (_clinician(service, n) for n in ("alice", "bob", "carol"))
    study = _upload(service, alice, f"MRN-T-{secrets.token_hex(3)}")
    team = f"ward-{secrets.token_hex(2)}"
    admin = service.headers("admin")
    # only admins manage teams
    assert service.client.post("/api/admin/teams", json={"name": team}, headers=service.headers(alice)
                               ).status_code == 403
    assert service.client.post("/api/admin/teams", json={"name": team}, headers=admin).status_code == 201
    assert service.client.post("/api/admin/teams", json={"name": team}, headers=admin).status_code == 409
    for who in (alice, bob):
        assert service.client.put(f"/api/admin/teams/{team}/members/{who}", headers=admin).status_code == 204
    assert service.client.put(f"/api/admin/teams/{team}/members/nobody-here", headers=admin).status_code == 404
    assert service.client.put(f"/api/admin/teams/no-team/members/{bob}", headers=admin).status_code == 404
    listed = service.client.get("/api/admin/teams", headers=admin).json()
    assert {"name": team, "members": sorted([alice, bob])} in listed

    assert _reads(service, bob, study) == ALL_OK  # shared through the team
    assert _reads(service, carol, study) == NONE  # not in it
    assert service.client.delete(f"/api/admin/teams/{team}/members/{bob}", headers=admin).status_code == 204
    assert _reads(service, bob, study) == NONE  # at once, with the same token
    assert {e.summary for e in _audit(service, "team.add")} >= {f"{alice} to {team}", f"{bob} to {team}"}
    assert f"{bob} from {team}" in {e.summary for e in _audit(service, "team.remove")}


def test_teams_from_the_command_line(service: Service) -> None:
    alice, bob = _clinician(service, "alice"), _clinician(service, "bob")
    study = _upload(service, alice, f"MRN-C-{secrets.token_hex(3)}")
    team = f"radiology-{secrets.token_hex(2)}"
    assert runner.invoke(users_app, ["team-create", team]).exit_code == 0
    for who in (alice, bob):
        result = runner.invoke(users_app, ["team-add", team, who])
        assert result.exit_code == 0, result.output
    listing = runner.invoke(users_app, ["teams"])
    assert f"{team}: {', '.join(sorted([alice, bob]))}" in listing.stdout
    assert _reads(service, bob, study) == ALL_OK
    assert runner.invoke(users_app, ["team-remove", team, bob]).exit_code == 0
    assert runner.invoke(users_app, ["team-remove", team, bob]).exit_code != 0  # not a member any more
    assert _reads(service, bob, study) == NONE
    assert any(e.user.startswith("cli") for e in _audit(service, "team.create"))


def test_break_glass_is_explicit_time_limited_and_audited(service: Service) -> None:
    from meddx.storage.models import BreakGlassGrant, utcnow

    alice, dave = _clinician(service, "alice"), _clinician(service, "dave")
    study = _upload(service, alice, f"MRN-B-{secrets.token_hex(3)}")
    other = _upload(service, alice, f"MRN-O-{secrets.token_hex(3)}")
    h = service.headers(dave)
    assert _reads(service, dave, study) == NONE
    # a reason is required, and the window is bounded
    for body in ({"patient": study["patient"]}, {"reason": "need it", "patient": study["patient"]},
                 {"reason": "patient deteriorating in ED, cardiology on call", "minutes": 100000}):
        assert service.client.post("/api/break-glass", json=body, headers=h).status_code == 422, body
    assert service.client.post("/api/break-glass", json={"reason": "x" * 30, "patient": "pt-nosuch"},
                               headers=h).status_code == 404
    reason = "patient deteriorating in ED, on-call cardiology needs the prior study"
    granted = service.client.post("/api/break-glass", json={"reason": reason, "patient": study["patient"],
                                                            "minutes": 30}, headers=h)
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    assert _reads(service, dave, study) == ALL_OK
    assert _reads(service, dave, other)["self"] == 404  # another patient: still closed
    uses = [e for e in _audit(service, "access.break_glass_use") if e.user == dave]
    assert uses and all(e.patient_pseudonym == study["patient"] for e in uses)
    assert any(e.summary == f"grant {grant['grant_id']}: result.fhir" for e in uses)
    assert any(e.user == dave for e in _audit(service, "access.break_glass"))

    # admins list every grant, its reason and its uses; nobody else does
    assert service.client.get("/api/admin/break-glass", headers=h).status_code == 403
    log = service.client.get("/api/admin/break-glass", headers=service.headers("admin")).json()
    (entry,) = [g for g in log if g["grant_id"] == grant["grant_id"]]
    assert entry["username"] == dave and entry["reason"] == reason and entry["active"]
    assert {u["what"] for u in entry["uses"]} >= {"result.view", "result.fhir", "result.image", "study.list"}
    # the reason is free text: stored encrypted, never in clear in the database
    assert reason.encode() not in service.database_text()

    # when the grant expires, the access ends
    with service.ctx.sessions() as session:
        row = session.get(BreakGlassGrant, grant["grant_id"])
        row.created_at = utcnow() - timedelta(hours=2)
        row.expires_at = utcnow() - timedelta(minutes=1)
        session.commit()
    assert _reads(service, dave, study) == NONE
    assert not [g for g in service.client.get("/api/admin/break-glass", headers=service.headers("admin")).json()
                if g["grant_id"] == grant["grant_id"]][0]["active"]
    listing = runner.invoke(users_app, ["break-glass"])
    assert listing.exit_code == 0 and f"grant {grant['grant_id']}" in listing.stdout and reason in listing.stdout


def test_break_glass_for_every_patient_opens_lists_and_is_audited_per_patient(service: Service) -> None:
    alice, erin = _clinician(service, "alice"), _clinician(service, "erin")
    study = _upload(service, alice, f"MRN-E-{secrets.token_hex(3)}")
    granted = service.client.post("/api/break-glass", json={"reason": "mass casualty incident, all records needed"},
                                  headers=service.headers(erin))
    assert granted.status_code == 201 and granted.json()["patient"] is None
    assert _reads(service, erin, study) == ALL_OK
    listed = [e for e in _audit(service, "access.break_glass_use")
              if e.user == erin and e.summary == f"grant {granted.json()['grant_id']}: study.list"]
    assert study["patient"] in {e.patient_pseudonym for e in listed}


def test_scoping_on_the_real_server(live: Any) -> None:
    """The same probes against uvicorn on loopback (``live``: tests/security/conftest.py)."""
    from tests.security.conftest import bearer

    (alice, pa), (bob, pb), (carol, pc) = (live.add_user(prefix=p) for p in ("alice", "bob", "carol"))
    admin, padmin = live.add_user("admin", prefix="adm")
    ta, tb, tc, tadmin = (live.token(u, p) for u, p in ((alice, pa), (bob, pb), (carol, pc), (admin, padmin)))
    with live.client() as client:
        upload = client.post("/api/studies", headers=bearer(ta), data={"patient_id": "MRN-LIVE-1"},
                             files={"file": ("x.png", png_bytes(seed=5), "image/png")})
        assert upload.status_code == 201, upload.text
        study = upload.json()

        def codes(token: str) -> list[int]:
            out = [client.get(study["links"][k], headers=bearer(token)).status_code
                   for k in ("self", "fhir", "preview")]
            out.append(client.get(f"/api/patients/{study['patient']}/studies", headers=bearer(token)).status_code)
            listed = client.get("/api/studies", params={"limit": 500}, headers=bearer(token)).json()
            out.append(200 if study["study_id"] in {r["study_id"] for r in listed} else 404)
            return out

        assert codes(ta) == [200] * 5
        assert codes(tb) == [404] * 5 and codes(tc) == [404] * 5
        with live.client() as browser:
            live.web_login(browser, bob, pb)
            assert browser.get(f"/results/{study['result_id']}").status_code == 404
            assert study["result_id"] not in browser.get("/studies").text

        team = f"icu-{secrets.token_hex(2)}"
        assert client.post("/api/admin/teams", json={"name": team}, headers=bearer(tadmin)).status_code == 201
        for who in (alice, bob):
            assert client.put(f"/api/admin/teams/{team}/members/{who}", headers=bearer(tadmin)).status_code == 204
        assert codes(tb) == [200] * 5 and codes(tc) == [404] * 5

        grant = client.post("/api/break-glass", headers=bearer(tc),
                            json={"reason": "arrest on the ward, previous imaging needed now",
                                  "patient": study["patient"], "minutes": 15})
        assert grant.status_code == 201, grant.text
        assert codes(tc) == [200] * 5
        log = client.get("/api/admin/break-glass", headers=bearer(tadmin)).json()
        (entry,) = [g for g in log if g["grant_id"] == grant.json()["grant_id"]]
        assert entry["username"] == carol and len(entry["uses"]) >= 4
