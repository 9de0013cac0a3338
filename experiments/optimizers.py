"""Per-optimizer defaults for a preset, and construction through fimkit's routing.

Paper presets take the paper's row for their size (``fimkit.optim.paper_hparams``). CPU presets
take the 60M row and rescale what is tied to the model's shape or the run's length:
- ``rank`` and Alice's ``leading`` (eigenvectors kept at a switch): the same fraction of the
  width as at 60M (128 and 40 of 512), at least 1;
- step intervals (subspace switching / projection updates): the same number of updates per run
  as the 60M run's 10K steps would make, but never more often than every 10 steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import fimkit
from experiments.presets import Preset
from fimkit.optim.builtin_adam import HYPERPARAMETERS as BUILTIN_ADAM_HYPERPARAMETERS

PAPER_WIDTH, PAPER_STEPS = 512, 10_000  # the 60M row's model width and run length
WIDTH_KEYS = ("rank", "leading")
INTERVAL_KEYS = ("update_interval",)


def default_hparams(name: str, preset: Preset, steps: int) -> dict[str, Any]:
    """The paper's hyperparameters of optimizer ``name`` for ``preset`` (lr included)."""
    hparams = dict(fimkit.optim.paper_hparams(name, preset.paper_size))
    # routing steps the non-matrices with torch's Adam: the built-in Adam's defaults mean nothing here
    hparams = {k: v for k, v in hparams.items() if k not in BUILTIN_ADAM_HYPERPARAMETERS}
    if name == "adam":  # routing trains an all-Adam model with torch.optim.Adam: keep the keys it takes
        hparams = {k: v for k, v in hparams.items() if k in ("lr", "betas", "eps", "weight_decay")}
    if preset.cpu:
        for key in WIDTH_KEYS:
            if key in hparams:
                hparams[key] = max(1, round(hparams[key] * preset.model.dim / PAPER_WIDTH))
        for key in INTERVAL_KEYS:
            if key in hparams and isinstance(hparams[key], int):
                hparams[key] = max(10, round(hparams[key] * steps / PAPER_STEPS))
    return hparams


def build(model: nn.Module, name: str, *, lr: float, adam_lr: float | None, lm_head: str,
          hparams: dict[str, Any], gradient_release: bool = False) -> torch.optim.Optimizer:
    """One optimizer: ``name`` for attention/MLP matrices, Adam for the rest (fimkit routing)."""
    return fimkit.build_optimizer(model, name, lm_head=lm_head, adam_lr=adam_lr, lr=lr,
                                  gradient_release=gradient_release, **hparams)


def matrix_lr(optimizer: torch.optim.Optimizer, name: str) -> float:
    """Current lr of the matrix optimizer's group (what the metrics report as ``lr``)."""
    for group in optimizer.param_groups:
        if group.get("role", "candidate") == "candidate" and group.get("optimizer", name.lower()) == name.lower():
            return group["lr"]
    return optimizer.param_groups[0]["lr"]
