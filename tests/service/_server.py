"""Run the real service (uvicorn) in a subprocess, for browser tests and the load benchmark.

:func:`prepare_home` fills a ``MEDDX_HOME`` with a registered model and a
clinician account with a known password; :class:`ServerProcess` starts
``meddx.service.app.serve`` on a free 127.0.0.1 port in a child process with
that home, waits for ``/api/health`` and stops it again (terminate, then kill).

    home = prepare_home(tmp / "home", model_run=train_tiny_model(tmp / "work"))
    with ServerProcess(home.home, batching=True) as server:
        httpx.get(server.url + "/api/health")
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLINICIAN = "doc"
PASSWORD = "a-long-test-password-1"


@contextlib.contextmanager
def meddx_home(home: Path) -> Iterator[None]:
    """Set ``MEDDX_HOME`` in this process while the block runs (the registry and keys live there)."""
    old = os.environ.get("MEDDX_HOME")
    os.environ["MEDDX_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MEDDX_HOME", None)
        else:
            os.environ["MEDDX_HOME"] = old


CHEST_XRAY = {"description": "paediatric frontal chest radiographs", "kind": "image", "dicom_modalities": ["CR", "DX"],
              "body_parts": ["CHEST", "THORAX", "LUNG"], "photometric": ["MONOCHROME1", "MONOCHROME2"],
              "channels": 1}
"""The intended input the test models declare: a chest X-ray model's (as the PneumoniaMNIST package does)."""


def declare_intended_input(run: Path, intended: dict[str, Any] | None = None) -> Path:
    """Make ``run``'s package declare ``intended`` (default :data:`CHEST_XRAY`), so the input check runs for real."""
    from meddx.packaging.registry import read_package, write_package

    package = read_package(run)
    package["intended_input"] = dict(intended or CHEST_XRAY)
    write_package(run, package)
    return run


def train_tiny_model(work: Path, *, size: int = 16, epochs: int = 2) -> Path:
    """A cnn-tiny package trained in seconds on generated PNGs (with dropout, so MC-dropout works), declared a
    chest X-ray model (CR/DX) so a CT slice is rejected; training fits its OOD gate."""
    from meddx.training import TrainConfig, train

    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:  # run from a bench script, say
        sys.path.insert(0, repo)
    from tests._factories import make_labelled_pngs

    data = make_labelled_pngs(work / "pngs", n=32, size=size)
    # calibration pinned (as in tests/service/conftest.py): choosing one by cross-validation on a validation
    # split of 4 images scores every candidate inf, and the registry refuses a package.json holding inf
    config = TrainConfig(data=str(data), model="cnn-tiny", epochs=epochs, threads=1, drop_rate=0.2,
                         calibration="temperature", out=str(work / "run"))
    return declare_intended_input(train(config, progress=False))


@dataclass(frozen=True)
class Home:
    home: Path
    database_url: str
    model: str
    username: str = CLINICIAN
    password: str = PASSWORD


def prepare_home(home: Path, model_run: Path, *, username: str = CLINICIAN, password: str = PASSWORD,
                 one_time: bool = False) -> Home:
    """Register ``model_run`` in ``home``'s registry and create a clinician with ``password`` (as a
    one-time password, which the account must replace at first login, when ``one_time``)."""
    from meddx.packaging.registry import register
    from meddx.storage.db import open_database
    from meddx.storage.models import User
    from meddx.storage.users import create_user

    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'meddx.db'}"
    with meddx_home(home):
        target = register(model_run)
        engine, sessions = open_database(url)
        try:
            with sessions() as session:
                if session.query(User).filter_by(username=username).one_or_none() is None:
                    user, _ = create_user(session, username, "clinician", password=password)
                    user.must_change_password = one_time
                    session.commit()
        finally:
            engine.dispose()
    name = json.loads((target / "package.json").read_text(encoding="utf-8"))["name"]
    return Home(home=home, database_url=url, model=name, username=username, password=password)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The server did not come up (its log is in the message)."""


class ServerProcess:
    """``meddx.service.app.serve`` in a child process on a free port; a context manager.

    ``env`` adds to (and overrides) this process's environment; ``MEDDX_HOME``
    and ``MEDDX_BATCHING`` are set from the arguments. The server's output goes
    to ``log`` (default ``<home>/server.log``).
    """

    def __init__(self, home: Path, *, batching: bool | None = None, env: Mapping[str, str] | None = None,
                 log: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.home = Path(home)
        self.batching = batching
        self.extra_env = dict(env or {})
        self.log_path = log or self.home / "server.log"
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("MEDDX_DATABASE_URL", "MEDDX_MODELS", "MEDDX_DEFAULT_MODEL", "MEDDX_BATCHING"):
            env.pop(name, None)  # the home's SQLite file and registry, as prepare_home made them
        env.update(self.extra_env)
        env["MEDDX_HOME"] = str(self.home)
        if self.batching is not None:
            env["MEDDX_BATCHING"] = "1" if self.batching else "0"
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self) -> ServerProcess:
        last = ""
        for _ in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            code = f"from meddx.service.app import serve; serve('127.0.0.1', {self.port})"
            self.process = subprocess.Popen([sys.executable, "-c", code], env=self.environment(),
                                            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.home))
            try:
                self._wait_healthy()
                return self
            except ServerError as exc:
                last = str(exc)
                self.stop()
                if "address already in use" not in last.lower():
                    break
        raise ServerError(last)

    def _wait_healthy(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerError(f"no /api/health within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
