"""Corpus records: every build says which packages, versions and bytes it is made of; caches
older than records get one computed without being written to; a changed corpus is named.

No network: the Debian build runs on a .deb made here with dpkg-deb, handed to the pipeline in
place of ``apt-get download``."""

import hashlib
import json
import platform
import shutil
import subprocess
from importlib import metadata

import pytest

from experiments.data import DataSpec, check_corpus, corpus_record, debian, prepare, recorded_corpus
from experiments.data.documents import Document, write_jsonl
from experiments.data.provenance import deb_name_version, documents_sha256

TEXTS = [f"Document {i}: the {w} manual explains how the {w} works, chapter {i}, in plain English words."
         for i, w in enumerate(["kernel", "shell", "parser", "compiler", "linker", "editor", "pager", "printer",
                                "mailer", "router", "scheduler", "debugger"])]
SPEC = DataSpec(sources=("debian",), tokenizer="bpe", vocab_size=300, val_fraction=0.3)
FAKE = debian.Source("fake-doc", ("fake-doc",), ("usr/share/doc/fake-doc/*.txt",), debian.whole_file(str))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def fake_deb(tmp_path_factory):
    """A real .deb (Package fake-doc, Version 1:2.0-3) under a file name whose version is wrong,
    so that a test can tell dpkg's report from the file name's."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tree = tmp_path_factory.mktemp("pkg")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text("Package: fake-doc\nVersion: 1:2.0-3\nArchitecture: all\n"
                                         "Maintainer: nobody <nobody@example.org>\nDescription: test docs\n")
    docs = tree / "usr/share/doc/fake-doc"
    docs.mkdir(parents=True)
    for i, text in enumerate(TEXTS):
        (docs / f"{i:02d}.txt").write_text(text)
    deb = tmp_path_factory.mktemp("debs") / "fake-doc_0.0_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def built(fake_deb, tmp_path_factory):
    """A Debian corpus, tokenizer and shards built from the fake package, offline."""
    cache = tmp_path_factory.mktemp("cache")

    def download(package, debs):
        target = debs / fake_deb.name
        shutil.copy(fake_deb, target)
        return target

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(debian, "SOURCES", (FAKE,))
        mp.setattr(debian, "download", download)
        mp.setattr(debian, "apt_available", lambda: True)
        data = prepare(SPEC, cache)
    return data, cache


@pytest.fixture
def legacy_cache(tmp_path):
    """A cache as fimkit wrote it before records: an old-style corpus manifest (no versions but
    apt's .deb names, no hash) and shards whose meta.json has no 'corpus'."""
    corpus = tmp_path / "corpus" / "debian"
    corpus.mkdir(parents=True)
    docs = [Document(t, "fake-doc", f"{i}") for i, t in enumerate(TEXTS)]
    write_jsonl(docs, corpus / "documents.jsonl")
    (corpus / "manifest.json").write_text(json.dumps({
        "sources": {"fake-doc": {"debs": ["fake-doc_1%3a2.0-3_all.deb"], "documents": len(docs), "characters": 1}},
        "documents_before_dedup": len(docs), "documents": len(docs), "characters": sum(len(t) for t in TEXTS),
        "build_seconds": 0.1}))
    prepare(SPEC, tmp_path)
    (meta_file,) = (tmp_path / "tokens").glob("*/meta.json")
    meta = json.loads(meta_file.read_text())
    del meta["corpus"]
    meta["tokenizer_path"] = ".cache/tokenizers/" + next((tmp_path / "tokenizers").glob("*.json")).name
    meta_file.write_text(json.dumps(meta))
    return tmp_path


def test_debian_build_records_package_versions_as_dpkg_reports_them(built):
    data, _ = built
    assert data.meta["corpus"]["packages"] == {"fake-doc": "1:2.0-3"}


def test_corpus_hash_is_the_sha256_of_the_documents_file(built):
    data, cache = built
    manifest = json.loads((cache / "corpus/debian/manifest.json").read_text())
    assert manifest["sha256"] == data.meta["corpus"]["sha256"] == sha256(cache / "corpus/debian/documents.jsonl")


def test_record_has_the_hashes_of_the_tokenizer_and_shards(built):
    data, _ = built
    record = data.meta["corpus"]
    assert record["tokenizer_sha256"] == sha256(data.tokenizer)
    assert record["shards_sha256"] == {"train": sha256(data.train), "val": sha256(data.val)}


def test_build_records_when_and_on_what_system_it_ran(built):
    record = built[0].meta["corpus"]
    assert record["built_at"] and record["system"] and record["recorded"] == "at build"


def test_shards_meta_holds_the_record_prepare_returns(built):
    data, cache = built
    assert json.loads((data.train.parent / "meta.json").read_text())["corpus"] == data.meta["corpus"]


def test_reusing_the_cache_returns_the_recorded_record(built):
    data, cache = built
    assert prepare(SPEC, cache).meta["corpus"] == data.meta["corpus"]


def test_record_saved_in_a_run_config_reads_back_unchanged(built):
    data, _ = built
    config = json.loads(json.dumps({"data": data.meta}))  # what config.json holds
    assert recorded_corpus(config) == corpus_record(data)
    assert check_corpus(recorded_corpus(config), corpus_record(data)) is None


def test_cache_without_records_gets_one_and_is_not_written_to(legacy_cache):
    before = snapshot(legacy_cache)
    data = prepare(SPEC, legacy_cache)
    assert snapshot(legacy_cache) == before
    assert data.meta["corpus"]["recorded"] == "afterwards"


def test_cache_without_records_gets_versions_from_deb_file_names(legacy_cache):
    assert prepare(SPEC, legacy_cache).meta["corpus"]["packages"] == {"fake-doc": "1:2.0-3"}


def test_cache_without_records_gets_the_hashes_of_its_files(legacy_cache):
    data = prepare(SPEC, legacy_cache)
    record = data.meta["corpus"]
    assert record["sha256"] == sha256(legacy_cache / "corpus/debian/documents.jsonl")
    assert record["shards_sha256"]["train"] == sha256(data.train)


def test_relative_tokenizer_path_of_an_old_cache_is_found_in_the_cache(legacy_cache):
    data = prepare(SPEC, legacy_cache)
    assert data.tokenizer.is_file() and data.tokenizer.parent == legacy_cache / "tokenizers"


def test_shards_whose_corpus_was_rebuilt_do_not_claim_its_hash(legacy_cache):
    documents = legacy_cache / "corpus/debian/documents.jsonl"
    write_jsonl([Document(t) for t in TEXTS[:5]], documents)  # another corpus under the same name
    manifest = json.loads((legacy_cache / "corpus/debian/manifest.json").read_text())
    (legacy_cache / "corpus/debian/manifest.json").write_text(json.dumps({**manifest, "documents": 5}))
    record = prepare(SPEC, legacy_cache).meta["corpus"]
    assert record["sha256"] is None and record["documents"] == len(TEXTS)


def test_file_corpus_is_hashed_like_a_cached_one(tmp_path):
    docs = [Document(t, "files", f"f{i}") for i, t in enumerate(TEXTS)]
    write_jsonl(docs, tmp_path / "documents.jsonl")
    assert documents_sha256(docs) == sha256(tmp_path / "documents.jsonl")


def test_file_corpus_record_has_its_hash_and_no_packages(tmp_path):
    for i, text in enumerate(TEXTS):
        (tmp_path / f"{i}.txt").write_text(text)
    record = prepare(DataSpec((str(tmp_path),), vocab_size=300, val_fraction=0.3), tmp_path / "cache").meta["corpus"]
    assert record["source"] == "files" and record["packages"] == {} and len(record["sha256"]) == 64


def test_installed_corpus_records_the_interpreter_and_distribution_versions(tmp_path, monkeypatch):
    from experiments.data import pipeline

    docs = [Document(t, "site-packages", f"m{i}") for i, t in enumerate(TEXTS)]
    monkeypatch.setattr(pipeline, "installed_documents", lambda: (docs, {"installed": {"documents": len(docs)}}))
    record = prepare(DataSpec(("installed",), vocab_size=300, val_fraction=0.3), tmp_path).meta["corpus"]
    assert record["packages"]["python"] == platform.python_version()
    assert record["packages"]["tokenizers"] == metadata.version("tokenizers")


def test_deb_file_name_gives_package_and_unquoted_epoch():
    assert deb_name_version("fortunes_1%3a1.99.1-7.3_all.deb") == ("fortunes", "1:1.99.1-7.3")


RECORDED = {"source": "debian", "sha256": "a" * 64, "documents": 100, "train_tokens": 1000, "val_tokens": 10,
            "packages": {"linux-doc-6.1": "6.1.176-1", "perl-doc": "5.36.0-7"}, "tokenizer_sha256": "t" * 64,
            "shards_sha256": {"train": "s" * 64, "val": "v" * 64}}


def test_same_corpus_gives_no_message():
    assert check_corpus(RECORDED, dict(RECORDED)) is None


def test_nothing_recorded_gives_no_message():
    assert check_corpus(None, RECORDED) is None


def test_changed_corpus_is_one_line_naming_the_hash_and_changed_versions():
    current = {**RECORDED, "sha256": "b" * 64, "packages": {"linux-doc-6.1": "6.1.180-1", "perl-doc": "5.36.0-7"}}
    message = check_corpus(RECORDED, current, what="paper_figs/runs/nano/adam")
    assert "\n" not in message and "paper_figs/runs/nano/adam" in message
    assert "aaaaaaaaaaaa -> bbbbbbbbbbbb" in message and "linux-doc-6.1 6.1.176-1 -> 6.1.180-1" in message
    assert "perl-doc" not in message


def test_removed_package_is_named():
    current = {**RECORDED, "sha256": "b" * 64, "packages": {"linux-doc-6.1": "6.1.176-1"}}
    assert "perl-doc 5.36.0-7 -> absent" in check_corpus(RECORDED, current)


def test_unknown_versions_are_not_reported_as_changes():
    recorded = {**RECORDED, "packages": {"linux-doc-6.1": "unknown", "perl-doc": "5.36.0-7"}}
    assert check_corpus(recorded, RECORDED) is None


def test_another_tokenizer_on_the_same_documents_is_named():
    message = check_corpus(RECORDED, {**RECORDED, "tokenizer_sha256": "u" * 64})
    assert "another tokenizer" in message


def test_run_config_older_than_records_is_checked_by_its_counts():
    config = {"data": {"source": "debian", "train_documents": 90, "val_documents": 10,
                       "train_tokens": 999, "val_tokens": 10}}
    assert recorded_corpus(config)["documents"] == 100
    assert "train_tokens 999 -> 1,000" in check_corpus(recorded_corpus(config), RECORDED)
