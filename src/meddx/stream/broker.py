"""MQTT brokers: an embedded in-process broker (amqtt) by default, Mosquitto for deployments.

``meddx stream run`` with no ``--broker`` starts :class:`EmbeddedBroker` in a
background thread, so one command runs everything on a laptop. It keeps
sessions in memory only; for QoS 1 delivery that survives a broker restart, use
Mosquitto with persistence (:class:`Mosquitto` starts one with the settings the
tests and benchmarks use: persistent sessions, no in-flight or queue cap).
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from meddx.exceptions import ConfigError


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_broker(url: str) -> BrokerAddress:
    """``mqtt://host:port`` (or ``host:port``, ``host``) as an address."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in {"mqtt", "tcp"} or not parsed.hostname:
        raise ConfigError(f"broker {url!r} is not mqtt://HOST:PORT", field="broker",
                          hint="e.g. --broker mqtt://127.0.0.1:1883 (TLS brokers: put a local bridge in front)")
    return BrokerAddress(parsed.hostname, parsed.port or 1883)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"no MQTT broker answers on {host}:{port}", field="broker",
                                  hint="Start one (mosquitto -p PORT) or omit --broker to use the embedded one") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """amqtt running on its own event loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.address = BrokerAddress(host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        from amqtt.broker import Broker

        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop

            async def boot() -> None:
                config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.address.host}:{self.address.port}"}}}
                self._broker = Broker(config)
                await self._broker.start()

            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="meddx-mqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        if errors:
            raise ConfigError(f"the embedded MQTT broker did not start on {self.address.url}: {errors[0]}",
                              field="port", hint="Choose another --port, or point --broker at a running broker")
        wait_for_port(self.address.host, self.address.port, timeout)
        return self

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


MOSQUITTO_CONF = """\
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence {persistence}
persistence_location {folder}/
autosave_interval 1
max_inflight_messages 1000
max_queued_messages 0
max_queued_bytes 0
log_dest file {folder}/mosquitto.log
"""


def mosquitto_binary() -> str | None:
    """Path of the mosquitto executable (Debian puts it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None)


class Mosquitto:
    """A Mosquitto broker in a child process, with persistent QoS 1 sessions in ``folder``."""

    def __init__(self, folder: str | Path, port: int | None = None, *, persistence: bool = True) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise ConfigError("mosquitto is not installed", field="broker",
                              hint="apt-get install mosquitto (or use the embedded broker)")
        self.binary = binary
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.address = BrokerAddress("127.0.0.1", port or free_port())
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        conf = self.folder / "mosquitto.conf"
        # `user`: started as root, Mosquitto would switch to the `mosquitto` account, which cannot write
        # its persistence file here - and a broker that cannot persist loses queued QoS 1 messages on restart.
        conf.write_text(MOSQUITTO_CONF.format(port=self.address.port, folder=self.folder, user=getpass.getuser(),
                                              persistence="true" if self.persistence else "false"))
        self.process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.address.host, self.address.port)
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), so Mosquitto writes its persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
