"""Report jobs (issue 18, lows): catalogue names only, and back-to-back jobs neither 500 nor stick ``queued``.

Runs against the real app on SQLite and PostgreSQL (``tests/service/conftest.py``). Before the fix the
route opened a server folder named like the data (``run``), and a job's status updates read before
they wrote, so a commit in between (another job, an audited read) failed them with "database is locked".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.service.conftest import Service, png_bytes  # fixtures: conftest.py

FAILS_FAST = "heart-disease-uci"  # a catalogue set without images: the job starts, then fails at once


def _wait(svc: Service, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = svc.client.get(f"/api/jobs/{job_id}", headers=svc.headers("engineer"))
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_report_jobs_take_catalogue_names_only(service: Service, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()  # a folder on the server named like a plausible data set
    (tmp_path / "run" / "labels.csv").write_text("file,label\n")
    monkeypatch.chdir(tmp_path)
    h = service.headers("engineer")
    for data in ("run", "no-such-dataset", "../etc", "/etc", "run/..", "Breastmnist", "breast mnist", ""):
        response = service.client.post("/api/jobs/report", json={"model": service.model, "data": data}, headers=h)
        assert response.status_code == 422, (data, response.text)
    detail = service.client.post("/api/jobs/report", json={"model": service.model, "data": "breastmnst"},
                                 headers=h).json()["detail"]
    assert "breastmnist" in detail  # a close match is suggested


def test_a_folder_shadowing_a_catalogue_name_is_never_opened(service: Service, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / FAILS_FAST).mkdir()
    monkeypatch.chdir(tmp_path)
    started = service.client.post("/api/jobs/report", json={"model": service.model, "data": FAILS_FAST},
                                  headers=service.headers("engineer"))
    assert started.status_code == 202, started.text
    final = _wait(service, started.json()["job_id"])
    assert final["status"] == "failed" and "shadow the catalogue set" in final["error"]


def test_back_to_back_report_jobs_neither_fail_nor_stick(service: Service) -> None:
    from meddx.storage.models import AuditEntry

    h = service.headers("engineer")
    upload = service.client.post("/api/studies", headers=service.headers("clinician"), data={"patient_id": "MRN-J"},
                                 files={"file": ("x.png", png_bytes(seed=9), "image/png")})
    assert upload.status_code == 201
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:  # audited reads commit all the time while the jobs run
        from fastapi.testclient import TestClient

        client = TestClient(service.app)
        while not stop.is_set():
            code = client.get(upload.json()["links"]["self"], headers=service.headers("clinician")).status_code
            if code != 200:
                errors.append(f"read {code}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        started = [service.client.post("/api/jobs/report", json={"model": service.model, "data": FAILS_FAST,
                                                                 "n_boot": 10}, headers=h) for _ in range(8)]
        assert [r.status_code for r in started] == [202] * 8, [r.text for r in started]
        finals = [_wait(service, r.json()["job_id"]) for r in started]
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert [f["status"] for f in finals] == ["failed"] * 8, finals  # none left queued or running
    assert all("not a labelled image classification set" in f["error"] for f in finals), finals
    ids = {r.json()["job_id"] for r in started}
    with service.ctx.sessions() as session:
        summaries = [e.summary or "" for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(("job.report.start", "job.report.failed")))).all()]
    for job_id in ids:  # every job is audited when started and when it ends
        assert sum(s.startswith(f"job {job_id}") for s in summaries) == 2, job_id


def test_back_to_back_jobs_on_the_real_server(live: Any) -> None:
    """uvicorn on loopback: eight report jobs at once, with audited reads in between; every job ends."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.security.conftest import bearer

    engineer = live.token(*live.add_user("engineer", prefix="eng"))
    doctor = live.token(*live.add_user(prefix="doc"))
    with live.client() as client:
        upload = client.post("/api/studies", headers=bearer(doctor), data={"patient_id": "MRN-JL"},
                             files={"file": ("x.png", png_bytes(seed=3), "image/png")})
        assert upload.status_code == 201, upload.text

        def start(_: int) -> Any:
            return client.post("/api/jobs/report", headers=bearer(engineer),
                               json={"model": live.model, "data": FAILS_FAST, "n_boot": 10})

        def read(_: int) -> int:
            return client.get(upload.json()["links"]["self"], headers=bearer(doctor)).status_code

        with ThreadPoolExecutor(4) as pool:
            started = list(pool.map(start, range(8)))
            reads = list(pool.map(read, range(16)))
        assert [r.status_code for r in started] == [202] * 8, [r.text for r in started]
        assert reads == [200] * 16
        deadline = time.monotonic() + 120
        pending = {r.json()["job_id"] for r in started}
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = client.get(f"/api/jobs/{job_id}", headers=bearer(engineer)).json()
                if job["status"] in ("done", "failed"):
                    assert job["status"] == "failed" and "not a labelled image" in job["error"], job
                    pending.discard(job_id)
            time.sleep(0.1)
        assert not pending, f"jobs still queued or running: {pending}"
