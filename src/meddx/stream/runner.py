"""``StreamRunner``: subscribe to device chunks, store them, classify windows, publish predictions and alerts.

The flow for each batch of messages the MQTT client hands over:

1. decode and validate each chunk (:mod:`meddx.stream.messages`); malformed,
   out-of-order or inconsistent messages go to the dead-letter table with the
   reason, and the runner carries on;
2. check sequence numbers per device: a jump is stored as a gap and starts a new
   segment (windows never straddle missing samples); a repeat is a QoS 1
   redelivery and is dropped (storage is idempotent);
3. commit the batch to the store, and only then acknowledge it to the broker
   (manual PUBACK): an acknowledged sample is a stored sample;
4. append samples to per-device buffers and cut overlapping windows
   (``window_s`` long, every ``hop_s``);
5. check each window's quality, run the model once on every good window of the
   batch (all devices together), store the predictions, feed the alert rules;
   a model with an OOD gate also gives each good window an OOD verdict (stored and
   published with the prediction), and every device's :class:`~meddx.trust.drift.DriftMonitor`
   is fed the verdicts of its non-overlapping windows (one in every ``window_s / hop_s``,
   so the monitor's false-alarm rate, set for independent studies, holds); when it fires,
   an ``input-drift`` alert goes out through the same alert path, and its state is stored
   beside the device's (a restarted runner carries on from it);
6. publish predictions and alerts with QoS 1; mark them published when the broker
   acknowledges them (a restarted runner republishes the rest).

After a crash the runner rebuilds each device's buffer and alert state from the
store; the broker redelivers what was never acknowledged (persistent session).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from meddx.stream.alerts import DEFAULT_RULES, AlertEvent, AlertRule, AlertTracker
from meddx.stream.broker import BrokerAddress
from meddx.stream.messages import (
    ACK_SUBSCRIPTION,
    ALERT_TOPIC,
    DEVICE_SUBSCRIPTION,
    PREDICTION_TOPIC,
    MessageError,
    decode,
)
from meddx.stream.quality import OK, QualityPolicy
from meddx.stream.store import DeviceState, StreamStore, prediction_message

log = logging.getLogger("meddx.stream")

DEFAULT_WINDOW_S = 7.0
"""Window length for a model without a live-window head (one that has one says its own)."""
DRIFT_RULE = "input-drift"
"""Name of the alert raised when a device's drift monitor fires (its windows stopped looking like training)."""
DRIFT_SEVERITY = "medium"


class WindowModel(Protocol):
    """What the runner needs from a model: class names and calibrated probabilities for a batch of windows."""

    class_names: list[str]

    def predict_proba(self, windows: np.ndarray, fs: float) -> np.ndarray: ...


def load_window_model(ref: str | Path) -> WindowModel:
    """A signal model package (path or ``name[:version]``) ready to classify windows."""
    from meddx.exceptions import ModelError
    from meddx.modalities import modality_of_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(ref)
    package = read_package(folder)
    if modality_of_package(package) != "signal":
        raise ModelError(f"{folder} is a {modality_of_package(package)} model; streams need a signal model",
                         path=folder, field="modality", hint="Train one: meddx train ecg-cinc2017-af")
    from meddx.signals.package import SignalModel

    return SignalModel.load(folder)


def live_window_s(model: WindowModel, requested: float | None = None) -> float:
    """The window length to run ``model`` with: ``requested``, else its live-window head's, else 7 s.

    A head's probabilities are calibrated for the window length it was fitted on; running it on
    other windows is allowed (the window is the user's choice) but logged as a warning.
    """
    fitted = getattr(model, "live_window_s", None)
    if requested is None:
        return float(fitted) if fitted else DEFAULT_WINDOW_S
    if fitted and abs(float(requested) - float(fitted)) > 1e-9:
        log.warning("the model's live-window head was fitted on %g-s windows; running %g-s windows "
                    "(refit it with `meddx stream fit-head MODEL --window-s %g`)", fitted, requested, requested)
    return float(requested)


@dataclass
class RunnerConfig:
    broker: BrokerAddress = field(default_factory=BrokerAddress)
    store: Path = Path("stream.db")
    window_s: float = DEFAULT_WINDOW_S
    hop_s: float = 1.0
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    client_id: str = "meddx-runner"
    max_batch: int = 2000
    batch_wait_s: float = 0.02
    model_name: str = "model"
    durable: bool = False
    signals: tuple[str, ...] = ("ecg",)
    """Signals the model classifies; chunks of other signals (e.g. ppg) are validated and stored only."""


@dataclass
class _Buffer:
    """Samples of a device's current segment not yet consumed by a window."""

    segment: int
    t0: float
    fs: float
    base: int = 0
    """Segment offset of ``samples[0]``."""
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    next_window: int = 0
    last_sent_at: float | None = None

    def append(self, x: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, x]) if self.samples.size else np.asarray(x, np.float32)

    def windows(self, win: int, hop: int) -> list[tuple[int, int, np.ndarray]]:
        """Every complete window ``(index, start_offset, samples)`` now available; drops what none will need."""
        out = []
        while True:
            start = self.next_window * hop
            lo = start - self.base
            if lo < 0:  # restored mid-window after a restart: skip the unrecoverable window
                self.next_window += 1
                continue
            if lo + win > self.samples.size:
                break
            out.append((self.next_window, start, self.samples[lo:lo + win].copy()))
            self.next_window += 1
        keep_from = self.next_window * hop - self.base
        if keep_from > 0:
            self.samples = self.samples[keep_from:]
            self.base += keep_from
        return out


class StreamRunner:
    """One runner process: MQTT in, SQLite store, model, MQTT out."""

    def __init__(self, config: RunnerConfig, model: WindowModel) -> None:
        self.config = config
        self.model = model
        self.store = StreamStore(config.store, durable=config.durable)
        self.alerts = AlertTracker(config.rules)
        self.states: dict[tuple[str, str], DeviceState] = {}
        self.buffers: dict[tuple[str, str], _Buffer] = {}
        self.stats: dict[str, int] = defaultdict(int)
        self._inbox: queue.Queue[tuple[str, bytes, int, int, float]] = queue.Queue()
        self._published: queue.Queue[int] = queue.Queue()
        self._pending: dict[int, tuple[str, str, int, int] | None] = {}
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._client: Any = None
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self.drift: dict[tuple[str, str], Any] = {}
        """Per device stream: a :class:`~meddx.trust.drift.DriftMonitor` fed with window OOD verdicts."""
        self._drift_template: dict[str, Any] | None = None

    # -- MQTT ----------------------------------------------------------------
    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.config.client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, manual_ack=True)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=16)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                log.warning("broker refused the connection: %s", reason)
                return
            c.subscribe([(DEVICE_SUBSCRIPTION, 1), (ACK_SUBSCRIPTION, 1)])
            self.stats["connects"] += 1
            self.connected.set()
            log.info("connected to %s", self.config.broker.url)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            self.connected.clear()
            if not self._stop.is_set():
                self.stats["disconnects"] += 1
                log.warning("lost the broker (%s); reconnecting with backoff", reason)

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            self._inbox.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            self._published.put(mid)

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_message, client.on_publish = on_message, on_publish
        return client

    def start(self) -> StreamRunner:
        """Warm the model up, restore state from the store, connect (retrying until the broker answers)
        and start working."""
        self._warm_up()
        self._restore()
        self._client = self._make_client()
        self._client.connect_async(self.config.broker.host, self.config.broker.port, keepalive=15)
        self._client.loop_start()
        self._worker = threading.Thread(target=self._work, name="meddx-stream-worker", daemon=True)
        self._worker.start()
        return self

    def _warm_up(self, fs: float = 300.0) -> None:
        """One forward pass before the first message, so that lazy imports and allocator start-up do not
        land on the first patients' windows."""
        rng = np.random.default_rng(0)
        n = round(self.config.window_s * fs)
        t = time.perf_counter()
        self._window_proba(rng.standard_normal((2, n)).astype(np.float32), fs)
        self.stats["warm_up_ms"] = round(1000 * (time.perf_counter() - t))

    def stop(self, drain_s: float = 2.0) -> None:
        deadline = time.monotonic() + drain_s
        while not self._inbox.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self.store.close()

    def run_forever(self) -> None:
        """Block until stopped (Ctrl-C or SIGTERM), then stop cleanly."""
        import signal

        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                time.sleep(0.2)
                if self.error is not None:
                    raise self.error
        except KeyboardInterrupt:
            pass
        finally:
            self.stop(drain_s=0)

    # -- restore -------------------------------------------------------------
    def _restore(self) -> None:
        cfg = self.config
        self.states = self.store.device_states()
        for key, st in self.states.items():
            hop = round(cfg.hop_s * st.fs)
            start = (st.last_window + 1) * hop
            samples, base = self.store.segment_samples(*key, st.segment, start)
            buf = _Buffer(st.segment, self.store.chunk_start_time(*key, st.segment), st.fs, base=base, samples=samples,
                          next_window=st.last_window + 1, last_sent_at=self.store.last_chunk_sent_at(*key))
            self.buffers[key] = buf
        for alert in self.store.open_alerts():
            self.alerts.restore_open(alert["device_id"], alert["signal"], alert["rule"])
        from meddx.trust.drift import DriftMonitor

        self.drift = {key: DriftMonitor.from_dict(state) for key, state in self.store.drift_states().items()}
        self.stats["restored_devices"] = len(self.states)

    # -- the worker ------------------------------------------------------------
    def _work(self) -> None:
        first_pass = True
        while not self._stop.is_set():
            try:
                if first_pass and self.connected.wait(0.1):
                    self._republish()
                    first_pass = False
                batch = self._drain()
                self._mark_published()
                if batch:
                    self._handle(batch)
            except Exception as exc:  # noqa: BLE001 - a bug or a full disk must not silently stop the runner
                self.stats["worker_errors"] += 1
                log.exception("stream worker error: %s", exc)
                self._recover()
                time.sleep(0.5)

    def _recover(self) -> None:
        """After a failed batch: forget in-memory state, rebuild it from the store, and reconnect so the
        broker redelivers every message of the batch that was never acknowledged."""
        try:
            self.states.clear()
            self.buffers.clear()
            self._restore()
            self._client.reconnect()
        except Exception as exc:  # noqa: BLE001 - the reconnect loop will try again
            log.warning("recovery after a worker error failed: %s", exc)

    def _drain(self) -> list[tuple[str, bytes, int, int, float]]:
        try:
            items = [self._inbox.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(items) < self.config.max_batch:
            remaining = deadline - time.monotonic()
            try:
                items.append(self._inbox.get(timeout=max(remaining, 0)) if remaining > 0 else self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _mark_published(self) -> None:
        keys = []
        while True:
            try:
                mid = self._published.get_nowait()
            except queue.Empty:
                break
            key = self._pending.pop(mid, None)
            if key is not None:
                keys.append(key)
        if keys:
            with self.store.transaction():
                self.store.mark_published(keys, time.time())
            self.stats["published"] += len(keys)

    def _republish(self) -> None:
        rows = self.store.unpublished()
        for body in rows:
            self._publish_prediction(body)
        if rows:
            log.info("republished %d predictions stored before a restart", len(rows))
            self.stats["republished"] += len(rows)

    def _accept(self, topic: str, payload: bytes, received: float) -> Any:
        """Store one message inside the open transaction; ``(chunk, its segment's buffer)`` when it extends
        a stream, else None."""
        if topic.endswith("/ack"):
            self._acknowledge(topic, payload)
            return None
        try:
            chunk = decode(payload, topic)
        except MessageError as exc:
            self.store.add_dead_letter(topic, payload, f"malformed: {exc}")
            self.stats["dead_letters"] += 1
            return None
        key = (chunk.device_id, chunk.signal)
        st = self.states.get(key)
        if st is not None and chunk.seq < st.next_seq:
            if self.store.has_chunk(*key, chunk.seq):
                self.stats["duplicates"] += 1
            else:
                self.store.add_dead_letter(topic, payload, f"out of order: seq {chunk.seq} arrived after seq "
                                           f"{st.next_seq - 1}; its gap was already reported")
                self.stats["dead_letters"] += 1
            return None
        new_segment = st is None or chunk.seq > st.next_seq or chunk.fs != st.fs
        if st is not None and chunk.seq > st.next_seq:
            self.store.add_gap(*key, st.next_seq, chunk.seq - 1)
            self.stats["gaps"] += 1
        if new_segment:
            st = DeviceState(chunk.seq, chunk.seq, 0, float(chunk.fs), -1)
            self.states[key] = st
            self.buffers[key] = _Buffer(chunk.seq, float(chunk.start_time), float(chunk.fs))
        assert st is not None
        if self.store.add_chunk(chunk, st.segment, st.offset, received):
            self.stats["chunks"] += 1
            self.stats["samples"] += chunk.n
        st.offset += chunk.n
        st.next_seq = chunk.seq + 1
        # the buffer of *this* chunk's segment: a later chunk of the same batch may open a new one
        return chunk, self.buffers[key]

    def _acknowledge(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            alert_id, by = int(body["alert_id"]), str(body.get("by") or "unknown")
        except (ValueError, TypeError, KeyError) as exc:
            self.store.add_dead_letter(topic, payload, f"malformed acknowledgement: {exc!r}; expected "
                                       '{"alert_id": N, "by": "name"}')
            self.stats["dead_letters"] += 1
            return
        if self.store.acknowledge(alert_id, by):
            self.stats["acknowledged"] += 1

    def _handle(self, batch: list[tuple[str, bytes, int, int, float]]) -> None:
        with self.store.transaction():
            accepted = [c for c in (self._accept(t, p, r) for t, p, _, _, r in batch) if c is not None]
        for _, _, mid, qos, _ in batch:  # committed: now the broker may forget them
            if qos > 0:
                self._client.ack(mid, qos)
        self.stats["messages"] += len(batch)
        windows = []
        for chunk, buf in accepted:
            if chunk.signal not in self.config.signals:
                self.stats["stored_only_chunks"] += 1
                continue
            key = (chunk.device_id, chunk.signal)
            buf.append(chunk.samples)
            buf.last_sent_at = chunk.sent_at
            win, hop = round(self.config.window_s * buf.fs), round(self.config.hop_s * buf.fs)
            for index, start, x in buf.windows(win, hop):
                windows.append((key, buf, index, start, x))
        if windows:
            self._classify(windows)

    def _classify(self, windows: list[tuple[tuple[str, str], _Buffer, int, int, np.ndarray]]) -> None:
        names = list(self.model.class_names)
        by_shape: dict[tuple[float, int], list[int]] = defaultdict(list)
        for i, (_, buf, _, _, x) in enumerate(windows):
            by_shape[(buf.fs, x.size)].append(i)
        quality: list[str] = [OK] * len(windows)
        probs: list[dict[str, float] | None] = [None] * len(windows)
        oods: list[dict[str, Any] | None] = [None] * len(windows)
        for (fs, _), idx in by_shape.items():
            stack = np.stack([windows[i][4] for i in idx])
            verdicts = self.config.quality.check(stack, fs)
            good = [j for j, v in enumerate(verdicts) if v == OK]
            for j, v in enumerate(verdicts):
                quality[idx[j]] = v
            if good:
                p, verdict = self._window_proba_ood(stack[good], fs)
                for k, (j, row) in enumerate(zip(good, np.asarray(p), strict=True)):
                    probs[idx[j]] = {n: round(float(v), 5) for n, v in zip(names, row, strict=True)}
                    oods[idx[j]] = verdict[k] if verdict else None
        rows, events = [], []
        touched: set[tuple[str, str]] = set()
        for (key, buf, index, start, x), q, p, ood in zip(windows, quality, probs, oods, strict=True):
            t_start = buf.t0 + start / buf.fs
            t_end = t_start + x.size / buf.fs
            label = max(p, key=p.get) if p else "poor-signal"
            rows.append((*key, buf.segment, index, t_start, t_end, label, p, q, self.config.model_name,
                         buf.last_sent_at, ood))
            events += self.alerts.update(*key, t_start, t_end, p, q)
            if ood is not None and index % max(1, round(self.config.window_s / self.config.hop_s)) == 0:
                event = self._update_drift(key, ood, t_start, t_end)
                touched.add(key)
                if event is not None:
                    events.append(event)
        with self.store.transaction():
            self.store.add_predictions(rows)
            alert_ids = [self.store.raise_alert(e) if e.kind == "raised" else self.store.clear_alert(e)
                         for e in events]
            for key in touched:
                self.store.save_drift(*key, self.drift[key].to_dict())
        self.stats["predictions"] += len(rows)
        self.stats["poor_quality"] += sum(q != OK for q in quality)
        self.stats["ood_flagged"] += sum(bool(o and o.get("flagged")) for o in oods)
        for row in rows:
            body = prediction_message((*row[:7], json.dumps(row[7]) if row[7] else None, *row[8:12]))
            self._publish_prediction(body)
        for event, alert_id in zip(events, alert_ids, strict=True):
            self._publish_alert(event, alert_id)

    def _window_proba_ood(self, windows: np.ndarray, fs: float) -> tuple[np.ndarray, list[dict[str, Any]] | None]:
        """The window probabilities and, for a model with an OOD gate, one verdict per window."""
        both = getattr(self.model, "predict_window_proba_ood", None)
        if both is not None:
            return both(windows, fs)
        return self._window_proba(windows, fs), None

    def _drift_monitor(self, key: tuple[str, str]) -> Any:
        """The device stream's monitor; a new one starts from the model gate's flag rate and validation
        window scores (thresholds simulated once per runner, then copied; see
        :meth:`meddx.signals.ood.SignalGate.drift_monitor`)."""
        from meddx.trust.drift import DriftMonitor

        monitor = self.drift.get(key)
        if monitor is None:
            if self._drift_template is None:
                gate = getattr(self.model, "ood_gate", None)
                if hasattr(gate, "drift_monitor"):  # thresholds from replays of validation records' windows
                    self._drift_template = gate.drift_monitor().to_dict()
                else:
                    p0 = float(getattr(gate, "flag_rate", 0.05))
                    reference = (getattr(gate, "reference", None) or {}).get("windows")
                    self._drift_template = DriftMonitor.create(p0, reference).to_dict()
            monitor = self.drift[key] = DriftMonitor.from_dict(json.loads(json.dumps(self._drift_template)))
        return monitor

    def _update_drift(self, key: tuple[str, str], ood: dict[str, Any], t_start: float,
                      t_end: float) -> AlertEvent | None:
        """Feed one window's OOD verdict to the device's monitor; the ``input-drift`` alert when it fires."""
        monitor = self._drift_monitor(key)
        was = bool(monitor.alarm)
        state = monitor.update(bool(ood.get("flagged")), ood.get("score"))
        if was or not state["alarm"]:
            return None
        self.stats["drift_alarms"] += 1
        log.warning("input drift on %s/%s: %s", key[0], key[1], state["alarm_reason"])
        return AlertEvent("raised", key[0], key[1], DRIFT_RULE, DRIFT_SEVERITY, t_start, t_end, None,
                          extra={"reason": state["alarm_reason"], "drift": state})

    def _window_proba(self, windows: np.ndarray, fs: float) -> np.ndarray:
        """The model's window probabilities (its live-window head when it has one)."""
        predict = getattr(self.model, "predict_window_proba", None) or self.model.predict_proba
        return predict(windows, fs)

    def _publish_prediction(self, body: dict[str, Any]) -> None:
        body = {**body, "published_at": time.time()}
        topic = PREDICTION_TOPIC.format(device=body["device_id"], signal=body["signal"])
        info = self._client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)
        self._pending[info.mid] = (body["device_id"], body["signal"], body["segment"], body["window"])

    def _publish_alert(self, event: AlertEvent, alert_id: int | None) -> None:
        body = {"alert_id": alert_id, "event": event.kind, "device_id": event.device_id, "signal": event.signal,
                "rule": event.rule, "severity": event.severity, "onset_time": event.onset_time,
                "window_end": event.window_end, "probability": event.probability, "published_at": time.time()}
        if event.extra.get("reason"):
            body["reason"] = event.extra["reason"]
        self._client.publish(ALERT_TOPIC.format(device=event.device_id), json.dumps(body), qos=1)
        self.stats[f"alerts_{event.kind}"] += 1
