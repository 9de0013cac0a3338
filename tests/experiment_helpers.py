"""Helpers for fast tests: a micro preset and configs that train on the shipped sample corpus."""

from __future__ import annotations

from pathlib import Path

from experiments.config import TrainConfig
from experiments.data.sample import SAMPLE
from experiments.model import ModelConfig
from experiments.presets import PRESETS, Preset

MICRO = Preset(
    ModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=512, max_seq_len=64),
    steps=8, batch_size=4, micro_batch=2, seq_len=32, eval_every=4, eval_tokens=8 * 32, ckpt_every=4,
    paper_size="60M", description="test-only: width 32, 2 layers", cpu=True,
)


def micro_config(tmp_path: str | Path, cache: str | Path | None = None, **overrides) -> TrainConfig:
    """A config for the ``micro`` preset on ``experiments/sample`` (BPE of 512 tokens), with
    its run folder and (unless shared) data cache under ``tmp_path``. Registers the preset."""
    PRESETS.setdefault("micro", MICRO)
    values = {"preset": "micro", "data": [str(SAMPLE)], "out": str(Path(tmp_path) / "run"),
                  "cache": str(cache or Path(tmp_path) / "cache"), "threads": 1}
    values.update(overrides)
    return TrainConfig(**values)
