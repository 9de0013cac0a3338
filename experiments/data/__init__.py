"""The offline text pipeline: documents -> tokenizer -> memory-mapped token shards."""

from experiments.data.location import default_cache_dir, describe_cache, resolve_cache
from experiments.data.pipeline import DataSpec, TokenData, prepare
from experiments.data.provenance import check_corpus, corpus_record, recorded_corpus

__all__ = ["DataSpec", "TokenData", "check_corpus", "corpus_record", "default_cache_dir", "describe_cache",
           "prepare", "recorded_corpus", "resolve_cache"]
