"""Web hardening (issue 18, lows), against the real server: banner, caching, headers on errors, cookies,
the live monitor's WebSocket and what its answers show.

On the code before the fix: every answer said ``server: uvicorn``; results and
patient lists carried no ``Cache-Control``; a 500 carried no security headers;
the session cookie lacked ``Secure`` when served beyond loopback; ``/ws/monitor``
accepted a page from any Origin; ``/api/stream/monitor`` named the store's path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from meddx.service.app import SECURITY_HEADERS, is_loopback, secure_cookies
from meddx.service.context import Settings
from tests.security.conftest import FOREIGN, Live, Service, bearer, form_csrf
from tests.service._server import ServerProcess, free_port, prepare_home
from tests.service.conftest import png_bytes


def _has_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)


def test_no_server_banner_and_headers_everywhere(live: Live) -> None:
    with live.client() as c:
        for path in ("/api/health", "/login", "/api/me", "/no-such-page", "/static/app.css"):
            response = c.get(path)
            assert "server" not in response.headers, (path, response.headers.get("server"))
            _has_security_headers(response)


def test_patient_data_is_never_cached(live: Live) -> None:
    name, password = live.add_user(prefix="cache")
    token = live.token(name, password)
    with live.client() as c:
        study = c.post("/api/studies", headers=bearer(token), data={"patient_id": "CACHE-1"},
                       files={"file": ("x.png", png_bytes(seed=9), "image/png")})
        assert study.status_code == 201 and study.headers["cache-control"] == "no-store"
        body = study.json()
        paths = [body["links"]["self"], body["links"]["fhir"], body["links"]["preview"], "/api/studies",
                 f"/api/patients/{body['patient']}/studies", "/api/me", "/api/stream/monitor"]
        for path in paths:
            response = c.get(path, headers=bearer(token))
            assert response.status_code == 200, (path, response.text)
            assert response.headers.get("cache-control") == "no-store", path
    with live.client() as browser:
        live.web_login(browser, name, password)
        page = browser.get(f"/results/{body['result_id']}")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert browser.get("/studies").headers["cache-control"] == "no-store"
        assert browser.get("/static/app.css").headers["cache-control"] == "max-age=3600"  # no patient data


def test_server_errors_carry_the_security_headers(service: Service) -> None:
    def boom() -> None:
        raise RuntimeError("a secret detail of the failure")

    if not any(getattr(r, "path", "") == "/api/test-boom" for r in service.app.routes):
        service.app.add_api_route("/api/test-boom", boom)
    client = TestClient(service.app, raise_server_exceptions=False)
    response = client.get("/api/test-boom")
    assert response.status_code == 500
    assert "secret detail" not in response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers["cache-control"] == "no-store"


def test_the_stream_monitor_shows_no_server_path(live: Live) -> None:
    name, password = live.add_user(prefix="mon")
    token = live.token(name, password)
    with live.client() as c:
        answer = c.get("/api/stream/monitor", headers=bearer(token))
        assert answer.status_code == 200 and answer.json()["store"] == "not started"
        assert str(live.home) not in answer.text and "stream.db" not in answer.text
    with live.client() as browser:
        live.web_login(browser, name, password)
        page = browser.get("/monitor")
        assert page.status_code == 200 and str(live.home) not in page.text and "stream.db" not in page.text


def test_the_monitor_websocket_refuses_other_sites_and_ended_sessions(live: Live) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    name, password = live.add_user(prefix="ws")
    url = live.url.replace("http://", "ws://") + "/ws/monitor"
    with live.client() as browser:
        cookie = live.web_login(browser, name, password)
        jar = {"Cookie": f"meddx_session={cookie}"}
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, origin=FOREIGN, additional_headers=jar, open_timeout=30) as ws:  # type: ignore[arg-type]
                ws.recv(timeout=10)
        assert refused.value.response.status_code == 403
        with connect(url, origin=live.url, additional_headers=jar, open_timeout=30) as ws:  # type: ignore[arg-type]
            snapshot = json.loads(ws.recv(timeout=30))
            assert snapshot["store"] == "not started" and str(live.home) not in json.dumps(snapshot)
        assert browser.post("/logout", data={"csrf": form_csrf(browser.get("/"))}).status_code == 303
        with pytest.raises(InvalidStatus):  # the ended session opens no socket
            with connect(url, origin=live.url, additional_headers=jar, open_timeout=30) as ws:  # type: ignore[arg-type]
                ws.recv(timeout=10)


# --- Secure cookies outside loopback ----------------------------------------------------------------------


def test_secure_cookies_are_the_default_beyond_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDDX_COOKIE_SECURE", raising=False)
    base = Settings(home=tmp_path, database_url="sqlite://")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host) and not secure_cookies(host, base).cookie_secure
    for host in ("0.0.0.0", "::", "10.1.2.3", "meddx.hospital.example"):
        assert not is_loopback(host) and secure_cookies(host, base).cookie_secure, host
    monkeypatch.setenv("MEDDX_COOKIE_SECURE", "0")  # the operator's explicit choice stands
    assert not secure_cookies("0.0.0.0", base).cookie_secure


class _AllAddresses(ServerProcess):
    """The server bound to every address (0.0.0.0), reached through 127.0.0.1."""

    def start(self) -> ServerProcess:
        self.port = free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        code = f"from meddx.service.app import serve; serve('0.0.0.0', {self.port})"
        self.process = subprocess.Popen([sys.executable, "-c", code], env=self.environment(), stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=str(self.home))
        self._wait_healthy()
        return self


def _cookie_headers(server: ServerProcess, username: str, password: str) -> tuple[str, str]:
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=60.0) as c:
        page = c.get("/login")
        pre_login = page.headers["set-cookie"]
        c.cookies.set("meddx_csrf", c.cookies["meddx_csrf"])
        login = c.post("/login", data={"username": username, "password": password, "csrf": form_csrf(page)})
        assert login.status_code == 303, login.text
        session = next(v for v in login.headers.get_list("set-cookie") if v.startswith("meddx_session="))
        return pre_login, session


def test_the_real_server_sets_secure_cookies_beyond_loopback(trained_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDDX_COOKIE_SECURE", raising=False)
    home = prepare_home(tmp_path / "home", trained_run)
    with ServerProcess(home.home, batching=False) as local:
        pre_login, session = _cookie_headers(local, home.username, home.password)
        assert "secure" not in pre_login.lower() and "secure" not in session.lower()  # plain http on loopback works
    with _AllAddresses(home.home, batching=False) as exposed:
        page = httpx.get(exposed.url + "/login", timeout=60.0)
        assert "; secure" in page.headers["set-cookie"].lower()
        assert "httponly" in page.headers["set-cookie"].lower()
