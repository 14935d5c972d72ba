"""Upload limits against the real server (issue 18, items 1 and 7): uvicorn on 127.0.0.1, SQLite and PostgreSQL.

Before the fix FastAPI parsed (and spooled) the whole multipart body before any
check ran: 200 MiB arrived before the 413, and before the 401 of an anonymous
caller. Here requests are written on a raw socket, so the test sees exactly how
much of a body the server takes before it answers:

- an anonymous, or non-clinical, upload is refused right after its headers,
  with a 200 MiB ``Content-Length`` and not one byte of body sent;
- an authenticated upload whose ``Content-Length`` is over the limit is 413 at once;
- a chunked upload (no ``Content-Length``) is 413 once the count passes the limit,
  having taken no more than the limit plus the socket buffers;
- decompression bombs uploaded with a valid token are 413 and the server's peak
  resident memory (``VmHWM``) grows by less than 200 MB.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.security import _bombs
from tests.security.conftest import Live, bearer, live  # noqa: F401 - fixture

MiB = 1 << 20
BOUNDARY = "meddxBoundary7d2f"
LIMIT = 64 * MiB + MiB  # max_upload_mb (64 by default) plus the form overhead, for /api/studies
SLACK = 32 * MiB  # socket buffers between the client and the server's reads
BAR_BYTES = 200 * MiB


def _part_head(filename: str = "scan.dcm") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def _zeros(total: int) -> Iterator[bytes]:
    yield _part_head()
    chunk = bytes(MiB)
    for _ in range(total // MiB):
        yield chunk


def raw_post(url: str, path: str, *, headers: dict[str, str] | None = None, body: Iterator[bytes] = iter(()),
             content_length: int | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], int]:
    """POST on a raw socket: (status, response headers, body bytes sent before the server answered).

    With ``content_length`` the header is sent as given (whatever ``body`` holds);
    without it the body is sent chunked. Sending stops as soon as an answer arrives
    or the server stops reading.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}",
                 f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {content_length}" if content_length is not None
                     else "Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            data = chunk if content_length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            try:
                sock.settimeout(5.0)
                sock.sendall(data)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(timeout)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            answer += more
    finally:
        sock.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head and head[0].startswith("HTTP/1.1"), answer[:200]
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    return int(head[0].split()[1]), fields, sent


def _peak_rss(pid: int) -> int:
    """The peak resident memory (VmHWM) of process ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _token(live: Live, role: str = "clinician") -> str:  # noqa: F811
    return live.token(*live.add_user(role, prefix="up"))


def _leftovers(live: Live) -> list[Path]:  # noqa: F811
    return [p for p in live.home.rglob("upload-*") if p.is_file()]


def test_anonymous_upload_refused_before_the_body(live: Live) -> None:  # noqa: F811
    start = time.monotonic()
    status, headers, sent = raw_post(live.url, "/api/studies", content_length=200 * MiB)
    assert status == 401 and sent == 0
    assert time.monotonic() - start < 10  # answered without waiting for the 200 MiB
    assert headers.get("connection") == "close"
    assert headers.get("x-content-type-options") == "nosniff"  # the security headers are on the refusal too


def test_anonymous_chunked_upload_refused_before_the_body(live: Live) -> None:  # noqa: F811
    status, _, sent = raw_post(live.url, "/api/studies", body=_zeros(200 * MiB))
    assert status == 401 and sent < SLACK


def test_bad_token_and_wrong_role_refused_before_the_body(live: Live) -> None:  # noqa: F811
    status, _, sent = raw_post(live.url, "/api/studies", headers=bearer("not-a-token"), content_length=200 * MiB)
    assert status == 401 and sent == 0
    engineer = _token(live, "engineer")
    status, _, sent = raw_post(live.url, "/api/studies/batch", headers=bearer(engineer), content_length=200 * MiB)
    assert status == 403 and sent == 0


def test_anonymous_web_form_upload_goes_to_login_without_the_body(live: Live) -> None:  # noqa: F811
    status, headers, sent = raw_post(live.url, "/upload", content_length=200 * MiB)
    assert status == 303 and headers.get("location") == "/login" and sent == 0


def test_oversized_content_length_is_413_at_once(live: Live) -> None:  # noqa: F811
    token = _token(live)
    status, _, sent = raw_post(live.url, "/api/studies", headers=bearer(token), content_length=200 * MiB)
    assert status == 413 and sent == 0


def test_chunked_upload_is_stopped_at_the_limit(live: Live) -> None:  # noqa: F811
    token = _token(live)
    pid = live.server.process.pid  # type: ignore[union-attr]
    before = _peak_rss(pid)
    status, _, sent = raw_post(live.url, "/api/studies", headers=bearer(token), body=_zeros(200 * MiB))
    assert status == 413
    assert LIMIT - MiB <= sent <= LIMIT + SLACK, f"{sent / MiB:.0f} MiB sent before the answer"
    assert _peak_rss(pid) - before < BAR_BYTES
    assert not _leftovers(live)


def test_upload_within_the_limit_still_works(live: Live) -> None:  # noqa: F811
    from tests.service.conftest import png_bytes

    token = _token(live)
    with live.client() as client:
        response = client.post("/api/studies", headers=bearer(token), data={"patient_id": "P-limits"},
                               files={"file": ("x.png", png_bytes(), "image/png")})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def upload_bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upload-bombs")
    return {
        "deflated-dicom": _bombs.deflated_dicom(folder / "bomb.dcm"),
        "encapsulated-dicom": _bombs.encapsulated_dicom(folder / "rle.dcm"),
        "nifti-gz": _bombs.nifti_gz(folder / "bomb.nii.gz"),
        "png": _bombs.png_bomb(folder / "bomb.png"),
        "jpeg": _bombs.jpeg_bomb(folder / "bomb.jpg"),
    }


def test_decompression_bombs_are_413_at_bounded_server_memory(live: Live,  # noqa: F811
                                                               upload_bombs: dict[str, Path]) -> None:
    token = _token(live)
    pid = live.server.process.pid  # type: ignore[union-attr]
    with live.client() as client:
        for name, path in upload_bombs.items():
            before = _peak_rss(pid)
            response = client.post("/api/studies", headers=bearer(token),
                                   files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
            assert response.status_code == 413, (name, response.text)
            assert str(live.home) not in response.text  # no server path in the answer
            growth = _peak_rss(pid) - before
            assert growth < BAR_BYTES, f"{name}: the server's peak grew {growth / MiB:.0f} MiB"
    assert not _leftovers(live)


def test_cmyk_jpeg_upload_is_converted_not_a_500(live: Live) -> None:  # noqa: F811
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("CMYK", (32, 32), (10, 200, 30, 0)).save(buffer, format="JPEG")
    token = _token(live)
    with live.client() as client:
        response = client.post("/api/studies", headers=bearer(token), data={"patient_id": "P-cmyk"},
                               files={"file": ("c.jpg", buffer.getvalue(), "image/jpeg")})
    assert response.status_code == 201, response.text


def test_png_with_missing_rows_is_refused(live: Live) -> None:  # noqa: F811
    """A PNG whose header height was doubled would be stored with a zero-filled half."""
    import struct
    import zlib

    from tests.service.conftest import png_bytes

    data = bytearray(png_bytes(size=32))
    height = struct.unpack(">I", data[20:24])[0]
    data[20:24] = struct.pack(">I", 2 * height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    token = _token(live)
    response = httpx.post(live.url + "/api/studies", headers=bearer(token), timeout=60.0,
                          files={"file": ("x.png", bytes(data), "image/png")})
    assert response.status_code == 422 and "rows" in response.text, response.text
