"""Fixtures for the security tests: the real service (uvicorn on 127.0.0.1) on SQLite and PostgreSQL.

``live`` is one server per test module and backend, started with
:class:`tests.service._server.ServerProcess` on a home with the tiny test model
registered; on PostgreSQL its database is made on the throwaway server of
``tests/storage/conftest.py``. ``live.add_user`` writes an account straight into
the server's database (the login rate limit counts every attempt per name, so
each test uses fresh names), ``live.web_login`` logs in through the login form.
The fixtures of ``tests/service/conftest.py`` (``service``: the app behind a
``TestClient``) are re-exported for the tests that need to reach inside the app.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service._server import ServerProcess, meddx_home
from tests.service.conftest import (  # noqa: F401 - fixtures used by the tests here
    Service,
    _cheap_argon2_session,
    _create_database,
    _drop_database,
    _pg_admin,
    backend,
    make_service,
    module_service,
    postgres_url,
    service,
    trained_run,
)

FOREIGN = "https://evil.example"


@dataclass
class Live:
    """A running server: its URL, home, database URL and backend."""

    server: ServerProcess
    home: Path
    database_url: str
    backend: str
    model: str

    @property
    def url(self) -> str:
        return self.server.url

    def add_user(self, role: str = "clinician", *, prefix: str = "u", one_time: bool = False) -> tuple[str, str]:
        """A new account (fresh name) in the server's database: (username, password). ``one_time``: the password
        is a one-time password the account must replace first."""
        from meddx.storage.db import open_database
        from meddx.storage.users import create_user, set_password

        name = f"{prefix}{secrets.token_hex(4)}"
        engine, sessions = open_database(self.database_url)
        try:
            with sessions() as session:
                user, password = create_user(session, name, role)
                if not one_time:
                    password = f"violet tractor harbour {secrets.token_hex(3)}"
                    set_password(session, user, password)
                session.commit()
        finally:
            engine.dispose()
        assert password
        return name, password

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=60.0, **kwargs)

    def token(self, username: str, password: str) -> str:
        response = httpx.post(self.url + "/api/auth/token", data={"username": username, "password": password},
                              timeout=60.0)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def web_login(self, client: httpx.Client, username: str, password: str) -> str:
        """Log ``client`` in through the login form; return the session cookie's token."""
        csrf = form_csrf(client.get("/login"))
        response = client.post("/login", data={"username": username, "password": password, "csrf": csrf})
        assert response.status_code == 303, response.text
        return str(client.cookies["meddx_session"])


def form_csrf(page: httpx.Response) -> str:
    """The CSRF token in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, trained_run: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    """The real service on 127.0.0.1, on SQLite or PostgreSQL, for this module."""
    from meddx.packaging.registry import read_package, register
    from meddx.storage.db import open_database

    backend_name = str(request.param)
    home = tmp_path_factory.mktemp(f"live-{backend_name}") / "home"
    home.mkdir(parents=True)
    env: dict[str, str] = {}
    admin = None
    if backend_name == "postgresql":
        admin = request.getfixturevalue("_pg_admin")
        url = _create_database(admin, request.getfixturevalue("postgres_url"))
        env["MEDDX_DATABASE_URL"] = url
    else:
        url = f"sqlite:///{home / 'meddx.db'}"
    try:
        with meddx_home(home):
            register(trained_run)
            engine, _ = open_database(url)  # migrated before the server starts
            engine.dispose()
        with ServerProcess(home, batching=False, env=env) as server:
            yield Live(server=server, home=home, database_url=url, backend=backend_name,
                       model=str(read_package(trained_run)["name"]))
    finally:
        if admin is not None:
            _drop_database(admin, url)
