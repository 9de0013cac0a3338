"""Which corpus a run was trained on: package versions, counts and content hashes.

The Debian corpus is whatever versions the mirror served on the day it was built, so every build
writes a record: the packages and versions (as ``dpkg-deb`` reads them from the downloaded
``.deb`` files) and the SHA-256 of ``documents.jsonl`` into the corpus's ``manifest.json``, and,
with the tokenizer's and the token shards' SHA-256, into the shards' ``meta.json``.
``prepare`` returns it as ``TokenData.meta["corpus"]``, so each run's ``config.json`` carries it,
and ``check_corpus`` says in one line how a corpus differs from the one a result was trained on.

Caches built before records existed get theirs computed from their files when read (package
versions from apt's ``.deb`` file names in the old manifest); it is never written back, since
such a cache may be in use by running jobs.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote

from experiments.data.documents import Document, jsonl_lines

#: a package whose version could not be recovered (an old manifest without .deb names)
UNKNOWN = "unknown"

_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, computed once per process for each (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def documents_sha256(docs: Iterable[Document]) -> str:
    """SHA-256 of the documents as ``documents.jsonl`` holds them (equal to ``sha256_file`` of it)."""
    digest = hashlib.sha256()
    for line in jsonl_lines(docs):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def deb_package(deb: str | Path) -> tuple[str, str]:
    """(package, version) of a ``.deb`` as dpkg reports them; from apt's file name
    (``NAME_VERSION_ARCH.deb``, an epoch's ``:`` quoted as ``%3a``) when dpkg-deb cannot read it."""
    deb = Path(deb)
    try:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"], capture_output=True,
                                text=True, check=False)
        found = dict(line.split(": ", 1) for line in fields.stdout.splitlines() if ": " in line)
        if fields.returncode == 0 and {"Package", "Version"} <= found.keys():
            return found["Package"], found["Version"]
    except OSError:
        pass
    return deb_name_version(deb.name)


def deb_name_version(filename: str) -> tuple[str, str]:
    """(package, version) from apt's ``.deb`` file name alone."""
    parts = filename.removesuffix(".deb").split("_")
    if len(parts) >= 2:
        return parts[0], unquote(parts[1])
    return parts[0], UNKNOWN


def package_versions(sources: Mapping[str, Mapping]) -> dict[str, str]:
    """``{package: version}`` of a corpus manifest's ``sources``: the recorded ``packages``, or,
    in manifests older than them, the versions in the ``.deb`` file names."""
    versions: dict[str, str] = {}
    for entry in sources.values():
        if "packages" in entry:
            versions.update(entry["packages"])
        else:
            versions.update(deb_name_version(name) for name in entry.get("debs", ()))
    return dict(sorted(versions.items()))


def installed_packages() -> dict[str, str]:
    """The interpreter and every installed distribution: what the ``installed`` corpus is made of."""
    versions = {dist.metadata["Name"]: dist.version for dist in metadata.distributions() if dist.metadata["Name"]}
    return {"python": platform.python_version(), **dict(sorted(versions.items()))}


def system_name() -> str:
    """The operating system release (which Debian suite apt fetched from), e.g. 'Debian GNU/Linux 12 (bookworm)'."""
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or sys.platform
    except (OSError, AttributeError):
        return f"{platform.system()} {platform.release()}".strip() or sys.platform


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def corpus_part(source: str, manifest: Mapping, documents_file: Path | None = None,
                docs: Iterable[Document] | None = None) -> dict:
    """The corpus's record from its manifest: source, packages, counts and content hash (the
    manifest's own, else that of ``documents_file``, else of ``docs``)."""
    sha = manifest.get("sha256")
    if sha is None:
        sha = sha256_file(documents_file) if documents_file is not None else documents_sha256(docs or ())
    packages = manifest.get("packages")
    if packages is None:
        packages = package_versions(manifest.get("sources", {}))
    return {
        "source": source,
        "packages": dict(packages),
        "documents": manifest.get("documents"),
        "characters": manifest.get("characters"),
        "sha256": sha,
        "built_at": manifest.get("built_at"),
        "system": manifest.get("system"),
        "recorded": manifest.get("recorded", "at build" if "sha256" in manifest else "afterwards"),
    }


def data_record(corpus: Mapping, tokenizer: Path, shards: Mapping[str, Path], tokens: Mapping[str, int]) -> dict:
    """The corpus record plus what was made from it: the tokenizer's and each shard's SHA-256
    and token count (``tokens``: split -> count)."""
    return {**corpus, "tokenizer_sha256": sha256_file(tokenizer),
            "shards_sha256": {split: sha256_file(path) for split, path in shards.items()},
            **{f"{split}_tokens": n for split, n in tokens.items()}}


def corpus_record(data) -> dict:
    """The record of the data a ``TokenData`` holds (``data.meta["corpus"]``); for one built by
    hand, without it, the hashes of its tokenizer and shards and the counts its meta has."""
    recorded = data.meta.get("corpus")
    if recorded:
        return dict(recorded)
    partial = {"source": data.meta.get("source"), "recorded": "afterwards"}
    if "train_documents" in data.meta and "val_documents" in data.meta:
        partial["documents"] = data.meta["train_documents"] + data.meta["val_documents"]
    tokens = {split: data.meta[f"{split}_tokens"] for split in ("train", "val") if f"{split}_tokens" in data.meta}
    return data_record(partial, data.tokenizer, {"train": data.train, "val": data.val}, tokens)


def recorded_corpus(run_config: Mapping) -> dict | None:
    """What a run's ``config.json`` says of its corpus: the full record, or for runs older than
    records the counts its ``data`` section has (documents and tokens); None when it has neither."""
    data = run_config.get("data") or {}
    if data.get("corpus"):
        return dict(data["corpus"])
    counts = {k: data[k] for k in ("train_documents", "val_documents", "train_tokens", "val_tokens") if k in data}
    if not counts:
        return None
    partial = {"source": data.get("source"), "recorded": "counts only", **counts}
    if "train_documents" in counts and "val_documents" in counts:
        partial["documents"] = counts["train_documents"] + counts["val_documents"]
    return partial


def _token_counts(record: Mapping) -> dict:
    return {k: record[k] for k in ("train_tokens", "val_tokens") if record.get(k) is not None}


def check_corpus(recorded: Mapping | None, current: Mapping, what: str = "the recorded result") -> str | None:
    """One line saying how ``current`` differs from the corpus ``recorded`` for a result (content
    hash, packages whose version changed, document and token counts, tokenizer, shards), or None
    when they agree or nothing comparable was recorded."""
    if not recorded:
        return None
    differences = []
    old_sha, new_sha = recorded.get("sha256"), current.get("sha256")
    if old_sha and new_sha and old_sha != new_sha:
        differences.append(f"documents sha256 {old_sha[:12]} -> {new_sha[:12]}")
    if recorded.get("source") and current.get("source") and recorded["source"] != current["source"]:
        differences.append(f"source {recorded['source']} -> {current['source']}")
    old_pk, new_pk = recorded.get("packages"), current.get("packages")
    if old_pk is not None and new_pk is not None:
        changed = [f"{name} {old_pk.get(name, 'absent')} -> {new_pk.get(name, 'absent')}"
                   for name in sorted(set(old_pk) | set(new_pk))
                   if old_pk.get(name) != new_pk.get(name) and UNKNOWN not in (old_pk.get(name), new_pk.get(name))]
        differences.extend(changed)
    for key in ("documents",):
        if recorded.get(key) is not None and current.get(key) is not None and recorded[key] != current[key]:
            differences.append(f"{key} {recorded[key]:,} -> {current[key]:,}")
    if not differences:  # same documents: what was made from them may still differ
        if recorded.get("tokenizer_sha256") and current.get("tokenizer_sha256") \
                and recorded["tokenizer_sha256"] != current["tokenizer_sha256"]:
            differences.append("the same documents but another tokenizer")
        elif recorded.get("shards_sha256") and current.get("shards_sha256") \
                and recorded["shards_sha256"] != current["shards_sha256"]:
            differences.append("the same documents and tokenizer but other token shards")
    old_tokens, new_tokens = _token_counts(recorded), _token_counts(current)
    for key in sorted(old_tokens.keys() & new_tokens.keys()):
        if old_tokens[key] != new_tokens[key]:
            differences.append(f"{key} {old_tokens[key]:,} -> {new_tokens[key]:,}")
    if not differences:
        return None
    return f"the corpus differs from the one {what} was trained on: " + "; ".join(differences)


def short(record: Mapping) -> str:
    """A one-line summary of a record, for logs: source, documents, hash, packages."""
    parts = [str(record.get("source"))]
    if record.get("documents") is not None:
        parts.append(f"{record['documents']:,} documents")
    if record.get("sha256"):
        parts.append(f"sha256 {record['sha256'][:12]}")
    packages = record.get("packages") or {}
    if packages and record.get("source") == "debian":
        parts.append(", ".join(f"{k} {v}" for k, v in packages.items()))
    return "; ".join(parts)
