"""An English corpus from Debian documentation packages, fetched with apt and unpacked locally.

``apt-get download`` needs no root and no install; ``dpkg-deb -x`` unpacks a package into a
folder. Together they give about 100M characters of English (kernel, Python, Perl and
PostgreSQL manuals, the GCIDE dictionary, fortunes) from a registry every Debian machine reaches.
Package names differ between releases, so each source lists alternatives and finds its files
by version-agnostic globs.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from experiments.data.documents import Document
from experiments.data.markup import (
    fortune_to_text,
    gcide_to_text,
    html_to_text,
    pod_to_text,
    rst_to_text,
)
from experiments.data.provenance import deb_package


def read_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix in (".gz", ".dz") else path.read_bytes()
    return raw.decode("utf-8", errors="replace")


def whole_file(convert: Callable[[str], str]) -> Callable[[Path], Iterator[str]]:
    def documents(path: Path) -> Iterator[str]:
        yield convert(read_text(path))

    return documents


def gcide_entries(path: Path, entries_per_document: int = 50) -> Iterator[str]:
    """Dictionary entries, located through dictd's index, grouped into documents.

    The index (``headword<TAB>offset<TAB>length``, numbers in base 64) gives exact entry
    boundaries, which the text alone does not (entries contain blank lines). Single entries are
    too short to be useful documents, so consecutive entries are grouped.
    """
    digits = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

    def number(b64: str) -> int:
        value = 0
        for c in b64:
            value = value * 64 + digits[c]
        return value

    data = gzip.decompress(path.read_bytes())  # a .dz file is a gzip stream with an index
    spans = set()
    for line in path.with_name(path.name.replace(".dict.dz", ".index")).read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and not fields[0].startswith("00-database"):
            spans.add((number(fields[1]), number(fields[2])))
    entries = [gcide_to_text(data[o : o + n].decode("utf-8", errors="replace")) for o, n in sorted(spans)]
    for start in range(0, len(entries), entries_per_document):
        yield "\n\n".join(entries[start : start + entries_per_document])


def fortunes(path: Path) -> Iterator[str]:
    """Each fortune (separated by lines holding only ``%``) is a document."""
    for fortune in read_text(path).split("\n%\n"):
        yield fortune_to_text(fortune)


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]  # alternatives, first available wins
    globs: tuple[str, ...]  # relative to the unpacked root
    documents: Callable[[Path], Iterator[str]]
    exclude: tuple[str, ...] = ()  # path fragments to skip (translations, generated HTML)
    extra_packages: tuple[str, ...] = ()  # also needed (fortunes' data lives in two packages)


SOURCES = (
    Source(
        "linux-doc",
        ("linux-doc-6.1", "linux-doc"),
        ("usr/share/doc/linux-doc*/Documentation/**/*.rst*", "usr/share/doc/linux-doc*/Documentation/**/*.txt*"),
        whole_file(rst_to_text),
        exclude=("/translations/",),  # Chinese, Japanese, Korean, Italian, Spanish versions
    ),
    Source(
        "python-doc",
        ("python3.11-doc", "python3.12-doc", "python3.13-doc"),
        ("usr/share/doc/python3*/html/_sources/**/*.rst.txt",),  # Sphinx sources, not the HTML
        whole_file(rst_to_text),
    ),
    Source("perl-doc", ("perl-doc",), ("usr/share/perl/*/pod/*.pod",), whole_file(pod_to_text)),
    Source(
        "postgresql-doc",
        ("postgresql-doc-15", "postgresql-doc-16", "postgresql-doc-17", "postgresql-doc"),
        ("usr/share/doc/postgresql-doc-*/html/*.html",),
        whole_file(html_to_text),
    ),
    Source("gcide", ("dict-gcide",), ("usr/share/dictd/gcide.dict.dz",), gcide_entries),
    Source(
        "fortunes",
        ("fortunes",),
        ("usr/share/games/fortunes/*",),
        fortunes,
        extra_packages=("fortunes-min",),
    ),
)


def apt_available() -> bool:
    try:
        return subprocess.run(["apt-get", "--version"], capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def download(package: str, debs: Path) -> Path | None:
    """The package's .deb in ``debs`` (fetched with ``apt-get download`` unless present), or None."""
    existing = sorted(debs.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        return None
    return found[-1]


def fetch(source: Source, debs: Path, root: Path, log: Callable[[str], None]) -> list[str]:
    """Download and unpack the first available package of ``source``; returns the .deb names."""
    for package in source.packages:
        deb = download(package, debs)
        if deb is None:
            continue
        fetched = [deb] + [d for d in (download(p, debs) for p in source.extra_packages) if d is not None]
        for path in fetched:
            subprocess.run(["dpkg-deb", "-x", str(path), str(root)], check=True)
        return [p.name for p in fetched]
    log(f"  {source.name}: none of {', '.join(source.packages)} could be downloaded; skipped")
    return []


def source_documents(source: Source, root: Path) -> Iterator[Document]:
    paths = sorted({p for pattern in source.globs for p in root.glob(pattern)})
    for path in paths:
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8"):
            continue  # fortunes' .dat indexes and .u8 links to the same text
        if any(fragment in "/" + rel for fragment in source.exclude):
            continue
        for i, text in enumerate(source.documents(path)):
            yield Document(text=text, source=source.name, name=f"{rel}#{i}")


def debian_documents(cache: Path, log: Callable[[str], None]) -> tuple[list[Document], dict]:
    """All documents of ``SOURCES`` (downloading into ``cache`` on first use) and a manifest:
    per source, the .deb files, their packages and versions (as dpkg reads them), and counts."""
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    manifest, docs = {}, []
    for source in SOURCES:
        names = fetch(source, debs, root, log)
        if not names:
            continue
        before = len(docs)
        docs.extend(source_documents(source, root))
        chars = sum(len(d.text) for d in docs[before:])
        packages = dict(deb_package(debs / name) for name in names)  # the versions the mirror served today
        manifest[source.name] = {"debs": names, "packages": packages, "documents": len(docs) - before,
                                 "characters": chars}
        log(f"  {source.name}: {len(docs) - before} documents, {chars / 1e6:.1f}M characters ({', '.join(names)})")
    return docs, manifest
