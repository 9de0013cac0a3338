"""Optional live logging of a run: TensorBoard (``--tensorboard``) and Weights & Biases (``--wandb``).

``metrics.jsonl`` is the record of every run; these sinks only mirror it for dashboards, so
neither package is a dependency: asking for one that is not installed is a one-line error naming
the ``pip install`` that fixes it, raised before any data is prepared. Each sink receives the
training loss, learning rate and throughput every ``log_every`` steps and every evaluation.

- TensorBoard: ``torch.utils.tensorboard.SummaryWriter`` in ``OUT/tensorboard``; a resumed run
  purges the events after its checkpoint's step, so the curves show one history.
- wandb: offline by default (``OUT/wandb``; ``wandb sync`` uploads it later); ``WANDB_MODE``
  (``online``, ``offline``, ``disabled``) is respected. The run id is kept in ``OUT/wandb-id``,
  so a resumed run continues the same wandb run.
"""

from __future__ import annotations

import importlib
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

#: metrics.jsonl key -> dashboard tag
TAGS = {"train_loss": "train/loss", "eval_loss": "eval/loss", "eval_ppl": "eval/ppl", "lr": "train/lr",
        "tokens_per_s": "throughput/tokens_per_s", "tokens": "train/tokens"}
WANDB_ID = "wandb-id"


class Sink(Protocol):
    def log(self, step: int, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The dashboard tags of a metrics record (the keys it has)."""
    return {tag: float(record[key]) for key, tag in TAGS.items() if record.get(key) is not None}


def _require(module: str, flag: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{flag} needs the {package} package, which is not installed: pip install {package}") from None


def check_available(cfg) -> None:
    """Fail early (before any data is built) when a requested sink's package is missing."""
    if cfg.tensorboard:
        _require("torch.utils.tensorboard", "--tensorboard", "tensorboard")
    if cfg.wandb:
        _require("wandb", "--wandb", "wandb")


class TensorBoardSink:
    def __init__(self, out: Path, resume_step: int | None):
        tensorboard = _require("torch.utils.tensorboard", "--tensorboard", "tensorboard")
        # purge_step drops events at or after the checkpoint's step: a crash left them behind
        self.writer = tensorboard.SummaryWriter(log_dir=str(out / "tensorboard"),
                                                purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, record: dict[str, Any]) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, out: Path, cfg, resume_step: int | None):
        wandb = _require("wandb", "--wandb", "wandb")
        id_file = out / WANDB_ID
        if resume_step is not None and id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:8]  # wandb's own id format; wandb.util.generate_id is gone in 0.2x
            id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=cfg.wandb_project or "fimkit", name=out.name, id=run_id, resume="allow",
                              dir=str(out), config=cfg.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, step: int, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


def open_sinks(cfg, out: Path, resume_step: int | None) -> list[Sink]:
    """The sinks ``cfg`` asks for (none by default)."""
    sinks: list[Sink] = []
    if cfg.tensorboard:
        sinks.append(TensorBoardSink(out, resume_step))
    if cfg.wandb:
        sinks.append(WandbSink(out, cfg, resume_step))
    return sinks
