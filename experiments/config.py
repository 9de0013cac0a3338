"""The training configuration: plain values, every one overridable from the command line.

``None`` means "the preset's (or the paper's) value"; ``resolve`` fills those in, and the
resolved config is what ``config.json`` stores, so ``fimkit train --config runs/X/config.json``
repeats the run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.optimizers import default_hparams
from fimkit.routing import resolve_lm_head
from experiments.presets import get_preset


@dataclass
class TrainConfig:
    preset: str = "tiny"
    optimizer: str = "adam"
    lm_head: str = "paper"  # "paper" (the paper's choice per optimizer), "adam" or "matrix" (the candidate)
    steps: int | None = None
    batch_size: int | None = None  # sequences per optimizer step
    micro_batch: int | None = None  # sequences per forward/backward (gradient accumulation)
    seq_len: int | None = None
    lr: float | None = None  # peak lr of the matrix optimizer; None: the paper's
    adam_lr: float | None = None  # peak lr of the Adam-routed parameters; None: same as lr
    hparams: dict[str, Any] = field(default_factory=dict)  # other optimizer hyperparameters
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    grad_clip: float = 0.0  # max global grad norm; 0 disables (GaLore's default)
    grad_release: bool = False  # layer-wise gradient release: step each parameter in backward
    seed: int = 0  # model initialisation
    data_seed: int | None = None  # batch order; None: same as seed
    data: list[str] = field(default_factory=lambda: ["debian"])  # "debian", "installed" or files
    tokenizer: str = "bpe"  # "bpe", "t5", "t5:PATH" or a tokenizer.json
    vocab_size: int | None = None  # model vocabulary (and BPE size); None: the preset's
    val_fraction: float = 0.01  # of documents held out
    eval_every: int | None = None
    eval_tokens: int | None = None
    ckpt_every: int | None = None
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"
    compile: bool = False
    threads: int = 0  # torch CPU threads; 0: torch's default
    out: str | None = None  # run folder; None: runs/{preset}-{optimizer}
    cache: str = ".cache"

    def resolve(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the preset's or the paper's value."""
        preset = get_preset(self.preset)
        c = dataclasses.replace(self, hparams=dict(self.hparams), data=list(self.data))
        for name in ("steps", "batch_size", "micro_batch", "seq_len", "eval_every", "eval_tokens", "ckpt_every"):
            if getattr(c, name) is None:
                setattr(c, name, getattr(preset, name))
        c.micro_batch = min(c.micro_batch, c.batch_size)
        if c.batch_size % c.micro_batch:
            raise ValueError(f"batch_size {c.batch_size} is not a multiple of micro_batch {c.micro_batch}")
        c.lm_head = resolve_lm_head(c.lm_head, c.optimizer)
        if c.grad_release and (c.micro_batch != c.batch_size or c.grad_clip > 0):
            raise ValueError("grad_release steps each parameter as soon as its gradient exists, so it needs "
                             "micro_batch == batch_size (no accumulation) and grad_clip 0")
        if c.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype must be 'auto', 'fp32' or 'bf16', got {c.dtype!r}")
        c.vocab_size = c.vocab_size or preset.model.vocab_size
        c.data_seed = c.seed if c.data_seed is None else c.data_seed
        c.optimizer = c.optimizer.lower()
        paper = default_hparams(c.optimizer, preset, c.steps)
        c.hparams = {**{k: v for k, v in paper.items() if k != "lr"}, **c.hparams}
        c.lr = paper.get("lr", 1e-3) if c.lr is None else c.lr
        c.out = c.out or f"runs/{c.preset}-{c.optimizer}"
        return c

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, as in the file

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}")
        return cls(**values)


def parse_key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, booleans, lists
    except json.JSONDecodeError:
        return key, value  # a bare string


def _base_type(annotation: str):
    hints = {"int": int, "float": float, "str": str, "bool": bool}
    return hints[annotation.replace(" | None", "")]


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per TrainConfig field (defaults stay None = "not given")."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "hparams":
            parser.add_argument("--opt", dest="hparams", action="append", type=parse_key_value, metavar="KEY=VALUE",
                                help="an optimizer hyperparameter (repeatable), e.g. --opt rank=64")
        elif f.name == "data":
            parser.add_argument(flag, nargs="+", help="'debian' (default), 'installed', or .txt/.jsonl files or folders")
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=_base_type(typing.cast(str, f.type)), default=None, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default values, or a loaded config.json) with the options that were given."""
    values = dataclasses.asdict(base or TrainConfig())
    for name in values:
        given = getattr(args, name, None)
        if given is None:
            continue
        values[name] = {**values["hparams"], **dict(given)} if name == "hparams" else given
    return TrainConfig.from_dict(values)


def load_config(path: str | Path) -> TrainConfig:
    values = json.loads(Path(path).read_text())
    return TrainConfig.from_dict(values.get("train", values))
