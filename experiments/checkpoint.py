"""Checkpoints that resume a run bit-identically: model, optimizer, scheduler, data position,
every random generator, and the counters of the loop. Writes are atomic (``atomic_path``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.atomic import atomic_path

CHECKPOINT = "checkpoint.pt"


def rng_states() -> dict[str, Any]:
    # numpy's state holds an array; stored as a list so the file loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value):
    # random.setstate wants the nested tuples it produced; a round trip may give lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any, loop: dict[str, Any],
                    config: dict[str, Any]) -> None:
    """``data`` has ``state_dict()``; ``loop`` holds the counters (step, tokens, seconds)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data": data.state_dict(),
        "loop": dict(loop),
        "rng": rng_states(),
        "config": config,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # weights_only: a checkpoint is data, never code (torch's safe loader).
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any) -> dict[str, Any]:
    """Restores a loaded checkpoint in place; returns its loop counters."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    set_rng_states(state["rng"])
    return dict(state["loop"])
