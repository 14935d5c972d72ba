"""Drift monitoring of the served models: one monitor per model version, fed by every study.

After each study is stored, :func:`observe` adds it to its model's
:class:`~meddx.trust.drift.DriftMonitor` (kept in the database by
:mod:`meddx.storage.drift`, so restarts and several workers share one state):

* a scored study feeds the Bernoulli CUSUM with the OOD gate's flag and the
  windowed KS test with the model's score (:func:`drift_score`: the calibrated
  probability of the positive class, or of the predicted class without one);
* a rejected study (the intended-input check refused it) is counted for the
  record and feeds neither test;
* a model without an OOD gate has no monitor (the page says so).

When a monitor fires, the alarm is audited (``drift.alarm``), shown as a banner on
the admin page and in ``GET /api/admin/drift``; an admin acknowledges it, which
resets the monitor (``POST /api/admin/drift/{id}/reset``, audited ``drift.reset``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from meddx.service import api

router = APIRouter()
log = logging.getLogger(__name__)
HISTORY = 200
"""Studies of history the admin page draws per monitor."""


def reference_scores(package: dict[str, Any]) -> list[float] | None:
    """Validation scores for the KS test, when the package holds them (``package["drift"]["reference_scores"]``,
    on the :func:`drift_score` scale); None turns the score test off and leaves the CUSUM on the OOD flag."""
    block = package.get("drift") or {}
    values = block.get("reference_scores")
    return [float(v) for v in values] if values else None


def drift_score(prediction: dict[str, Any], package: dict[str, Any]) -> float | None:
    """The model score the KS test watches: calibrated probability of the positive class (else the top class)."""
    probs = prediction.get("calibrated_probabilities") or {}
    if not probs:
        return None
    positive = package.get("positive_class")
    if positive in probs:
        return float(probs[positive])
    return float(max(probs.values()))


def make_monitor(pipeline: Any) -> Any:
    """A fresh monitor for ``pipeline``: the OOD gate's flag rate as the in-distribution rate."""
    from meddx.trust.drift import DEFAULT_SHIFTED_FLAG_RATE, DriftMonitor

    p0 = float(pipeline.ood.flag_rate)
    return DriftMonitor.create(p0, reference_scores(pipeline.package),
                               p1=max(DEFAULT_SHIFTED_FLAG_RATE, min(0.9, 3 * p0)))


def monitor_id(ctx: Any, pipeline: Any) -> int | None:
    """The database id of ``pipeline``'s monitor (made on first use), or None without an OOD gate."""
    from meddx.storage.drift import ensure_monitor

    if pipeline.ood is None:
        return None
    key = f"{pipeline.package['name']}:{pipeline.package['version']}"
    if key not in ctx.drift_ids:
        ctx.drift_ids[key] = ensure_monitor(ctx.sessions, str(pipeline.package["name"]),
                                            str(pipeline.package["version"]), lambda: make_monitor(pipeline))
    return ctx.drift_ids[key]


def observe(ctx: Any, pipeline: Any, prediction: dict[str, Any], user: str) -> dict[str, Any] | None:
    """Add one stored study to its model's monitor; the monitor's state afterwards (None: no monitor).

    Never fails the study: a monitor problem is logged, and the result is already stored.
    """
    from meddx.storage.drift import record_study

    try:
        ident = monitor_id(ctx, pipeline)
        if ident is None:
            return None
        ood = prediction.get("ood") or {}
        rejected = prediction["decision"]["decision"] == "rejected"
        with ctx.sessions() as session:
            update = record_study(session, ident, rejected=rejected,
                                  flagged=None if rejected else bool(ood.get("flagged")),
                                  score=None if rejected else drift_score(prediction, pipeline.package),
                                  ood_score=ood.get("score"), user=user)
            session.commit()
        if update.fired:
            log.warning("drift alarm on %s:%s: %s", pipeline.package["name"], pipeline.package["version"],
                        update.fired)
        return update.state
    except Exception:  # noqa: BLE001 - the study is stored; monitoring must not turn it into an error
        log.exception("the drift monitor could not be updated")
        return None


# --- what the admin page and API show -----------------------------------------------------------------------


class DriftOut(BaseModel):
    model: str
    version: str
    monitored: bool
    note: str | None = None
    id: int | None = None
    studies: int = 0
    rejected: int = 0
    alarm: bool = False
    score_test: bool = False
    state: dict[str, Any] | None = None
    open_alarms: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    history: list[dict[str, Any]] | None = None


def overview(ctx: Any, *, history: int = 0) -> list[DriftOut]:
    """Every served model's monitor (made now if missing), with ``history`` studies of history each."""
    from meddx.exceptions import MeddxError
    from meddx.storage import drift
    from meddx.storage.models import DriftMonitorRecord

    out = []
    for ref in ctx.model_refs():
        try:
            pipeline = ctx.pipeline(ref)
        except MeddxError as exc:
            out.append(DriftOut(model=ref, version="", monitored=False, note=f"cannot be loaded: {exc}"))
            continue
        name, version = str(pipeline.package["name"]), str(pipeline.package["version"])
        if pipeline.ood is None:
            out.append(DriftOut(model=name, version=version, monitored=False,
                                note="no out-of-distribution detector in this package: refit one with "
                                     "`meddx models fit-ood MODEL` to monitor drift"))
            continue
        ident = monitor_id(ctx, pipeline)
        with ctx.sessions() as session:
            info = drift.summary(session, session.get(DriftMonitorRecord, ident))
            points = drift.history(session, ident, limit=history) if history else None
        out.append(DriftOut(model=name, version=version, monitored=True, history=points,
                            note=None if info["score_test"] else "score test off: the package holds no validation "
                            "scores; the OOD-flag test runs alone",
                            **{k: info[k] for k in ("id", "studies", "rejected", "alarm", "score_test", "state",
                                                    "open_alarms", "alarms")}))
    return out


def reset(ctx: Any, ident: int, by: str) -> list[int]:
    """Acknowledge ``ident``'s open alarms and reset it (404 when there is no such monitor)."""
    from meddx.storage.drift import reset_monitor

    with ctx.sessions() as session:
        acknowledged = reset_monitor(session, ident, by=by)
        if acknowledged is None:
            raise HTTPException(404, f"no drift monitor {ident}")
        session.commit()
    return acknowledged


@router.get("/api/admin/drift", response_model=list[DriftOut], tags=["admin"])
def drift_monitors(request: Request, user: api.Admin,
                   history: Annotated[int, Query(ge=0, le=1000)] = 0) -> list[DriftOut]:
    """Each served model's drift monitor: studies seen, recent flag share, test statistics, alarms."""
    return overview(api.ctx_of(request), history=history)


class ResetOut(BaseModel):
    monitor: int
    acknowledged_alarms: list[int]


@router.post("/api/admin/drift/{monitor}/reset", response_model=ResetOut, tags=["admin"])
def drift_reset(request: Request, monitor: int, user: api.Admin) -> ResetOut:
    """Acknowledge the monitor's alarm and start it afresh (audited as ``drift.reset``)."""
    if not 0 < monitor < 2**31:
        raise HTTPException(404, f"no drift monitor {monitor}")
    return ResetOut(monitor=monitor, acknowledged_alarms=reset(api.ctx_of(request), monitor, user.username))


@router.post("/admin/drift/{monitor}/reset", include_in_schema=False)
def drift_reset_form(request: Request, monitor: int, csrf: Annotated[str | None, Form(max_length=64)] = None
                     ) -> Response:
    """The admin page's "Acknowledge and reset" button."""
    from meddx.service import web

    user = web.session_user(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if user.role != "admin":
        raise HTTPException(403, "this page is for administrators")
    web._check_csrf(request, csrf)
    if not 0 < monitor < 2**31:
        raise HTTPException(404, f"no drift monitor {monitor}")
    reset(api.ctx_of(request), monitor, user.username)
    return RedirectResponse("/admin#drift", status_code=303)
