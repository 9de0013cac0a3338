"""Corpus -> tokenizer -> token shards, each stage cached (``$FIMKIT_CACHE`` or the platform cache
directory, see ``location.py``) and reused.

Sources: ``debian`` (documentation packages via apt; the default), ``installed`` (docstrings of
installed Python code; used automatically when apt is missing) or the user's own .txt/.jsonl
files. Tokenizers: ``bpe`` (byte-level BPE trained here on the training split), ``t5`` or
``t5:PATH`` (the paper's, from a local file) or a path to any ``tokenizer.json``.
The shards' ``meta.json`` is written last, so its presence means the cache is complete. Every
build records which corpus it is (package versions, counts, SHA-256s; see ``provenance.py``): in
the corpus's ``manifest.json``, in the shards' ``meta.json`` and in ``TokenData.meta["corpus"]``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from experiments.atomic import atomic_path, write_text_atomic
from experiments.data import debian
from experiments.data.documents import (
    Document,
    deduplicate,
    expand_paths,
    read_documents,
    read_jsonl,
    split_documents,
    write_jsonl,
)
from experiments.data.installed_docs import installed_documents
from experiments.data.location import resolve_cache
from experiments.data.provenance import (
    corpus_part,
    data_record,
    documents_sha256,
    installed_packages,
    now,
    short,
    system_name,
)
from experiments.data.shards import encode_to_shard
from experiments.data.tokenizer import eos_id, find_t5_tokenizer, train_bpe
from experiments.progress import log

BUILTIN_SOURCES = ("debian", "installed")


@dataclass(frozen=True)
class DataSpec:
    sources: tuple[str, ...] = ("debian",)  # "debian", "installed", or file/folder paths
    tokenizer: str = "bpe"
    vocab_size: int = 8192  # of the BPE; ignored for T5 or a given tokenizer.json
    val_fraction: float = 0.01  # of documents


@dataclass(frozen=True)
class TokenData:
    train: Path
    val: Path
    tokenizer: Path
    meta: dict = field(default_factory=dict)


def _short_hash(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def source_id(spec: DataSpec) -> str:
    if len(spec.sources) == 1 and spec.sources[0] in BUILTIN_SOURCES:
        return spec.sources[0]
    unknown = [s for s in spec.sources if s in BUILTIN_SOURCES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is a built-in corpus and cannot be mixed with file paths")
    files = expand_paths(spec.sources)  # raises a clear error for missing paths
    return "files-" + _short_hash([(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def build_documents(sid: str, spec: DataSpec, cache: Path) -> tuple[list[Document], dict]:
    """Deduplicated documents of the source and the corpus's record; built-in corpora are cached
    as JSONL beside a ``manifest.json`` holding their record."""
    if sid.startswith("files-"):
        docs = deduplicate(read_documents(spec.sources))
        files = {"files": [str(p) for p in spec.sources], "packages": {}, "documents": len(docs),
                 "characters": sum(len(d.text) for d in docs), "sha256": documents_sha256(docs),
                 "built_at": now(), "system": None}
        return docs, corpus_part("files", files)
    corpus = cache / "corpus" / sid
    if (corpus / "manifest.json").exists():
        manifest = json.loads((corpus / "manifest.json").read_text())
        return read_jsonl(corpus / "documents.jsonl"), corpus_part(sid, manifest, corpus / "documents.jsonl")
    start = time.monotonic()
    if sid == "debian":
        log(f"building the Debian documentation corpus in {corpus} (first run only; a few minutes)")
        docs, sources = debian.debian_documents(corpus, log)
        packages = None  # per source, in ``sources``
    else:
        log("building a corpus from documentation installed with Python (smaller than the Debian corpus)")
        docs, sources = installed_documents()
        packages = installed_packages()
    raw = len(docs)
    docs = deduplicate(docs)
    if len(docs) < 2:
        raise RuntimeError(f"the {sid} corpus came out empty; see the messages above")
    manifest = {"sources": sources, "documents_before_dedup": raw, "documents": len(docs),
                "characters": sum(len(d.text) for d in docs), "build_seconds": round(time.monotonic() - start, 1),
                "sha256": documents_sha256(docs), "built_at": now(), "system": system_name()}
    if packages is not None:
        manifest["packages"] = packages
    with atomic_path(corpus / "documents.jsonl") as tmp:
        write_jsonl(docs, tmp)
    write_text_atomic(corpus / "manifest.json", json.dumps(manifest, indent=2))
    log(f"corpus: {len(docs)} documents ({raw - len(docs)} duplicates dropped), "
        f"{manifest['characters'] / 1e6:.1f}M characters in {manifest['build_seconds']}s")
    record = corpus_part(sid, manifest)
    log(f"corpus record: {short(record)}")
    return docs, record


def record_afterwards(sid: str, spec: DataSpec, cache: Path, tok_path: Path, shards: Path, meta: dict) -> dict:
    """The record of shards built before records existed, computed from the files (never written:
    such a cache may be in use). The corpus counts only if it still has the shards' documents."""
    if sid.startswith("files-"):
        corpus = build_documents(sid, spec, cache)[1]
    elif (cache / "corpus" / sid / "manifest.json").exists():
        manifest = json.loads((cache / "corpus" / sid / "manifest.json").read_text())
        corpus = corpus_part(sid, manifest, cache / "corpus" / sid / "documents.jsonl")
    else:
        corpus = {"source": sid, "packages": None, "sha256": None}
    documents = meta.get("train_documents", 0) + meta.get("val_documents", 0)
    if corpus.get("documents") != documents:  # rebuilt (or deleted) since: its hash is not these shards'
        corpus = {"source": sid, "packages": None, "documents": documents, "sha256": None}
    corpus["recorded"] = "afterwards"
    splits = {split: shards / f"{split}.npy" for split in ("train", "val")}
    return data_record(corpus, tok_path, splits, {split: meta[f"{split}_tokens"] for split in splits})


def resolve_source(spec: DataSpec, cache: Path) -> str:
    sid = source_id(spec)
    if sid == "debian" and not (cache / "corpus" / "debian" / "manifest.json").exists() and not debian.apt_available():
        log("apt-get is not available here, so the Debian corpus cannot be built; falling back to the "
            "smaller 'installed' corpus (docstrings of installed Python code). Pass --data FILES to use your own text.")
        return "installed"
    return sid


def tokenizer_path(spec: DataSpec, corpus_key: str, cache: Path) -> tuple[Path, str]:
    """(path of tokenizer.json, short name for cache keys); the BPE path may not exist yet."""
    if spec.tokenizer == "bpe":
        return cache / "tokenizers" / f"{corpus_key}-bpe{spec.vocab_size}.json", f"bpe{spec.vocab_size}"
    if spec.tokenizer == "t5" or spec.tokenizer.startswith("t5:"):
        path = find_t5_tokenizer(spec.tokenizer[3:] or None)
    else:
        path = Path(spec.tokenizer)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer {spec.tokenizer!r} is neither 'bpe', 't5', 't5:PATH' nor an existing tokenizer.json")
    return path, "tok-" + _short_hash(path.read_bytes().hex())


def prepare(spec: DataSpec, cache: str | Path | None = None) -> TokenData:
    """Build (or reuse) the token shards for ``spec`` in ``cache`` (None: ``resolve_cache``'s
    default); ``meta["corpus"]`` is the record of the corpus, tokenizer and shards."""
    cache = resolve_cache(cache).absolute()
    sid = resolve_source(spec, cache)
    corpus_key = f"{sid}-val{spec.val_fraction:g}"
    tok_path, tok_key = tokenizer_path(spec, corpus_key, cache)
    shards = cache / "tokens" / f"{corpus_key}-{tok_key}"
    if (shards / "meta.json").exists():
        meta = json.loads((shards / "meta.json").read_text())
        if "corpus" not in meta:
            meta["corpus"] = record_afterwards(sid, spec, cache, tok_path, shards, meta)
        # tok_path, not meta's tokenizer_path: older caches recorded it relative to the working directory
        return TokenData(shards / "train.npy", shards / "val.npy", tok_path, meta)

    docs, corpus = build_documents(sid, spec, cache)
    train_docs, val_docs = split_documents(docs, spec.val_fraction)
    if not tok_path.exists():
        start = time.monotonic()
        log(f"training a byte-level BPE tokenizer ({spec.vocab_size} tokens) on {len(train_docs)} training documents")
        train_bpe((d.text for d in train_docs), spec.vocab_size, tok_path, length=len(train_docs))
        log(f"tokenizer saved to {tok_path} ({time.monotonic() - start:.1f}s)")
    tokenizer = Tokenizer.from_file(str(tok_path))
    eos = eos_id(tokenizer)
    start = time.monotonic()
    counts = {split: encode_to_shard(tokenizer, [d.text for d in docs], eos, shards / f"{split}.npy", f"tokenizing {split}")
              for split, docs in (("train", train_docs), ("val", val_docs))}
    max_id = max(int(np.load(shards / f"{s}.npy", mmap_mode="r").max()) for s in counts)
    meta = {**asdict(spec), "source": sid, "tokenizer_path": str(tok_path), "vocab_size": tokenizer.get_vocab_size(),
            "eos_id": eos, "max_token_id": max_id, "train_tokens": counts["train"], "val_tokens": counts["val"],
            "train_documents": len(train_docs), "val_documents": len(val_docs),
            "train_characters": sum(len(d.text) for d in train_docs), "tokenize_seconds": round(time.monotonic() - start, 1)}
    meta["corpus"] = data_record(corpus, tok_path, {split: shards / f"{split}.npy" for split in counts},
                                 counts)
    write_text_atomic(shards / "meta.json", json.dumps(meta, indent=2))
    log(f"token shards in {shards}: {counts['train']:,} train / {counts['val']:,} validation tokens "
        f"({meta['tokenize_seconds']}s)")
    return TokenData(shards / "train.npy", shards / "val.npy", tok_path, meta)
