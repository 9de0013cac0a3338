"""The text pipeline on the shipped sample: documents, split, tokenizer, shards, batch order."""

import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer

from experiments.data import DataSpec, prepare
from experiments.data.documents import (
    Document,
    deduplicate,
    read_documents,
    read_jsonl,
    split_documents,
)
from experiments.data.sample import SAMPLE
from experiments.data.shards import TokenBatches, eval_windows, open_shard
from experiments.data.tokenizer import EOS, find_t5_tokenizer

SPEC = DataSpec(sources=(str(SAMPLE),), tokenizer="bpe", vocab_size=512, val_fraction=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare(SPEC, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def docs():
    return deduplicate(read_documents([SAMPLE]))


def test_sample_is_small_and_has_many_documents():
    assert SAMPLE.stat().st_size < 300_000
    assert len(read_jsonl(SAMPLE)) >= 50


def test_tokenizer_round_trips_every_sample_document(data, docs):
    tokenizer = Tokenizer.from_file(str(data.tokenizer))
    for doc in docs:
        assert tokenizer.decode(tokenizer.encode(doc.text).ids) == doc.text


def test_tokenizer_round_trips_unseen_unicode(data):
    tokenizer = Tokenizer.from_file(str(data.tokenizer))
    text = "Ünïcödé ≠ ASCII — 漢字 and emoji 🙂\ttabs\n\nnewlines  "
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_split_is_by_document_without_overlap(docs):
    train, val = split_documents(docs, 0.1)
    train_texts, val_texts = {d.text for d in train}, {d.text for d in val}
    assert val_texts and not (train_texts & val_texts)
    assert len(train) + len(val) == len(docs)


def test_split_does_not_depend_on_document_order(docs):
    _, val = split_documents(docs, 0.1)
    _, val_reversed = split_documents(list(reversed(docs)), 0.1)
    assert {d.text for d in val} == {d.text for d in val_reversed}


def test_shards_partition_the_documents_of_each_split(data, docs):
    train_docs, val_docs = split_documents(docs, 0.1)
    tokenizer = Tokenizer.from_file(str(data.tokenizer))
    eos = tokenizer.token_to_id(EOS)
    for path, split in ((data.train, train_docs), (data.val, val_docs)):
        tokens = open_shard(path)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        assert int((tokens == eos).sum()) == len(split)  # one end-of-text per document
        first = tokens[: int(np.argmax(tokens == eos))]
        assert tokenizer.decode(first.tolist()) == split[0].text


def test_meta_records_counts_and_the_tokenizer(data):
    meta = json.loads((data.train.parent / "meta.json").read_text())
    assert meta["train_tokens"] == len(open_shard(data.train))
    assert meta["val_tokens"] == len(open_shard(data.val))
    assert meta["max_token_id"] < meta["vocab_size"] == 512


def test_second_prepare_reuses_the_cache(data, tmp_path_factory):
    cache = data.train.parents[2]
    stamp = os.stat(data.tokenizer).st_mtime_ns, os.stat(data.train).st_mtime_ns
    again = prepare(SPEC, cache)
    assert again.train == data.train
    assert (os.stat(again.tokenizer).st_mtime_ns, os.stat(again.train).st_mtime_ns) == stamp


def test_batch_order_is_a_function_of_the_seed(data):
    tokens = open_shard(data.train)
    a, b, c = TokenBatches(tokens, 32, seed=1), TokenBatches(tokens, 32, seed=1), TokenBatches(tokens, 32, seed=2)
    xa, _ = a.next(8)
    assert (xa == b.next(8)[0]).all()
    assert not (xa == c.next(8)[0]).all()


def test_targets_are_inputs_shifted_by_one(data):
    x, y = TokenBatches(open_shard(data.train), 32, seed=0).next(4)
    assert x.shape == y.shape == (4, 32)
    assert (x[:, 1:] == y[:, :-1]).all()


def test_batch_position_state_restores_the_stream(data):
    tokens = open_shard(data.train)
    straight = TokenBatches(tokens, 32, seed=3)
    straight.next(5)
    expected = straight.next(7)[0]
    resumed = TokenBatches(tokens, 32, seed=3)
    resumed.next(5)
    fresh = TokenBatches(tokens, 32, seed=3)
    fresh.load_state_dict(resumed.state_dict())
    assert (fresh.next(7)[0] == expected).all()


def test_an_epoch_serves_every_window_once(data):
    tokens = open_shard(data.train)
    batches = TokenBatches(tokens, 32, seed=0)
    n = batches.n_windows
    served = batches.next(n)[0]
    assert len(served) == n
    assert {tuple(row.tolist()) for row in served} == {tuple(tokens[i * 32 : (i + 1) * 32].tolist()) for i in range(n)}


def test_eval_windows_are_the_first_windows_in_order(data):
    tokens = open_shard(data.val)
    x, y = eval_windows(tokens, 16, 64)
    assert x.shape == (4, 16)
    assert x[1].tolist() == tokens[16:32].tolist()
    assert y[1].tolist() == tokens[17:33].tolist()


def test_deduplication_ignores_whitespace_and_case():
    docs = [Document("Hello  World\n"), Document("hello world"), Document("other")]
    assert [d.text for d in deduplicate(docs)] == ["Hello  World\n", "other"]


def test_text_files_are_one_document_each(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.txt").write_text("second document")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "third"}) + "\n" + json.dumps({"text": "fourth"}) + "\n")
    assert sorted(d.text for d in read_documents([tmp_path])) == ["first document", "fourth", "second document", "third"]


def test_missing_data_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        prepare(DataSpec(sources=(str(tmp_path / "nope.jsonl"),)), tmp_path)


def test_jsonl_without_text_field_is_rejected(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(ValueError, match="'text' field"):
        list(read_documents([tmp_path / "bad.jsonl"]))


def test_missing_t5_tokenizer_says_how_to_provide_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("FIMKIT_T5_TOKENIZER", raising=False)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        find_t5_tokenizer()


def test_a_single_document_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2"):
        split_documents([Document("only")], 0.1)
