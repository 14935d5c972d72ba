"""Drift monitors in the database, on SQLite and PostgreSQL: made once, updated per study, alarms audited,
reset by an admin, and still there after a restart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from meddx.exceptions import ConfigError
from meddx.storage import drift
from meddx.storage.audit import verify
from meddx.storage.db import make_engine, session_factory
from meddx.storage.models import AuditEntry, DriftAlarm, DriftMonitorRecord, DriftPoint
from meddx.trust.drift import DriftMonitor


def _feed(sessions, monitor_id: int, flags, scores=None, user: str = "dr.a") -> list[drift.StudyUpdate]:  # noqa: ANN001
    out = []
    for i, flagged in enumerate(flags):
        with sessions() as session:
            out.append(drift.record_study(session, monitor_id, flagged=bool(flagged),
                                          score=None if scores is None else float(scores[i]), user=user))
            session.commit()
    return out


def test_in_distribution_stream_does_not_alarm_and_rejections_only_count(sessions) -> None:  # noqa: ANN001
    made = []

    def make() -> DriftMonitor:
        made.append(1)
        return DriftMonitor.create(0.05)

    monitor_id = drift.ensure_monitor(sessions, "chest", "1", make)
    assert drift.ensure_monitor(sessions, "chest", "1", make) == monitor_id and len(made) == 1
    assert drift.ensure_monitor(sessions, "chest", "2", make) != monitor_id  # one monitor per model version

    flags = np.random.default_rng(0).random(200) < 0.05
    updates = _feed(sessions, monitor_id, flags)
    assert not any(u.fired for u in updates) and not updates[-1].state["alarm"]
    with sessions() as session:
        rejected = drift.record_study(session, monitor_id, rejected=True)
        session.commit()
    assert rejected.state["studies"] == 200 and rejected.fired is None  # the tests never saw it

    with sessions() as session:
        (info,) = [s for s in drift.summaries(session) if s["id"] == monitor_id]
        assert info["studies"] == 201 and info["rejected"] == 1 and not info["alarm"] and not info["open_alarms"]
        assert info["state"]["studies"] == 200 and info["score_test"] is False
        assert info["state"]["recent_flag_rate"] == pytest.approx(float(np.mean(flags[-100:])))
        points = drift.history(session, monitor_id, limit=5)
        assert [p["study"] for p in points] == [197, 198, 199, 200, 201]
        assert points[-1]["rejected"] and points[-1]["flagged"] is None and points[-1]["cusum"] is not None
        assert session.scalar(select(DriftAlarm).filter_by(monitor_id=monitor_id)) is None
        with pytest.raises(ConfigError, match="OOD gate's verdict"):
            drift.record_study(session, monitor_id)
        with pytest.raises(ConfigError, match="no drift monitor"):
            drift.record_study(session, 10_000, flagged=False)


def test_flagged_stream_alarms_once_is_audited_and_reset_by_an_admin(sessions) -> None:  # noqa: ANN001
    monitor_id = drift.ensure_monitor(sessions, "chest", "1", lambda: DriftMonitor.create(0.05))
    updates = _feed(sessions, monitor_id, [False] * 10 + [True] * 12, user="dr.b")
    fired = [u for u in updates if u.fired]
    assert len(fired) == 1 and "outside the training data" in fired[0].fired  # fires once, then stays up
    assert updates[-1].state["alarm"]
    with sessions() as session:
        (alarm,) = session.scalars(select(DriftAlarm).filter_by(monitor_id=monitor_id)).all()
        assert alarm.id == fired[0].alarm_id and alarm.acknowledged_at is None and alarm.at_study <= 22
        entry = session.scalar(select(AuditEntry).filter_by(action="drift.alarm"))
        assert entry.user == "dr.b" and entry.model_version == "chest:1" and f"alarm {alarm.id}" in entry.summary
        info = drift.summary(session, session.get(DriftMonitorRecord, monitor_id))
        assert info["alarm"] and [a["id"] for a in info["open_alarms"]] == [alarm.id]

        assert drift.reset_monitor(session, monitor_id, by="admin") == [alarm.id]
        session.commit()
        assert drift.reset_monitor(session, 10_000, by="admin") is None
    with sessions() as session:
        info = drift.summary(session, session.get(DriftMonitorRecord, monitor_id))
        assert not info["alarm"] and not info["open_alarms"] and info["alarms"][0]["acknowledged_by"] == "admin"
        assert info["state"]["studies"] == 0 and info["state"]["cusum"] == 0 and info["studies"] == 22  # record kept
        reset = session.scalar(select(AuditEntry).filter_by(action="drift.reset"))
        assert reset.user == "admin" and f"acknowledged alarm {alarm.id}" in reset.summary
        assert verify(session).ok
        assert drift.reset_monitor(session, monitor_id, by="admin") == []  # nothing open: still a logged reset
        session.commit()


def test_score_shift_is_a_warning_from_the_ks_test(sessions) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    reference = rng.beta(2, 5, 300)  # validation scores
    monitor_id = drift.ensure_monitor(sessions, "chest", "1", lambda: DriftMonitor.create(0.05, reference))
    shifted = rng.beta(5, 2, 120)  # the model now scores most studies high; the OOD gate flags none
    updates = _feed(sessions, monitor_id, [False] * 120, shifted)
    # a score shift alone (e.g. a new case mix) warns to recalibrate; only the OOD-flag CUSUM raises the alarm
    assert not [u.fired for u in updates if u.fired]
    with sessions() as session:
        info = drift.summary(session, session.get(DriftMonitorRecord, monitor_id))
        assert info["score_test"] and info["state"]["ks"] > info["state"]["ks_threshold"]
        assert info["state"]["score_shift"] and "scores moved away from validation" in info["state"]["score_shift_reason"]
        assert not info["state"]["alarm"]
        assert drift.history(session, monitor_id)[-1]["score"] == pytest.approx(shifted[-1])


def test_state_survives_a_restart(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    monitor_id = drift.ensure_monitor(sessions, "chest", "1", lambda: DriftMonitor.create(0.05))
    _feed(sessions, monitor_id, [True, False, True])
    engine.dispose()

    engine = make_engine(db_url)  # a new process, say
    try:
        sessions = session_factory(engine)
        assert drift.ensure_monitor(sessions, "chest", "1", lambda: pytest.fail("made again")) == monitor_id
        with sessions() as session:
            row = session.get(DriftMonitorRecord, monitor_id)
            state = DriftMonitor.from_dict(json.loads(row.state))
            assert state.n == 3 and state.recent_flags == [1, 0, 1] and state.cusum > 0
            assert len(session.scalars(select(DriftPoint).filter_by(monitor_id=monitor_id)).all()) == 3
    finally:
        engine.dispose()
