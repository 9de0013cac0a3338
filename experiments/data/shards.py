"""Token shards (uint16 ``.npy`` files, memory-mapped) and the batches read from them.

A split is one stream: each document's tokens followed by the end-of-text token. Training
reads non-overlapping windows of ``seq_len + 1`` tokens (inputs and shifted targets) in an
order that is a pure function of (seed, epoch): the data position is one integer, so resuming,
and giving every optimizer of a comparison the same batches, is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from experiments.atomic import atomic_path
from experiments.progress import Progress


def encode_to_shard(tokenizer: Tokenizer, texts: Sequence[str], eos: int, path: Path, desc: str, chunk: int = 256) -> int:
    """Tokenize ``texts`` (EOS after each) into a uint16 ``.npy`` at ``path``; returns its length."""
    if tokenizer.get_vocab_size() > 2**16:
        raise ValueError(f"vocabulary of {tokenizer.get_vocab_size()} does not fit uint16 shards")
    parts, progress = [], Progress(len(texts), desc, unit="doc")
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            parts.append(np.asarray(encoding.ids + [eos], dtype=np.uint16))
        progress.update(len(batch))
    progress.close()
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, tokens)
    return len(tokens)


def open_shard(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    rows = torch.from_numpy(rows)
    return rows[:, :-1], rows[:, 1:]


class TokenBatches:
    """Shuffled non-overlapping windows of a shard; ``position`` counts sequences served."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"shard of {len(tokens)} tokens is shorter than one sequence of {seq_len + 1}")
        self.position = 0
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:  # a fresh permutation per pass, derived from (seed, epoch) only
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return self._order

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``n`` sequences as (inputs, targets), each (n, seq_len) int64."""
        starts = []
        for k in range(self.position, self.position + n):
            epoch, index = divmod(k, self.n_windows)
            starts.append(self._order_of(epoch)[index] * self.seq_len)
        self.position += n
        return _windows(self.tokens, np.asarray(starts), self.seq_len)

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "seq_len": self.seq_len, "n_windows": self.n_windows}

    def load_state_dict(self, state: dict) -> None:
        expected = {"seed": self.seed, "seq_len": self.seq_len, "n_windows": self.n_windows}
        found = {k: state[k] for k in expected}
        if found != expected:
            raise ValueError(f"checkpoint's data stream {found} differs from this run's {expected}")
        self.position = state["position"]


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out set: the first ``max_tokens // seq_len`` windows of the validation
    shard, in order (all of them if the shard is smaller)."""
    n = min(max(max_tokens // seq_len, 1), (len(tokens) - 1) // seq_len)
    if n < 1:
        raise ValueError(f"validation shard of {len(tokens)} tokens is shorter than one sequence of {seq_len + 1}")
    return _windows(tokens, np.arange(n) * seq_len, seq_len)
