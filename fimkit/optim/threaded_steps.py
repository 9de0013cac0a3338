"""A group's matrices stepped by two Python threads side by side (issue 14), behind
``optimizer.threaded_step``.

Why: the part of RACS's step that the second CPU thread does not speed up is its fixed point,
ten matrix-vector products a matrix (torch's CPU ``mv`` runs on one thread at these shapes) and
the small vector kernels between them. Each matrix's step reads and writes only that matrix, its
gradient and its own state, and torch releases the GIL inside every kernel, so two threads that
step different matrices overlap those single-threaded stretches: 150 -> 115 ms for the 60M
model's 56 matrices at 2 torch threads on a 2-core VM (``benchmarks/README.md``). The result is
bit for bit the serial step's (each matrix's arithmetic is unchanged; only the order in which
matrices are stepped differs, and none reads another's).

When: the chain declares it (``threaded_step = True``: RACS and SinkGD, whose steps draw no random
numbers and touch nothing shared), torch uses at least 2 threads, and every admitted tensor is a
plain CPU tensor with state already made (state is made first, in order, so nothing that state
creation draws depends on thread timing). A DTensor (its step makes collectives, which must come
in the same order on every rank), a CUDA tensor (one stream: threads would only contend) or
``fused_step`` (compiled kernels are called from one thread) keep the serial loop.
``threaded_step = False`` on an instance or the class turns it off.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from . import sharded

_POOL: list[ThreadPoolExecutor] = []


def _worker() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="fimkit-step"))
    return _POOL[0]


def _forget_pool_in_child() -> None:  # a forked child (a DataLoader worker) has no such thread
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def wanted(optimizer, admitted: list) -> bool:
    """Whether ``admitted`` (``[(param, grad_max)]``) is stepped by two threads."""
    return (optimizer.threaded_step and not optimizer.fused_step and len(admitted) >= 2
            and torch.get_num_threads() >= 2
            and all(p.device.type == "cpu" and not sharded.is_dtensor(p) for p, _ in admitted))


def split_by_size(admitted: list) -> tuple[list, list]:
    """Two lists of about equal work (entries), each in the original order: every tensor goes,
    largest first, to the lighter one."""
    loads, halves = [0, 0], ([], [])
    chosen = {}
    for index in sorted(range(len(admitted)), key=lambda i: -admitted[i][0].numel()):
        lighter = 0 if loads[0] <= loads[1] else 1
        loads[lighter] += admitted[index][0].numel()
        chosen[index] = lighter
    for index, entry in enumerate(admitted):
        halves[chosen[index]].append(entry)
    return halves


def step_all(optimizer, group: dict, admitted: list, step) -> None:
    """``step(p, group, grad_max)`` for every entry of ``admitted``: side by side in two threads
    when :func:`wanted`, else one after the other."""
    if not wanted(optimizer, admitted):
        for p, grad_max in admitted:
            step(p, group, grad_max)
        return
    for p, _ in admitted:  # in order, on this thread
        if not optimizer.state[p]:
            optimizer._fresh_state(p, group)
    mine, theirs = split_by_size(admitted)
    grad_enabled = torch.is_grad_enabled()  # grad mode is per thread

    def step_theirs() -> None:
        with torch.set_grad_enabled(grad_enabled):
            for p, grad_max in theirs:
                step(p, group, grad_max)

    other: Future = _worker().submit(step_theirs)
    try:
        for p, grad_max in mine:
            step(p, group, grad_max)
    finally:
        other.result()  # re-raises the other thread's error, after both halves have stopped
