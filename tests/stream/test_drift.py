"""Per-device drift monitoring in the runner: window OOD verdicts feed a DriftMonitor, whose alarm goes
out as an ``input-drift`` alert; its state is stored beside the device's and survives a restart."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from meddx.stream.runner import DRIFT_RULE, RunnerConfig, StreamRunner, _Buffer
from meddx.stream.store import StreamStore
from tests.stream._fakes import AmplitudeModel

FS = 100.0


class OODModel(AmplitudeModel):
    """:class:`AmplitudeModel` with an OOD gate: a window is out of distribution when its SD exceeds 0.5."""

    ood_gate = SimpleNamespace(flag_rate=0.05, reference={})

    def predict_window_proba_ood(self, windows: np.ndarray, fs: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
        sd = np.asarray(windows).std(axis=1)
        return self.predict_proba(windows, fs), [
            {"method": "mahalanobis", "score": float(10 * s), "threshold": 5.0, "flagged": bool(s > 0.5),
             "flag_rate": 0.05} for s in sd]


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def publish(self, topic: str, payload: str, qos: int = 0) -> Any:
        self.sent.append((topic, json.loads(payload)))
        return SimpleNamespace(mid=len(self.sent))


def _runner(path: Path, model: Any) -> StreamRunner:
    r = StreamRunner(RunnerConfig(store=path, window_s=4.0, hop_s=1.0), model)
    r._client = FakeClient()
    return r


def _windows(buf: _Buffer, indices: range, amplitude: float) -> list:
    rng = np.random.default_rng(0)
    n = int(4 * FS)
    t = np.arange(n) / FS
    return [(("bed-1", "ecg"), buf, i, i * int(FS), (amplitude * np.sin(2 * np.pi * 1.2 * t)
                                                      + 0.02 * rng.standard_normal(n)).astype(np.float32))
            for i in indices]


def test_flagged_windows_raise_one_drift_alert_and_the_state_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    runner = _runner(store, OODModel())
    buf = _Buffer(0, 1000.0, FS)
    runner._classify(_windows(buf, range(0, 40), 0.3))  # in distribution: SD 0.21
    assert not runner.drift[("bed-1", "ecg")].alarm and runner.drift[("bed-1", "ecg")].n == 10  # every 4th
    runner._classify(_windows(buf, range(40, 120), 1.0))  # out of distribution: SD 0.71, still "ok" quality
    monitor = runner.drift[("bed-1", "ecg")]
    assert monitor.alarm and monitor.alarm_reason.startswith("the share of studies outside the training data rose")
    alerts = [body for topic, body in runner._client.sent if topic.startswith("meddx/alerts/")]
    drift = [a for a in alerts if a["rule"] == DRIFT_RULE]
    assert len(drift) == 1 and drift[0]["event"] == "raised" and "CUSUM" in drift[0]["reason"]
    predictions = [body for topic, body in runner._client.sent if "ood" in body]
    assert predictions and predictions[-1]["ood"]["flagged"] is True
    assert runner.stats["drift_alarms"] == 1 and runner.stats["ood_flagged"] == 80
    stored = runner.store.drift_states()[("bed-1", "ecg")]
    assert stored["alarm"] is True and stored["n"] == monitor.n
    assert [a["rule"] for a in runner.store.open_alerts()] == [DRIFT_RULE]
    runner.store.close()

    again = _runner(store, OODModel())
    again._restore()
    restored = again.drift[("bed-1", "ecg")]
    assert restored.alarm and restored.n == monitor.n and restored.cusum == pytest.approx(monitor.cusum)
    again._classify(_windows(_Buffer(0, 1000.0, FS), range(120, 160), 1.0))
    assert not [1 for topic, body in again._client.sent if body.get("rule") == DRIFT_RULE]  # raised once
    again.store.close()


def test_a_model_without_a_gate_feeds_no_monitor(tmp_path: Path) -> None:
    runner = _runner(tmp_path / "s.db", AmplitudeModel())
    runner._classify(_windows(_Buffer(0, 0.0, FS), range(0, 12), 1.0))
    assert runner.drift == {} and runner.store.drift_states() == {}
    assert all("ood" not in body for _, body in runner._client.sent)
    runner.store.close()


def test_an_old_store_gains_the_ood_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE predictions (device_id TEXT NOT NULL, signal TEXT NOT NULL, segment INTEGER NOT NULL,"
                 " window INTEGER NOT NULL, window_start REAL NOT NULL, window_end REAL NOT NULL, label TEXT NOT NULL,"
                 " probabilities TEXT, quality TEXT NOT NULL, model TEXT, chunk_sent_at REAL, created_at REAL NOT "
                 "NULL, published_at REAL, PRIMARY KEY (device_id, signal, segment, window)) WITHOUT ROWID")
    conn.close()
    store = StreamStore(path)
    with store.transaction():
        store.add_predictions([("d", "ecg", 0, 0, 0.0, 4.0, "N", {"N": 1.0}, "ok", "m", None)])
        store.add_predictions([("d", "ecg", 0, 1, 1.0, 5.0, "N", {"N": 1.0}, "ok", "m", None,
                                {"flagged": False, "score": 1.0})])
    bodies = store.unpublished()
    assert "ood" not in bodies[0] and bodies[1]["ood"] == {"flagged": False, "score": 1.0}
    store.close()


def test_the_runner_takes_the_gates_own_monitor(tmp_path: Path) -> None:
    from meddx.trust.drift import DriftMonitor

    class GatedModel(OODModel):
        ood_gate = SimpleNamespace(flag_rate=0.05, reference={},
                                   drift_monitor=lambda: DriftMonitor(p0=0.05, h=1.5))

    runner = _runner(tmp_path / "s.db", GatedModel())
    runner._classify(_windows(_Buffer(0, 0.0, FS), range(0, 4), 1.0))  # one window fed, flagged: 1.79 > 1.5
    monitor = runner.drift[("bed-1", "ecg")]
    assert monitor.h == 1.5 and monitor.alarm
    runner.store.close()
