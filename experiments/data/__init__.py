"""The offline text pipeline: documents -> tokenizer -> memory-mapped token shards."""

from experiments.data.pipeline import DataSpec, TokenData, prepare

__all__ = ["DataSpec", "TokenData", "prepare"]
