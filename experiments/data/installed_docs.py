"""Fallback corpus when apt is unavailable: documentation already installed with Python.

Module, class and function docstrings of the standard library and every installed package,
plus the package descriptions in their metadata. Smaller (a few million characters) and more
technical than the Debian corpus, but it needs nothing beyond this interpreter.
"""

from __future__ import annotations

import ast
import sys
import sysconfig
from collections.abc import Iterator
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

from experiments.data.documents import Document
from experiments.data.markup import tidy


def _module_docstrings(root: Path, source: str) -> Iterator[Document]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if {"test", "tests", "site-packages"} & set(parts):
            continue  # tests document nothing a reader would write; site-packages is walked separately
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        docstrings = [ast.get_docstring(tree) or ""]
        docstrings += [ast.get_docstring(n) or "" for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        text = tidy("\n\n".join(d for d in docstrings if len(d) > 40))
        if text:
            yield Document(text, source, str(path.relative_to(root)))


def _package_descriptions() -> Iterator[Document]:
    for dist in metadata.distributions():
        raw = dist.read_text("METADATA") or ""
        header, _, body = raw.partition("\n\n")
        description = body or (HeaderParser().parsestr(header).get("Description") or "")
        if len(description) > 200:
            yield Document(tidy(description), "package-metadata", dist.metadata["Name"] or "")


def installed_documents() -> tuple[list[Document], dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    docs = list(_module_docstrings(stdlib, "python-stdlib"))
    for root in site:
        docs.extend(_module_docstrings(root, "site-packages"))
    docs.extend(_package_descriptions())
    return docs, {"installed": {"documents": len(docs), "characters": sum(len(d.text) for d in docs)}}
