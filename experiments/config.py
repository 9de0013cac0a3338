"""The training configuration: plain values, every one overridable from the command line.

``None`` means "the preset's (or the paper's) value"; ``resolve`` fills those in, and the
resolved config is what ``config.json`` stores, so ``fimkit train --config runs/X/config.json``
repeats the run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.optimizers import default_hparams
from experiments.presets import get_preset
from fimkit.optim import get_optimizer
from fimkit.optim.domains import BOOLEAN, NON_NEGATIVE, Domain, choice, integer, optional, real
from fimkit.routing import resolve_lm_head

TEXT = Domain("a string", lambda value: isinstance(value, str))
TEXTS = Domain("a list of strings", lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value))
MAPPING = Domain("a mapping of names to values", lambda value: isinstance(value, dict))


def _field(default: Any = None, domain: Domain = TEXT, factory=None):
    """A config field with its valid values (``None`` always means "the preset's")."""
    if factory is not None:
        return field(default_factory=factory, metadata={"domain": domain})
    return field(default=default, metadata={"domain": domain})


def suggestion(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or nothing."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class TrainConfig:
    preset: str = _field("tiny")
    optimizer: str = _field("adam")
    lm_head: str = _field("paper")  # "paper" (the paper's choice per optimizer), "adam" or "matrix" (the candidate)
    steps: int | None = _field(None, integer(1))
    batch_size: int | None = _field(None, integer(1))  # sequences per optimizer step
    micro_batch: int | None = _field(None, integer(1))  # sequences per forward/backward (gradient accumulation)
    seq_len: int | None = _field(None, integer(1))
    lr: float | None = _field(None, NON_NEGATIVE)  # peak lr of the matrix optimizer; None: the paper's
    adam_lr: float | None = _field(None, NON_NEGATIVE)  # peak lr of the Adam-routed parameters; None: same as lr
    hparams: dict[str, Any] = _field(domain=MAPPING, factory=dict)  # other optimizer hyperparameters
    warmup_fraction: float = _field(0.1, real(0.0, 1.0))
    min_lr_ratio: float = _field(0.1, real(0.0, 1.0))
    grad_clip: float = _field(0.0, NON_NEGATIVE)  # max global grad norm; 0 disables (GaLore's default)
    grad_release: bool = _field(False, BOOLEAN)  # layer-wise gradient release: step each parameter in backward
    seed: int = _field(0, integer(0))  # model initialisation
    data_seed: int | None = _field(None, integer(0))  # batch order; None: same as seed
    data: list[str] = _field(domain=TEXTS, factory=lambda: ["debian"])  # "debian", "installed" or files
    tokenizer: str = _field("bpe")  # "bpe", "t5", "t5:PATH" or a tokenizer.json
    vocab_size: int | None = _field(None, integer(2))  # model vocabulary (and BPE size); None: the preset's
    val_fraction: float = _field(0.01, real(0.0, 1.0, low_open=True, high_open=True))  # of documents held out
    eval_every: int | None = _field(None, integer(1))
    eval_tokens: int | None = _field(None, integer(1))
    ckpt_every: int | None = _field(None, integer(1))
    device: str = _field("auto")  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    dtype: str = _field("auto", choice("auto", "fp32", "bf16"))  # "auto": bf16 autocast on CUDA, fp32 on CPU
    compile: bool = _field(False, BOOLEAN)
    threads: int = _field(0, integer(0))  # torch CPU threads; 0: torch's default
    out: str | None = _field(None)  # run folder; None: runs/{preset}-{optimizer}
    cache: str = _field(".cache")

    def validate(self) -> None:
        """Every field in its domain (``None`` means "the preset's"), as a ``ValueError`` naming
        the field, its command-line flag, the value and the valid values."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            domain = f.metadata["domain"]
            if value is not None and not domain.contains(value):
                flag = "--opt" if f.name == "hparams" else "--" + f.name.replace("_", "-")
                raise ValueError(f"{f.name}={value!r} ({flag}) is not {domain.description}")

    def resolve(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the preset's or the paper's value."""
        self.validate()
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
        c.vocab_size = c.vocab_size or preset.model.vocab_size
        c.data_seed = c.seed if c.data_seed is None else c.data_seed
        c.optimizer = c.optimizer.lower()
        paper = default_hparams(c.optimizer, preset, c.steps)
        check_hparams(c.optimizer, c.hparams, valid=paper)
        c.hparams = {**{k: v for k, v in paper.items() if k != "lr"}, **c.hparams}
        c.lr = paper.get("lr", 1e-3) if c.lr is None else c.lr
        c.out = c.out or f"runs/{c.preset}-{c.optimizer}"
        return c

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, as in the file

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(repr(k) + suggestion(k, known) for k in unknown)}; "
                             f"valid: {', '.join(sorted(known))}")
        return cls(**values)


def check_hparams(optimizer: str, hparams: dict[str, Any], valid: dict[str, Any]) -> None:
    """Optimizer hyperparameters (``--opt``, a compare spec's extra keys): known names (the closest
    one suggested) and values in their domains, before any data is prepared."""
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        key = unknown[0]
        raise ValueError(f"--opt {key}: {optimizer} has no hyperparameter {key!r}{suggestion(key, valid)}; "
                         f"valid: {', '.join(sorted(valid))}")
    domains = getattr(get_optimizer(optimizer), "domains", {})
    for key, value in hparams.items():
        if key in domains and not domains[key].contains(value):
            raise ValueError(f"--opt {key}={value!r}: {optimizer}'s {key} must be {domains[key].description}")


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
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); repair it "
                         f"or start from a new config") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a JSON object of settings, got {type(values).__name__}")
    try:
        return TrainConfig.from_dict(values.get("train", values))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
