"""Checkpoints that resume a run bit-identically: model, optimizer, scheduler, data position,
every random generator, and the counters of the loop. Writes are atomic (``atomic_path``).

The file is torch's format followed by a trailer with the SHA-256 of everything before it
(``TRAILER``), so one flipped bit, a truncated or an empty file is a ``CheckpointError`` naming
the file instead of a silently different run. A checkpoint without the trailer (written before
the checksum existed) loads unverified.

An FSDP2 run (``--parallel fsdp2``) writes a folder instead, ``checkpoint.dcp``: the sharded
model and optimizer through ``torch.distributed.checkpoint``, the rest as above, and a manifest
of every file's size and SHA-256 (``save_sharded_checkpoint``).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.atomic import atomic_path, write_text_atomic

CHECKPOINT = "checkpoint.pt"
#: b"\nfimkit-sha256:" + 64 hex digits + b"\n" at the end of every checkpoint
TRAILER = b"\nfimkit-sha256:"
TRAILER_SIZE = len(TRAILER) + 64 + 1
#: what a checkpoint holds
PARTS = frozenset({"model", "optimizer", "scheduler", "data", "loop", "rng", "config"})


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
        **training_state(scheduler=scheduler, data=data, loop=loop, config=config),
    }
    write_verified(path, state)


def training_state(*, scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any, loop: dict[str, Any],
                   config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds besides the model and the optimizer."""
    return {"scheduler": scheduler.state_dict(), "data": data.state_dict(), "loop": dict(loop), "rng": rng_states(),
            "config": config}


def write_verified(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` then the SHA-256 trailer, atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        digest = hashlib.sha256()
        with tmp.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        with tmp.open("ab") as f:
            f.write(TRAILER + digest.hexdigest().encode() + b"\n")


def load_checkpoint(path: str | Path, parts: frozenset[str] = PARTS) -> dict[str, Any]:
    """The checkpoint at ``path``, verified against its checksum, with every one of ``parts``;
    ``CheckpointError`` otherwise."""
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
    missing = parts - set(state if isinstance(state, dict) else ())
    if missing:
        raise CheckpointError(f"{path}: not a fimkit training checkpoint (missing {sorted(missing)}); {advice}")
    return state


def restore(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any) -> dict[str, Any]:
    """Restores a loaded checkpoint in place; returns its loop counters."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return restore_training_state(state, scheduler=scheduler, data=data)


def restore_training_state(state: dict[str, Any], *, scheduler: torch.optim.lr_scheduler.LRScheduler,
                           data: Any) -> dict[str, Any]:
    scheduler.load_state_dict(state["scheduler"])
    data.load_state_dict(state["data"])
    set_rng_states(state["rng"])
    return dict(state["loop"])


# ------------------------------------------------------------------ sharded checkpoints (FSDP2)
#: the folder of an FSDP2 run's checkpoints (``--parallel fsdp2``), beside ``checkpoint.pt``
SHARDED = "checkpoint.dcp"
#: in ``SHARDED``: the name of the complete checkpoint, written (atomically) after it
LATEST = "latest"
TRAINING = "training.pt"  # scheduler, data position, loop counters, generators, config
MANIFEST = "manifest.json"  # size and SHA-256 of every file of the checkpoint


def save_sharded_checkpoint(folder: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any, loop: dict[str, Any],
                            config: dict[str, Any], main: bool) -> None:
    """A collective (every rank calls it): the sharded model and optimizer state through
    ``torch.distributed.checkpoint`` (each rank writes its shards; a later run with another rank
    count reshards them), the rest from rank 0 (``main``), in ``folder/step-N``; then rank 0
    writes the manifest and points ``folder/latest`` at it. A run killed before that keeps the
    previous checkpoint; the unfinished folder is removed on resume (``remove_unfinished``)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = Path(folder)
    name = f"step-{loop['step']:08d}"
    if main:
        shutil.rmtree(folder / name, ignore_errors=True)  # a write of this step that was interrupted
        (folder / name).mkdir(parents=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder / name)
    if main:
        write_verified(folder / name / TRAINING, training_state(scheduler=scheduler, data=data, loop=loop,
                                                                 config=config))
        files = sorted(p for p in (folder / name).iterdir() if p.is_file())
        manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _file_sha256(p)} for p in files}
        write_text_atomic(folder / name / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        write_text_atomic(folder / LATEST, name + "\n")
        remove_unfinished(folder)
    dist.barrier()


def remove_unfinished(folder: str | Path) -> list[Path]:
    """Delete the ``step-N`` folders ``latest`` does not name (older checkpoints, and writes that
    were interrupted); returns them. Rank 0 only."""
    folder = Path(folder)
    current = (folder / LATEST).read_text().strip() if (folder / LATEST).exists() else None
    stale = [p for p in folder.glob("step-*") if p.is_dir() and p.name != current]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def load_sharded_checkpoint(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """The training state (``TRAINING``) of the checkpoint ``folder/latest`` names, after checking
    that every file of its manifest is there with its size and (``verify``) its SHA-256;
    ``CheckpointError`` naming the file otherwise. ``state["sharded"]`` is the step folder that
    :func:`restore_sharded` reads the model and optimizer from."""
    folder = Path(folder)
    advice = "delete the folder to start the run again, or put back a good copy"
    try:
        target = folder / (folder / LATEST).read_text().strip()
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: no complete sharded checkpoint ({type(exc).__name__}: {exc}); "
                              f"{advice}") from None
    for name, expected in manifest.items():
        path = target / name
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            raise CheckpointError(f"{path}: missing or of another size than the {expected['bytes']} bytes written; "
                                  f"{advice}")
        if verify and _file_sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: the checkpoint is damaged (its SHA-256 does not match the one written "
                                  f"with it); {advice}")
    state = load_checkpoint(target / TRAINING, parts=PARTS - {"model", "optimizer"})
    state["sharded"] = str(target)
    return state


def restore_sharded(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, data: Any) -> dict[str, Any]:
    """A collective: the model and optimizer of a loaded sharded checkpoint (resharded to this
    run's ranks by ``torch.distributed.checkpoint``), then the rest; returns the loop counters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # the optimizer's state must exist to be loaded into: torch makes it with one step of zero
    # gradients at lr 0 (torch.distributed.checkpoint.state_dict), which the load then replaces
    model_state, optimizer_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(loaded, checkpoint_id=state["sharded"])
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
    return restore_training_state(state, scheduler=scheduler, data=data)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
