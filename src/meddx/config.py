"""Where meddx keeps and finds things: the data mirror, the cache, the model registry.

All locations come from environment variables with laptop-friendly defaults:

``MEDDX_DATA_MIRROR``
    A folder laid out like the catalogue (one sub-folder per data set). When set,
    data sets are taken from it instead of being downloaded; it is never written to.
``MEDDX_CACHE_DIR``
    Where downloaded data sets and derived files live (default ``~/.cache/meddx``,
    or ``$XDG_CACHE_HOME/meddx``).
``MEDDX_HOME``
    Where runs and the local model registry live (default ``~/.meddx``).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_mirror() -> Path | None:
    """The mirror folder from ``MEDDX_DATA_MIRROR``, or None when unset or empty."""
    value = os.environ.get("MEDDX_DATA_MIRROR", "").strip()
    return Path(value).expanduser().resolve() if value else None


def cache_dir() -> Path:
    """The cache folder for downloaded data (created on first use by the fetcher)."""
    value = os.environ.get("MEDDX_CACHE_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "meddx"


def home_dir() -> Path:
    """The folder for runs and the local model registry."""
    value = os.environ.get("MEDDX_HOME", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".meddx"


def offline() -> bool:
    """True when ``MEDDX_OFFLINE=1``: never try the network, fail with a clear error instead."""
    return os.environ.get("MEDDX_OFFLINE", "").strip().lower() in {"1", "true", "yes"}
