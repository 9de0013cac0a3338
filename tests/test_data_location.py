"""Where the data cache lives: $FIMKIT_CACHE, else the platform cache directory, never the
working directory; and what `fimkit data --where` says of it."""

import sys
from pathlib import Path

import pytest

from experiments.data import DataSpec, default_cache_dir, describe_cache, prepare, resolve_cache
from experiments.data.location import CACHE_ENV
from experiments.data.sample import SAMPLE

SPEC = DataSpec(sources=(str(SAMPLE),), tokenizer="bpe", vocab_size=300, val_fraction=0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    prepare(SPEC, path)
    return path


def test_fimkit_cache_moves_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="XDG is the Linux convention")
def test_default_is_the_platform_cache_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "fimkit"


def test_explicit_cache_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache(tmp_path / "given") == tmp_path / "given"


def test_prepare_without_a_cache_writes_nothing_in_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    data = prepare(SPEC)
    assert list(work.iterdir()) == []
    assert data.train.is_relative_to(tmp_path / "env-cache")


def test_relative_cache_gives_paths_valid_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = prepare(SPEC, "relative-cache")
    assert data.tokenizer.is_absolute() and Path(data.meta["tokenizer_path"]).is_absolute()


def test_where_names_the_directory_and_its_corpus_hash(cache):
    data = prepare(SPEC, cache)
    text = describe_cache(cache)
    assert str(cache) in text.splitlines()[0]
    assert data.meta["corpus"]["sha256"][:16] in text


def test_where_lists_tokenizers_and_shards_with_sizes(cache):
    text = describe_cache(cache)
    tokenizer_line = next(line for line in text.splitlines() if "tokenizers/" in line)
    shard_line = next(line for line in text.splitlines() if "tokens/" in line)
    assert "MB" in tokenizer_line and "train" in shard_line and "MB" in shard_line


def test_where_says_the_cache_came_from_fimkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert f"${CACHE_ENV}" in describe_cache(default_cache_dir()).splitlines()[0]


def test_where_of_an_empty_cache_says_nothing_is_built(tmp_path):
    assert "nothing built yet" in describe_cache(tmp_path / "missing")
