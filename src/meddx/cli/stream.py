"""``meddx stream``: classify device streams over MQTT in real time, replay recordings as devices."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Real-time device streams over MQTT: run the classifier, simulate devices, manage alerts.",
                  no_args_is_help=True)


def _store_path(store: Path | None) -> Path:
    from meddx.config import home_dir

    return store or home_dir() / "stream" / "stream.db"


@app.command("run")
def run(
    model: str = typer.Option(..., help="Signal model package (run folder or NAME[:VERSION])."),
    broker: str = typer.Option(None, help="mqtt://HOST:PORT of a running broker (Mosquitto). "
                               "Default: start the embedded broker on --port."),
    port: int = typer.Option(1883, help="Port of the embedded broker (when --broker is not given)."),
    store: Path = typer.Option(None, help="SQLite store (default $MEDDX_HOME/stream/stream.db)."),
    window_s: float = typer.Option(None, help="Window length in seconds (default: the length the package's "
                                   "live-window head was fitted for, else 7)."),
    hop_s: float = typer.Option(1.0, help="A new window every HOP_S seconds (overlap = window - hop)."),
    client_id: str = typer.Option("meddx-runner", help="MQTT client id (the persistent session's name)."),
    simulate: int = typer.Option(0, help="Also replay this many virtual devices (one command runs everything)."),
    source: str = typer.Option("cinc", help="Recordings the simulated devices replay: cinc | mitbih | ppg | af-onset."),
    speed: float = typer.Option(1.0, help="Replay speed of the simulated devices (1 = real time)."),
    duration: float = typer.Option(0.0, help="Stop after this many seconds (0: run until Ctrl-C)."),
    durable: bool = typer.Option(False, help="fsync every commit (survives power loss, slower)."),
    af_threshold: float = typer.Option(0.5, help="AF alert: AF probability at or above this ..."),
    af_windows: int = typer.Option(2, help="... in this many consecutive windows."),
) -> None:
    """Subscribe to meddx/devices/+/+, store chunks, classify windows, publish predictions and alerts."""
    import logging
    import threading
    import time

    from meddx.stream.broker import BrokerAddress, EmbeddedBroker, parse_broker
    from meddx.stream.alerts import af_rules
    from meddx.stream.runner import RunnerConfig, StreamRunner, live_window_s, load_window_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    embedded = None
    if broker is None:
        embedded = EmbeddedBroker("127.0.0.1", port).start()
        address = embedded.address
        typer.echo(f"embedded MQTT broker on {address.url}", err=True)
    else:
        address = parse_broker(broker)
    window_model = load_window_model(model)
    window_s = live_window_s(window_model, window_s)
    config = RunnerConfig(broker=address, store=_store_path(store), window_s=window_s, hop_s=hop_s,
                          client_id=client_id, model_name=str(model), durable=durable,
                          rules=af_rules(af_threshold, af_windows))
    runner = StreamRunner(config, window_model).start()
    typer.echo(f"runner: store {config.store}, windows {window_s:g} s every {hop_s:g} s", err=True)
    if simulate:
        from meddx.stream.simulate import Simulator, make_devices

        sim = Simulator(make_devices(simulate, source), BrokerAddress(address.host, address.port), speed=speed)
        signal_s = (duration or 24 * 3600.0) * speed  # --duration is wall time; the simulator counts signal time
        threading.Thread(target=sim.run, args=(signal_s,), daemon=True).start()
    try:
        if duration:
            time.sleep(duration)
            runner.stop(drain_s=10)
        else:
            runner.run_forever()
    finally:
        typer.echo(json.dumps(dict(runner.stats)), err=True)
        if embedded is not None:
            embedded.stop()


@app.command("simulate")
def simulate(
    devices: int = typer.Option(10, help="Number of virtual devices."),
    speed: float = typer.Option(1.0, help="Replay speed (1 = real time, 10 = ten times faster)."),
    duration: float = typer.Option(60.0, help="Seconds of signal each device sends."),
    source: str = typer.Option("cinc", help="cinc | mitbih | ppg | af-onset."),
    broker: str = typer.Option("mqtt://127.0.0.1:1883", help="Broker to publish to."),
    chunk_s: float = typer.Option(1.0, help="Seconds of signal per message."),
    form: str = typer.Option("binary", help="Payload form: binary | json."),
    seed: int = typer.Option(0, help="Seed of the record assignment."),
    manifest: Path = typer.Option(None, help="Write what was published and acknowledged (JSON)."),
    unseen_by: str = typer.Option(None, help="Replay only records this model package was neither trained "
                                             "nor validated on (an honest alert-delay test)."),
) -> None:
    """Replay real recordings as DEVICES virtual devices (QoS 1); print what the broker acknowledged."""
    from meddx.stream.broker import parse_broker
    from meddx.stream.simulate import Simulator, make_devices, records_seen_by, write_manifest

    exclude = records_seen_by(unseen_by) if unseen_by else set()
    sim = Simulator(make_devices(devices, source, seed=seed, exclude=exclude), parse_broker(broker), speed=speed,
                    chunk_s=chunk_s, form=form)
    result = sim.run(duration)
    if manifest is not None:
        write_manifest(result, manifest)
    typer.echo(json.dumps({k: v for k, v in result.to_json().items() if k not in ("onsets", "records")}))


@app.command("fit-head")
def fit_head(
    model: str = typer.Argument(..., help="Signal model package (run folder or name[:version])."),
    window_s: float = typer.Option(7.0, help="Window length the runner will use (s)."),
    hop_s: float = typer.Option(2.0, help="Step between the validation windows the head learns from (s)."),
    data: str = typer.Option(None, help="Where the package's records are (default: its training source)."),
) -> None:
    """Fit a live-window head (model probabilities + RR irregularity) on the package's validation records."""
    from meddx.signals.window_head import fit_window_head

    typer.echo(json.dumps(fit_window_head(model, window_s=window_s, hop_s=hop_s, data=data), indent=1))


@app.command("status")
def status(store: Path = typer.Option(None, help="SQLite store of the runner.")) -> None:
    """Counts of stored chunks, predictions, alerts, gaps and dead letters."""
    from meddx.stream.store import StreamStore

    s = StreamStore(_store_path(store))
    typer.echo(json.dumps({"counts": s.counts(), "open_alerts": len(s.open_alerts()),
                           "gaps": s.gaps()[-10:], "dead_letters": s.dead_letters(10)}, indent=1))


@app.command("alerts")
def alerts(
    store: Path = typer.Option(None, help="SQLite store of the runner."),
    state: str = typer.Option(None, help="open | cleared (default: all)."),
    limit: int = typer.Option(50, help="Most recent alerts to list."),
) -> None:
    """List alerts (newest first) as JSON."""
    from meddx.stream.store import StreamStore

    typer.echo(json.dumps(StreamStore(_store_path(store)).alerts(state=state, limit=limit), indent=1))


@app.command("ack")
def ack(
    alert_id: int = typer.Argument(..., help="Alert id (see `meddx stream alerts`)."),
    by: str = typer.Option(..., help="Who acknowledges it."),
    broker: str = typer.Option(None, help="Send it over MQTT to the runner instead of writing the store."),
    store: Path = typer.Option(None, help="SQLite store of the runner."),
) -> None:
    """Acknowledge an alert."""
    from meddx.exceptions import ConfigError

    if broker:
        import paho.mqtt.publish as publish

        from meddx.stream.broker import parse_broker
        from meddx.stream.messages import ACK_TOPIC
        from meddx.stream.store import StreamStore

        address = parse_broker(broker)
        rows = [a for a in StreamStore(_store_path(store)).alerts(limit=100_000) if a["id"] == alert_id]
        device = rows[0]["device_id"] if rows else "unknown"
        publish.single(ACK_TOPIC.format(device=device), json.dumps({"alert_id": alert_id, "by": by}), qos=1,
                       hostname=address.host, port=address.port)
        typer.echo(f"sent acknowledgement of alert {alert_id}")
        return
    from meddx.stream.store import StreamStore

    s = StreamStore(_store_path(store))
    with s.transaction():
        done = s.acknowledge(alert_id, by)
    if not done:
        raise ConfigError(f"alert {alert_id} does not exist or was already acknowledged", field="alert_id",
                          hint="List them: meddx stream alerts")
    typer.echo(f"acknowledged alert {alert_id}")
