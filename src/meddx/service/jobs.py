"""Background jobs (validation reports, ensembles): queued in the database, run in a worker pool.

A job row carries status (``queued``/``running``/``done``/``failed``) and progress
so clients poll ``GET /api/jobs/{id}``; results are stored encrypted like
everything else that may describe patients.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import HTTPException

_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meddx-job")


def _aad(job_id: Any) -> bytes:
    return f"job:{job_id}".encode()


def _update(ctx: Any, job_id: uuid.UUID, **fields: Any) -> None:
    from meddx.storage.models import Job

    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        session.commit()


def submit_report(ctx: Any, username: str, model: str, data: str, split: str | None, n_boot: int) -> Any:
    from meddx.service.api import JobOut
    from meddx.storage.models import Job, User

    with ctx.sessions() as session:
        owner = session.query(User).filter_by(username=username).one()
        job = Job(kind="report", status="queued", progress=0.0, owner_id=owner.id)
        session.add(job)
        session.commit()
        job_id = job.id

    def work() -> None:
        from meddx.report.build import build_report

        _update(ctx, job_id, status="running", progress=0.1)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                pipe = ctx.pipeline(model)
                html = build_report(pipe.folder, data, split=split, out=Path(tmp), n_boot=n_boot, explain=2)
                blob = ctx.blobs.put(html.read_bytes(), kind="report")
            payload = ctx.blobs.encryptor.encrypt(json.dumps({"html_blob": blob}).encode(), _aad(job_id))
            _update(ctx, job_id, status="done", progress=1.0, result=payload)
        except Exception as exc:  # the job fails, the service does not
            _update(ctx, job_id, status="failed", progress=1.0, error=f"{type(exc).__name__}: {exc}"[:2000])

    _POOL.submit(work)
    return JobOut(job_id=str(job_id), kind="report", status="queued", progress=0.0,
                  links={"self": f"/api/jobs/{job_id}", "report": f"/api/jobs/{job_id}/report.html"})


def _load(ctx: Any, job_id: str) -> Any:
    from meddx.service.api import get_row_or_404
    from meddx.storage.models import Job

    with ctx.sessions() as session:
        job = get_row_or_404(session, Job, job_id, "job")
        session.expunge(job)
        return job


def job_status(ctx: Any, job_id: str) -> Any:
    from meddx.service.api import JobOut

    job = _load(ctx, job_id)
    links = {"self": f"/api/jobs/{job.id}"}
    if job.status == "done":
        links["report"] = f"/api/jobs/{job.id}/report.html"
    return JobOut(job_id=str(job.id), kind=job.kind, status=job.status, progress=job.progress, error=job.error,
                  links=links)


def job_report(ctx: Any, job_id: str) -> bytes:
    job = _load(ctx, job_id)
    if job.status != "done" or not job.result:
        raise HTTPException(409, f"the job is {job.status}")
    payload = json.loads(ctx.blobs.encryptor.decrypt(job.result, _aad(job.id)))
    return ctx.blobs.get(payload["html_blob"])
