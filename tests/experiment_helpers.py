"""Helpers for fast experiment tests: configs that train the ``micro`` preset on the shipped
sample corpus, with their run folder and data cache under a test's ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

from experiments.config import TrainConfig
from experiments.data.sample import SAMPLE
from experiments.presets import PRESETS

MICRO = PRESETS["micro"]


def micro_config(tmp_path: str | Path, cache: str | Path | None = None, **overrides) -> TrainConfig:
    """A config for the ``micro`` preset on ``experiments/sample`` (BPE of 512 tokens)."""
    values = {"preset": "micro", "data": [str(SAMPLE)], "out": str(Path(tmp_path) / "run"),
              "cache": str(cache or Path(tmp_path) / "cache"), "threads": 1}
    values.update(overrides)
    return TrainConfig(**values)
