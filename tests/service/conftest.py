"""Fixtures for the clinician service tests: apps on SQLite and PostgreSQL, a tiny registered model, users.

A tiny ``cnn-tiny`` model is trained once per test session (2 epochs on 32
generated 16 px PNGs; training fits its OOD gate), declared a chest X-ray model
(DICOM CR/DX of the chest, so a CT slice is rejected) and registered into the home of every app built here, so
each app is independent: its own ``MEDDX_HOME`` (database file, encrypted
blobs, key files, upload folder) and, on PostgreSQL, its own database made with
``CREATE DATABASE`` on the throwaway server of ``tests/storage/conftest.py``
(under ``CI`` a missing PostgreSQL fails those variants instead of skipping).

``service`` is one app per test module and backend, with an admin, a clinician
and an engineer already logged in (``svc.headers("clinician")``);
``make_service(**settings)`` builds a fresh one for tests that change state that
others must not see (tampering, settings).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from meddx.storage import users as users_module
from tests._factories import make_labelled_pngs
from tests.service._server import declare_intended_input
from tests.storage.conftest import _create_database, _drop_database, _pg_admin, postgres_url  # noqa: F401

ROLES = ("admin", "clinician", "engineer")
# Environment the service reads; every app here gets it from its own temporary home.
_ENV = ("MEDDX_DATABASE_URL", "MEDDX_ENCRYPTION_KEY", "MEDDX_PSEUDONYM_KEY", "MEDDX_TOKEN_SECRET", "MEDDX_MODELS",
        "MEDDX_DEFAULT_MODEL", "MEDDX_BATCHING", "MEDDX_COOKIE_SECURE")


@pytest.fixture(scope="session", autouse=True)
def _cheap_argon2_session() -> Iterator[None]:
    """Hash passwords with argon2id's cheapest parameters (the real ones cost ~0.1 s per hash)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users_module, "_HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model package (run folder), made once per session."""
    from meddx.training import TrainConfig, train

    base = tmp_path_factory.mktemp("service-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDX_HOME", str(base / "home"))
        mp.setenv("MEDDX_CACHE_DIR", str(base / "cache"))
        data = make_labelled_pngs(base / "scans", n=32, size=16)
        # calibration pinned: the tests check the calibrated output of a known calibrator
        run = train(TrainConfig(data=str(data), model="cnn-tiny", epochs=2, out=str(base / "run"), drop_rate=0.2,
                                threads=1, calibration="temperature"), progress=False)
        return declare_intended_input(run)


@dataclass
class Service:
    """One running app: its client, home, database and logged-in users."""

    app: Any
    client: TestClient
    home: Path
    url: str
    backend: str
    model: str
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    def set_env(self, mp: pytest.MonkeyPatch) -> None:
        """Point the process environment at this app (the registry and the CLI read it)."""
        mp.setenv("MEDDX_HOME", str(self.home))
        for name in _ENV:
            mp.delenv(name, raising=False)
        if self.backend == "postgresql":
            mp.setenv("MEDDX_DATABASE_URL", self.url)

    @contextmanager
    def active(self) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            self.set_env(mp)
            yield

    def add_user(self, username: str, role: str, *, one_time: bool = False) -> str:
        """Create an account directly in the database; return its password (a one-time one when asked:
        such an account must set its own before it can use anything else)."""
        from meddx.storage.users import create_user, set_password

        with self.ctx.sessions() as session:
            user, password = create_user(session, username, role)
            if not one_time:
                password = f"correct horse battery staple {len(username)}x"
                set_password(session, user, password)
            session.commit()
        assert password
        self.passwords[username] = password
        return password

    def login(self, username: str, password: str | None = None) -> str:
        response = self.client.post("/api/auth/token",
                                    data={"username": username, "password": password or self.passwords[username]})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        self.tokens[username] = token
        return token

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    def files(self, *folders: str) -> set[Path]:
        """Every file under the home (or under the given sub-folders of it)."""
        roots = [self.home / f for f in folders] if folders else [self.home]
        return {p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}

    def raw_engine(self) -> Engine:
        """A separate engine on the app's database (what someone with database access holds)."""
        from meddx.storage.db import make_engine

        return make_engine(self.url)

    def database_text(self) -> bytes:
        """Every row of every table, as text: what a database dump would show."""
        from meddx.storage.models import Base

        engine = self.raw_engine()
        chunks = []
        try:
            with engine.connect() as conn:
                for table in Base.metadata.sorted_tables:
                    for row in conn.execute(table.select()):
                        chunks.append(repr(tuple(row)).encode())
        finally:
            engine.dispose()
        return b"\n".join(chunks)


@contextmanager
def build_service(trained: Path, home: Path, backend: str, request: pytest.FixtureRequest,
                  **settings: Any) -> Iterator[Service]:
    """An app on ``backend`` in ``home`` with the tiny model registered and three logged-in users."""
    from meddx.packaging.registry import read_package, register
    from meddx.service.app import create_app
    from meddx.service.context import Settings

    admin: Engine | None = None
    if backend == "postgresql":
        admin = request.getfixturevalue("_pg_admin")
        url = _create_database(admin, request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{home / 'meddx.db'}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            home.mkdir(parents=True, exist_ok=True)
            mp.setenv("MEDDX_HOME", str(home))
            for name in _ENV:
                mp.delenv(name, raising=False)
            if backend == "postgresql":
                mp.setenv("MEDDX_DATABASE_URL", url)
            register(trained)
            app = create_app(Settings.from_env(**settings))
            assert app.state.ctx.settings.database_url == url
            with TestClient(app) as client:
                svc = Service(app=app, client=client, home=home, url=url, backend=backend,
                              model=str(read_package(trained)["name"]))
                for role in ROLES:
                    svc.add_user(role, role)
                    svc.login(role)
                assert client.get("/api/models", headers=svc.headers("admin")).status_code == 200  # loads it
                yield svc
    finally:
        if admin is not None:
            _drop_database(admin, url)


@contextmanager
def serving(trained: Path, runs: dict[str, Path], home: Path, request: pytest.FixtureRequest
            ) -> Iterator[tuple[Service, dict[str, str]]]:
    """:func:`build_service` (SQLite) with the packages in ``runs`` registered as well, and a second clinician
    ``outsider`` logged in; yields the service and each run's registered name, by the key given."""
    from meddx.packaging.registry import read_package, register

    with build_service(trained, home, "sqlite", request) as svc:
        names = {}
        for key, run in runs.items():
            register(run)
            names[key] = str(read_package(run)["name"])
        svc.add_user("outsider", "clinician")
        svc.login("outsider")
        yield svc, names


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run."""
    return str(request.param)


@pytest.fixture(scope="module")
def module_service(backend: str, trained_run: Path, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Iterator[Service]:
    with build_service(trained_run, tmp_path_factory.mktemp(f"svc-{backend}") / "home", backend, request) as svc:
        yield svc


@pytest.fixture
def service(module_service: Service, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The module's app on the current backend, with the environment pointing at it for this test."""
    module_service.set_env(monkeypatch)
    return module_service


@pytest.fixture
def make_service(backend: str, trained_run: Path, tmp_path: Path, request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make_service(**settings)``: a fresh app for this test only (closed and dropped afterwards)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def make(**settings: Any) -> Service:
            home = tmp_path / f"home-{secrets.token_hex(3)}"
            svc = stack.enter_context(build_service(trained_run, home, backend, request, **settings))
            svc.set_env(monkeypatch)
            return svc

        yield make


def png_bytes(size: int = 16, seed: int = 1) -> bytes:
    """A small grey PNG (with a text chunk that must not survive de-identification)."""
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size, size)).astype(np.uint8))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "patient Jane Secret-Doe")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def dicom_bytes(tmp: Path, patient_name: str, patient_id: str, size: int = 16, modality: str = "CR",
                body_part: str | None = "CHEST") -> bytes:
    """A DICOM made by the factory, with PatientName and PatientID set; a chest radiograph (CR) unless told."""
    import numpy as np
    import pydicom

    from tests._factories import write_dicom

    path = write_dicom(tmp / f"study-{secrets.token_hex(3)}.dcm", (np.arange(size * size) % 251).astype(np.uint8)
                       .reshape(size, size), modality=modality)
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID = patient_name, patient_id
    if body_part:
        ds.BodyPartExamined = body_part
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def pg_data_dir(server_url: str) -> Path | None:
    """The throwaway server's data folder (None for an external server)."""
    host = make_url(server_url).query.get("host")
    if not host or os.environ.get("MEDDX_TEST_POSTGRES_URL", "").strip():
        return None
    data = Path(str(host)).parent / "data"
    return data if data.is_dir() else None


def checkpoint(url: str) -> None:
    """Make PostgreSQL write its buffers to the data files (so a file scan sees the rows)."""
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
    finally:
        engine.dispose()
