"""The data catalogue: every public data set meddx knows, where it comes from, and how to count it.

A :class:`DatasetSpec` records the real public source (official download URLs,
licence, citation), the task, modality and classes, how the data must be split
(by patient, record or near-duplicate group), the checksums that verify a copy,
and a *counter* that reports the number of samples per split from the files
themselves. :func:`fetch` resolves a data set to a verified local folder
(mirror → cache → download).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.data import fetch as _fetch
from meddx.exceptions import DatasetNotFoundError, DownloadError


@dataclass(frozen=True)
class Remote:
    """One file at a data set's public source.

    Attributes:
        url: the official download address.
        filename: where the file goes inside the data set's folder.
        sha256: / md5: published checksum of that file, when the source gives one.
        extract: unpack this zip into the folder after download.
        strip_prefix: leading folder to keep (and drop) from archive members;
            members outside it are skipped.
        into: sub-folder to extract into.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False
    strip_prefix: str = ""
    into: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """What meddx knows about one data set (see the module docstring)."""

    name: str
    title: str
    task: str
    modality: str
    classes: dict[str, str]
    splits: str
    group_by: str
    licence: str
    citation: str
    homepage: str
    remotes: tuple[Remote, ...] = ()
    manual_download: str | None = None
    manifest_sha256: str | None = None
    counter: str = ""
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    intended_input: dict[str, Any] = field(default_factory=dict)
    """What a model trained on this set is made to read (see :class:`meddx.trust.intended.IntendedInput`)."""

    @property
    def downloadable(self) -> bool:
        return bool(self.remotes) and self.manual_download is None


_DATASETS: dict[str, DatasetSpec] = {}
Counter = Callable[[Path], dict[str, int]]
_COUNTERS: dict[str, Counter] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the catalogue."""
    if spec.name in _DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    _DATASETS[spec.name] = spec
    return spec


def register_counter(name: str) -> Callable[[Counter], Counter]:
    """Decorator: register a function that counts samples per split in a data set folder."""

    def decorator(func: Counter) -> Counter:
        _COUNTERS[name] = func
        return func

    return decorator


def _load_entries() -> None:
    import meddx.data._entries  # noqa: F401  (registers the built-in data sets)


def list_datasets() -> list[DatasetSpec]:
    """Every catalogued data set, by name."""
    _load_entries()
    return [_DATASETS[n] for n in sorted(_DATASETS)]


def get_dataset(name: str) -> DatasetSpec:
    """The catalogue entry ``name``; a close-match suggestion if it is unknown."""
    _load_entries()
    try:
        return _DATASETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_DATASETS), n=3)
        hint = f"Did you mean {', '.join(close)}?" if close else "Run `meddx data list` to see the catalogue"
        raise DatasetNotFoundError(f"no data set named {name!r}", field="name", hint=hint) from None


def count_samples(name: str, folder: Path | None = None) -> dict[str, int]:
    """Samples per split (and per class where useful), counted from the files."""
    spec = get_dataset(name)
    folder = folder or fetch(name)
    return _COUNTERS[spec.counter](folder)


def fetch(name: str, *, verify: bool = True, progress: _fetch.ProgressHook | None = None) -> Path:
    """A verified local folder holding data set ``name``.

    Order: the mirror (``MEDDX_DATA_MIRROR/<name>``, verified against the pinned
    manifest checksum, never written), then the cache (verified against the
    manifest meddx wrote after download), then a download from the public source.
    """
    spec = get_dataset(name)
    mirrored = _fetch.mirror_folder(name)
    if mirrored is not None:
        if verify:
            _fetch.verify_folder(mirrored, manifest_sha256=spec.manifest_sha256)
        return mirrored
    cached = _fetch.cache_folder(name)
    if (cached / _fetch.MANIFEST).is_file():
        if verify:
            _fetch.verify_folder(cached)
        return cached
    return download_dataset(spec, progress=progress)


def download_dataset(spec: DatasetSpec, *, progress: _fetch.ProgressHook | None = None) -> Path:
    """Download every remote of ``spec`` into the cache, verify, and mark it complete.

    Work happens in ``<cache>/.<name>.partial`` so an interrupted fetch resumes
    where it stopped and a half-fetched set is never taken for a complete one.
    """
    if not spec.downloadable:
        how = spec.manual_download or "no public direct download is catalogued"
        raise DownloadError(
            f"{spec.name} cannot be downloaded automatically: {how}",
            field=spec.name,
            hint=f"Put the files in <mirror>/{spec.name}/ and set MEDDX_DATA_MIRROR=<mirror>",
        )
    target = _fetch.cache_folder(spec.name)
    work = target.with_name(f".{spec.name}.partial")
    work.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for remote in spec.remotes:
        local = work / remote.filename
        if not local.exists():
            _fetch.download(remote.url, local, sha256=remote.sha256, md5=remote.md5, progress=progress)
        if remote.extract:
            extracted = _fetch.extract_zip(local, work / remote.into, strip_prefix=remote.strip_prefix)
            names += [str(Path(remote.into) / n) for n in extracted]
            local.unlink()
        else:
            names.append(remote.filename)
    _fetch.write_manifest(work, names)
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    return target


def resolve_file(folder: Path, *patterns: str) -> Path:
    """The first file in ``folder`` that matches one of the glob ``patterns``.

    Mirror and upstream copies sometimes name a file differently
    (``pneumoniamnist.npz`` vs ``pneumoniamnist_reconstructed.npz``).
    """
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    from meddx.exceptions import DataFileNotFoundError

    raise DataFileNotFoundError(
        f"no file matching {' or '.join(patterns)}", path=folder, hint="Fetch the data set again"
    )


__all__ = [
    "DatasetSpec",
    "Remote",
    "count_samples",
    "download_dataset",
    "fetch",
    "get_dataset",
    "list_datasets",
    "register_counter",
    "register_dataset",
    "resolve_file",
]
