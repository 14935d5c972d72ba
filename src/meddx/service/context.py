"""What the running service holds: settings, database, encrypted blob store, models, batchers, keys.

One :class:`ServiceContext` per app (``app.state.ctx``), built from
:class:`Settings` (environment first, then defaults under ``$MEDDX_HOME``), so
tests build as many independent services as they like.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.exceptions import ModelError


@dataclass
class Settings:
    """Service configuration; every field has an environment variable (``MEDDX_<FIELD>``)."""

    home: Path
    database_url: str
    models: list[str] = field(default_factory=list)  # registry refs or folders; empty: every registered model
    default_model: str | None = None
    batching: bool = True
    max_batch: int = 32
    max_wait: float = 0.004
    max_upload_mb: int = 64
    max_pixels: int = 64_000_000
    token_minutes: int = 15
    login_attempts_per_minute: int = 5
    explain: bool = True
    cookie_secure: bool = False  # set True behind HTTPS
    stream_store: Path = Path()  # the `meddx stream run` store the live monitor reads
    indexes: dict[str, str] = field(default_factory=dict)  # served model -> case index folder (similar cases)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        from meddx.config import home_dir
        from meddx.storage.db import database_url

        env = os.environ
        values: dict[str, Any] = {
            "home": home_dir(),
            "database_url": database_url(),
            "models": [m for m in env.get("MEDDX_MODELS", "").split(",") if m],
            "default_model": env.get("MEDDX_DEFAULT_MODEL") or None,
            "batching": env.get("MEDDX_BATCHING", "1") not in ("0", "false", "no"),
            "cookie_secure": env.get("MEDDX_COOKIE_SECURE", "0") in ("1", "true", "yes"),
            "stream_store": Path(env.get("MEDDX_STREAM_STORE") or home_dir() / "stream" / "stream.db"),
            "indexes": _indexes(env.get("MEDDX_INDEXES", "")),
        }
        values.update(overrides)
        return cls(**values)


def _indexes(value: str) -> dict[str, str]:
    """``MEDDX_INDEXES=MODEL=FOLDER,MODEL2=FOLDER2`` → ``{MODEL: FOLDER, ...}``."""
    from meddx.service.similar import parse_indexes

    return parse_indexes(value.split(","))


def load_model(ref: str) -> Any:
    """A classifier's :class:`~meddx.inference.Pipeline` (micro-batched, explained), or the thin
    :class:`~meddx.service.tasks.TaskModel` adapter over the handler of any other task."""
    from meddx.inference import Pipeline
    from meddx.modalities import CLASSIFICATION, task_of_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(ref)
    package = read_package(folder)
    if task_of_package(package) == CLASSIFICATION:
        return Pipeline.load(ref)
    from meddx.service.tasks import TaskModel

    return TaskModel(folder, package)


@dataclass
class ServiceContext:
    settings: Settings
    engine: Any
    sessions: Any
    blobs: Any
    pseudonym_key: Any
    token_secret: bytes
    login_limiter: Any
    pipelines: dict[str, Any] = field(default_factory=dict)
    batchers: dict[str, Any] = field(default_factory=dict)
    drift_ids: dict[str, int] = field(default_factory=dict)  # "name:version" -> drift monitor row id
    case_indexes: dict[str, Any] = field(default_factory=dict)  # package name -> similar.ServedIndex
    upload_dir: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings) -> ServiceContext:
        from meddx.privacy.pseudonyms import PseudonymKey
        from meddx.service.security import RateLimiter, load_secret
        from meddx.storage.audit import AuditAnchor, bind_anchor
        from meddx.storage.blobs import BlobStore
        from meddx.storage.crypto import Encryptor
        from meddx.storage.db import make_engine, session_factory, upgrade

        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        # the audit chain's key and checkpoints: this service's home, made now (0600) if missing
        bind_anchor(engine, AuditAnchor.for_url(engine.url, home=settings.home))
        keys = settings.home / "keys"
        return cls(
            settings=settings, engine=engine, sessions=session_factory(engine),
            blobs=BlobStore(settings.home / "blobs", Encryptor.from_config()),
            pseudonym_key=PseudonymKey.load(), token_secret=load_secret(keys / "token.key"),
            login_limiter=RateLimiter(settings.login_attempts_per_minute, 60.0),
            upload_dir=settings.home / "incoming",
        )

    # models -----------------------------------------------------------------------------------------
    def model_refs(self) -> list[str]:
        """The models this service offers: the configured ones, else every registered image model (signal
        and record models are served by `meddx stream` and the CLI; the upload workflow reads images)."""
        if self.settings.models:
            return list(self.settings.models)
        from meddx.packaging.registry import list_models

        return [m["name"] for m in list_models() if m["latest"] and m["modality"] == "image"]

    def pipeline(self, ref: str | None) -> Any:
        """The loaded model for ``ref`` (default model when None): a :class:`~meddx.inference.Pipeline` for an
        image classifier, a :class:`~meddx.service.tasks.TaskModel` for a segmentation or detection package."""
        refs = self.model_refs()
        if ref is None:
            ref = self.settings.default_model or (refs[0] if refs else None)
        if ref is None:
            raise ModelError("no model is available", field="model",
                             hint="Register one: meddx models register RUN_FOLDER (make demo does it)")
        allowed = set(refs) | {r.split(":")[0] for r in refs}
        if ref not in allowed:
            raise ModelError(f"model {ref!r} is not offered by this service", field="model",
                             hint=f"Available: {', '.join(refs)}")
        with self._lock:
            if ref not in self.pipelines:
                self.pipelines[ref] = load_model(ref)
            return self.pipelines[ref]

    def batcher(self, ref: str, fn: Any) -> Any:
        from meddx.service.batching import MicroBatcher

        with self._lock:
            if ref not in self.batchers:
                s = self.settings
                self.batchers[ref] = MicroBatcher(fn, max_batch=s.max_batch, max_wait=s.max_wait, enabled=s.batching)
            return self.batchers[ref]
