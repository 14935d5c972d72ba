"""The REST API (``/api``): tokens, models, studies and results, patients, jobs, administration.

Every route except ``/api/health`` and ``/api/auth/token`` needs a valid token
(``Authorization: Bearer``, or the web page's session cookie) and a role:

| routes | roles |
|---|---|
| studies, results, patients (patient data) | clinician, admin |
| break-glass (``POST /api/break-glass``) | clinician |
| models and cards | every role |
| jobs (validation reports) | engineer, admin |
| users, care teams, break-glass log, audit log | admin |

Patient data is scoped per clinician (:mod:`meddx.service.access`): own studies,
care-team shares an admin configures, and audited, time-limited break-glass.
Every access to patient data, every admin read and every refused request
(413, 415, 429, 500) is written to the hash-chained audit log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from meddx.service import sessions
from meddx.service.access import get_row_or_404
from meddx.service.jobs import JobOut, job_report, job_status, submit_report
from meddx.service.security import ROLES, TokenData, login_key, read_token

COOKIE = sessions.SESSION_COOKIE
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def ctx_of(request: Request) -> Any:
    return request.app.state.ctx


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> TokenData:
    """The caller, from the bearer token or the session cookie, with a live login session; 401 otherwise
    (a cookie-only state-changing call also needs the CSRF header: :func:`meddx.service.sessions.authenticate`)."""
    cookie = None if token else request.cookies.get(COOKIE)
    return sessions.authenticate(ctx_of(request), request, token or cookie, from_cookie=cookie is not None,
                                 one_time_ok=request.url.path in PASSWORD_PENDING_PATHS)


PASSWORD_PENDING_PATHS = frozenset({"/api/me", "/api/me/password", "/api/auth/logout", "/password", "/logout"})
"""What an account still on its one-time password may reach (the web page sends it to /password)."""


def require(*roles: str) -> Callable[..., TokenData]:
    """A dependency that admits the given roles only (403 for the others)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def dependency(user: Annotated[TokenData, Depends(current_user)]) -> TokenData:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the role {' or '.join(roles)}")
        return user

    return dependency


Clinical = Annotated[TokenData, Depends(require("clinician", "admin"))]
Anyone = Annotated[TokenData, Depends(current_user)]
Engineering = Annotated[TokenData, Depends(require("engineer", "admin"))]
Admin = Annotated[TokenData, Depends(require("admin"))]


def audit(ctx: Any, user: str, action: str, **fields: Any) -> None:
    from meddx.storage.audit import append

    with ctx.sessions() as session:
        append(session, user=user, action=action, **fields)
        session.commit()


AUDITED_REFUSALS = frozenset({413, 415, 429})
"""Refusals written to the audit log (with every 500): what a probe or a misbehaving client leaves behind."""


def refused(ctx: Any, user: str, code: int, detail: str, action: str = "request.refused",
            headers: dict[str, str] | None = None) -> HTTPException:
    """Audit a refusal (``action``, the status, no request content) and return its HTTPException to raise."""
    audit(ctx, user[:64] or "anonymous", action, summary=f"HTTP {code}")
    exc = HTTPException(code, detail, headers=headers)
    exc.audited = True  # type: ignore[attr-defined]  # AuditedRoute must not write it twice
    return exc


def _caller(request: Request) -> str:
    """The username in the request's token or session cookie, else ``anonymous`` (never the typed name)."""
    auth = request.headers.get("authorization", "")
    raw = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    data = read_token(ctx_of(request).token_secret, raw) if raw else None
    return data.username if data is not None else "anonymous"


def _audit_failure(request: Request, route: str, code: int) -> None:
    import logging

    try:
        audit(ctx_of(request), _caller(request), "request.refused" if code < 500 else "request.failed",
              summary=f"{request.method} {route} -> HTTP {code}"[:255])
    except Exception:  # noqa: BLE001 - a failing audit must not hide the original answer
        logging.getLogger(__name__).exception("could not audit HTTP %s on %s", code, route)


class AuditedRoute(APIRoute):
    """An API route whose refusals (:data:`AUDITED_REFUSALS`) and unhandled errors (500) are audited.

    The entry names the route's path template (never the URL, which may carry a
    pseudonym), the method and the status, and the caller when the token is valid.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = self.path

        async def audited(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code in AUDITED_REFUSALS and not getattr(exc, "audited", False):
                    await asyncio.to_thread(_audit_failure, request, route, exc.status_code)
                raise
            except Exception:
                await asyncio.to_thread(_audit_failure, request, route, 500)
                raise

        return audited


router = APIRouter(prefix="/api", route_class=AuditedRoute)


# --- health and tokens -----------------------------------------------------------------------------


@router.get("/health", tags=["service"])
def health() -> dict[str, str]:
    """Liveness (no authentication)."""
    return {"status": "ok"}


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    must_change_password: bool = False


def login(ctx: Any, username: str, password: str, client: str) -> tuple[str, Any]:
    """Check credentials with the rate limit; return (token, user) or raise 401/429."""
    from meddx.storage.users import authenticate

    key = login_key(client, username)
    if not ctx.login_limiter.hit(key):
        raise refused(ctx, "anonymous", status.HTTP_429_TOO_MANY_REQUESTS, "too many login attempts: wait a minute",
                      "auth.rate_limited", headers={"Retry-After": str(ctx.login_limiter.retry_after(key))})
    with ctx.sessions() as session:
        user = authenticate(session, username, password)
        session.commit()
        if user is None:  # never the name as typed: a password typed into the name field would be kept
            audit(ctx, sessions.failed_login_name(ctx, session, username), "auth.login_failed")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password",
                                headers={"WWW-Authenticate": "Bearer"})
        token = sessions.start(ctx, session, user)
        audit(ctx, user.username, "auth.login")
        return token, user


@router.post("/auth/token", response_model=Token, tags=["auth"])
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    """OAuth2 password flow: a short-lived bearer token."""
    ctx = ctx_of(request)
    value, user = login(ctx, form.username, form.password, request.client.host if request.client else "-")
    return Token(access_token=value, expires_in=ctx.settings.token_minutes * 60, role=user.role,
                 must_change_password=bool(user.must_change_password))


@router.post("/auth/logout", status_code=204, tags=["auth"])
def logout(request: Request, user: Anyone) -> Response:
    """End the caller's login session: this token (bearer or cookie) stops working at once."""
    ctx = ctx_of(request)
    sessions.end(ctx, user.session_id)
    audit(ctx, user.username, "auth.logout")
    return Response(status_code=204)


class Me(BaseModel):
    username: str
    role: str


@router.get("/me", response_model=Me, tags=["auth"])
def me(user: Anyone) -> Me:
    return Me(username=user.username, role=user.role)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=12, max_length=256)


@router.post("/me/password", status_code=204, tags=["auth"])
def change_password(request: Request, body: PasswordChange, user: Anyone) -> Response:
    """Replace the caller's password (the one-time password of a new account, say)."""
    from meddx.storage.users import authenticate, set_password

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        account = authenticate(session, user.username, body.current_password)
        if account is None:
            session.commit()
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
        try:
            set_password(session, account, body.new_password, keep_session=user.session_id)
        except Exception as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        session.commit()
    audit(ctx, user.username, "user.password")
    return Response(status_code=204)


# --- models --------------------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str | None = None
    modality: str = "image"
    task: str = Field("classification",
                      description="classification | segmentation | detection | restoration | translation")
    classes: list[str]
    intended_use: str | None = None
    calibration: str | None = None
    uncertainty: str | None = None


@router.get("/models", response_model=list[ModelInfo], tags=["models"])
def models(request: Request, user: Anyone) -> list[ModelInfo]:
    """The models this service offers, with what their packages say (and their task)."""
    from meddx.modalities import task_of_package

    ctx = ctx_of(request)
    out = []
    for ref in ctx.model_refs():
        pipe = ctx.pipeline(ref)
        p = pipe.package
        out.append(ModelInfo(name=p["name"], version=str(p["version"]), architecture=p.get("architecture"),
                             modality=p.get("modality", "image"), task=task_of_package(p),
                             classes=pipe.class_names,
                             intended_use=p.get("intended_use"),
                             calibration=((p.get("trust") or {}).get("calibration") or {}).get("name"),
                             uncertainty=pipe.default_uncertainty()))
    return out


@router.get("/models/{name}/card", response_class=PlainTextResponse, tags=["models"])
def model_card(request: Request, name: str, user: Anyone) -> str:
    """The model card (Markdown)."""
    pipe = _pipeline_or_404(ctx_of(request), name)
    path = pipe.folder / "MODEL_CARD.md"
    return path.read_text(encoding="utf-8") if path.is_file() else f"# {name}\n\nNo model card in the package.\n"


def _pipeline_or_404(ctx: Any, name: str | None) -> Any:
    from meddx.exceptions import MeddxError

    try:
        return ctx.pipeline(name)
    except MeddxError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


# --- studies and results ---------------------------------------------------------------------------------


class StudyOut(BaseModel):
    study_id: str
    result_id: str
    patient: str
    created_at: str
    prediction: dict[str, Any]
    links: dict[str, str]


UNCERTAINTY = ("auto", "none", "mc-dropout", "bayes", "tta", "ensemble")


async def run_study(ctx: Any, user: str, file: UploadFile, model: str | None, patient_id: str | None,
                    uncertainty: str, explain: bool, slice_index: int | None,
                    options: dict[str, Any] | None = None) -> StudyOut:
    """Check, de-identify, store, screen, predict, explain, audit (see :mod:`meddx.service.workflow`).

    An upload the service will not keep (too large, not an image, not de-identifiable)
    is refused with an HTTP error; a kept file the model was not made for gets a
    stored ``rejected`` result with the reasons, and the model never runs on it.
    A segmentation or detection model (:mod:`meddx.service.tasks`) stores its overlay
    (mask colours, box outlines) as the result's overlay and its other files (label
    mask, DICOM SEG / SR of a DICOM upload) beside the prediction; a restoration or
    translation model stores its synthetic image (``synthetic.png``, banner burnt in) and,
    for a DICOM upload, the derived DICOM (``synthetic.dcm``). ``options``: the task's own
    upload options (``dose`` for restoration, ``direction`` for translation); one given to a
    model that does not take it is refused (422) before anything is stored.
    """
    from meddx.exceptions import MeddxError
    from meddx.service import drift, tasks, workflow
    from meddx.service.uploads import UploadRejected, receive
    from meddx.storage.db import begin_write
    from meddx.storage.models import Patient, Result, Study

    if uncertainty not in UNCERTAINTY:
        raise HTTPException(422, f"uncertainty must be one of {', '.join(UNCERTAINTY)}")
    pipeline = _pipeline_or_404(ctx, model)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if options:
        if not tasks.is_task_model(pipeline):
            raise HTTPException(422, f"{sorted(options)[0]} does not apply to classification models")
        try:
            pipeline.check_options(options)
        except MeddxError as exc:
            raise HTTPException(422, str(exc)) from exc
    settings = ctx.settings
    try:
        upload = await asyncio.to_thread(receive, file.file, ctx.upload_dir,
                                         max_bytes=settings.max_upload_mb << 20, max_pixels=settings.max_pixels)
    except UploadRejected as exc:
        raise refused(ctx, user, exc.status, exc.reason, "study.refused") from exc
    try:
        data, patient, suffix = await asyncio.to_thread(workflow.deidentify_upload, upload, ctx.pseudonym_key,
                                                        patient_id)
        screened = await asyncio.to_thread(workflow.screen_upload, pipeline, data, suffix, slice_index)
    except UploadRejected as exc:
        raise refused(ctx, user, exc.status, exc.reason, "study.refused") from exc
    finally:
        upload.discard()  # the original bytes (with identifiers) are never kept
    outputs = None
    if screened.image is None:
        prediction = pipeline.rejection("upload", screened.reasons).to_json_dict()
    elif tasks.is_task_model(pipeline):
        try:
            outputs = await asyncio.to_thread(pipeline.run, screened.image, uncertainty=uncertainty,
                                              dicom=data if upload.kind == "dicom" else None, options=options)
        except MeddxError as exc:
            raise HTTPException(422, str(exc)) from exc
        prediction = outputs.prediction
    else:
        ref = f"{pipeline.package['name']}:{pipeline.package['version']}:{uncertainty}"
        batcher = ctx.batcher(ref, workflow.predict_batch(pipeline, uncertainty))
        try:
            prediction = await batcher.submit(workflow.model_input(pipeline, screened.image))
        except MeddxError as exc:
            raise HTTPException(422, str(exc)) from exc
        prediction["input"] = "upload"
    overlay = None
    files: dict[str, str] = {}  # tasks.FILES key -> blob id
    if outputs is not None:
        overlay = ctx.blobs.put(outputs.overlay, kind="overlay") if outputs.overlay else None
        files = {key: ctx.blobs.put(content, kind=key) for key, content in outputs.files.items()}
    elif explain and screened.image is not None and pipeline.package.get("modality", "image") == "image":
        record, overlay_png = await asyncio.to_thread(workflow.explanation, pipeline, screened.image,
                                                      prediction["prediction"])
        prediction["explanation"] = record
        overlay = ctx.blobs.put(overlay_png, kind="overlay")
    preview = ctx.blobs.put(workflow.png_bytes(screened.preview), kind="preview") \
        if screened.preview is not None else None
    input_blob = ctx.blobs.put(data, kind="study")
    sha = workflow.digest(data)
    with ctx.sessions() as session:
        from meddx.storage.models import User

        # read-then-write: take SQLite's write lock before reading, or a commit from another thread in between
        # (an audit entry from a result view, say) fails this transaction with "database is locked" (WAL)
        begin_write(session, Study.__tablename__)
        uploader = session.query(User).filter_by(username=user).one()
        person = session.query(Patient).filter_by(pseudonym=patient).one_or_none() or Patient(pseudonym=patient)
        study = Study(patient=person, uploader=uploader, modality=upload.kind, content_type=_CONTENT[upload.kind],
                      sha256=sha, size=len(data), blob_id=input_blob, display_name=f"{upload.kind} study")
        session.add(study)
        session.flush()
        result = Result(study_id=study.id, model_name=pipeline.package["name"],
                        model_version=str(pipeline.package["version"]), prediction=b"",
                        decision=prediction["decision"]["decision"], overlay_blob_id=overlay)
        session.add(result)
        session.flush()
        if outputs is not None:
            tasks.link_outputs(prediction, str(result.id), files, overlay is not None)
        stored = {"prediction": prediction, "preview_blob_id": preview, "files": files}
        result.prediction = ctx.blobs.encryptor.encrypt(json.dumps(stored).encode(), _aad(result.id))
        session.commit()
        study_id, result_id, created = str(study.id), str(result.id), study.created_at.isoformat()
    audit(ctx, user, "study.upload", patient_pseudonym=patient,
          model_version=f"{pipeline.package['name']}:{pipeline.package['version']}", input_sha256=sha,
          output=workflow.output_summary(prediction),
          summary=f"decision={prediction['decision']['decision']}")
    await asyncio.to_thread(drift.observe, ctx, pipeline, prediction, user)
    return StudyOut(study_id=study_id, result_id=result_id, patient=patient, created_at=created,
                    prediction=prediction, links=_links(result_id, overlay is not None, preview is not None, files))


_CONTENT = {"dicom": "application/dicom", "png": "image/png", "jpeg": "image/jpeg", "nifti": "application/x-nifti"}


def _aad(result_id: Any) -> bytes:
    return f"result:{result_id}".encode()


def _links(result_id: str, overlay: bool, preview: bool = True, files: dict[str, Any] | None = None
           ) -> dict[str, str]:
    from meddx.service.tasks import FILES

    links = {"self": f"/api/results/{result_id}", "fhir": f"/api/results/{result_id}/fhir"}
    if preview:
        links["preview"] = f"/api/results/{result_id}/image.png"
    if overlay:
        links["overlay"] = f"/api/results/{result_id}/overlay.png"
    for key in files or {}:
        links[key] = f"/api/results/{result_id}/{FILES[key][0]}"
    return links


DOSE_HELP = ("restoration models: the fraction of the full dose the image was acquired at (0-1]; without it the "
             "model assumes one and says so in a warning")
DIRECTION_HELP = "translation models: a2b (source to target, the default) or b2a (CycleGAN models only)"


@router.post("/studies", response_model=StudyOut, status_code=201, tags=["studies"])
async def upload_study(
    request: Request,
    user: Clinical,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG or NIfTI")],
    model: Annotated[str | None, Form(max_length=128)] = None,
    patient_id: Annotated[str | None, Form(max_length=128, description="for files without one (PNG/JPEG)")] = None,
    uncertainty: Annotated[str, Form(max_length=16)] = "auto",
    explain: Annotated[bool, Form()] = True,
    slice_index: Annotated[int | None, Form(ge=0, le=100_000)] = None,
    dose: Annotated[float | None, Form(gt=0, le=1, description=DOSE_HELP)] = None,
    direction: Annotated[str | None, Form(pattern="^(a2b|b2a)$", description=DIRECTION_HELP)] = None,
    dose_query: Annotated[float | None, Query(alias="dose", gt=0, le=1, description=DOSE_HELP)] = None,
    direction_query: Annotated[str | None, Query(alias="direction", pattern="^(a2b|b2a)$",
                                                 description=DIRECTION_HELP)] = None,
) -> StudyOut:
    """Upload a study and get the full prediction (calibrated, uncertain, explained, decided).

    A restoration or translation model returns a ``synthetic`` part; its image (banner burnt in) is at
    ``links.synthetic`` and, for a DICOM upload, the derived DICOM at ``links.synthetic_dicom``.
    """
    options = {"dose": dose if dose is not None else dose_query,
               "direction": direction if direction is not None else direction_query}
    return await run_study(ctx_of(request), user.username, file, model, patient_id, uncertainty, explain, slice_index,
                           options)


MAX_BATCH_FILES = 32


class BatchItem(BaseModel):
    index: int = Field(description="the file's position in the request (0-based); file names are never echoed")
    status: int = Field(description="201 when a result was stored (rejected inputs included), else the HTTP "
                                    "status the file alone would have got")
    study: StudyOut | None = None
    error: str | None = None


class BatchOut(BaseModel):
    results: list[BatchItem]
    stored: int = Field(description="files with a stored result")
    rejected: int = Field(description="stored results the model refused to read (decision rejected)")
    refused: int = Field(description="files refused before anything was stored")


async def run_batch(ctx: Any, user: str, files: list[UploadFile], model: str | None, uncertainty: str,
                    explain: bool, patient_id: str | None = None, options: dict[str, Any] | None = None) -> BatchOut:
    """One :func:`run_study` per file, in order; a bad file gets its own error and never stops the others."""
    import logging

    from meddx.exceptions import MeddxError

    if not files:
        raise HTTPException(422, "send at least one file (form field 'files')")
    if len(files) > MAX_BATCH_FILES:
        raise HTTPException(413, f"{len(files)} files in one batch; send at most {MAX_BATCH_FILES}")
    _pipeline_or_404(ctx, model)  # an unknown model fails the request, not each file
    items = []
    for index, file in enumerate(files):
        try:
            study = await run_study(ctx, user, file, model, patient_id, uncertainty, explain, None, options)
            items.append(BatchItem(index=index, status=201, study=study))
        except HTTPException as exc:
            items.append(BatchItem(index=index, status=exc.status_code, error=str(exc.detail)))
        except MeddxError as exc:
            items.append(BatchItem(index=index, status=422, error=str(exc)))
        except Exception:  # noqa: BLE001 - one file's failure must not cost the others their results
            logging.getLogger(__name__).exception("batch file %d failed", index)
            items.append(BatchItem(index=index, status=500, error="internal error while analysing this file"))
    stored = [i for i in items if i.study is not None]
    return BatchOut(results=items, stored=len(stored),
                    rejected=sum(i.study.prediction["decision"]["decision"] == "rejected" for i in stored
                                 if i.study is not None),
                    refused=len(items) - len(stored))


@router.post("/studies/batch", response_model=BatchOut, tags=["studies"])
async def upload_batch(
    request: Request,
    user: Clinical,
    files: Annotated[list[UploadFile], File(description="DICOM, PNG, JPEG or NIfTI files, one study each")],
    model: Annotated[str | None, Form(max_length=128)] = None,
    patient_id: Annotated[str | None, Form(max_length=128, description="one patient for every file without an "
                                                                        "identifier of its own (PNG/JPEG)")] = None,
    uncertainty: Annotated[str, Form(max_length=16)] = "auto",
    explain: Annotated[bool, Form()] = False,
    dose: Annotated[float | None, Form(gt=0, le=1, description=DOSE_HELP)] = None,
    direction: Annotated[str | None, Form(pattern="^(a2b|b2a)$", description=DIRECTION_HELP)] = None,
) -> BatchOut:
    """Upload several studies at once: one result (or one error) per file, in order.

    A file the model was not made for gets a stored ``rejected`` result; a file the
    service will not keep (not an image, too large) gets its error; the others are
    analysed as if sent alone.
    """
    if uncertainty not in UNCERTAINTY:
        raise HTTPException(422, f"uncertainty must be one of {', '.join(UNCERTAINTY)}")
    return await run_batch(ctx_of(request), user.username, files, model, uncertainty, explain, patient_id,
                           {"dose": dose, "direction": direction})


def load_result(ctx: Any, result_id: str, user: str, action: str) -> tuple[Any, dict[str, Any], str]:
    """(Result row, stored payload, patient pseudonym); 404 when unknown or not the caller's to read
    (:func:`meddx.service.access.study_access`). Audited; a read through break-glass is audited as a use too."""
    from meddx.service import access
    from meddx.storage.models import Result

    hidden = HTTPException(404, access.NOT_VISIBLE.format(what="result"))  # unknown and not yours read alike
    with ctx.sessions() as session:
        try:
            result = get_row_or_404(session, Result, result_id, "result")
        except HTTPException:
            raise hidden from None
        allowed = access.study_access(session, access.account(session, user), result.study)
        if allowed is None:
            raise hidden
        payload = json.loads(ctx.blobs.encryptor.decrypt(result.prediction, _aad(result.id)))
        patient = result.study.patient.pseudonym
        session.expunge(result)
    model_version = f"{result.model_name}:{result.model_version}"
    if allowed.grant_id is not None:
        audit(ctx, user, "access.break_glass_use", patient_pseudonym=patient, model_version=model_version,
              summary=access.use_summary(allowed.grant_id, action))
    audit(ctx, user, action, patient_pseudonym=patient, model_version=model_version)
    return result, payload, patient


class ResultOut(BaseModel):
    result_id: str
    study_id: str
    patient: str
    created_at: str
    prediction: dict[str, Any]
    links: dict[str, str]


@router.get("/results/{result_id}", response_model=ResultOut, tags=["studies"])
def get_result(request: Request, result_id: str, user: Clinical) -> ResultOut:
    result, payload, patient = load_result(ctx_of(request), result_id, user.username, "result.view")
    return ResultOut(result_id=str(result.id), study_id=str(result.study_id), patient=patient,
                     created_at=result.created_at.isoformat(), prediction=payload["prediction"],
                     links=_links(str(result.id), result.overlay_blob_id is not None,
                                  payload.get("preview_blob_id") is not None, payload.get("files")))


@router.get("/results/{result_id}/overlay.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def get_overlay(request: Request, result_id: str, user: Clinical) -> Response:
    """The overlay (PNG): a classifier's Grad-CAM map over the image, or a segmentation/detection model's
    transparent layer of mask colours and box outlines on the input's grid."""
    ctx = ctx_of(request)
    result, _, _ = load_result(ctx, result_id, user.username, "result.overlay")
    if not result.overlay_blob_id:
        raise HTTPException(404, "this result has no explanation")
    return Response(ctx.blobs.get(result.overlay_blob_id), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.get("/results/{result_id}/image.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def get_preview(request: Request, result_id: str, user: Clinical) -> Response:
    """The (de-identified, windowed) input image the model saw (PNG)."""
    ctx = ctx_of(request)
    _, payload, _ = load_result(ctx, result_id, user.username, "result.image")
    if not payload.get("preview_blob_id"):
        raise HTTPException(404, "this result has no image: the file could not be drawn")
    return Response(ctx.blobs.get(payload["preview_blob_id"]), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


def _result_file(request: Request, result_id: str, user: TokenData, key: str) -> Response:
    """One of a task result's stored files (:data:`meddx.service.tasks.FILES`); 404 when it has none."""
    from meddx.service.tasks import FILES

    ctx = ctx_of(request)
    _, payload, _ = load_result(ctx, result_id, user.username, f"result.{key}")
    blob = (payload.get("files") or {}).get(key)
    if not blob:
        raise HTTPException(404, f"this result has no {FILES[key][0]}")
    name, media = FILES[key]
    headers = {"Cache-Control": "no-store"}
    if media != "image/png":
        headers["Content-Disposition"] = f'attachment; filename="result-{result_id}-{name}"'
    return Response(ctx.blobs.get(blob), media_type=media, headers=headers)


@router.get("/results/{result_id}/mask.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def get_mask(request: Request, result_id: str, user: Clinical) -> Response:
    """A segmentation result's label mask (PNG on the input's grid: 0 background, k the mask's k-th class)."""
    return _result_file(request, result_id, user, "mask")


@router.get("/results/{result_id}/seg.dcm", response_class=Response, tags=["studies"],
            responses={200: {"content": {"application/dicom": {}}}})
def get_seg(request: Request, result_id: str, user: Clinical) -> Response:
    """The DICOM Segmentation of a segmentation result on a DICOM upload."""
    return _result_file(request, result_id, user, "seg")


@router.get("/results/{result_id}/sr.dcm", response_class=Response, tags=["studies"],
            responses={200: {"content": {"application/dicom": {}}}})
def get_sr(request: Request, result_id: str, user: Clinical) -> Response:
    """The DICOM Structured Report (TID 1500) of a detection result on a DICOM upload."""
    return _result_file(request, result_id, user, "sr")


@router.get("/results/{result_id}/synthetic.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def get_synthetic(request: Request, result_id: str, user: Clinical) -> Response:
    """A restoration or translation result's synthetic image: PNG with the red ``SYNTHETIC`` banner burnt in."""
    return _result_file(request, result_id, user, "synthetic")


@router.get("/results/{result_id}/synthetic.dcm", response_class=Response, tags=["studies"],
            responses={200: {"content": {"application/dicom": {}}}})
def get_synthetic_dicom(request: Request, result_id: str, user: Clinical) -> Response:
    """The synthetic image of a DICOM upload as a new DICOM instance (ImageType DERIVED, new UIDs, the source
    referenced)."""
    return _result_file(request, result_id, user, "synthetic_dicom")


def _study_file(request: Request, study_id: str, user: TokenData, key: str) -> Response:
    """:func:`_result_file` of a study's latest result (same access checks and audit)."""
    from meddx.service.tasks import FILES

    ctx = ctx_of(request)
    result, payload, _ = load_study_result(ctx, study_id, user.username, f"result.{key}")
    blob = (payload.get("files") or {}).get(key)
    if not blob:
        raise HTTPException(404, f"this study's result has no {FILES[key][0]}")
    name, media = FILES[key]
    headers = {"Cache-Control": "no-store"}
    if media != "image/png":
        headers["Content-Disposition"] = f'attachment; filename="result-{result.id}-{name}"'
    return Response(ctx.blobs.get(blob), media_type=media, headers=headers)


@router.get("/studies/{study_id}/synthetic.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def get_study_synthetic(request: Request, study_id: str, user: Clinical) -> Response:
    """The synthetic image (banner burnt in) of the study's latest result."""
    return _study_file(request, study_id, user, "synthetic")


@router.get("/studies/{study_id}/synthetic.dcm", response_class=Response, tags=["studies"],
            responses={200: {"content": {"application/dicom": {}}}})
def get_study_synthetic_dicom(request: Request, study_id: str, user: Clinical) -> Response:
    """The derived DICOM (ImageType DERIVED) of the study's latest result, for a DICOM upload."""
    return _study_file(request, study_id, user, "synthetic_dicom")


@router.get("/results/{result_id}/fhir", tags=["studies"])
def get_fhir(request: Request, result_id: str, user: Clinical) -> dict[str, Any]:
    """The result as a FHIR R4 Bundle: one DiagnosticReport and its Observations (validated)."""
    from meddx.service.fhir import diagnostic_report

    result, payload, patient = load_result(ctx_of(request), result_id, user.username, "result.fhir")
    return diagnostic_report(payload["prediction"], patient_pseudonym=patient, study_id=str(result.study_id),
                             issued=result.created_at.isoformat())


def load_study_result(ctx: Any, study_id: str, user: str, action: str) -> tuple[Any, dict[str, Any], str]:
    """:func:`load_result` for a study's latest result (same access checks, same audit); 404 for a study that
    is unknown, not the caller's to read, or without a result."""
    from meddx.service import access
    from meddx.storage.models import Result, Study

    hidden = HTTPException(404, access.NOT_VISIBLE.format(what="study"))
    with ctx.sessions() as session:
        try:
            study = get_row_or_404(session, Study, study_id, "study")
        except HTTPException:
            raise hidden from None
        latest = (session.query(Result.id).filter(Result.study_id == study.id)
                  .order_by(Result.created_at.desc()).first())
    if latest is None:
        raise hidden
    try:
        return load_result(ctx, str(latest[0]), user, action)
    except HTTPException as exc:
        if exc.status_code == 404:  # said of the study, not of its result
            raise hidden from None
        raise


class SimilarCase(BaseModel):
    rank: int
    case_id: str = Field(description="the case's id in the index (never a file name or a patient identifier)")
    label: str | None = Field(description="the confirmed diagnosis")
    similarity: float = Field(description="cosine of the model's pre-logit features, 1 = identical")
    thumbnail: str | None = Field(description="link to a small greyscale picture of the case, when the index has one")


class SimilarOut(BaseModel):
    study_id: str
    result_id: str
    model: str
    k: int
    filters: dict[str, str]
    hits: list[SimilarCase]


FilterValue = Annotated[str | None, Query(min_length=1, max_length=64)]


def similar_for(ctx: Any, result: Any, payload: dict[str, Any], k: int, filters: dict[str, str]) -> list[SimilarCase]:
    """The confirmed cases most like a loaded result's image (404 without an index, 409 for a rejected input)."""
    from meddx.service import similar

    served = similar.served_index(ctx, result.model_name)
    if served is None:
        raise HTTPException(404, f"model {result.model_name} has no case index on this service")
    if result.decision == "rejected":
        raise HTTPException(409, "the model did not read this input (it was rejected): no similar cases")
    image = similar.query_image(ctx, payload)
    if image is None:
        raise HTTPException(409, "this result has no image to search with")
    return [SimilarCase(**hit) for hit in similar.search(served, image, k, filters)]


@router.get("/studies/{study_id}/similar", response_model=SimilarOut, tags=["studies"])
def similar_cases(request: Request, study_id: str, user: Clinical,
                  k: Annotated[int, Query(ge=1, le=50, description="how many cases")] = 10,
                  label: FilterValue = None, sex: FilterValue = None, age_band: FilterValue = None,
                  site: FilterValue = None, modality: FilterValue = None) -> SimilarOut:
    """Confirmed cases that look like this study's image (its latest result's model and case index), with
    their diagnoses and similarity, best first; optionally only cases with the given label, sex, age band
    (``40-49``), site or modality. Read like the study's result (same access, audited as ``result.similar``);
    no identifiers and no file names. 404 when the model has no case index; 409 for a rejected input."""
    ctx = ctx_of(request)
    result, payload, _ = load_study_result(ctx, study_id, user.username, "result.similar")
    filters = {name: value for name, value in (("label", label), ("sex", sex), ("age_band", age_band),
                                               ("site", site), ("modality", modality)) if value is not None}
    hits = similar_for(ctx, result, payload, k, filters)
    return SimilarOut(study_id=str(result.study_id), result_id=str(result.id), model=result.model_name, k=k,
                      filters=filters, hits=hits)


@router.get("/cases/{case_id}/thumbnail.png", response_class=Response, tags=["studies"],
            responses={200: {"content": {"image/png": {}}}})
def case_thumbnail(request: Request, case_id: str, user: Clinical,
                   model: Annotated[str | None, Query(max_length=128, description="the model whose case index "
                                                                                   "holds the case")] = None
                   ) -> Response:
    """A confirmed case's thumbnail (small greyscale PNG) from a served case index; 404 when there is none."""
    from meddx.service import similar

    ctx = ctx_of(request)
    indexes = getattr(ctx, "case_indexes", None) or {}
    candidates = [indexes[model]] if model in indexes else ([] if model else list(indexes.values()))
    path = next((p for p in (s.thumbnail(case_id) for s in candidates) if p is not None), None)
    if path is None:
        raise HTTPException(404, "no such case thumbnail")
    return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "no-store"})


class StudySummary(BaseModel):
    study_id: str
    result_id: str | None
    created_at: str
    modality: str
    model: str | None
    decision: str | None


def patient_studies(ctx: Any, pseudonym: str | None, user: str, limit: int = 50) -> list[StudySummary]:
    """The studies ``user`` may read (all, or one patient's), newest first; a patient with none of them is a 404.
    Studies listed through break-glass are audited as uses of their grant."""
    from meddx.service import access
    from meddx.storage.models import Patient, Study

    uses: dict[int, set[str]] = {}
    with ctx.sessions() as session:
        viewer = access.account(session, user)
        query = session.query(Study).filter(access.visible_studies(session, viewer)).order_by(Study.created_at.desc())
        if pseudonym is not None:
            person = session.query(Patient).filter_by(pseudonym=pseudonym).one_or_none()
            if person is None:
                raise HTTPException(404, access.NOT_VISIBLE.format(what="patient"))
            query = query.filter(Study.patient_id == person.id)
        studies = query.limit(limit).all()
        if pseudonym is not None and not studies:
            raise HTTPException(404, access.NOT_VISIBLE.format(what="patient"))
        for study_id, allowed in access.listed_access(session, viewer, studies).items():
            if allowed.grant_id is not None:
                uses.setdefault(allowed.grant_id, set()).add(
                    next(s.patient.pseudonym for s in studies if s.id == study_id))
        rows = []
        for study in studies:
            last = study.results[-1] if study.results else None
            rows.append(StudySummary(study_id=str(study.id), result_id=str(last.id) if last else None,
                                     created_at=study.created_at.isoformat(), modality=study.modality,
                                     model=f"{last.model_name}:{last.model_version}" if last else None,
                                     decision=last.decision if last else None))
    for grant_id, patients in sorted(uses.items()):
        for patient in sorted(patients):
            audit(ctx, user, "access.break_glass_use", patient_pseudonym=patient,
                  summary=access.use_summary(grant_id, "study.list"))
    audit(ctx, user, "study.list", patient_pseudonym=pseudonym)
    return rows


@router.get("/patients/{pseudonym}/studies", response_model=list[StudySummary], tags=["studies"])
def list_patient_studies(request: Request, pseudonym: str, user: Clinical) -> list[StudySummary]:
    """A patient's studies and their latest results, newest first."""
    if not pseudonym.isprintable():  # NUL or control characters: never a pseudonym (and PostgreSQL rejects NUL)
        raise HTTPException(404, "no such patient")
    return patient_studies(ctx_of(request), pseudonym[:64], user.username)


@router.get("/studies", response_model=list[StudySummary], tags=["studies"])
def list_studies(request: Request, user: Clinical, limit: Annotated[int, Query(ge=1, le=500)] = 50
                 ) -> list[StudySummary]:
    """Recent studies, newest first."""
    return patient_studies(ctx_of(request), None, user.username, limit)


# --- jobs ---------------------------------------------------------------------------------------------------


class ReportJob(BaseModel):
    model: str = Field(max_length=128)
    data: str = Field(max_length=256, description="a catalogue data set with labels")
    split: str | None = Field(None, max_length=32)
    n_boot: int = Field(200, ge=10, le=2000)


@router.post("/jobs/report", response_model=JobOut, status_code=202, tags=["jobs"])
def start_report(request: Request, body: ReportJob, user: Engineering) -> JobOut:
    """Build a validation report of a catalogue data set in the background; poll the job for its progress.

    ``data`` is a catalogue name only (``meddx data list``); a path, or a folder
    on the server, is refused with 422. Jobs run one at a time; audited.
    """
    ctx = ctx_of(request)
    _pipeline_or_404(ctx, body.model)
    return submit_report(ctx, user.username, body.model, body.data, body.split, body.n_boot)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(request: Request, job_id: str, user: Engineering) -> JobOut:
    return job_status(ctx_of(request), job_id)


@router.get("/jobs/{job_id}/report.html", response_class=Response, tags=["jobs"],
            responses={200: {"content": {"text/html": {}}}})
def get_job_report(request: Request, job_id: str, user: Engineering) -> Response:
    return Response(job_report(ctx_of(request), job_id, user.username), media_type="text/html")


# --- administration ---------------------------------------------------------------------------------------


class UserOut(BaseModel):
    username: str
    role: str
    active: bool
    created_at: str


class NewUser(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    role: str = Field(pattern="^(clinician|engineer|admin)$")


class NewUserOut(UserOut):
    one_time_password: str


@router.get("/admin/users", response_model=list[UserOut], tags=["admin"])
def list_users(request: Request, user: Admin) -> list[UserOut]:
    from meddx.storage.models import User

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        out = [UserOut(username=u.username, role=u.role, active=u.active, created_at=u.created_at.isoformat())
               for u in session.query(User).order_by(User.username)]
    audit(ctx, user.username, "admin.users.read", summary=f"{len(out)} accounts")
    return out


@router.post("/admin/users", response_model=NewUserOut, status_code=201, tags=["admin"])
def create_account(request: Request, body: NewUser, user: Admin) -> NewUserOut:
    """Create an account; its one-time password is shown once, here."""
    from meddx.storage.users import create_user

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        from meddx.storage.models import User

        if session.query(User).filter_by(username=body.username).one_or_none() is not None:
            raise HTTPException(409, "that username exists")
        account, password = create_user(session, body.username, body.role)
        session.commit()
        out = NewUserOut(username=account.username, role=account.role, active=account.active,
                         created_at=account.created_at.isoformat(), one_time_password=password or "")
    audit(ctx, user.username, "user.create", summary=f"{body.username} as {body.role}")
    return out


class AuditOut(BaseModel):
    id: int
    ts: str
    user: str
    action: str
    patient_pseudonym: str | None
    model_version: str | None
    input_sha256: str | None
    hash: str


@router.get("/admin/audit", response_model=list[AuditOut], tags=["admin"])
def audit_log(request: Request, user: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    from meddx.storage.models import AuditEntry

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        rows = session.query(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).all()
        out = [AuditOut(id=r.id, ts=r.ts.isoformat(), user=r.user, action=r.action,
                        patient_pseudonym=r.patient_pseudonym, model_version=r.model_version,
                        input_sha256=r.input_sha256, hash=r.hash) for r in rows]
    audit(ctx, user.username, "admin.audit.read", summary=f"{len(out)} entries")
    return out


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    problems: list[str]
    checked_at: str
    anchored: int = Field(0, description="entries carrying a MAC under the audit key kept outside the database")
    notes: list[str] = []


@router.get("/admin/audit/verify", response_model=VerifyOut, tags=["admin"])
def audit_verify(request: Request, user: Admin) -> VerifyOut:
    from meddx.storage.audit import verify

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        result = verify(session)
    audit(ctx, user.username, "admin.audit.verify", summary=f"ok={result.ok} entries={result.entries}")
    return VerifyOut(ok=result.ok, entries=result.entries, problems=list(result.problems),
                     checked_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), anchored=result.anchored,
                     notes=list(result.notes))


# --- access: care teams and break-glass (see meddx.service.access) -------------------------------------------


class TeamOut(BaseModel):
    name: str
    members: list[str]


class NewTeam(BaseModel):
    name: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]+$")


def _config_error_to_http(exc: Exception, code: int = 422) -> HTTPException:
    return HTTPException(code, str(exc))


@router.get("/admin/teams", response_model=list[TeamOut], tags=["admin"])
def list_teams(request: Request, user: Admin) -> list[TeamOut]:
    """Care teams and their members: a clinician reads the studies of everyone in a team with them."""
    from meddx.service import access

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        out = [TeamOut(name=name, members=members) for name, members in access.list_teams(session)]
    audit(ctx, user.username, "admin.teams.read", summary=f"{len(out)} teams")
    return out


@router.post("/admin/teams", response_model=TeamOut, status_code=201, tags=["admin"])
def create_team(request: Request, body: NewTeam, user: Admin) -> TeamOut:
    """A new, empty care team (409 when the name is taken)."""
    from meddx.exceptions import MeddxError
    from meddx.service import access

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        try:
            access.create_team(session, body.name)
        except MeddxError as exc:
            raise _config_error_to_http(exc, 409 if "exists" in str(exc) else 422) from exc
        session.commit()
    audit(ctx, user.username, "team.create", summary=body.name)
    return TeamOut(name=body.name, members=[])


@router.put("/admin/teams/{team}/members/{username}", status_code=204, tags=["admin"])
def add_team_member(request: Request, team: str, username: str, user: Admin) -> Response:
    """Put an account in a care team (it then reads the team's studies, and they its)."""
    from meddx.service import access

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        try:
            added = access.add_member(session, team, username)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        session.commit()
    if added:
        audit(ctx, user.username, "team.add", summary=f"{username[:64]} to {team[:64]}"[:255])
    return Response(status_code=204)


@router.delete("/admin/teams/{team}/members/{username}", status_code=204, tags=["admin"])
def remove_team_member(request: Request, team: str, username: str, user: Admin) -> Response:
    """Take an account out of a care team (its access to the team's studies ends at once)."""
    from meddx.service import access

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        try:
            removed = access.remove_member(session, team, username)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        session.commit()
    if not removed:
        raise HTTPException(404, f"{username!r} is not in {team!r}")
    audit(ctx, user.username, "team.remove", summary=f"{username[:64]} from {team[:64]}"[:255])
    return Response(status_code=204)


class BreakGlassIn(BaseModel):
    reason: str = Field(min_length=20, max_length=1000, description="why the record is needed now; admins "
                                                                        "review every grant")
    patient: str | None = Field(None, max_length=64, description="one patient's pseudonym; omit for every patient")
    minutes: int = Field(60, ge=1, le=240, description="how long the grant lasts")


class BreakGlassOut(BaseModel):
    grant_id: int
    patient: str | None
    created_at: str
    expires_at: str


@router.post("/break-glass", response_model=BreakGlassOut, status_code=201, tags=["studies"])
def break_glass(request: Request, body: BreakGlassIn, user: Clinical) -> BreakGlassOut:
    """Emergency access to studies outside your care teams, for a while, with a reason (audited; every
    study read through it is audited as a use, and admins review grants and uses)."""
    from meddx.exceptions import MeddxError
    from meddx.service import access

    ctx = ctx_of(request)
    with ctx.sessions() as session:
        try:
            grant = access.open_break_glass(session, ctx.blobs.encryptor, access.account(session, user.username),
                                            body.reason, body.patient, body.minutes)
        except MeddxError as exc:
            raise _config_error_to_http(exc) from exc
        session.commit()
        out = BreakGlassOut(grant_id=grant.id, patient=grant.patient_pseudonym,
                            created_at=grant.created_at.isoformat(), expires_at=grant.expires_at.isoformat())
    audit(ctx, user.username, "access.break_glass", patient_pseudonym=out.patient,
          summary=f"grant {out.grant_id} for {body.minutes} min" + ("" if out.patient else " (every patient)"))
    return out


class BreakGlassUse(BaseModel):
    ts: str
    patient: str | None
    what: str


class BreakGlassGrantOut(BreakGlassOut):
    username: str
    reason: str
    active: bool
    uses: list[BreakGlassUse]


@router.get("/admin/break-glass", response_model=list[BreakGlassGrantOut], tags=["admin"])
def break_glass_log(request: Request, user: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                    ) -> list[BreakGlassGrantOut]:
    """Break-glass grants, newest first, with their reasons and every audited use."""
    from meddx.service import access
    from meddx.storage.models import AuditEntry, BreakGlassGrant, utcnow

    ctx = ctx_of(request)
    now = utcnow()
    out = []
    with ctx.sessions() as session:
        for grant in session.query(BreakGlassGrant).order_by(BreakGlassGrant.id.desc()).limit(limit):
            prefix = access.use_summary(grant.id, "")
            uses = (session.query(AuditEntry).filter(AuditEntry.action == "access.break_glass_use",
                                                     AuditEntry.summary.startswith(prefix, autoescape=True))
                    .order_by(AuditEntry.id).all())
            out.append(BreakGlassGrantOut(
                grant_id=grant.id, patient=grant.patient_pseudonym, created_at=grant.created_at.isoformat(),
                expires_at=grant.expires_at.isoformat(), username=grant.user.username,
                reason=access.grant_reason(ctx.blobs.encryptor, grant), active=grant.expires_at > now,
                uses=[BreakGlassUse(ts=u.ts.isoformat(), patient=u.patient_pseudonym,
                                    what=(u.summary or "")[len(prefix):]) for u in uses]))
    audit(ctx, user.username, "admin.break_glass.read", summary=f"{len(out)} grants")
    return out
