"""Render check: open an HTML report in headless Chromium and report what went wrong.

:func:`render_check` starts Chromium headless with a throw-away profile, drives
it over the Chrome DevTools Protocol (CDP) with ``websocket-client``, loads the
page from its ``file://`` URL, and collects what a reader would never see but a
broken page produces: console errors (``console.error``, failed image loads,
blocked resources) and uncaught JavaScript exceptions. It then takes a
full-page PNG screenshot, so a person (or a test) can look at the page as it
rendered. The browser is always killed and its profile deleted, also on error.

:func:`find_chromium` finds the browser: ``MEDDX_CHROMIUM`` (a path or a command
name) when set, else ``chromium``, ``chromium-browser``, ``google-chrome`` (and
``google-chrome-stable``) on ``PATH``. When ``MEDDX_CHROMIUM`` is set but does not
name an executable, nothing else is tried: a wrong explicit setting is reported,
not silently replaced by another browser.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from meddx.exceptions import DataFileNotFoundError, MeddxError

ENV_VAR = "MEDDX_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "Install it with `apt-get install chromium` (Debian/Ubuntu; `chromium-browser` elsewhere), "
    f"or set {ENV_VAR} to the path of a Chromium or Chrome executable."
)
#: Screenshots taller than this are cut (GPU texture limits); the result says so.
MAX_SCREENSHOT_HEIGHT = 16384


class BrowserError(MeddxError):
    """Headless Chromium could not be started or driven, or the page could not be loaded."""


class ChromiumNotFoundError(BrowserError, FileNotFoundError):
    """No Chromium or Chrome executable was found."""


def _executable(value: str) -> str | None:
    path = Path(value).expanduser()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return shutil.which(value)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None (see the module docstring for the order)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return _executable(value)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium(chromium: str | None) -> str:
    if chromium:
        found = _executable(chromium)
        if found is None:
            raise ChromiumNotFoundError("not an executable Chromium or Chrome", path=chromium, hint=INSTALL_HINT)
        return found
    found = find_chromium()
    if found is not None:
        return found
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        raise ChromiumNotFoundError(f"{ENV_VAR} does not name an executable Chromium or Chrome", path=value,
                                    field=ENV_VAR, hint=INSTALL_HINT)
    raise ChromiumNotFoundError(f"no headless browser found (looked for {', '.join(CANDIDATES)} on PATH)",
                                hint=INSTALL_HINT)


class _CDP:
    """One DevTools websocket: numbered calls, with every event kept in order of arrival."""

    def __init__(self, url: str, deadline: float) -> None:
        import websocket

        self._websocket = websocket
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self.ws = websocket.create_connection(
            url, timeout=max(self._remaining(), 0.1), suppress_origin=True,
            http_no_proxy=["127.0.0.1", "localhost"],
        )

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _recv(self, until: float | None = None) -> dict[str, Any] | None:
        """The next message, or None when ``until`` passes first; BrowserError at the deadline."""
        limit = self.deadline if until is None else min(until, self.deadline)
        remaining = limit - time.monotonic()
        if remaining <= 0:
            if until is not None and until < self.deadline:
                return None
            raise BrowserError("headless Chromium did not answer in time", hint="Raise the timeout.")
        self.ws.settimeout(remaining)
        try:
            raw = self.ws.recv()
        except self._websocket.WebSocketTimeoutException:
            return self._recv(until)  # re-check which limit passed
        except (self._websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"lost the DevTools connection to Chromium: {exc}") from exc
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            message = self._recv()
            if message is None:  # pragma: no cover - only with an `until`
                continue
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"DevTools call {method} failed: {message['error'].get('message')}")
                return message.get("result") or {}
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str) -> dict[str, Any]:
        seen = len(self.events)
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            message = self._recv()
            if message is not None and "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message
            if len(self.events) > seen + 100_000:  # pragma: no cover - runaway page
                raise BrowserError(f"no {method} after 100000 DevTools events")

    def drain(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while True:
            message = self._recv(until)
            if message is None:
                return
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket is not an error
            pass


def _where(url: Any, line: Any) -> str:
    if not url:
        return ""
    return f" ({url}:{int(line) + 1})" if isinstance(line, int) else f" ({url})"


def _remote_object_text(arg: dict[str, Any]) -> str:
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(arg.get("description") or arg.get("unserializableValue") or arg.get("type", ""))


def _problems(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(console errors, exceptions) as readable lines, from CDP events, without duplicates."""
    console: list[str] = []
    exceptions: list[str] = []
    for event in events:
        method, params = event.get("method"), event.get("params") or {}
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_object_text(a) for a in params.get("args") or [])
            frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
            line = f"console.{params['type']}: {text}{_where(frames[0].get('url'), frames[0].get('lineNumber'))}"
            if line not in console:
                console.append(line)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            text = (details.get("exception") or {}).get("description") or details.get("text") or "exception"
            line = f"{text}{_where(details.get('url'), details.get('lineNumber'))}"
            if line not in exceptions:
                exceptions.append(line)
        elif method == "Log.entryAdded":
            entry = params.get("entry") or {}
            if entry.get("level") == "error":
                line = f"{entry.get('source', 'log')}: {entry.get('text', '')}{_where(entry.get('url'), None)}"
                if line not in console:
                    console.append(line)
    return console, exceptions


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate Chromium and every process it started (its own process group)."""
    if proc.poll() is None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGTERM)
            else:  # pragma: no cover - Windows
                proc.terminate()
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if hasattr(os, "killpg"):
        try:  # helpers (renderer, zygote) that outlived the browser process
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _remove(folder: str) -> None:
    for _ in range(10):  # a dying helper process may still write into the profile
        try:
            shutil.rmtree(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


def _tail(path: Path, n: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


def render_check(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str],
    width: int = 1280,
    height: int = 900,
    timeout: float = 60,
    *,
    chromium: str | None = None,
    settle: float = 0.3,
) -> dict[str, Any]:
    """Load ``html_path`` in headless Chromium; collect errors; save a full-page screenshot.

    Args:
        html_path: the HTML file to load (as a ``file://`` URL).
        screenshot_path: where to write the full-page PNG (its folder is created).
        width, height: the viewport in CSS pixels; the screenshot is ``width`` wide
            and as tall as the page (at most :data:`MAX_SCREENSHOT_HEIGHT`).
        timeout: seconds for the whole check, browser start included.
        chromium: the browser executable (default: :func:`find_chromium`).
        settle: seconds to keep listening for late errors after the load event.

    Returns:
        ``{"console_errors": [str], "exceptions": [str], "screenshot": str,
        "title": str, "chromium": "Chrome/…", "url": str, "width": int,
        "height": int, "truncated": bool, "seconds": float}``. The page rendered
        cleanly when both lists are empty.

    Raises:
        ChromiumNotFoundError: no browser (the message says how to install one).
        DataFileNotFoundError: ``html_path`` does not exist.
        BrowserError: the browser did not start, answer in time, or load the page.
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    html = Path(html_path).expanduser().resolve()
    if not html.is_file():
        raise DataFileNotFoundError("no such HTML file", path=html, hint="Render the report first.")
    executable = _require_chromium(chromium)
    try:
        import websocket  # noqa: F401 - fail early with a clear message
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BrowserError("the render check needs websocket-client, which is not installed",
                           hint="Install it with: pip install websocket-client") from exc
    shot = Path(screenshot_path)
    width, height = int(width), int(height)

    workdir = tempfile.mkdtemp(prefix="meddx-chromium-")
    profile = Path(workdir) / "profile"
    profile.mkdir()
    log_path = Path(workdir) / "chromium.log"
    command = [
        executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-component-update",
        "--disable-background-networking", "--disable-sync", "--disable-default-apps", "--mute-audio",
        "--hide-scrollbars", "--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain",
        "about:blank",
    ]
    proc: subprocess.Popen[bytes] | None = None
    sessions: list[_CDP] = []
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        while True:
            lines = port_file.read_text().split("\n") if port_file.is_file() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/devtools/"):
                port, browser_path = int(lines[0]), lines[1].strip()
                break
            if proc.poll() is not None:
                raise BrowserError(f"Chromium exited with code {proc.returncode} before DevTools was ready",
                                   path=executable, hint=_tail(log_path) or None)
            if time.monotonic() > deadline:
                raise BrowserError(f"Chromium did not open DevTools within {timeout:g} s", path=executable,
                                   hint=_tail(log_path) or "Raise the timeout.")
            time.sleep(0.05)

        browser = _CDP(f"ws://127.0.0.1:{port}{browser_path}", deadline)
        sessions.append(browser)
        version = browser.call("Browser.getVersion").get("product", "")
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = _CDP(f"ws://127.0.0.1:{port}/devtools/page/{target}", deadline)
        sessions.append(page)
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            page.call(method)
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.events.clear()  # only what the report page itself produces

        url = html.as_uri()
        navigation = page.call("Page.navigate", {"url": url})
        if navigation.get("errorText"):
            raise BrowserError(f"Chromium could not load the page: {navigation['errorText']}", path=html)
        page.wait_event("Page.loadEventFired")
        page.drain(min(settle, max(page.deadline - time.monotonic() - 1, 0)))

        title = page.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})
        title_text = str((title.get("result") or {}).get("value") or "")
        layout = page.call("Page.getLayoutMetrics")
        size = layout.get("cssContentSize") or layout.get("contentSize") or {}
        full_width = max(width, math.ceil(size.get("width", width)))
        full_height = max(1, math.ceil(size.get("height", height)))
        truncated = full_height > MAX_SCREENSHOT_HEIGHT
        full_height = min(full_height, MAX_SCREENSHOT_HEIGHT)
        capture = page.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "fromSurface": True,
            "clip": {"x": 0, "y": 0, "width": full_width, "height": full_height, "scale": 1},
        })
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(capture["data"]))

        console_errors, exceptions = _problems(page.events)
        return {
            "console_errors": console_errors,
            "exceptions": exceptions,
            "screenshot": str(shot),
            "title": title_text,
            "chromium": version,
            "url": url,
            "width": full_width,
            "height": full_height,
            "truncated": truncated,
            "seconds": round(time.monotonic() - started, 3),
        }
    finally:
        for session in sessions:
            session.close()
        if proc is not None:
            _stop(proc)
        _remove(workdir)


__all__ = ["BrowserError", "ChromiumNotFoundError", "find_chromium", "render_check"]
