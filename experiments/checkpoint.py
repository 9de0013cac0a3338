"""Checkpoints that resume a run bit-identically: model, optimizer, scheduler, data position,
every random generator, and the counters of the loop. Writes are atomic (``atomic_path``).

The file is torch's format followed by a trailer with the SHA-256 of everything before it
(``TRAILER``), so one flipped bit, a truncated or an empty file is a ``CheckpointError`` naming
the file instead of a silently different run. A checkpoint without the trailer (written before
the checksum existed) loads unverified.
"""

from __future__ import annotations

import hashlib
import io
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.atomic import atomic_path

CHECKPOINT = "checkpoint.pt"
#: b"\nfimkit-sha256:" + 64 hex digits + b"\n" at the end of every checkpoint
TRAILER = b"\nfimkit-sha256:"
TRAILER_SIZE = len(TRAILER) + 64 + 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted (damaged, truncated, empty, not a checkpoint)."""


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
        digest = hashlib.sha256()
        with tmp.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        with tmp.open("ab") as f:
            f.write(TRAILER + digest.hexdigest().encode() + b"\n")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, verified against its checksum; ``CheckpointError`` otherwise."""
    path = Path(path)
    data = path.read_bytes()
    advice = "delete it to start the run again, or put back a good copy"
    if not data:
        raise CheckpointError(f"{path}: the checkpoint is empty (a write that never finished?); {advice}")
    payload, trailer = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
    if trailer.startswith(TRAILER):
        expected = trailer[len(TRAILER):-1].decode("ascii", "replace")
        if hashlib.sha256(payload).hexdigest() != expected:
            raise CheckpointError(f"{path}: the checkpoint is damaged (its SHA-256 does not match the one written "
                                  f"with it: a changed bit or a partial copy); {advice}")
    else:
        payload = data
        warnings.warn(f"{path} has no checksum (written by an older fimkit); loading it unverified", stacklevel=2)
    try:
        # weights_only: a checkpoint is data, never code (torch's safe loader).
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean "bad file"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); {advice}") from None
    missing = {"model", "optimizer", "scheduler", "data", "loop", "rng", "config"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise CheckpointError(f"{path}: not a fimkit training checkpoint (missing {sorted(missing)}); {advice}")
    return state


def restore(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any) -> dict[str, Any]:
    """Restores a loaded checkpoint in place; returns its loop counters."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    set_rng_states(state["rng"])
    return dict(state["loop"])
