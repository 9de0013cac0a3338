"""The paper's learning-rate schedule (GaLore's ``cosine`` with a floor), as a ``LambdaLR``.

Linear warmup from 0 over the first ``warmup_fraction`` of the steps, then a half cosine from
the peak down to ``min_ratio`` of it at the last step. Written exactly as GaLore's
``get_scheculer(..., scheduler_type="cosine", min_lr_ratio=0.1)``, so step 0 runs with lr 0.
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_fraction: float = 0.1, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr at ``step`` (0-based); 1 at the end of warmup, ``min_ratio`` at ``total_steps``."""
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def paper_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1,
                   min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Scales every parameter group's lr (matrix and Adam groups alike) by ``lr_factor``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_fraction, min_ratio)
    )
