"""Training on several processes: DDP or FSDP2 (``fully_shard``), one process per GPU or CPU share.

    fimkit train --preset tiny --optimizer racs --nproc 2                  # DDP
    fimkit train --preset tiny --optimizer adam --nproc 2 --parallel fsdp2
    torchrun --nproc_per_node=2 -m experiments.train --preset tiny --parallel fsdp2

``fimkit train --nproc N`` starts N processes with the environment torchrun gives its workers
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and each runs the
same command; under torchrun the command runs directly. The backend is gloo on CPU and NCCL on
CUDA (each process on ``cuda:LOCAL_RANK``).

What each process holds:
- ``ddp``: the whole model and optimizer; gradients are averaged (all-reduce) before the step,
  so every rank steps the same parameters with the same gradient.
- ``fsdp2``: ``fully_shard`` on every transformer block, then on the root: parameters and
  gradients are DTensors sharded along their first dimension; gradients are averaged by
  reduce-scatter. torch's Adam (embeddings and norms under routing) keeps sharded
  state; so do fimkit's element-wise steps (its Adam, and the built-in Adam of a matrix
  optimizer's vectors) and RACS and Adafactor (row and column statistics by partial sums),
  on the local shard; the other matrix optimizers gather each matrix's whole gradient and
  weight, step it as one process does and keep whole, replicated state
  (``fimkit.optim.sharded``). On
  CUDA with bf16 the parameters are gathered in bf16 and gradients reduced in fp32
  (``MixedPrecisionPolicy``); fp32 on CPU.

The global batch is the single-process batch: every rank reads the same ``batch_size``
sequences (the data position is global) and takes its contiguous slice of ``batch_size / N``;
each rank's loss is the mean over its slice, and averaging the gradients over ranks gives the
mean over the whole batch, so the loss curve is the one-process curve up to the order of
floating-point sums. Rank 0 alone writes (metrics, config, summary, checkpoints of DDP, logs,
progress); the other ranks' warnings are silenced, their errors are not.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import sys
import warnings
from dataclasses import dataclass

import torch
from torch import nn

PARALLEL = ("none", "ddp", "fsdp2")
#: the environment torchrun gives each worker, which ``setup`` reads
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among ``world_size`` and how the model is spread."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    parallel: str = "none"

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.parallel != "none"


SINGLE = Ranks()


def launched_world_size() -> int | None:
    """``WORLD_SIZE`` when this process was started by torchrun (or ``fimkit train --nproc``)."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value else None


def resolve_processes(nproc: int | None, parallel: str | None, batch_size: int, micro_batch: int,
                      grad_release: bool) -> tuple[int, str]:
    """The process count (default: torchrun's ``WORLD_SIZE``, else 1) and the parallelism
    (default: ddp for more than one process), after checking that they can train this config."""
    nproc = nproc or launched_world_size() or 1
    parallel = parallel or ("ddp" if nproc > 1 else "none")
    if parallel == "none" and nproc > 1:
        raise ValueError(f"--nproc {nproc} needs --parallel ddp or fsdp2 (--parallel none is one process)")
    if parallel != "none":
        rank_batch(batch_size, micro_batch, nproc)  # splits evenly, or a ValueError saying how
        if grad_release:
            raise ValueError("grad_release steps each parameter inside backward, before the gradients are averaged "
                             "over processes; use it with --parallel none")
    return nproc, parallel


def needs_launch(parallel: str) -> bool:
    """Whether ``fimkit train`` must start the processes itself (no torchrun environment)."""
    return parallel != "none" and launched_world_size() is None


# ------------------------------------------------------------------------- process group
def setup(parallel: str, nproc: int, device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun's environment describes; returns this rank and its device
    (``cuda:LOCAL_RANK`` on CUDA). ``parallel == "none"``: one process, nothing to join."""
    if parallel == "none":
        return SINGLE, device
    import torch.distributed as dist

    missing = [name for name in ENVIRONMENT if name not in os.environ]
    if missing:
        raise ValueError(f"--parallel {parallel} runs under torchrun, whose environment ({', '.join(missing)}) is "
                         f"missing; start it with fimkit train --nproc N, or torchrun --nproc_per_node=N -m "
                         f"experiments.train")
    rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if world != nproc:
        raise ValueError(f"--nproc {nproc}, but torchrun started {world} process(es); pass --nproc {world}")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # gloo beside NCCL on CUDA: the checkpoint's small object collectives run on the CPU
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                device_id=device if device.type == "cuda" else None)
    if rank != 0:
        warnings.simplefilter("ignore")  # rank 0 says it once (the ranks see the same gradients)
    return Ranks(rank, world, local, parallel), device


def teardown(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def cpu_threads(threads: int, ranks: Ranks) -> int:
    """``--threads 0`` (torch's default) shares the CPU cores between a machine's processes
    instead of giving every process all of them."""
    if threads or not ranks.distributed:
        return threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
    return max(1, (os.cpu_count() or 1) // local)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(ranks: Ranks):
    """Rank 0 runs the body first (builds the data cache); the others then find it built."""
    if not ranks.main:
        barrier(ranks)
    yield
    if ranks.main:
        barrier(ranks)


# ----------------------------------------------------------------------------- the model
def wrap(model: nn.Module, ranks: Ranks, device: torch.device, amp: torch.dtype | None) -> nn.Module:
    """The module to call for the forward pass: DDP around ``model``, or ``model`` itself after
    ``fully_shard`` (per block, then the root; its parameters become DTensors). Build the
    optimizer on ``model`` afterwards: its parameter names stay those of one process."""
    if ranks.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # the rotary tables are buffers computed from the config: nothing to send in every forward
        # (torch 2.13 renamed broadcast_buffers)
        named = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       **{"forward_sync_buffers" if named else "broadcast_buffers": False})
    if ranks.parallel == "fsdp2":
        try:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        except ImportError:  # torch < 2.6 kept it in torch.distributed._composable
            raise ValueError(f"--parallel fsdp2 needs torch >= 2.6 (torch.distributed.fsdp.fully_shard); this is "
                             f"torch {torch.__version__}; use --parallel ddp") from None

        policy = MixedPrecisionPolicy()
        if device.type == "cuda" and amp is not None:
            policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32)
        for block in model.layers:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    return model


def gradient_sync(module: nn.Module, ranks: Ranks, sync: bool):
    """Context of one micro-batch's backward: gradients are reduced over ranks on the last one
    only (``sync``); the earlier ones accumulate locally (DDP ``no_sync``, FSDP2
    ``set_requires_gradient_sync``)."""
    module = getattr(module, "_orig_mod", module)  # the module torch.compile wraps
    if ranks.parallel == "ddp" and not sync:
        return module.no_sync()
    if ranks.parallel == "fsdp2":
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- the batch
def rank_batch(batch_size: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """Sequences per rank and step, and per forward: ``batch_size / N`` and ``micro_batch``
    (at most that). ``ValueError`` when the batch does not split evenly (the gradient averaged
    over ranks would not be the global batch's)."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} does not split over {world_size} processes; use a multiple "
                         f"of --nproc")
    per_rank = batch_size // world_size
    micro = min(micro_batch, per_rank)
    if per_rank % micro:
        raise ValueError(f"each of the {world_size} processes takes {per_rank} sequences a step, not a multiple "
                         f"of micro_batch {micro}; choose micro_batch dividing batch_size / nproc")
    return per_rank, micro


def rank_share(rows: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's contiguous slice of rows (the whole tensor for one process)."""
    if ranks.world_size == 1:
        return rows
    return rows.tensor_split(ranks.world_size)[ranks.rank]


def padding_forwards(rows: int, micro_batch: int, ranks: Ranks) -> int:
    """Forward passes this rank adds so that every rank runs as many (FSDP2 gathers parameters
    in every forward, a collective): the most any rank runs minus its own."""
    if ranks.world_size == 1:
        return 0
    counts = [-(-len(part) // micro_batch) for part in torch.arange(rows).tensor_split(ranks.world_size)]
    return max(counts) - counts[ranks.rank]


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a tensor over ranks (``value`` itself for one process)."""
    if ranks.world_size == 1:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / ranks.world_size


def sum_over_ranks(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Sums over ranks of a few host numbers, in float64 (``values`` for one process)."""
    if ranks.world_size == 1:
        return values
    import torch.distributed as dist

    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


# ------------------------------------------------------------------------------ launching
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Run ``fimkit train ARGV`` in ``nproc`` processes of this machine with torchrun's
    environment (a free port on 127.0.0.1); returns the first failing exit code, or 0."""
    import torch.multiprocessing as mp

    port = free_port()
    try:
        mp.start_processes(_worker, args=(list(argv), nproc, port), nprocs=nproc, start_method="spawn")
    except mp.ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1
    except mp.ProcessRaisedException as exc:
        print(f"fimkit train: error: a training process failed:\n{exc}", file=sys.stderr)
        return 1
    return 0


def _worker(local_rank: int, argv: list[str], nproc: int, port: int) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from experiments.cli import train_command

    code = train_command(argv)
    # train_command has closed its sinks and written its outputs (atomically). Leave without the
    # interpreter's teardown: there a gloo worker thread still holding a tensor aborted a finished
    # run now and then under load ("terminate called without an active exception", SIGABRT,
    # which the launcher reported as a failure; pytorch/pytorch#179291).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
