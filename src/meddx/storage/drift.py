"""Per-model drift monitors in the database, so a restart does not forget what the service has seen.

One :class:`~meddx.storage.models.DriftMonitorRecord` per served model version holds a
:class:`meddx.trust.drift.DriftMonitor` (as JSON), updated study by study under a row
lock (SQLite write lock, PostgreSQL ``SELECT ... FOR UPDATE``), so concurrent requests
and several service processes never lose an update. Every study adds a
:class:`~meddx.storage.models.DriftPoint` (the history the admin page draws); an alarm
adds a :class:`~meddx.storage.models.DriftAlarm` and an audit entry in the same
transaction; an admin's acknowledgement closes the alarm, resets the monitor and is
audited too.

Rejected inputs (the intended-input check refused them, so the model never ran) count
as studies for the record but feed neither test: they carry no OOD verdict and no
model score.

    monitor_id = ensure_monitor(sessions, "chest-xray", "3", lambda: DriftMonitor.create(0.05))
    with sessions() as session:
        update = record_study(session, monitor_id, flagged=True, score=0.91, ood_score=88.0, user="dr.a")
        session.commit()
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from meddx.exceptions import ConfigError
from meddx.storage.db import begin_write
from meddx.storage.models import DriftAlarm, DriftMonitorRecord, DriftPoint, utcnow

SUMMARY_LIMIT = 255  # the audit log's summary column


@dataclass
class StudyUpdate:
    """What one study did to a monitor: its state afterwards and the alarm it raised, if any."""

    state: dict[str, Any]
    fired: str | None = None
    alarm_id: int | None = None


def ensure_monitor(sessions: sessionmaker[Session], model_name: str, model_version: str,
                   make: Callable[[], Any]) -> int:
    """The id of the monitor for ``model_name:model_version``, made with ``make()`` on first use.

    ``make`` (a :class:`~meddx.trust.drift.DriftMonitor` factory; its thresholds take a
    fraction of a second to simulate) runs outside any transaction; two processes
    making the same monitor at once both succeed, and the first one's row is kept.
    """
    found = _find(sessions, model_name, model_version)
    if found is not None:
        return found
    monitor = make()
    with sessions() as session:
        row = DriftMonitorRecord(model_name=model_name, model_version=model_version,
                                 state=json.dumps(monitor.to_dict(), allow_nan=False), studies=0, rejected=0,
                                 alarm=False)
        session.add(row)
        try:
            session.commit()
            return int(row.id)
        except IntegrityError:  # made by another request or process in between
            session.rollback()
    found = _find(sessions, model_name, model_version)
    if found is None:  # pragma: no cover - the unique constraint said it exists
        raise ConfigError(f"the drift monitor for {model_name}:{model_version} could not be stored",
                          field="drift_monitors")
    return found


def _find(sessions: sessionmaker[Session], model_name: str, model_version: str) -> int | None:
    with sessions() as session:
        return session.scalar(select(DriftMonitorRecord.id).filter_by(model_name=model_name,
                                                                       model_version=model_version))


def _locked(session: Session, monitor_id: int) -> DriftMonitorRecord | None:
    """The monitor row, locked for this transaction (read-modify-write without lost updates)."""
    if session.get_bind().dialect.name == "sqlite":
        begin_write(session, DriftMonitorRecord.__tablename__)
        return session.get(DriftMonitorRecord, monitor_id, populate_existing=True)
    return session.get(DriftMonitorRecord, monitor_id, with_for_update=True, populate_existing=True)


def _monitor(row: DriftMonitorRecord) -> Any:
    from meddx.trust.drift import DriftMonitor

    return DriftMonitor.from_dict(json.loads(row.state))


def record_study(session: Session, monitor_id: int, *, rejected: bool = False, flagged: bool | None = None,
                 score: float | None = None, ood_score: float | None = None, user: str = "meddx") -> StudyUpdate:
    """Add one study to the monitor; the caller commits.

    A scored study (``rejected`` False) feeds the CUSUM with ``flagged`` and the KS
    window with ``score``; a rejected one is only counted. When this study makes the
    monitor fire, a :class:`DriftAlarm` row and a ``drift.alarm`` audit entry (by
    ``user``, the account whose upload tipped it) are added in the same transaction.
    """
    from meddx.storage.audit import append

    row = _locked(session, monitor_id)
    if row is None:
        raise ConfigError(f"no drift monitor {monitor_id}", field="monitor_id")
    monitor = _monitor(row)
    row.studies += 1
    fired = None
    if rejected:
        row.rejected += 1
        state = monitor.state()
    else:
        if flagged is None:
            raise ConfigError("a scored study needs the OOD gate's verdict", field="flagged",
                              hint="pass flagged=True/False, or rejected=True for an input the model never saw")
        was = monitor.alarm
        state = monitor.update(bool(flagged), score)
        if state["alarm"] and not was:
            fired = str(state["alarm_reason"])
    row.state = json.dumps(monitor.to_dict(), allow_nan=False)
    session.add(DriftPoint(monitor_id=row.id, ts=utcnow(), study=row.studies, rejected=rejected,
                           flagged=None if rejected else bool(flagged), ood_score=ood_score,
                           score=None if rejected else score, cusum=state["cusum"], ks=state["ks"],
                           recent_flag_rate=state["recent_flag_rate"], alarm=bool(state["alarm"])))
    alarm_id = None
    if fired is not None:
        row.alarm = True
        alarm = DriftAlarm(monitor_id=row.id, raised_at=utcnow(), at_study=row.studies, reason=fired)
        session.add(alarm)
        session.flush()
        alarm_id = int(alarm.id)
        append(session, user=user, action="drift.alarm", model_version=f"{row.model_name}:{row.model_version}",
               summary=f"alarm {alarm_id}: {fired}"[:SUMMARY_LIMIT])
    return StudyUpdate(state=state, fired=fired, alarm_id=alarm_id)


def reset_monitor(session: Session, monitor_id: int, *, by: str) -> list[int] | None:
    """Acknowledge the monitor's open alarms and start it afresh; the caller commits.

    Returns the acknowledged alarm ids (empty when none was open), or None when there
    is no such monitor. Written to the audit log as ``drift.reset``.
    """
    from meddx.storage.audit import append

    row = _locked(session, monitor_id)
    if row is None:
        return None
    now = utcnow()
    open_alarms = session.scalars(select(DriftAlarm).filter_by(monitor_id=row.id, acknowledged_at=None)
                                  .order_by(DriftAlarm.id)).all()
    for alarm in open_alarms:
        alarm.acknowledged_by, alarm.acknowledged_at = by, now
    monitor = _monitor(row)
    monitor.reset()
    row.state = json.dumps(monitor.to_dict(), allow_nan=False)
    row.alarm = False
    ids = [int(a.id) for a in open_alarms]
    what = f"acknowledged alarm {', '.join(map(str, ids))}" if ids else "no open alarm"
    append(session, user=by, action="drift.reset", model_version=f"{row.model_name}:{row.model_version}",
           summary=f"monitor {row.id} reset; {what}"[:SUMMARY_LIMIT])
    return ids


def summary(session: Session, row: DriftMonitorRecord, *, alarms: int = 10) -> dict[str, Any]:
    """What the admin page and API show of one monitor: counts, test statistics, open and recent alarms."""
    monitor = _monitor(row)
    recent = session.scalars(select(DriftAlarm).filter_by(monitor_id=row.id)
                             .order_by(DriftAlarm.id.desc()).limit(alarms)).all()
    return {"id": row.id, "model": row.model_name, "version": row.model_version, "studies": row.studies,
            "rejected": row.rejected, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(), "alarm": row.alarm, "score_test": bool(monitor.reference),
            "state": monitor.state(), "alarms": [_alarm(a) for a in recent],
            "open_alarms": [_alarm(a) for a in recent if a.acknowledged_at is None]}


def _alarm(alarm: DriftAlarm) -> dict[str, Any]:
    return {"id": alarm.id, "raised_at": alarm.raised_at.isoformat(), "at_study": alarm.at_study,
            "reason": alarm.reason, "acknowledged_by": alarm.acknowledged_by,
            "acknowledged_at": alarm.acknowledged_at.isoformat() if alarm.acknowledged_at else None}


def summaries(session: Session) -> list[dict[str, Any]]:
    """Every monitor's :func:`summary`, by model name and version."""
    rows = session.scalars(select(DriftMonitorRecord).order_by(DriftMonitorRecord.model_name,
                                                               DriftMonitorRecord.model_version)).all()
    return [summary(session, row) for row in rows]


def history(session: Session, monitor_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
    """The monitor's last ``limit`` studies, oldest first (what the admin page draws)."""
    points = session.scalars(select(DriftPoint).filter_by(monitor_id=monitor_id)
                             .order_by(DriftPoint.id.desc()).limit(limit)).all()
    return [{"study": p.study, "ts": p.ts.isoformat(), "rejected": p.rejected, "flagged": p.flagged,
             "ood_score": p.ood_score, "score": p.score, "cusum": p.cusum, "ks": p.ks,
             "recent_flag_rate": p.recent_flag_rate, "alarm": p.alarm} for p in reversed(points)]
