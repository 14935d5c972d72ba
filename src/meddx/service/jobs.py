"""Background jobs (validation reports): queued in the database, run one at a time by one worker thread.

A job row carries status (``queued``/``running``/``done``/``failed``) and progress
so clients poll ``GET /api/jobs/{id}``; results are stored encrypted like
everything else that may describe patients.

Robustness: every read-then-write on the job table takes SQLite's write lock
first (:func:`meddx.storage.db.begin_write`; WAL with a busy timeout does the
waiting), a commit that still meets "database is locked" is retried with
back-off, and the worker moves every job it picks up to ``done`` or ``failed``
whatever happens, so back-to-back submissions neither fail with 500 nor leave
jobs ``queued``. Jobs name their data by catalogue name only: a folder on the
server is never opened, even one whose name matches. Starting, finishing and
reading a report are audited.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from meddx.service.access import get_row_or_404

# One worker for the whole process: reports are CPU-heavy, and one writer at a time keeps SQLite calm.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meddx-job")
_CATALOGUE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
_RETRIES = 6
_log = logging.getLogger(__name__)
T = TypeVar("T")


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: str
    progress: float
    error: str | None = None
    links: dict[str, str] = {}


def _aad(job_id: Any) -> bytes:
    return f"job:{job_id}".encode()


def _retry(fn: Callable[[], T]) -> T:
    """``fn()``, again with back-off while the database says it is locked or busy."""
    for attempt in range(_RETRIES):
        try:
            return fn()
        except OperationalError as exc:
            text = str(exc).lower()
            if attempt == _RETRIES - 1 or ("locked" not in text and "busy" not in text):
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _audit(ctx: Any, user: str, action: str, **fields: Any) -> None:
    from meddx.storage.audit import append

    def write() -> None:
        with ctx.sessions() as session:
            append(session, user=user, action=action, **fields)
            session.commit()

    _retry(write)


def _update(ctx: Any, job_id: uuid.UUID, **fields: Any) -> None:
    from meddx.storage.db import begin_write
    from meddx.storage.models import Job

    def write() -> None:
        with ctx.sessions() as session:
            begin_write(session, Job.__tablename__)  # read-then-write: hold the write lock from the start
            job = session.get(Job, job_id)
            for key, value in fields.items():
                setattr(job, key, value)
            session.commit()

    _retry(write)


def check_catalogue_name(data: str) -> str:
    """``data`` when it names a catalogue data set; 422 otherwise (paths and folder names included)."""
    from meddx.data.catalogue import get_dataset
    from meddx.exceptions import MeddxError

    if not _CATALOGUE_NAME.fullmatch(data):
        raise HTTPException(422, "data must be a catalogue name (lower-case letters, digits, '-', '_'; no paths): "
                                 "see `meddx data list`")
    try:
        return get_dataset(data).name
    except MeddxError as exc:
        raise HTTPException(422, f"data: {exc}") from exc


def submit_report(ctx: Any, username: str, model: str, data: str, split: str | None, n_boot: int) -> JobOut:
    """Queue a validation report of ``model`` on the catalogue set ``data`` (audited as ``job.report.start``)."""
    from meddx.storage.db import begin_write
    from meddx.storage.models import Job, User

    name = check_catalogue_name(data)

    def insert() -> uuid.UUID:
        with ctx.sessions() as session:
            begin_write(session, Job.__tablename__)
            owner = session.query(User).filter_by(username=username).one()
            job = Job(kind="report", status="queued", progress=0.0, owner_id=owner.id)
            session.add(job)
            session.commit()
            return job.id

    job_id = _retry(insert)
    _audit(ctx, username, "job.report.start", model_version=model, summary=f"job {job_id} data={name}")

    def work() -> None:
        try:
            _update(ctx, job_id, status="running", progress=0.1)
            payload = _build(ctx, model, name, split, n_boot, job_id)
            _update(ctx, job_id, status="done", progress=1.0, result=payload)
            _audit(ctx, username, "job.report.done", model_version=model, summary=f"job {job_id}")
        except Exception as exc:  # noqa: BLE001 - the job fails, the service does not
            _log.warning("report job %s failed: %s", job_id, exc)
            try:
                _update(ctx, job_id, status="failed", progress=1.0, error=f"{type(exc).__name__}: {exc}"[:2000])
                _audit(ctx, username, "job.report.failed", model_version=model, summary=f"job {job_id}")
            except Exception:  # noqa: BLE001 - nothing more to do than log it
                _log.exception("could not record the failure of job %s", job_id)

    try:
        _POOL.submit(work)
    except RuntimeError as exc:  # the pool is shut down (the process is stopping)
        _update(ctx, job_id, status="failed", progress=1.0, error="the service is stopping: submit it again")
        raise HTTPException(503, "the service is stopping: submit the job again") from exc
    return JobOut(job_id=str(job_id), kind="report", status="queued", progress=0.0,
                  links={"self": f"/api/jobs/{job_id}", "report": f"/api/jobs/{job_id}/report.html"})


def _build(ctx: Any, model: str, name: str, split: str | None, n_boot: int, job_id: uuid.UUID) -> bytes:
    """Run the report in a temporary folder; return the encrypted job result."""
    from meddx.report.build import build_report

    if Path(name).exists():  # the report reader would open this local path instead of the catalogue set
        raise FileExistsError(f"a file or folder named {name!r} sits in the service's working directory and "
                              f"would shadow the catalogue set; start the service from another directory")
    with tempfile.TemporaryDirectory() as tmp:
        pipe = ctx.pipeline(model)
        html = build_report(pipe.folder, name, split=split, out=Path(tmp), n_boot=n_boot, explain=2)
        blob = ctx.blobs.put(html.read_bytes(), kind="report")
    return ctx.blobs.encryptor.encrypt(json.dumps({"html_blob": blob}).encode(), _aad(job_id))


def _load(ctx: Any, job_id: str) -> Any:
    from meddx.storage.models import Job

    with ctx.sessions() as session:
        job = get_row_or_404(session, Job, job_id, "job")
        session.expunge(job)
        return job


def job_status(ctx: Any, job_id: str) -> JobOut:
    job = _load(ctx, job_id)
    links = {"self": f"/api/jobs/{job.id}"}
    if job.status == "done":
        links["report"] = f"/api/jobs/{job.id}/report.html"
    return JobOut(job_id=str(job.id), kind=job.kind, status=job.status, progress=job.progress, error=job.error,
                  links=links)


def job_report(ctx: Any, job_id: str, username: str) -> bytes:
    """The report's HTML (409 until the job is done); audited as ``job.report.view``."""
    job = _load(ctx, job_id)
    if job.status != "done" or not job.result:
        raise HTTPException(409, f"the job is {job.status}")
    payload = json.loads(ctx.blobs.encryptor.decrypt(job.result, _aad(job.id)))
    _audit(ctx, username, "job.report.view", summary=f"job {job.id}")
    return ctx.blobs.get(payload["html_blob"])
