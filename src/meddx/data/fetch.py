"""Getting data sets onto disk: mirror → cache → download.

* **Mirror**: a read-only folder laid out like the catalogue (``MEDDX_DATA_MIRROR``),
  e.g. an institution's copy or the CI's shared data. Used in place, verified,
  never written to.
* **Cache**: ``MEDDX_CACHE_DIR/<name>/``, filled by earlier downloads and marked
  complete by a ``SHA256SUMS`` manifest that meddx writes after verifying.
* **Download**: each file is streamed from its public source into ``<file>.part``
  (resumed with an HTTP ``Range`` request if a part exists), checked against the
  catalogue's checksum, and only then renamed into place, so an interrupted or
  corrupt download never looks like a good file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from meddx.config import cache_dir, data_mirror, offline
from meddx.exceptions import ChecksumError, DataFileNotFoundError, DownloadError

CHUNK = 1 << 20
STREAM_CHUNK = 1 << 16  # small, so a cut connection loses little
MANIFEST = "SHA256SUMS"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, *, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given checksum(s)."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            raise ChecksumError(
                f"{algorithm} is {actual}, expected {expected}",
                path=path,
                field=algorithm,
                hint="The file is corrupt or a different version; delete it and fetch again",
            )


def read_manifest(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style manifest into {relative path: sha256}."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ChecksumError(
                f"line {number} is not '<sha256>  <file>'", path=path, hint="Regenerate it with sha256sum"
            )
        entries[name.strip().removeprefix("./").lstrip("*")] = digest.lower()
    return entries


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_folder` checked."""

    folder: Path
    files_checked: int
    bytes_checked: int
    unlisted: tuple[str, ...]


def verify_folder(folder: Path, *, manifest_sha256: str | None = None) -> VerifyReport:
    """Check every file listed in ``folder/SHA256SUMS`` (and the manifest's own hash).

    Files present but not listed are reported in ``unlisted`` (never silently used
    as if verified); a listed file that is missing is an error.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise DataFileNotFoundError(
            "checksum manifest missing", path=manifest, hint="Fetch the data set again"
        )
    if manifest_sha256 is not None:
        verify_file(manifest, sha256=manifest_sha256)
    entries = read_manifest(manifest)
    total = 0
    for name, digest in entries.items():
        target = folder / name
        if not target.is_file():
            raise DataFileNotFoundError(
                "listed in SHA256SUMS but missing", path=target, hint="Fetch the data set again"
            )
        verify_file(target, sha256=digest)
        total += target.stat().st_size
    listed = set(entries) | {MANIFEST}
    unlisted = tuple(
        sorted(
            str(p.relative_to(folder))
            for p in folder.rglob("*")
            if p.is_file() and str(p.relative_to(folder)) not in listed
        )
    )
    return VerifyReport(folder, len(entries), total, unlisted)


def write_manifest(folder: Path, names: Iterable[str]) -> Path:
    """Write ``folder/SHA256SUMS`` for ``names`` (relative paths), atomically."""
    lines = [f"{file_digest(folder / n)}  ./{n}" for n in sorted(names)]
    target = folder / MANIFEST
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


ProgressHook = Callable[[int, int | None], None]


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 30.0,
    progress: ProgressHook | None = None,
) -> Path:
    """Stream ``url`` into ``dest``, resumably, verifying its checksum before the final rename.

    A previous partial download (``dest.part``) is resumed with an HTTP Range
    request; if the server ignores the range the download restarts. A checksum
    mismatch deletes the part file and raises :class:`ChecksumError`.
    """
    import requests  # lazily: keeps `meddx --help` fast

    if offline():
        raise DownloadError(
            "offline mode (MEDDX_OFFLINE=1) forbids downloads",
            path=dest,
            hint=f"Download {url} by hand, or set MEDDX_DATA_MIRROR to a folder that holds the data set",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416:  # the part is already complete
                pass
            else:
                if response.status_code not in (200, 206):
                    raise DownloadError(
                        f"HTTP {response.status_code} {response.reason} for {url}",
                        path=dest,
                        hint="Check the URL in the catalogue or try again later",
                    )
                resumed = response.status_code == 206
                mode = "ab" if resumed else "wb"
                done = start if resumed else 0
                length = response.headers.get("Content-Length")
                total = done + int(length) if length and length.isdigit() else None
                with open(part, mode) as fh:
                    for block in response.iter_content(STREAM_CHUNK):
                        fh.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
                if total is not None and done != total:
                    raise DownloadError(
                        f"connection closed after {done} of {total} bytes",
                        path=dest,
                        hint="Run the same command again to resume",
                    )
    except requests.RequestException as exc:
        raise DownloadError(
            f"cannot reach {url}: {type(exc).__name__}",
            path=dest,
            hint="Check the network, or set MEDDX_DATA_MIRROR to a local copy of the data",
        ) from exc
    try:
        verify_file(part, sha256=sha256, md5=md5)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def extract_zip(archive: Path, folder: Path, *, strip_prefix: str = "") -> list[str]:
    """Extract a zip safely (no absolute paths or ``..``) into ``folder``; return relative names."""
    names: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            if strip_prefix:
                if not name.startswith(strip_prefix):
                    continue
                name = name[len(strip_prefix):]
            target = (folder / name).resolve()
            if not str(target).startswith(str(folder.resolve()) + os.sep):
                raise DownloadError("archive member escapes the target folder", path=archive, field=name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            names.append(name)
    return names


def mirror_folder(name: str) -> Path | None:
    """``MEDDX_DATA_MIRROR/<name>`` if the mirror is set and holds that data set."""
    mirror = data_mirror()
    if mirror is None:
        return None
    folder = mirror / name
    return folder if folder.is_dir() else None


def cache_folder(name: str) -> Path:
    return cache_dir() / name


def staging_folder(name: str) -> Path:
    """A fresh temporary folder next to the cache, renamed into place once complete."""
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
