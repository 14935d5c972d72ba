"""The download path against a local HTTP server (127.0.0.1) that serves mirror files."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meddx.data import catalogue, fetch
from meddx.data.catalogue import DatasetSpec, Remote
from meddx.exceptions import ChecksumError, DataFileNotFoundError, DownloadError


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut a response short on request."""

    cut_after: int | None = None  # bytes to send before dropping the connection (once)
    requests_seen: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests_seen.append(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server(mirror: Path) -> Iterator[str]:
    def handler(*args: object, **kwargs: object) -> _RangeHandler:
        return _RangeHandler(*args, directory=str(mirror), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.requests_seen = []
    _RangeHandler.cut_after = None
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_renames_atomically(server: str, mirror: Path, tmp_path: Path) -> None:
    source = mirror / "breastmnist" / "breastmnist.npz"
    dest = tmp_path / "breastmnist.npz"
    fetch.download(f"{server}/breastmnist/breastmnist.npz", dest, sha256=_sha(source))
    assert dest.read_bytes() == source.read_bytes()
    assert not dest.with_name(dest.name + ".part").exists()


def test_download_resumes_with_range_after_a_cut(server: str, mirror: Path, tmp_path: Path) -> None:
    source = mirror / "breastmnist" / "breastmnist.npz"
    dest = tmp_path / "b.npz"
    _RangeHandler.cut_after = 100_000
    with pytest.raises(DownloadError, match="resume|cannot reach"):
        fetch.download(f"{server}/breastmnist/breastmnist.npz", dest, sha256=_sha(source))
    part = dest.with_name(dest.name + ".part")
    assert part.exists() and 0 < part.stat().st_size < source.stat().st_size
    assert not dest.exists()  # a partial file never takes the final name
    kept = part.stat().st_size
    fetch.download(f"{server}/breastmnist/breastmnist.npz", dest, sha256=_sha(source))
    assert _RangeHandler.requests_seen[-1] == f"bytes={kept}-"  # resumed where the cut left off
    assert dest.read_bytes() == source.read_bytes()


def test_checksum_mismatch_deletes_the_part(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.npz"
    with pytest.raises(ChecksumError, match="expected 0+") as err:
        fetch.download(f"{server}/breastmnist/breastmnist.npz", dest, sha256="0" * 64)
    assert "x.npz" in str(err.value)
    assert not dest.exists() and not dest.with_name("x.npz.part").exists()


def test_md5_checked_too(server: str, mirror: Path, tmp_path: Path) -> None:
    source = mirror / "pima-indians-diabetes" / "diabetes.csv"
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = fetch.download(f"{server}/pima-indians-diabetes/diabetes.csv", tmp_path / "d.csv", md5=md5)
    assert dest.read_bytes() == source.read_bytes()


def test_http_error_is_clear(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch.download(f"{server}/nope.npz", tmp_path / "nope.npz")


def test_offline_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port on loopback with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach .*MEDDX_DATA_MIRROR"):
        fetch.download(f"http://127.0.0.1:{port}/x.npz", tmp_path / "x.npz", timeout=2)


def test_offline_mode_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDDX_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode"):
        fetch.download("http://127.0.0.1:9/x", tmp_path / "x")


def test_dataset_download_into_cache_then_cache_hit(
    server: str, mirror: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A whole catalogue entry: downloaded into the cache, manifest written, then served from cache."""
    names = ["data.csv", "data2.csv", "data3.csv"]
    spec = DatasetSpec(
        name="ppg-local-test", title="t", task="t", modality="t", classes={}, splits="", group_by="",
        licence="", citation="", homepage="",
        remotes=tuple(Remote(f"{server}/ppg-heartpy/{n}", n, sha256=_sha(mirror / "ppg-heartpy" / n)) for n in names),
        counter="ppg",
    )
    monkeypatch.setitem(catalogue._DATASETS, spec.name, spec)
    monkeypatch.delenv("MEDDX_DATA_MIRROR")
    folder = catalogue.fetch(spec.name)
    assert folder.parent == Path(str(fetch.cache_folder(spec.name))).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "SHA256SUMS"])
    assert catalogue.count_samples(spec.name, folder) == {"data.csv": 2483, "data2.csv": 15000, "data3.csv": 68476}
    seen = len(_RangeHandler.requests_seen)
    assert catalogue.fetch(spec.name) == folder  # cache hit: no new request
    assert len(_RangeHandler.requests_seen) == seen
    (folder / "data.csv").write_text("tampered\n")
    with pytest.raises(ChecksumError, match="data.csv"):
        catalogue.fetch(spec.name)


def test_zip_archive_extraction_is_confined(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("root/ok.txt", "fine")
        zf.writestr("root/../../evil.txt", "bad")
    with pytest.raises(DownloadError, match="escapes"):
        fetch.extract_zip(archive, tmp_path / "out", strip_prefix="root/")
    assert not (tmp_path / "evil.txt").exists()


def test_mirror_is_verified_and_never_written(mirror: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (mirror / "breastmnist").iterdir()}
    folder = catalogue.fetch("breastmnist")
    assert folder == mirror / "breastmnist"
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_tampered_mirror_copy_is_rejected(mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    fake = tmp_path / "mirror"
    shutil.copytree(mirror / "pima-indians-diabetes", fake / "pima-indians-diabetes")
    (fake / "pima-indians-diabetes" / "diabetes.csv").chmod(0o644)
    with open(fake / "pima-indians-diabetes" / "diabetes.csv", "a") as fh:
        fh.write("1,2,3\n")
    monkeypatch.setenv("MEDDX_DATA_MIRROR", str(fake))
    with pytest.raises(ChecksumError, match="diabetes.csv"):
        catalogue.fetch("pima-indians-diabetes")


def test_missing_listed_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  ./gone.csv\n")
    with pytest.raises(DataFileNotFoundError, match="gone.csv"):
        fetch.verify_folder(tmp_path)


def test_manual_only_sets_say_how_to_get_them() -> None:
    spec = catalogue.get_dataset("stroke-kaggle")
    with pytest.raises(DownloadError, match="Kaggle.*MEDDX_DATA_MIRROR"):
        catalogue.download_dataset(spec)
