"""Documents: reading the user's files, deduplication and the train/validation split.

A document is the unit of the split, so no text of a validation document is ever trained on.
The split is a function of each document's content hash alone: it does not depend on file order
or on which other documents exist, and it is the same on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")  # C4 shards are c4-*.json.gz


@dataclass(frozen=True)
class Document:
    text: str
    source: str = ""
    name: str = ""


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the text/JSONL files inside named folders (recursively)."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(f for f in sorted(p.rglob("*")) if f.is_file() and f.name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"data file {str(p)!r} does not exist; pass existing .txt/.jsonl files or folders")
    if not found:
        raise FileNotFoundError(f"no .txt or .jsonl files found in {', '.join(map(str, paths))}")
    return found


def read_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    """Documents of the user's files: a .txt/.md/.rst file is one document; in JSONL (C4's
    format, optionally gzipped) each line is one, its text under ``"text"``."""
    for path in expand_paths(paths):
        if path.name.endswith(JSONL_SUFFIXES):
            with _open_text(path) as f:
                for i, line in enumerate(f):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if "text" not in record:
                        raise ValueError(f"{path}:{i + 1}: JSONL records need a 'text' field")
                    yield Document(record["text"], record.get("source", path.name), record.get("name", f"{path.name}:{i + 1}"))
        elif path.name.endswith(TEXT_SUFFIXES):
            yield Document(path.read_text(encoding="utf-8", errors="replace"), "files", str(path))
        else:
            raise ValueError(f"unsupported data file {path}: use .txt, .md, .rst, .jsonl or .json.gz")


def _fingerprint(text: str) -> bytes:
    # Whitespace and case do not make a document new (the same page in two packages differs in both).
    return hashlib.sha1(re.sub(r"\s+", " ", text).strip().lower().encode()).digest()


def deduplicate(docs: Iterable[Document], min_chars: int = 1) -> list[Document]:
    """Exact deduplication up to whitespace and case; the first occurrence is kept."""
    seen, kept = set(), []
    for doc in docs:
        if len(doc.text.strip()) < min_chars:
            continue
        key = _fingerprint(doc.text)
        if key not in seen:
            seen.add(key)
            kept.append(doc)
    return kept


def split_documents(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """(train, validation) by content hash; validation gets at least one document."""
    if len(docs) < 2:
        raise ValueError(f"need at least 2 distinct documents to split train/validation by document, got {len(docs)}")
    position = {id(d): int.from_bytes(hashlib.sha256(d.text.encode()).digest()[:8], "big") / 2**64 for d in docs}
    val = [d for d in docs if position[id(d)] < val_fraction]
    if not val:  # tiny inputs: still hold out the document that hashes lowest
        val = [min(docs, key=lambda d: position[id(d)])]
    val_ids = {id(d) for d in val}
    return [d for d in docs if id(d) not in val_ids], val


def jsonl_lines(docs: Iterable[Document]) -> Iterator[str]:
    """The lines of ``documents.jsonl`` (one JSON object per document); their bytes are what the
    corpus's SHA-256 is taken of."""
    for doc in docs:
        yield json.dumps(asdict(doc), ensure_ascii=False) + "\n"


def write_jsonl(docs: Iterable[Document], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(jsonl_lines(docs))


def read_jsonl(path: Path) -> list[Document]:
    with path.open(encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f if line.strip()]
