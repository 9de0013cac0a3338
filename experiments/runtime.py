"""Where and how the math runs: device, autocast precision, CPU threads and allocator."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 for autocast, or None for plain fp32. ``auto``: bf16 on CUDA GPUs that support it
    (the paper trains in bf16); fp32 on CPU, where bf16 matmuls are ~30x slower (targets.md §2)."""
    if dtype == "fp32":
        return None
    if dtype == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure(device: torch.device, threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (optimizer math) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)  # a comparison runs several trainings per process
    else:
        keep_freed_memory()


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: allocated GPU memory of this run on CUDA; on CPU the process's peak RSS
    (which includes earlier runs of the same process, e.g. in a comparison)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def keep_freed_memory() -> None:
    """Stop glibc from returning large blocks to the kernel after every step.

    glibc serves allocations above 32 MB (logits, their gradients) with fresh ``mmap``s and
    unmaps them on free, so every training step pays page faults to zero-fill them again. With
    mmap disabled and trimming off, freed memory is reused: 1.3-2x faster steps for the CPU
    presets on the project machine. Numerics are unchanged; peak memory stays reserved.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
