"""Corpus sources on synthetic package trees: the Debian extractors and the installed-docs fallback."""

import gzip

from experiments.data import debian
from experiments.data.installed_docs import _module_docstrings

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n):
    digits = ""
    while True:
        n, r = divmod(n, 64)
        digits = B64[r] + digits
        if n == 0:
            return digits


def test_gcide_entries_are_cut_at_the_index_offsets_and_grouped(tmp_path):
    entries = ["Aa \\Aa\\, n.\n   1. A river.\n\n   2. Lava.\n", "Ab \\Ab\\, n.\n   A month.\n", "Ac \\Ac\\\n   Three.\n"]
    data = "00-database-info\n   header\n" + "".join(entries)
    (tmp_path / "gcide.dict.dz").write_bytes(gzip.compress(data.encode()))
    offset = len("00-database-info\n   header\n")
    index = ["00-database-info\tA\t" + b64(offset)]
    for entry in entries:
        index.append(f"{entry.split()[0]}\t{b64(offset)}\t{b64(len(entry))}")
        offset += len(entry)
    (tmp_path / "gcide.index").write_text("\n".join(index) + "\n")
    docs = list(debian.gcide_entries(tmp_path / "gcide.dict.dz", entries_per_document=2))
    assert docs == ["Aa \\Aa\\, n.\n   1. A river.\n\n   2. Lava.\n\nAb \\Ab\\, n.\n   A month.", "Ac \\Ac\\\n   Three."]


def test_each_fortune_is_a_document(tmp_path):
    (tmp_path / "fortunes").write_text("First.\n%\nSecond,\n  -- someone\n%\n")
    assert list(debian.fortunes(tmp_path / "fortunes")) == ["First.", "Second,\n  -- someone", ""]


def test_source_documents_follow_globs_and_skip_excluded_and_index_files(tmp_path):
    docs_dir = tmp_path / "usr/share/doc/linux-doc-6.1/Documentation"
    (docs_dir / "translations/zh_CN").mkdir(parents=True)
    (docs_dir / "a.rst.gz").write_bytes(gzip.compress(b"Title\n=====\n\nKernel text."))
    (docs_dir / "translations/zh_CN/a.rst").write_text("not English")
    linux = next(s for s in debian.SOURCES if s.name == "linux-doc")
    docs = list(debian.source_documents(linux, tmp_path))
    assert [(d.text, d.source) for d in docs] == [("Title\n\nKernel text.", "linux-doc")]


def test_installed_docs_collect_module_class_and_function_docstrings(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/mod.py").write_text(
        '"""A module docstring that is long enough to be kept as text."""\n'
        'def f():\n    """A function docstring that is also long enough to keep."""\n'
        'def g():\n    """short"""\n')
    (tmp_path / "pkg/tests").mkdir()
    (tmp_path / "pkg/tests/test_x.py").write_text('"""A test module docstring that should be skipped entirely."""\n')
    docs = list(_module_docstrings(tmp_path, "site-packages"))
    assert [d.text for d in docs] == [("A module docstring that is long enough to be kept as text.\n\n"
                                      "A function docstring that is also long enough to keep.")]
