"""The training configuration: plain values, every one overridable from the command line.

``None`` means "the preset's (or the paper's) value"; ``resolve`` fills those in, and the
resolved config is what ``config.json`` (and ``run.toml``) store, so ``fimkit train --config
runs/X/config.json`` repeats the run exactly.

A config file (``fimkit train --config run.toml``) is TOML: every key is a ``TrainConfig`` field
(the name of its ``--flag`` with ``_``), in the section that groups it (:data:`SECTIONS`) or at
the top level; ``[optimizer.hparams]`` holds the optimizer's own hyperparameters (``--opt``).
``--set SECTION.KEY=VALUE`` overrides one key (the value is read as TOML, else as a bare string).
An unknown section or key is an error that lists the valid ones and suggests the closest.
Precedence: the preset's and paper's values < the config file < ``--set`` < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from experiments.distributed import PARALLEL, resolve_processes
from experiments.optimizers import default_hparams
from experiments.presets import PRESETS, checkpoint_interval, eval_interval, get_preset, log_interval
from experiments.specs import canonical, slug
from fimkit.optim import get_optimizer
from fimkit.optim.domains import BOOLEAN, NON_NEGATIVE, Domain, choice, integer, real
from fimkit.routing import LM_HEAD_CHOICES, resolve_lm_head

TEXT = Domain("a string", lambda value: isinstance(value, str))
TEXTS = Domain("a list of strings", lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value))
MAPPING = Domain("a mapping of names to values", lambda value: isinstance(value, dict))
DTYPES = ("auto", "fp32", "bf16")

#: the sections of a TOML config file, in the order ``run.toml`` writes them
SECTIONS = {
    "run": "what is trained, where and on what hardware",
    "data": "the corpus, tokenizer and batches",
    "optimizer": "the optimizer, its learning rates and hyperparameters ([optimizer.hparams])",
    "schedule": "the learning-rate schedule",
    "eval": "held-out evaluation",
    "checkpoint": "checkpoints",
    "logging": "TensorBoard and Weights & Biases",
}


def _field(default: Any = None, domain: Domain = TEXT, *, section: str, help: str, choices=None, factory=None):
    """A config field with its valid values (``None`` always means "the preset's"), its TOML
    section and its ``--flag``'s help (and, for a closed set, its choices)."""
    metadata = {"domain": domain, "section": section, "help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def suggestion(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or nothing."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class TrainConfig:
    preset: str = _field("tiny", section="run", choices=tuple(PRESETS), help="model and run preset")
    optimizer: str = _field("adam", section="optimizer", help=(
        "a registered optimizer (`fimkit optimizers`) or a structure spec: a `fimkit derive --list` name, "
        "an expression such as 'Kronecker(Full(), DiagonalFactor())', 'derive(STRUCTURE, lr=1e-2)', or "
        "'module:attribute' naming a Structure or a torch.optim.Optimizer class"))
    lm_head: str = _field("paper", section="optimizer", choices=LM_HEAD_CHOICES, help=(
        "where the output head is trained: 'paper' (the paper's choice for the optimizer), 'adam', or "
        "'matrix' (the optimizer itself)"))
    steps: int | None = _field(None, integer(1), section="run", help="optimizer steps (default: the preset's)")
    batch_size: int | None = _field(None, integer(1), section="data",
                                    help="sequences per optimizer step (default: the preset's)")
    micro_batch: int | None = _field(None, integer(1), section="data", help=(
        "sequences per forward/backward; batch_size / micro_batch steps of gradient accumulation "
        "(default: the preset's)"))
    seq_len: int | None = _field(None, integer(1), section="data", help="tokens per sequence (default: the preset's)")
    lr: float | None = _field(None, NON_NEGATIVE, section="optimizer", help=(
        "peak learning rate of the optimizer (default: the paper's for the optimizer and preset)"))
    adam_lr: float | None = _field(None, NON_NEGATIVE, section="optimizer", help=(
        "peak learning rate of the Adam-routed parameters: embeddings, norms, the head on Adam (default: --lr)"))
    hparams: dict[str, Any] = _field(domain=MAPPING, factory=dict, section="optimizer", help=(
        "an optimizer hyperparameter, repeatable, e.g. --opt rank=64 (default: the paper's)"))
    warmup_fraction: float = _field(0.1, real(0.0, 1.0), section="schedule",
                                    help="fraction of the steps spent in linear warmup")
    min_lr_ratio: float = _field(0.1, real(0.0, 1.0), section="schedule",
                                 help="final learning rate of the cosine decay, as a fraction of the peak")
    grad_clip: float = _field(0.0, NON_NEGATIVE, section="optimizer",
                              help="maximum global gradient norm; 0 disables clipping (GaLore's default)")
    grad_release: bool = _field(False, BOOLEAN, section="optimizer", help=(
        "layer-wise gradient release: step each parameter during backward (needs micro_batch == batch_size "
        "and grad_clip 0)"))
    seed: int = _field(0, integer(0), section="run", help="seed of the model's initial weights")
    data_seed: int | None = _field(None, integer(0), section="data", help="seed of the batch order (default: --seed)")
    data: list[str] = _field(domain=TEXTS, factory=lambda: ["debian"], section="data", help=(
        "'debian' (Debian documentation via apt), 'installed' (docstrings of installed Python code), or "
        ".txt/.jsonl files or folders"))
    tokenizer: str = _field("bpe", section="data", help="'bpe', 't5', 't5:PATH' or a tokenizer.json")
    vocab_size: int | None = _field(None, integer(2), section="data",
                                    help="model vocabulary and BPE size (default: the preset's)")
    val_fraction: float = _field(0.01, real(0.0, 1.0, low_open=True, high_open=True), section="data",
                                 help="fraction of the documents held out for evaluation")
    eval_every: int | None = _field(None, integer(1), section="eval", help=(
        "steps between evaluations, and always at the end (default: --steps / 20, rounded up)"))
    eval_tokens: int | None = _field(None, integer(1), section="eval",
                                     help="size of the fixed held-out token set (default: the preset's)")
    ckpt_every: int | None = _field(None, integer(1), section="checkpoint", help=(
        "steps between checkpoints, and always at the end (default: --steps / 10, rounded up)"))
    log_every: int | None = _field(None, integer(1), section="logging", help=(
        "steps between training points sent to TensorBoard / wandb; evaluations always are "
        "(default: --steps / 500, rounded up)"))
    tensorboard: bool = _field(False, BOOLEAN, section="logging", help=(
        "also log to TensorBoard, in OUT/tensorboard (needs `pip install tensorboard`)"))
    wandb: bool = _field(False, BOOLEAN, section="logging", help=(
        "also log to Weights & Biases, offline in OUT/wandb unless WANDB_MODE says otherwise "
        "(needs `pip install wandb`)"))
    wandb_project: str | None = _field(None, section="logging", help="wandb project (default: fimkit)")
    device: str = _field("auto", section="run", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = _field("auto", choice(*DTYPES), section="run", choices=DTYPES,
                        help="'auto': bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = _field(False, BOOLEAN, section="run", help="compile the model with torch.compile")
    threads: int = _field(0, integer(0), section="run", help=(
        "torch CPU threads; 0: torch's default (with several processes: the cores shared between them)"))
    nproc: int | None = _field(None, integer(1), section="run", help=(
        "processes to train on (one per GPU, or CPU processes with gloo); above 1, fimkit train starts them as "
        "torchrun would, and --batch-size stays the global batch (default: 1, or the WORLD_SIZE torchrun gives)"))
    parallel: str | None = _field(None, choice(*PARALLEL), section="run", choices=PARALLEL, help=(
        "'ddp' (every process holds the model, gradients averaged), 'fsdp2' (parameters, gradients and "
        "optimizer state sharded with fully_shard, sharded checkpoints) or 'none' "
        "(default: ddp when --nproc is above 1, else none)"))
    out: str | None = _field(None, section="run", help="run folder (default: runs/PRESET-OPTIMIZER)")
    cache: str | None = _field(None, section="data", help=(
        "data cache folder (default: $FIMKIT_CACHE, else the platform's cache directory; `fimkit data --where`)"))

    def validate(self) -> None:
        """Every field in its domain (``None`` means "the preset's"), as a ``ValueError`` naming
        the field, its command-line flag, the value and the valid values."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            domain = f.metadata["domain"]
            if value is not None and not domain.contains(value):
                raise ValueError(f"{f.name}={value!r} ({flag_of(f.name)}) is not {domain.description}")

    def resolve(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the preset's or the paper's value; intervals not
        given scale with the run's length (``experiments.presets``)."""
        self.validate()
        preset = get_preset(self.preset)
        c = dataclasses.replace(self, hparams=dict(self.hparams), data=list(self.data))
        c.optimizer = canonical(c.optimizer)
        for name in ("steps", "batch_size", "micro_batch", "seq_len", "eval_tokens"):
            if getattr(c, name) is None:
                setattr(c, name, getattr(preset, name))
        c.eval_every = c.eval_every or eval_interval(c.steps)
        c.ckpt_every = c.ckpt_every or checkpoint_interval(c.steps)
        c.log_every = c.log_every or log_interval(c.steps)
        c.micro_batch = min(c.micro_batch, c.batch_size)
        if c.batch_size % c.micro_batch:
            raise ValueError(f"batch_size {c.batch_size} is not a multiple of micro_batch {c.micro_batch}")
        c.lm_head = resolve_lm_head(c.lm_head, c.optimizer)
        if c.grad_release and (c.micro_batch != c.batch_size or c.grad_clip > 0):
            raise ValueError("grad_release steps each parameter as soon as its gradient exists, so it needs "
                             "micro_batch == batch_size (no accumulation) and grad_clip 0")
        c.nproc, c.parallel = resolve_processes(c.nproc, c.parallel, c.batch_size, c.micro_batch, c.grad_release)
        c.vocab_size = c.vocab_size or preset.model.vocab_size
        c.data_seed = c.seed if c.data_seed is None else c.data_seed
        paper = default_hparams(c.optimizer, preset, c.steps)
        # the routed optimizer's non-finite policy covers every optimizer, torch's Adam included
        check_hparams(c.optimizer, c.hparams, valid={"on_nonfinite": "skip", **paper})
        c.hparams = {**{k: v for k, v in paper.items() if k != "lr"}, **c.hparams}
        c.lr = paper.get("lr", 1e-3) if c.lr is None else c.lr
        c.out = c.out or f"runs/{c.preset}-{slug(c.optimizer)}"
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


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def flag_of(name: str) -> str:
    return "--opt" if name == "hparams" else "--" + name.replace("_", "-")


def section_fields(section: str) -> list[str]:
    return [name for name, f in FIELDS.items() if f.metadata["section"] == section]


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


def _help(f: dataclasses.Field) -> str:
    """The flag's help with its default (argparse's own default is None: "not given")."""
    text = f.metadata["help"]
    if "(default" not in text:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = {False: "off", True: "on"}.get(default, default) if isinstance(default, bool) else default
        shown = " ".join(shown) if isinstance(shown, list) else shown
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per TrainConfig field (defaults stay None = "not given"), and
    ``--set SECTION.KEY=VALUE``."""
    groups = {section: parser.add_argument_group(f"[{section}]", about) for section, about in SECTIONS.items()}
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        group = groups[f.metadata["section"]]  # the help lists the flags as a TOML file groups them
        flag, choices = flag_of(f.name), f.metadata["choices"]
        # closed sets are checked by validate() (one line naming the flag, the value and the valid
        # ones); argparse's own choices= would print the usage instead and suggest nothing
        metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
        if f.name == "hparams":
            group.add_argument("--opt", dest="hparams", action="append", type=parse_key_value, metavar="KEY=VALUE",
                               help=_help(f))
        elif f.name == "data":
            group.add_argument(flag, nargs="+", metavar="SOURCE", help=_help(f))
        elif f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
        else:
            group.add_argument(flag, type=_base_type(typing.cast(str, f.type)), default=None, metavar=metavar,
                               help=_help(f))
    parser.add_argument("--set", dest="settings", action="append", default=None, metavar="SECTION.KEY=VALUE",
                        help="override one key of the config (repeatable), e.g. --set optimizer.lr=3e-3 or "
                             "--set optimizer.hparams.rank=64; the value is read as TOML, else as a string "
                             "(default: none)")


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default values, or a loaded config file), then the ``--set`` overrides, then the
    options that were given."""
    from experiments.config_files import apply_setting

    values = dataclasses.asdict(base or TrainConfig())
    for setting in getattr(args, "settings", None) or ():
        apply_setting(values, setting)
    for name in values:
        given = getattr(args, name, None)
        if given is None:
            continue
        values[name] = {**values["hparams"], **dict(given)} if name == "hparams" else given
    return TrainConfig.from_dict(values)
