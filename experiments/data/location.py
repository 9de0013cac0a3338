"""Where the data cache (corpus, tokenizers, token shards) lives: never the working directory
by accident. ``$FIMKIT_CACHE`` wins; otherwise the platform's cache directory (XDG on Linux,
``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows), under ``fimkit/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the environment variable that moves the cache
CACHE_ENV = "FIMKIT_CACHE"


def platform_cache_root() -> Path:
    """The per-user cache directory of this platform."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def default_cache_dir() -> Path:
    """``$FIMKIT_CACHE`` if set, else ``<platform cache>/fimkit``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else platform_cache_root() / "fimkit"


def resolve_cache(cache: str | os.PathLike | None) -> Path:
    """An explicit cache directory as given (``--cache``), or the default when ``None``."""
    return default_cache_dir() if cache in (None, "") else Path(cache).expanduser()
