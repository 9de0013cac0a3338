"""Tokenizers: a byte-level BPE trained locally with ``tokenizers``, or T5's from disk.

The BPE works on bytes, so every string round-trips exactly (decode(encode(s)) == s) and no
text is ever unknown. The T5 tokenizer (the paper's, via GaLore) is only ever loaded from a
file the user already has: nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from experiments.atomic import atomic_path

EOS = "<|endoftext|>"  # separates documents in the token stream
T5_EOS = "</s>"


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path, length: int | None = None) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` and save it (atomically) to ``path``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    with atomic_path(path) as tmp:
        tokenizer.save(str(tmp))
    return tokenizer


def t5_candidates() -> list[Path]:
    """Where a local copy of T5's ``tokenizer.json`` may be: $FIMKIT_T5_TOKENIZER, then the
    Hugging Face cache (populated by the user, never by us)."""
    candidates = []
    if os.environ.get("FIMKIT_T5_TOKENIZER"):
        candidates.append(Path(os.environ["FIMKIT_T5_TOKENIZER"]))
    hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    for repo in ("models--t5-base", "models--google-t5--t5-base", "models--google--t5-v1_1-base", "models--t5-small"):
        candidates.extend(sorted((hub / repo / "snapshots").glob("*/tokenizer.json")))
    return candidates


def find_t5_tokenizer(path: str | Path | None = None) -> Path:
    candidates = [Path(path)] if path else t5_candidates()
    for candidate in candidates:
        if candidate.is_dir():
            candidate = candidate / "tokenizer.json"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "T5 tokenizer not found locally (looked in: "
        + (", ".join(map(str, candidates)) or "no candidates")
        + "). fimkit never downloads it: copy T5's tokenizer.json (e.g. from t5-base) to this machine "
        "and pass --tokenizer t5:/path/to/tokenizer.json or set FIMKIT_T5_TOKENIZER, "
        "or use --tokenizer bpe to train a local byte-level BPE instead."
    )


def eos_id(tokenizer: Tokenizer) -> int:
    for token in (EOS, T5_EOS):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError(f"tokenizer has neither {EOS!r} nor {T5_EOS!r} to separate documents")
