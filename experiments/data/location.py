"""Where the data cache (corpus, tokenizers, token shards) lives: never the working directory
by accident. ``$FIMKIT_CACHE`` wins; otherwise the platform's cache directory (XDG on Linux,
``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows), under ``fimkit/``.
``describe_cache`` is what ``fimkit data --where`` shows of it."""

from __future__ import annotations

import json
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


def where(path: Path) -> str:
    """Why the cache is at ``path``: ``$FIMKIT_CACHE``, the platform default, or given (``--cache``)."""
    if os.environ.get(CACHE_ENV) and Path(os.environ[CACHE_ENV]).expanduser().absolute() == path.absolute():
        return f"from ${CACHE_ENV}"
    if path.absolute() == (platform_cache_root() / "fimkit").absolute():
        return f"the platform cache directory; set ${CACHE_ENV} or pass --cache to move it"
    return "given with --cache"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):  # symlinks are not followed, nor counted twice
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def describe_cache(path: str | os.PathLike) -> str:
    """What ``fimkit data --where`` prints: the cache directory, why it is there, and what is built
    in it (each corpus with its documents, content hash and packages; tokenizers; token shards),
    with sizes."""
    from experiments.data.provenance import corpus_part

    path = Path(path).expanduser()
    lines = [f"data cache: {path.absolute()} ({where(path)})"]
    if not path.is_dir() or not any(path.iterdir()):
        lines.append("  nothing built yet; `fimkit data` (or the first `fimkit train`) builds the corpus there")
        return "\n".join(lines)
    for corpus in sorted((path / "corpus").glob("*/")):
        manifest_file = corpus / "manifest.json"
        if not manifest_file.exists():
            lines.append(f"  corpus/{corpus.name}: incomplete (an interrupted build; the next build redoes it), "
                         f"{_mb(_size(corpus))}")
            continue
        record = corpus_part(corpus.name, json.loads(manifest_file.read_text()), corpus / "documents.jsonl")
        downloads = sum(_size(corpus / d) for d in ("debs", "root") if (corpus / d).exists())
        lines.append(f"  corpus/{corpus.name}: {record['documents']:,} documents, "
                     f"{(record['characters'] or 0) / 1e6:.1f}M characters, sha256 {record['sha256'][:16]}, "
                     f"{_mb(_size(corpus))}" + (f" ({_mb(downloads)} of it the downloaded and unpacked packages, not needed once built)" if downloads else "")
                     + (f", built {record['built_at']}" if record.get("built_at") else ""))
        if record["packages"] and corpus.name == "debian":
            lines.append("    packages: " + ", ".join(f"{k} {v}" for k, v in record["packages"].items()))
    for tokenizer in sorted((path / "tokenizers").glob("*.json")):
        lines.append(f"  tokenizers/{tokenizer.name}: {_mb(_size(tokenizer))}")
    for shards in sorted((path / "tokens").glob("*/")):
        if not (shards / "meta.json").exists():
            lines.append(f"  tokens/{shards.name}: incomplete, {_mb(_size(shards))}")
            continue
        meta = json.loads((shards / "meta.json").read_text())
        recorded = meta.get("corpus", {}).get("sha256")
        lines.append(f"  tokens/{shards.name}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} validation "
                     f"tokens, {_mb(_size(shards))}"
                     + (f", from corpus sha256 {recorded[:16]}" if recorded else ""))
    lines.append(f"  total {_mb(_size(path))}")
    return "\n".join(lines)
