"""A local registry of model packages: ``$MEDDX_HOME/models/<name>/<version>/``.

``register(run_folder)`` copies a package (weights, ``package.json``, config,
history) into the registry, adds the weights' sha256 and a generated model card,
and returns the new folder. Registered versions are never overwritten silently.

Anywhere a MODEL argument is taken, a package can be named by path or as
``name[:version]`` (latest version when omitted); :func:`resolve` turns either
into a folder. An existing path always wins over a registry name.

This module imports only the standard library, so resolving a model name costs
nothing at start-up (``meddx predict`` must answer in under 3 seconds cold).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from meddx.exceptions import ConfigError, ModelError

from meddx.packaging.files import CARD_FILE, PACKAGE_FILE, WEIGHTS_FILE, read_package, write_package

COPIED_FILES = (PACKAGE_FILE, WEIGHTS_FILE, "config.json", "history.jsonl", "metrics.json")
"""Files of a run folder a registered package keeps (the first two are required); a package may
name more in ``package.json["extra_files"]`` (e.g. a fitted preprocessing pipeline)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def registry_dir() -> Path:
    """The registry root, ``$MEDDX_HOME/models`` (not created until a model is registered)."""
    from meddx.config import home_dir

    return home_dir() / "models"


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: digit runs compare as numbers ("1.10" > "1.9"), timestamps stay chronological."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", version) if part)


def _check_name(value: str, what: str, path: str | Path | None = None) -> str:
    if not _NAME.match(value):
        raise ConfigError(
            f"{what} {value!r} cannot be used in the registry", path=path, field=what,
            hint="Use letters, digits, '.', '_' and '-' only (for a name: `meddx models register RUN --name NAME`)",
        )
    return value


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"name:version"`` → ``("name", "version")``; ``"name"`` → ``("name", None)``."""
    name, _, version = str(ref).partition(":")
    _check_name(name, "name")
    if version:
        _check_name(version, "version")
    return name, version or None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_sha256 = sha256_file


def verify_files(folder: str | Path, package: dict[str, Any], names: list[str] | None = None) -> None:
    """Check that the package's files (all listed in ``package["files"]``, or ``names``) exist and match
    the sha256 recorded at registration; a run folder that was never registered lists none."""
    folder = Path(folder)
    recorded = package.get("files") or {}
    for name in names if names is not None else [n for n in recorded if n != "members"]:  # members: an id
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{name} is missing from the package", path=path, field="files",
                             hint="Re-run `meddx train`, or register the run again")
        expected = recorded.get(name)
        if expected and sha256_file(path) != expected:
            raise ModelError(f"{name} does not match its sha256 in package.json", path=path, field="files",
                             hint="The file was changed after registration; register the run again")


def load_joblib(folder: str | Path, package: dict[str, Any], name: str) -> Any:
    """A fitted object saved with joblib in the package (scikit-learn pipeline, ...), after
    :func:`verify_files`: unpickling runs code, so only files whose hash matches are opened."""
    import joblib

    verify_files(folder, package, [name])
    path = Path(folder) / name
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise ModelError(f"cannot load {name}: {exc}", path=path, hint="Re-run `meddx train`") from exc


def register(
    run_folder: str | Path, *, name: str | None = None, version: str | None = None, overwrite: bool = False
) -> Path:
    """Copy the package in ``run_folder`` into the registry; return its registry folder.

    Registering the same weights again under the same name and version returns the
    existing folder; different weights under a taken version are refused unless
    ``overwrite`` is set, so ``name:version`` always means one model.
    """
    from meddx.packaging.card import write_card

    run = Path(run_folder)
    package = read_package(run)
    member_files = _member_files(run, package)  # a deep ensemble keeps its weights in its members' folders
    if not member_files and not (run / WEIGHTS_FILE).is_file():
        raise ModelError("no model.safetensors in the package", path=run, hint="Re-run `meddx train`")
    # a restorer's output is an image, not a class: it has no class names (a translator names its two domains)
    synthetic = str(package.get("task") or "") in ("restoration", "translation")
    for field in ("name", "version", "architecture") + (() if synthetic else ("class_names",)):
        if not package.get(field):
            raise ModelError(f"package.json has no {field!r}", path=run / PACKAGE_FILE, field=field)
    name = _check_name(name or str(package["name"]), "name", run)
    version = _check_name(version or str(package["version"]), "version", run)
    if member_files:  # the ensemble's identity: the hash of its members' weight hashes, in order
        weights_key = "members"
        sha = hashlib.sha256("".join(_sha256(run / f) for f in member_files
                                     if f.endswith(WEIGHTS_FILE)).encode()).hexdigest()
    else:
        weights_key, sha = WEIGHTS_FILE, _sha256(run / WEIGHTS_FILE)
    target = registry_dir() / name / version
    if target.exists():
        existing = read_package(target)
        if existing.get("files", {}).get(weights_key) == sha and not overwrite:
            return target
        if not overwrite:
            raise ModelError(
                f"{name}:{version} is already registered with other weights", path=target,
                hint="Register under a new version (--version), or pass --overwrite to replace it",
            )
    package = dict(package, name=name, version=version)
    extra = [str(f) for f in package.get("extra_files", [])]
    for file in extra:
        if Path(file).name != file or not (run / file).is_file():
            raise ModelError(f"extra file {file!r} listed in package.json is missing", path=run / PACKAGE_FILE,
                             field="extra_files", hint="List only file names inside the run folder")
    package["files"] = {weights_key: sha, **{f: _sha256(run / f) for f in extra}}
    package["registry"] = {"source": str(run.resolve()), "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        for file in (*COPIED_FILES[1:], *extra):
            if (run / file).is_file():
                shutil.copy2(run / file, staging / file)
        for member in member_files:
            (staging / member).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / member, staging / member)
        write_package(staging, package)
        write_card(staging, package)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _member_files(run: Path, package: dict[str, Any]) -> list[str]:
    """The files of an ensemble's members (``members/m0/package.json``, weights, extras), relative to ``run``."""
    files = []
    for member in package.get("members") or []:
        folder = (run / str(member)).resolve()
        if not folder.is_relative_to(run.resolve()) or not (folder / WEIGHTS_FILE).is_file():
            raise ModelError(f"ensemble member {member!r} is missing or outside the package", path=run / PACKAGE_FILE,
                             field="members", hint="Register the run folder `meddx train --ensemble` wrote")
        extra = [str(f) for f in read_package(folder).get("extra_files", [])]
        files += [f"{member}/{f}" for f in (PACKAGE_FILE, WEIGHTS_FILE, *extra) if (folder / f).is_file()]
    return files


def _versions(name: str) -> list[str]:
    folder = registry_dir() / name
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if (p / PACKAGE_FILE).is_file() and not p.name.startswith(".")]
    return sorted(found, key=_version_key)


def list_models() -> list[dict[str, Any]]:
    """One summary dict per registered package, by name then version (oldest first)."""
    root = registry_dir()
    if not root.is_dir():
        return []
    rows = []
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = _versions(name_dir.name)
        for version in versions:
            folder = name_dir / version
            try:
                package = read_package(folder)
            except ModelError:
                continue
            data = package.get("data") or {}
            metrics = package.get("metrics") or {}
            auc = (metrics.get("values") or {}).get("auc")
            rows.append({
                "name": name_dir.name,
                "version": version,
                "latest": version == versions[-1],
                "architecture": package.get("architecture"),
                "modality": str(package.get("modality") or "image"),
                "classes": list(package.get("class_names") or []),
                "data": data.get("dataset") or data.get("source"),
                "test_auc": auc,
                "path": folder,
            })
    return rows


def get(name: str, version: str | None = None) -> Path:
    """The registry folder of ``name`` at ``version`` (the latest version when None)."""
    _check_name(name, "name")
    versions = _versions(name)
    if not versions:
        known = sorted({row["name"] for row in list_models()})
        raise ModelError(
            f"no registered model named {name!r}", path=registry_dir(), field="model",
            hint=(f"Registered: {', '.join(known)}" if known else "The registry is empty")
            + "; register a run with `meddx models register RUN_FOLDER`, or pass a run folder path",
        )
    if version is None:
        return registry_dir() / name / versions[-1]
    _check_name(version, "version")
    if version not in versions:
        raise ModelError(
            f"model {name!r} has no version {version!r}", path=registry_dir() / name, field="version",
            hint=f"Versions: {', '.join(versions)}",
        )
    return registry_dir() / name / version


def resolve(ref: str | Path) -> Path:
    """A package folder from a path or a registry reference ``name[:version]``."""
    path = Path(ref)
    if path.exists():
        return path
    text = str(ref)
    if isinstance(ref, Path) and text != ref.name or "/" in text or os.sep in text or text.startswith("."):
        raise ModelError(
            "no such model folder", path=text, field="model",
            hint="Pass a run folder written by `meddx train`, or a registered name[:version] (`meddx models list`)",
        )
    try:
        name, version = parse_ref(text)
    except ConfigError as exc:
        raise ModelError(
            "neither a folder nor a registered model name", path=text, field="model",
            hint="Pass a run folder, or name[:version] from `meddx models list`",
        ) from exc
    if version is None and not _versions(name):
        known = sorted({row["name"] for row in list_models()})
        raise ModelError(
            f"no folder {text!r} and no registered model of that name", path=registry_dir(), field="model",
            hint=(f"Registered: {', '.join(known)}" if known else "The registry is empty")
            + "; pass a run folder, or register one with `meddx models register RUN_FOLDER`",
        )
    return get(name, version)


__all__ = [
    "CARD_FILE",
    "PACKAGE_FILE",
    "WEIGHTS_FILE",
    "load_joblib",
    "sha256_file",
    "verify_files",
    "get",
    "list_models",
    "parse_ref",
    "read_package",
    "register",
    "registry_dir",
    "resolve",
    "write_package",
]
