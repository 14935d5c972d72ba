"""The web page for clinicians: log in, upload, read the result card, browse past studies; admin views.

Server-rendered HTML (Jinja2, autoescaped), one stylesheet and one small script
(the overlay opacity slider) served by the app itself: nothing from a CDN. A
segmentation or detection result shows its mask colours and box outlines over the
image with the same slider, a legend (class colours, counts or shares, mean
uncertainty) and its files (label mask, DICOM SEG / SR). A restoration or
translation result shows its synthetic image beside the input under a red
"SYNTHETIC – not acquired" banner (the PNG has its own burnt in), the dose, the
hallucination checks in words and the derived DICOM. The
result card leads with the decision in plain words (:func:`headline`): a file the
model was not made for says "Not analysed" and why, an image outside the training
data says it was referred for that reason. The admin page shows each model's
drift monitor, with a banner while an alarm is open. The
session is the API's token in an HttpOnly, SameSite=Strict cookie (``Secure``
whenever the service is served beyond this machine, see
:func:`meddx.service.app.serve`); every form carries the session's CSRF token
and is refused from another site (:mod:`meddx.service.sessions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meddx.service import api, sessions

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent
STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


def _templates() -> Any:
    import jinja2

    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                  autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return _ENV


_ENV: Any = None


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page, its forms carrying the session's CSRF token (before login: a double-submit cookie's)."""
    ctx = api.ctx_of(request)
    csrf, pre_login = sessions.form_token(ctx, request)
    html = _templates().get_template(template).render(csrf=csrf, user=context.pop("user", None), **context)
    response = HTMLResponse(html, status_code=status_code)
    if pre_login:
        response.set_cookie(sessions.PRE_LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                            secure=ctx.settings.cookie_secure)
    return response


def session_user(request: Request) -> Any:
    """The logged-in user of the page, or None. An account still on its one-time password is sent to
    /password (a 303) from every page but that one: the password an admin saw must not stay valid."""
    raw = request.cookies.get(api.COOKIE)
    if not raw:
        return None
    try:
        return api.current_user(request, raw)
    except HTTPException as exc:
        if exc.status_code == 403:  # valid session, one-time password still set
            raise HTTPException(303, "change the one-time password first", headers={"Location": "/password"}) from None
        return None


def _must_change_password(request: Request, username: str) -> bool:
    from meddx.storage.models import User

    with api.ctx_of(request).sessions() as session:
        account = session.query(User).filter_by(username=username).one_or_none()
        return bool(account is not None and account.must_change_password)


def _start_page(role: str) -> str:
    """Where a role lands after logging in: clinicians and admins upload studies, engineers see the models."""
    return "/" if role in ("clinician", "admin") else "/models"


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


# Optional in the form so that a missing token is refused like a wrong one (403), not as a 422 validation error.
Csrf = Annotated[str | None, Form(max_length=64)]


def _check_csrf(request: Request, value: str | None) -> None:
    """403 unless the form came from this site with its page's CSRF token (:func:`sessions.check_form`)."""
    sessions.check_form(api.ctx_of(request), request, value)


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404, "not found")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                    headers={"Cache-Control": "max-age=3600"})


@router.get("/favicon.ico")
def favicon() -> Response:
    """No icon: an empty answer instead of a 404 (which browsers log as a console error on every page)."""
    return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html")


@router.post("/login")
def login_form(request: Request, username: Annotated[str, Form(max_length=64)],
               password: Annotated[str, Form(max_length=256)], csrf: Csrf = None) -> Response:
    _check_csrf(request, csrf)
    ctx = api.ctx_of(request)
    try:
        token, user = api.login(ctx, username, password, request.client.host if request.client else "-")
    except HTTPException as exc:
        return render(request, "login.html", status_code=exc.status_code, error=exc.detail)
    sessions.end(ctx, sessions.cookie_session_id(ctx, request))  # a new login replaces this browser's old one
    response = RedirectResponse("/password" if user.must_change_password else _start_page(user.role),
                                status_code=303)
    response.set_cookie(api.COOKIE, token, httponly=True, samesite="strict", secure=ctx.settings.cookie_secure,
                        max_age=ctx.settings.token_minutes * 60)
    # the pre-login CSRF token is spent: the pages now carry the new session's token
    response.delete_cookie(sessions.PRE_LOGIN_CSRF_COOKIE, httponly=True, samesite="strict",
                           secure=ctx.settings.cookie_secure)
    return response


@router.get("/password", response_class=HTMLResponse)
def password_page(request: Request) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    return render(request, "password.html", user=user, first=_must_change_password(request, user.username))


@router.post("/password", response_class=HTMLResponse)
def password_form(request: Request, current_password: Annotated[str, Form(max_length=256)],
                  new_password: Annotated[str, Form(max_length=256)],
                  confirm_password: Annotated[str, Form(max_length=256)], csrf: Csrf = None) -> Response:
    """Replace the password (first login: the one-time password); then on to the user's start page."""
    _check_csrf(request, csrf)
    user = session_user(request)
    if user is None:
        return _login_redirect()
    first = _must_change_password(request, user.username)

    def again(error: str, status_code: int) -> HTMLResponse:
        return render(request, "password.html", status_code=status_code, user=user, first=first, error=error)

    if new_password != confirm_password:
        return again("The two new passwords differ.", 422)
    if new_password == current_password:
        return again("Choose a password different from the current one.", 422)
    try:
        body = api.PasswordChange(current_password=current_password, new_password=new_password)
    except Exception:  # noqa: BLE001 - pydantic's message is about fields, ours is for people
        return again("The new password needs at least 12 characters.", 422)
    try:
        api.change_password(request, body, user)
    except HTTPException as exc:
        return again(str(exc.detail).capitalize() + ".", exc.status_code)
    return RedirectResponse(_start_page(user.role), status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: Csrf = None) -> Response:
    """End the session on the server (the cookie's token is refused from now on, as a bearer too)."""
    _check_csrf(request, csrf)
    ctx = api.ctx_of(request)
    user = session_user(request)
    sessions.end(ctx, sessions.cookie_session_id(ctx, request))
    if user is not None:
        api.audit(ctx, user.username, "auth.logout")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(api.COOKIE, httponly=True, samesite="strict", secure=ctx.settings.cookie_secure)
    return response


def _clinical(request: Request) -> Any:
    user = session_user(request)
    if user is None:
        return None
    if user.role not in ("clinician", "admin"):
        raise HTTPException(403, "this page is for clinicians")
    return user


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    if user.role not in ("clinician", "admin"):
        return RedirectResponse("/models", status_code=303)
    return render(request, "upload.html", user=user, models=api.models(request, user))


def _dose(text: str | None) -> float | None:
    """The dose form field: empty is none given; anything else a fraction in (0, 1] (HTTP 422 otherwise)."""
    if not (text or "").strip():
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        raise HTTPException(422, f"dose must be a number between 0 and 1, not {text!r}") from None
    if not 0 < value <= 1:
        raise HTTPException(422, f"dose must be a fraction of the full dose in (0, 1], not {value:g}")
    return value


@router.post("/upload")
async def upload(request: Request, file: Annotated[list[UploadFile], File()], csrf: Csrf = None,
                 model: Annotated[str | None, Form(max_length=128)] = None,
                 patient_id: Annotated[str | None, Form(max_length=128)] = None,
                 dose: Annotated[str | None, Form(max_length=32)] = None) -> Response:
    """One file: on to its result card. Several: a summary with one line per file (a bad file never
    stops the others; each gets its result or the reason it was refused). ``dose``: for restoration
    models (the fraction of the full dose; ignored for other models when left empty)."""
    user = _clinical(request)
    if user is None:
        return _login_redirect()
    _check_csrf(request, csrf)
    ctx = api.ctx_of(request)
    try:
        options = {"dose": _dose(dose)}
    except HTTPException as exc:
        return render(request, "upload.html", status_code=exc.status_code, user=user,
                      models=api.models(request, user), error=f"The file was not accepted: {exc.detail}")
    if len(file) > 1:
        try:
            batch = await api.run_batch(ctx, user.username, file, model or None, "auto", True, patient_id or None,
                                        options)
        except HTTPException as exc:
            return render(request, "upload.html", status_code=exc.status_code, user=user,
                          models=api.models(request, user), error=f"The files were not accepted: {exc.detail}")
        return render(request, "batch.html", user=user, batch=batch,
                      lines=[_batch_line(item) for item in batch.results])
    try:
        study = await api.run_study(ctx, user.username, file[0], model or None, patient_id or None,
                                    "auto", True, None, options)
    except HTTPException as exc:
        return render(request, "upload.html", status_code=exc.status_code, user=user,
                      models=api.models(request, user), error=f"The file was not accepted: {exc.detail}")
    return RedirectResponse(f"/results/{study.result_id}", status_code=303)


def headline(prediction: dict[str, Any]) -> str:
    """The decision in words a clinician reads in a second (:func:`meddx.trust.decide.plain_words`)."""
    from meddx.trust.decide import plain_words

    decision = prediction["decision"]
    if isinstance(prediction.get("synthetic"), dict) and decision["decision"] != "rejected":
        return synthetic_headline(prediction)
    return plain_words(decision["decision"], decision["reason"], prediction.get("prediction"),
                       str(prediction.get("modality") or "image"))


def synthetic_headline(prediction: dict[str, Any]) -> str:
    """A restoration's or translation's outcome: a synthetic image, and whether its checks want a second look."""
    synthetic = prediction["synthetic"]
    decision = prediction["decision"]["decision"]
    kind = "full-dose restoration" if synthetic.get("kind") == "restoration" else \
        f"{synthetic.get('target_modality') or 'translated'} image"
    if decision in ("review", "refer"):
        return f"Review: the synthetic {kind} differs from the input beyond the expected \u2013 compare them"
    return f"Synthetic {kind} (computed, not acquired)"


def _batch_line(item: Any) -> dict[str, Any]:
    """One row of the batch summary: the file's number, its plain-words outcome and its card's link."""
    if item.study is None:
        return {"index": item.index + 1, "decision": "refused", "text": f"Not accepted: {item.error}", "link": None}
    prediction = item.study.prediction
    return {"index": item.index + 1, "decision": prediction["decision"]["decision"], "text": headline(prediction),
            "link": f"/results/{item.study.result_id}"}


@router.get("/results/{result_id}", response_class=HTMLResponse)
def result_page(request: Request, result_id: str) -> Response:
    user = _clinical(request)
    if user is None:
        return _login_redirect()
    result, payload, patient = api.load_result(api.ctx_of(request), result_id, user.username, "result.view")
    from meddx.service import tasks

    prediction = payload["prediction"]
    downloads = [{"name": tasks.FILES[key][0], "url": f"/api/results/{result.id}/{tasks.FILES[key][0]}",
                  "label": DOWNLOADS.get(key, key)} for key in tasks.FILES if key in (payload.get("files") or {})]
    return render(request, "result.html", user=user, prediction=prediction, patient=patient,
                  result_id=str(result.id), study_id=str(result.study_id), created_at=result.created_at.isoformat(),
                  has_overlay=result.overlay_blob_id is not None, has_image=bool(payload.get("preview_blob_id")),
                  headline=headline(prediction), legend=tasks.legend(prediction), findings=tasks.summary(prediction),
                  downloads=downloads, synthetic=_synthetic_panel(prediction, payload),
                  similar=_similar_panel(request, result, payload, patient, user))


def _synthetic_panel(prediction: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any] | None:
    """What the card shows of a synthetic result: the banner, whether there is a picture, the checks in words."""
    from meddx.service import tasks

    synthetic = prediction.get("synthetic")
    if not isinstance(synthetic, dict):
        return None
    return {"banner": tasks.BANNER, "burnt_in": synthetic.get("banner"), "kind": synthetic.get("kind"),
            "has_image": "synthetic" in (payload.get("files") or {}), "dose": synthetic.get("dose"),
            "source": synthetic.get("source_modality"), "target": synthetic.get("target_modality"),
            "method": synthetic.get("method"), "checks": tasks.synthetic_checks(prediction)}


SIMILAR_ON_CARD = 6


def _similar_panel(request: Request, result: Any, payload: dict[str, Any], patient: str, user: Any) -> dict[str, Any] | None:
    """The "Similar confirmed cases" panel: for clinicians (and admins), when the result's model has a case
    index and the model read the input; None otherwise. A failing search leaves the rest of the card intact."""
    import logging

    from meddx.service import similar

    ctx = api.ctx_of(request)
    if user.role not in ("clinician", "admin") or result.decision == "rejected" \
            or similar.served_index(ctx, result.model_name) is None:
        return None
    try:
        hits = api.similar_for(ctx, result, payload, SIMILAR_ON_CARD, {})
    except HTTPException:
        return None
    except Exception:  # noqa: BLE001 - the panel is an aid; the result card must still show
        logging.getLogger(__name__).exception("similar cases for result %s failed", result.id)
        return None
    api.audit(ctx, user.username, "result.similar", patient_pseudonym=patient,
              model_version=f"{result.model_name}:{result.model_version}", summary=f"{len(hits)} cases on the card")
    return {"model": result.model_name, "hits": [h.model_dump() for h in hits]}


DOWNLOADS = {"mask": "Label mask (PNG)", "seg": "DICOM Segmentation", "sr": "DICOM Structured Report (TID 1500)",
             "synthetic": "Synthetic image (PNG, with banner)",
             "synthetic_dicom": "Synthetic image (DICOM, ImageType DERIVED)"}


@router.get("/results/{result_id}/overlay.png")
def result_overlay(request: Request, result_id: str) -> Response:
    user = _clinical(request)
    if user is None:
        raise HTTPException(401, "log in first")
    return api.get_overlay(request, result_id, user)


@router.get("/results/{result_id}/image.png")
def result_image(request: Request, result_id: str) -> Response:
    user = _clinical(request)
    if user is None:
        raise HTTPException(401, "log in first")
    return api.get_preview(request, result_id, user)


@router.get("/results/{result_id}/synthetic.png")
def result_synthetic(request: Request, result_id: str) -> Response:
    user = _clinical(request)
    if user is None:
        raise HTTPException(401, "log in first")
    return api.get_synthetic(request, result_id, user)


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request) -> Response:
    user = _clinical(request)
    if user is None:
        return _login_redirect()
    return render(request, "studies.html", user=user,
                  studies=api.patient_studies(api.ctx_of(request), None, user.username))


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    return render(request, "models.html", user=user, models=api.models(request, user))


@router.get("/models/{name}", response_class=HTMLResponse)
def card_page(request: Request, name: str) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    return render(request, "card.html", user=user, name=name, card=api.model_card(request, name, user))


def _admin_page(request: Request, user: Any, created: dict[str, str] | None = None) -> HTMLResponse:
    from meddx.service.drift import HISTORY, overview

    monitors = overview(api.ctx_of(request), history=HISTORY)
    return render(request, "admin.html", user=user, users=api.list_users(request, user),
                  audit=api.audit_log(request, user, 200), verify=api.audit_verify(request, user), created=created,
                  monitors=monitors, charts={m.id: cusum_chart(m) for m in monitors if m.monitored})


def cusum_chart(monitor: Any, width: int = 480, height: int = 90) -> dict[str, Any]:
    """SVG points for the monitor's CUSUM history against its alarm threshold (drawn inline, no script)."""
    points = [p for p in (monitor.history or []) if p["cusum"] is not None]
    limit = float((monitor.state or {}).get("cusum_threshold") or 1.0)
    top = max([limit * 1.2] + [float(p["cusum"]) for p in points])
    step = width / max(len(points) - 1, 1)

    def y(value: float) -> float:
        return round(height - value / top * height, 1)

    line = " ".join(f"{round(i * step, 1)},{y(float(p['cusum']))}" for i, p in enumerate(points))
    flags = [round(i * step, 1) for i, p in enumerate(points) if p["flagged"]]
    return {"width": width, "height": height, "line": line, "threshold_y": y(limit), "flags": flags,
            "n": len(points)}


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    if user.role != "admin":
        raise HTTPException(403, "this page is for administrators")
    return _admin_page(request, user)


@router.post("/admin/users", response_class=HTMLResponse)
def admin_create_user(request: Request, username: Annotated[str, Form(max_length=64)],
                      role: Annotated[str, Form(max_length=16)], csrf: Csrf = None) -> Response:
    user = session_user(request)
    if user is None:
        return _login_redirect()
    if user.role != "admin":
        raise HTTPException(403, "this page is for administrators")
    _check_csrf(request, csrf)
    try:
        body = api.NewUser(username=username, role=role)
    except Exception as exc:
        raise HTTPException(422, "usernames use letters, digits, '.', '_' and '-'; roles: clinician, engineer, "
                                 "admin") from exc
    out = api.create_account(request, body, user)
    return _admin_page(request, user, created={"username": out.username, "password": out.one_time_password})
