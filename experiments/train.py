"""Train one LLaMA with one optimizer: the loop a reader can hold in their head.

    fimkit train --preset tiny --optimizer alice --steps 300 --out runs/tiny-alice

Each step: fetch ``batch_size`` sequences, forward/backward them in ``micro_batch`` pieces
(gradient accumulation), step the routed optimizer and the paper's schedule. Every
``eval_every`` steps (and at the end) the loss over a fixed held-out token set is measured.
Outputs in the run folder: ``config.json`` (and the same settings as ``run.toml``),
``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``; with ``--tensorboard`` / ``--wandb`` also
their logs (``experiments.logging_sinks``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fimkit
from experiments.atomic import remove_stale_temporaries, write_text_atomic
from experiments.checkpoint import (
    CHECKPOINT,
    LATEST,
    CheckpointError,
    SHARDED,
    load_checkpoint,
    load_sharded_checkpoint,
    remove_unfinished,
    restore,
    restore_sharded,
    save_checkpoint,
    save_sharded_checkpoint,
)
from experiments.config import TrainConfig
from experiments.config_files import to_toml
from experiments.data import DataSpec, prepare
from experiments.data.provenance import check_corpus, corpus_record, recorded_corpus
from experiments.data.location import resolve_cache
from experiments.data.shards import TokenBatches, eval_windows, open_shard
from experiments.distributed import (
    SINGLE,
    Ranks,
    barrier,
    cpu_threads,
    gradient_sync,
    main_first,
    mean_over_ranks,
    padding_forwards,
    rank_batch,
    rank_share,
    setup,
    sum_over_ranks,
    teardown,
    wrap,
)
from experiments.logging_sinks import check_available, open_sinks
from experiments.metrics import CONFIG, METRICS, RUN_TOML, MetricsLog, write_config
from experiments.model import LLaMA
from experiments.optimizers import build, matrix_lr
from experiments.presets import get_preset
from experiments.progress import Progress, log
from experiments.provenance import code_revision
from experiments.runtime import (
    autocast,
    autocast_dtype,
    configure,
    peak_memory_bytes,
    pick_device,
)
from experiments.schedule import paper_schedule
from experiments.switch_log import SwitchLog

SUMMARY = "summary.json"
RUN_TOML_HEADER = ("The resolved settings of the run in {out} (config.json holds the same, plus the model, data\n"
                   "and versions). Start a new run from them: fimkit train --config run.toml --out NEW_FOLDER")
# Fields that may change between a run and its resumption without changing its results.
# The process count and the parallelism too: the global batch is the same, only the order of
# floating-point sums changes (a sharded checkpoint resumes with fsdp2 only: load_for_resume).
RESUMABLE_CHANGES = {"out", "device", "threads", "compile", "cache", "ckpt_every", "eval_every", "log_every",
                     "tensorboard", "wandb", "wandb_project", "nproc", "parallel"}


@torch.no_grad()
def evaluate(model, inputs: torch.Tensor, targets: torch.Tensor, micro_batch: int, device, amp,
             ranks: Ranks = SINGLE) -> float:
    """Mean cross-entropy over every token of the held-out set (a sum over tokens divided by
    their count, so batch boundaries do not weight tokens unequally). With several processes
    each scores its share of the windows and the sums are added."""
    model.eval()
    total, count = 0.0, 0
    for x, y in zip(rank_share(inputs, ranks).split(micro_batch), rank_share(targets, ranks).split(micro_batch)):
        with autocast(device, amp):
            total += model(x.to(device), y.to(device), reduction="sum").item()
        count += y.numel()
    for _ in range(padding_forwards(len(inputs), micro_batch, ranks)):  # as many forwards as every rank
        with autocast(device, amp):
            model(inputs[:1].to(device), targets[:1].to(device), reduction="sum")
    total, count = sum_over_ranks([total, count], ranks, device)
    model.train()
    return total / count


def run_record(cfg: TrainConfig, data_meta: dict, model_cfg) -> dict[str, Any]:
    """What ``config.json`` holds: the resolved config (``fimkit train --config`` reads it back)
    and, for the reader, the model shape, the data actually used and the software versions."""
    return {
        "train": cfg.to_dict(),
        "model": dataclasses.asdict(model_cfg),
        "data": data_meta,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "fimkit": fimkit.__version__,
                     "revision": code_revision()},
        "command": "fimkit train --config config.json",
    }


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    current = cfg.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"cannot resume: the run was started with different settings ({details}); "
                         f"use a new --out or the original settings")


def warn_if_corpus_differs(data, out: Path, expected: dict | None) -> None:
    """Log (one line) how the cached corpus differs from the one ``out``'s run, or the run being
    repeated, was trained on."""
    recorded, what = expected, "the run repeated"
    if (out / CONFIG).exists():
        try:
            recorded, what = recorded_corpus(json.loads((out / CONFIG).read_text())), f"the run in {out}"
        except (OSError, json.JSONDecodeError):
            pass
    if message := check_corpus(recorded, corpus_record(data), what=what):
        log(f"warning: {message}")


def train(cfg: TrainConfig, resume: bool = False, until_step: int | None = None,
          expected_corpus: dict | None = None) -> dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes; returns its summary. ``until_step`` stops
    early, with a checkpoint, at that step (a preemptible job's slice; resume continues).
    ``expected_corpus`` (the corpus record of a run being repeated) and, on resume, the run's own
    record are compared with the corpus in the cache: a difference is said, not hidden.
    With ``cfg.parallel`` ``ddp`` or ``fsdp2`` every process of the group calls it
    (``experiments.distributed``); rank 0 writes the run folder."""
    cfg = cfg.resolve()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the run folder must be a folder (or not exist yet)")
    if until_step is not None and not (isinstance(until_step, int) and until_step >= 1):
        raise ValueError(f"--until-step {until_step!r} is not an integer >= 1")
    ranks, device = setup(cfg.parallel, cfg.nproc, pick_device(cfg.device))
    try:
        return _train(cfg, out, ranks, device, resume, until_step, expected_corpus)
    finally:
        teardown(ranks)


def load_for_resume(out: Path, cfg: TrainConfig, ranks: Ranks, device: torch.device) -> dict[str, Any] | None:
    """The run's checkpoint in the format of ``cfg.parallel`` (``checkpoint.pt``, or the sharded
    ``checkpoint.dcp`` of FSDP2), or None when it has none; every rank reads it, rank 0 verifies
    the sharded one's checksums."""
    single, sharded = out / CHECKPOINT, out / SHARDED
    has_single, has_sharded = single.exists(), (sharded / LATEST).exists()
    if cfg.parallel != "fsdp2":
        if not has_single and has_sharded:
            raise ValueError(f"the checkpoint in {out} ({SHARDED}) was written by --parallel fsdp2; resume it with "
                             f"--parallel fsdp2 (any --nproc)")
        return load_checkpoint(single) if has_single else None
    if not has_sharded:
        if has_single:
            raise ValueError(f"the checkpoint in {out} ({CHECKPOINT}) was written by one process or --parallel ddp; "
                             f"resume it with one of those")
        return None
    if ranks.main:
        for stale in remove_unfinished(sharded):
            log(f"removed {stale}, a checkpoint write that did not finish")
    barrier(ranks)
    try:
        state, error = load_sharded_checkpoint(sharded, verify=ranks.main), None
    except CheckpointError as exc:
        state, error = None, exc
    if sum_over_ranks([float(error is not None)], ranks, device)[0]:  # every rank stops, not only rank 0
        raise error or CheckpointError(f"{sharded}: rank 0 found the checkpoint damaged (its message says which file)")
    return state


def _train(cfg: TrainConfig, out: Path, ranks: Ranks, device: torch.device, resume: bool, until_step: int | None,
           expected_corpus: dict | None) -> dict[str, Any]:
    say = log if ranks.main else _quiet
    checkpoint = out / CHECKPOINT
    if resume and ranks.main:
        for stale in remove_stale_temporaries(out):
            log(f"removed {stale}, a temporary file of a write that was interrupted")
    saved = load_for_resume(out, cfg, ranks, device) if resume else None
    if saved is not None:
        check_resumable(saved["config"], cfg)
    elif resume:
        say(f"no checkpoint in {out}; starting from step 0")
    check_available(cfg)

    configure(device, cpu_threads(cfg.threads, ranks))
    amp = autocast_dtype(cfg.dtype, device)
    with main_first(ranks):  # rank 0 builds the cache; the others read it
        data = prepare(DataSpec(tuple(cfg.data), cfg.tokenizer, cfg.vocab_size, cfg.val_fraction),
                       resolve_cache(cfg.cache))
    if ranks.main:
        warn_if_corpus_differs(data, out, expected_corpus)
    if data.meta["max_token_id"] >= cfg.vocab_size:
        raise ValueError(f"the tokenizer produces ids up to {data.meta['max_token_id']} but the model's vocabulary "
                         f"is {cfg.vocab_size}; pass --vocab-size {data.meta['vocab_size']}")
    preset = get_preset(cfg.preset)
    model_cfg = dataclasses.replace(preset.model, vocab_size=cfg.vocab_size,
                                    max_seq_len=max(preset.model.max_seq_len, cfg.seq_len))

    # One seed fixes the initial weights (the same on every rank); the batch order has its own (data_seed).
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = LLaMA(model_cfg).to(device)
    module = wrap(model, ranks, device, amp)  # DDP around the model, or the model sharded in place (FSDP2)
    optimizer = build(model, cfg.optimizer, lr=cfg.lr, adam_lr=cfg.adam_lr, lm_head=cfg.lm_head, hparams=cfg.hparams,
                      gradient_release=cfg.grad_release)
    scheduler = paper_schedule(optimizer, cfg.steps, cfg.warmup_fraction, cfg.min_lr_ratio)
    batches = TokenBatches(open_shard(data.train), cfg.seq_len, cfg.data_seed)
    eval_x, eval_y = eval_windows(open_shard(data.val), cfg.seq_len, cfg.eval_tokens)

    loop = {"step": 0, "tokens": 0, "seconds": 0.0}
    if saved is not None:
        parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "data": batches}
        loop = restore_sharded(saved, **parts) if "sharded" in saved else restore(saved, **parts)
        say(f"resumed {out} at step {loop['step']}")
    elif ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, run_record(cfg, data.meta, model_cfg))
        write_text_atomic(out / RUN_TOML, to_toml(cfg, RUN_TOML_HEADER.format(out=out)))
    resume_step = loop["step"] if saved is not None else None
    metrics = MetricsLog(out / METRICS, resume_step=resume_step) if ranks.main else None
    # switches.jsonl reads the optimizer's bases, rank 0's: every rank holds the same whole ones,
    # under DDP and under FSDP2 (a subspace optimizer's step is gathered, fimkit.optim.sharded),
    # so reading them is no collective
    switches = SwitchLog(optimizer, out, resume_step=resume_step) if ranks.main else NO_SWITCHES
    sinks = open_sinks(cfg, out, resume_step) if ranks.main else []
    forward = torch.compile(module) if cfg.compile else module
    n_params = sum(p.numel() for p in model.parameters())
    processes = f" x {ranks.world_size} processes ({cfg.parallel})" if ranks.distributed else ""
    say(f"{cfg.preset} ({n_params / 1e6:.1f}M parameters) with {cfg.optimizer} on {device}{processes}"
        f"{' bf16 autocast' if amp else ' fp32'}: {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len} tokens, "
        f"held-out set {eval_x.numel():,} tokens -> {out}")

    per_rank, micro_batch = rank_batch(cfg.batch_size, cfg.micro_batch, ranks.world_size)
    accumulation = per_rank // micro_batch
    progress = Progress(cfg.steps, f"{cfg.preset}/{cfg.optimizer}", unit="step", initial=loop["step"]) \
        if ranks.main else NO_PROGRESS
    session_start, start_seconds = time.perf_counter(), loop["seconds"]
    train_seconds, train_tokens, eval_loss = 0.0, 0, None
    stop = min(cfg.steps, until_step or cfg.steps)
    try:
        while loop["step"] < stop:
            step_start = time.perf_counter()
            switches.before_step(loop["step"] + 1)
            inputs, targets = (rank_share(rows, ranks) for rows in batches.next(cfg.batch_size))
            lr = matrix_lr(optimizer, cfg.optimizer)
            step_loss = torch.zeros((), device=device)
            pieces = list(zip(inputs.split(micro_batch), targets.split(micro_batch)))
            for index, (x, y) in enumerate(pieces):
                with gradient_sync(forward, ranks, sync=index == len(pieces) - 1):  # averaged over ranks once
                    with autocast(device, amp):
                        loss = forward(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) / accumulation
                    loss.backward()
                step_loss += loss.detach()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()  # with grad_release every parameter was already stepped in backward()
            switches.after_step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_loss = mean_over_ranks(step_loss, ranks).item()  # also waits for the GPU: the timing is real
            train_seconds += time.perf_counter() - step_start
            train_tokens += cfg.batch_size * cfg.seq_len
            loop["step"] += 1
            loop["tokens"] += cfg.batch_size * cfg.seq_len
            step = loop["step"]
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at step {step}; try a lower --lr")

            record = {"step": step, "tokens": loop["tokens"], "train_loss": train_loss, "lr": lr}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                eval_loss = evaluate(forward, eval_x, eval_y, micro_batch, device, amp, ranks)
                record.update(eval_loss=eval_loss, eval_ppl=math.exp(eval_loss))
            loop["seconds"] = start_seconds + time.perf_counter() - session_start
            record.update(seconds=round(loop["seconds"], 3), tokens_per_s=round(train_tokens / train_seconds, 1))
            if metrics is not None:
                metrics.append(record)
            if sinks and ("eval_loss" in record or step % cfg.log_every == 0 or step == stop):
                for sink in sinks:
                    sink.log(step, record)
            progress.update(1, loss=f"{train_loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if "eval_loss" in record:
                progress.write(f"step {step}: train {train_loss:.4f}, eval {eval_loss:.4f} (ppl {math.exp(eval_loss):.2f})")
            if step % cfg.ckpt_every == 0 or step == stop:
                parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "data": batches,
                         "loop": loop, "config": cfg.to_dict()}
                if cfg.parallel == "fsdp2":
                    save_sharded_checkpoint(out / SHARDED, **parts, main=ranks.main)
                elif ranks.main:  # DDP: every rank holds the same model and optimizer
                    save_checkpoint(checkpoint, **parts)
    finally:  # the dashboards keep what was logged, even after an error or Ctrl-C
        progress.close()
        for sink in sinks:
            sink.close()
    if loop["step"] < cfg.steps:
        say(f"stopped at step {loop['step']} of {cfg.steps} (--until-step {until_step}), with a checkpoint in "
            f"{out}; continue with: fimkit train --out {out} --resume")
    summary_args = (out, cfg, optimizer, train_tokens, train_seconds, peak_memory_bytes(device))
    summary = write_summary(*summary_args, finished=loop["step"] >= cfg.steps) if ranks.main else {}
    barrier(ranks)  # the run folder is complete when any rank returns
    return summary


def _quiet(message: str) -> None:
    """``log`` on the ranks other than 0."""


class _Nothing:
    """What a rank other than 0 has in place of the progress bar and the switch log."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


NO_PROGRESS = NO_SWITCHES = _Nothing()


def write_summary(out: Path, cfg: TrainConfig, optimizer, train_tokens: int, train_seconds: float,
                  peak_memory: int, finished: bool = True) -> dict[str, Any]:
    """Final numbers of the run (read by ``fimkit compare``), from the metrics of the whole run."""
    records = MetricsLog.read(out / METRICS)
    evals = [r for r in records if "eval_loss" in r]
    previous = json.loads((out / SUMMARY).read_text()) if (out / SUMMARY).exists() else {}
    summary = {
        "optimizer": cfg.optimizer,
        "lm_head": cfg.lm_head,
        "preset": cfg.preset,
        "steps": records[-1]["step"] if records else 0,
        "tokens": records[-1]["tokens"] if records else 0,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "final_eval_ppl": evals[-1]["eval_ppl"] if evals else None,
        # tokens/s of this session's training steps (evaluation and checkpoints excluded)
        "tokens_per_s": train_tokens / train_seconds if train_seconds else previous.get("tokens_per_s"),
        "optimizer_state_bytes": fimkit.memory.state_bytes(optimizer),
        "peak_memory_bytes": peak_memory,
        "seconds": records[-1]["seconds"] if records else 0.0,
        "out": str(out),
    }
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    if finished and summary["final_eval_loss"] is not None:
        log(f"done: eval loss {summary['final_eval_loss']:.4f} (ppl {summary['final_eval_ppl']:.2f}), "
            f"{summary['tokens_per_s'] or 0:.0f} tokens/s; outputs in {out}/")
    return summary


if __name__ == "__main__":  # pragma: no cover - `fimkit train` is the entry point
    from experiments.cli import train_command

    sys.exit(train_command(sys.argv[1:]))
