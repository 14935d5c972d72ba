"""The stream store: raw chunks, window predictions, alerts, gaps and dead letters in SQLite.

Writes are idempotent: a chunk is keyed by ``(device, signal, seq)`` and a
prediction by ``(device, signal, segment, window)``, so a message delivered twice
(QoS 1 redelivery after a crash) is stored once. The runner acknowledges a
message to the broker only after the transaction holding it commits, which is
what makes "no acknowledged sample is lost" hold across ``kill -9``: a committed
WAL transaction survives the death of the process (``synchronous=NORMAL`` may
lose the last transactions on power loss, not on a process crash; pass
``durable=True`` for ``FULL``).

Predictions are an outbox: stored with ``published_at`` empty, published with
QoS 1, and marked when the broker acknowledges them; a restarted runner
republishes the ones never marked.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    device_id TEXT NOT NULL, signal TEXT NOT NULL, seq INTEGER NOT NULL,
    start_time REAL NOT NULL, fs REAL NOT NULL, units TEXT NOT NULL, n INTEGER NOT NULL,
    segment INTEGER NOT NULL, offset INTEGER NOT NULL,
    samples BLOB NOT NULL, sent_at REAL, received_at REAL NOT NULL,
    PRIMARY KEY (device_id, signal, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predictions (
    device_id TEXT NOT NULL, signal TEXT NOT NULL, segment INTEGER NOT NULL, window INTEGER NOT NULL,
    window_start REAL NOT NULL, window_end REAL NOT NULL, label TEXT NOT NULL, probabilities TEXT,
    quality TEXT NOT NULL, model TEXT, chunk_sent_at REAL, created_at REAL NOT NULL, published_at REAL,
    PRIMARY KEY (device_id, signal, segment, window)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_unpublished ON predictions (published_at) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL, signal TEXT NOT NULL, label TEXT NOT NULL, probabilities TEXT, quality TEXT NOT NULL,
    window_end REAL NOT NULL, PRIMARY KEY (device_id, signal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, signal TEXT NOT NULL, rule TEXT NOT NULL,
    severity TEXT NOT NULL, state TEXT NOT NULL, onset_time REAL NOT NULL, raised_window_end REAL NOT NULL,
    raised_at REAL NOT NULL, probability REAL, cleared_at REAL, acknowledged_at REAL, acknowledged_by TEXT
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (device_id, signal, rule, state);
CREATE TABLE IF NOT EXISTS gaps (
    device_id TEXT NOT NULL, signal TEXT NOT NULL, first_missing INTEGER NOT NULL, last_missing INTEGER NOT NULL,
    detected_at REAL NOT NULL, PRIMARY KEY (device_id, signal, first_missing)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift (
    device_id TEXT NOT NULL, signal TEXT NOT NULL, state TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (device_id, signal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB, reason TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""


@dataclass
class DeviceState:
    """Where a device's stream stands: the next expected seq and the current segment."""

    next_seq: int
    segment: int
    offset: int
    """Samples received in the current segment so far."""
    fs: float
    last_window: int
    """Index of the last window predicted in this segment (-1: none)."""


class StreamStore:
    """SQLite store used by one runner process (WAL, so readers - the web page, the CLI - never block it)."""

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.conn.executescript(SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(predictions)")}
        if "ood" not in columns:  # a store written before window OOD verdicts existed
            self.conn.execute("ALTER TABLE predictions ADD COLUMN ood TEXT")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- writes (inside a transaction) -------------------------------------
    def add_chunk(self, c: Any, segment: int, offset: int, received_at: float) -> bool:
        """Insert a chunk; False when that (device, signal, seq) is already stored."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (c.device_id, c.signal, c.seq, c.start_time, c.fs, c.units, c.n, segment, offset,
             np.asarray(c.samples, dtype="<f4").tobytes(), c.sent_at, received_at))
        return cur.rowcount == 1

    def has_chunk(self, device_id: str, signal: str, seq: int) -> bool:
        row = self.conn.execute("SELECT 1 FROM chunks WHERE device_id=? AND signal=? AND seq=?",
                                (device_id, signal, seq)).fetchone()
        return row is not None

    def add_gap(self, device_id: str, signal: str, first: int, last: int) -> None:
        self.conn.execute("INSERT OR IGNORE INTO gaps VALUES (?,?,?,?,?)", (device_id, signal, first, last, time.time()))

    def add_dead_letter(self, topic: str, payload: bytes | None, reason: str) -> None:
        self.conn.execute("INSERT INTO dead_letters (topic, payload, reason, received_at) VALUES (?,?,?,?)",
                          (topic, payload, reason[:500], time.time()))

    def add_predictions(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows: device, signal, segment, window, window_start, window_end, label, probabilities (dict|None),
        quality, model, chunk_sent_at[, ood verdict (dict|None)]."""
        now = time.time()
        rows = [(*r[:7], json.dumps(r[7]) if r[7] is not None else None, *r[8:11], now,
                 json.dumps(r[11]) if len(r) > 11 and r[11] is not None else None) for r in rows]
        self.conn.executemany(
            "INSERT OR IGNORE INTO predictions (device_id, signal, segment, window, window_start, window_end, label, "
            "probabilities, quality, model, chunk_sent_at, created_at, published_at, ood) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL,?)", rows)
        # the newest window per device stream, for live views (a small table instead of a scan of all windows)
        self.conn.executemany(
            "INSERT INTO latest VALUES (?,?,?,?,?,?) ON CONFLICT (device_id, signal) DO UPDATE SET "
            "label=excluded.label, probabilities=excluded.probabilities, quality=excluded.quality, "
            "window_end=excluded.window_end WHERE excluded.window_end > latest.window_end",
            [(r[0], r[1], r[6], r[7], r[8], r[5]) for r in rows])

    def mark_published(self, keys: Iterable[tuple[str, str, int, int]], when: float) -> None:
        self.conn.executemany(
            "UPDATE predictions SET published_at=? WHERE device_id=? AND signal=? AND segment=? AND window=?",
            [(when, *k) for k in keys])

    def raise_alert(self, event: Any) -> int:
        cur = self.conn.execute(
            "INSERT INTO alerts (device_id, signal, rule, severity, state, onset_time, raised_window_end, raised_at,"
            " probability) VALUES (?,?,?,?,'open',?,?,?,?)",
            (event.device_id, event.signal, event.rule, event.severity, event.onset_time, event.window_end,
             time.time(), event.probability))
        return int(cur.lastrowid)

    def clear_alert(self, event: Any) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM alerts WHERE device_id=? AND signal=? AND rule=? AND state='open' ORDER BY id DESC LIMIT 1",
            (event.device_id, event.signal, event.rule)).fetchone()
        if row is None:
            return None
        self.conn.execute("UPDATE alerts SET state='cleared', cleared_at=? WHERE id=?", (time.time(), row[0]))
        return int(row[0])

    def acknowledge(self, alert_id: int, by: str) -> bool:
        cur = self.conn.execute(
            "UPDATE alerts SET acknowledged_at=?, acknowledged_by=? WHERE id=? AND acknowledged_at IS NULL",
            (time.time(), by[:64], alert_id))
        return cur.rowcount == 1

    def save_drift(self, device_id: str, signal: str, state: dict[str, Any]) -> None:
        """Store a device stream's drift monitor (:class:`meddx.trust.drift.DriftMonitor` ``to_dict``)."""
        self.conn.execute("INSERT INTO drift VALUES (?,?,?,?) ON CONFLICT (device_id, signal) DO UPDATE SET "
                          "state=excluded.state, updated_at=excluded.updated_at",
                          (device_id, signal, json.dumps(state), time.time()))

    # -- reads ---------------------------------------------------------------
    def drift_states(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every device stream's stored drift monitor."""
        return {(r[0], r[1]): json.loads(r[2])
                for r in self.conn.execute("SELECT device_id, signal, state FROM drift").fetchall()}

    def device_states(self) -> dict[tuple[str, str], DeviceState]:
        """The state of every device stream, rebuilt from the store (after a restart)."""
        states = {}
        rows = self.conn.execute(
            "SELECT device_id, signal, seq, segment, offset, n, fs FROM chunks AS c WHERE seq = "
            "(SELECT MAX(seq) FROM chunks WHERE device_id=c.device_id AND signal=c.signal)").fetchall()
        for device, signal, seq, segment, offset, n, fs in rows:
            last = self.conn.execute(
                "SELECT MAX(window) FROM predictions WHERE device_id=? AND signal=? AND segment=?",
                (device, signal, segment)).fetchone()[0]
            states[(device, signal)] = DeviceState(seq + 1, segment, offset + n, fs, -1 if last is None else last)
        return states

    def segment_samples(self, device_id: str, signal: str, segment: int, from_offset: int) -> tuple[np.ndarray, int]:
        """Samples of a segment from (about) ``from_offset`` on, and the offset of the first one returned."""
        rows = self.conn.execute(
            "SELECT offset, samples FROM chunks WHERE device_id=? AND signal=? AND segment=? AND offset + n > ? "
            "ORDER BY seq", (device_id, signal, segment, from_offset)).fetchall()
        if not rows:
            return np.zeros(0, np.float32), from_offset
        return np.concatenate([np.frombuffer(r[1], dtype="<f4") for r in rows]), int(rows[0][0])

    def chunk_start_time(self, device_id: str, signal: str, seq: int) -> float:
        """``start_time`` of a stored chunk (0.0 when it is not stored)."""
        row = self.conn.execute("SELECT start_time FROM chunks WHERE device_id=? AND signal=? AND seq=?",
                                (device_id, signal, seq)).fetchone()
        return 0.0 if row is None else float(row[0])

    def last_chunk_sent_at(self, device_id: str, signal: str) -> float | None:
        row = self.conn.execute("SELECT sent_at FROM chunks WHERE device_id=? AND signal=? ORDER BY seq DESC LIMIT 1",
                                (device_id, signal)).fetchone()
        return None if row is None else row[0]

    def unpublished(self, limit: int = 10_000) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT device_id, signal, segment, window, window_start, window_end, label, probabilities, quality,"
            " model, chunk_sent_at, ood FROM predictions WHERE published_at IS NULL LIMIT ?", (limit,)).fetchall()
        return [prediction_message(r) for r in rows]

    def open_alerts(self) -> list[dict[str, Any]]:
        return self.alerts(state="open")

    def alerts(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT * FROM alerts" + (" WHERE state=?" if state else "") + " ORDER BY id DESC LIMIT ?"
        cur = self.conn.execute(sql, (state, limit) if state else (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def latest(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest window of each device stream (device order)."""
        rows = self.conn.execute("SELECT device_id, signal, label, probabilities, quality, window_end FROM latest "
                                 "ORDER BY device_id, signal LIMIT ?", (limit,)).fetchall()
        return [{"device_id": r[0], "signal": r[1], "label": r[2], "probabilities": json.loads(r[3]) if r[3] else None,
                 "quality": r[4], "window_end": r[5]} for r in rows]

    def counts(self) -> dict[str, int]:
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("chunks", "predictions", "alerts", "gaps", "dead_letters")}

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, topic, reason, received_at FROM dead_letters ORDER BY id DESC LIMIT ?",
                                 (limit,)).fetchall()
        return [{"id": r[0], "topic": r[1], "reason": r[2], "received_at": r[3]} for r in rows]

    def gaps(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT device_id, signal, first_missing, last_missing, detected_at FROM gaps "
                                 "ORDER BY detected_at").fetchall()
        return [{"device_id": r[0], "signal": r[1], "first_missing": r[2], "last_missing": r[3], "detected_at": r[4]}
                for r in rows]


def prediction_message(row: tuple[Any, ...]) -> dict[str, Any]:
    """The JSON body published for one stored prediction row."""
    device, signal, segment, window, start, end, label, probs, quality, model, sent = row[:11]
    body = {"device_id": device, "signal": signal, "segment": segment, "window": window, "window_start": start,
            "window_end": end, "label": label, "probabilities": json.loads(probs) if probs else None,
            "quality": quality, "model": model, "chunk_sent_at": sent}
    if len(row) > 11 and row[11]:
        body["ood"] = json.loads(row[11]) if isinstance(row[11], str) else row[11]
    return body
