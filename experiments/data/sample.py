"""The tiny sample corpus shipped in ``experiments/sample/`` for the tests.

Regenerate it (after ``fimkit data`` has built the Debian corpus) with
``python -m experiments.data.sample``. It takes whole documents from the Python and PostgreSQL
manuals only, whose licenses (PSF, PostgreSQL) allow redistribution with attribution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from experiments.atomic import atomic_path
from experiments.data.documents import Document, read_jsonl, write_jsonl

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "docs.jsonl"
PERMISSIVE_SOURCES = ("python-doc", "postgresql-doc")


def select_sample(docs: list[Document], max_chars: int = 200_000, min_doc: int = 1_000, max_doc: int = 6_000) -> list[Document]:
    """Mid-sized documents of the permissive sources, in hash order, until ``max_chars``."""
    pool = [d for d in docs if d.source in PERMISSIVE_SOURCES and min_doc <= len(d.text) <= max_doc]
    pool.sort(key=lambda d: hashlib.sha1(d.name.encode()).digest())
    chosen, total = [], 0
    for doc in pool:
        if total + len(doc.text) > max_chars:
            break
        chosen.append(doc)
        total += len(doc.text)
    return sorted(chosen, key=lambda d: (d.source, d.name))


def main(corpus: str = ".cache/corpus/debian/documents.jsonl") -> None:
    chosen = select_sample(read_jsonl(Path(corpus)))
    with atomic_path(SAMPLE) as tmp:
        write_jsonl(chosen, tmp)
    print(f"wrote {len(chosen)} documents ({SAMPLE.stat().st_size / 1e3:.0f} KB) to {SAMPLE}")


if __name__ == "__main__":
    main()
