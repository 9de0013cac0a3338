"""The fixed per-step cost of each optimizer: its step on the same number of matrices as a paper
model (60M: 56), each shrunk to 8 x 8 or 8 x 16, so the arithmetic is negligible and what is left
is Python, dispatch and kernel launches per matrix. Subtracted from the full step, it separates
"calls" from "passes over the data" (``benchmarks/README.md``, what bounds the misses):

    python -m benchmarks.overhead [--model 60M] [--optimizers adam,racs,...] [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse

import torch

from experiments.runtime import keep_freed_memory

from .step_time import fimkit_candidate, measure, model_matrix_shapes, registered_defaults, torch_adam

DEFAULT = ("adam", "racs", "adafactor", "sinkgd", "alice")


def tiny_shapes(model: str = "60M", side: int = 8) -> list[tuple[int, int]]:
    """The model's matrices, each with its aspect kept as 1 : 1 or 1 : 2 at ``side``."""
    return [(side, side) if m == n else ((2 * side, side) if m > n else (side, 2 * side))
            for m, n in model_matrix_shapes(model)]


def measure_overhead(optimizers=DEFAULT, model: str = "60M", repeats: int = 15) -> dict[str, float]:
    """Median ms of one step per candidate (torch's Adams included) on :func:`tiny_shapes`."""
    rank = {"rank": 4}   # low-rank optimizers: a rank that fits the 8-wide matrices
    candidates = [torch_adam("foreach"), torch_adam("fused")] + [
        fimkit_candidate(n, **(rank if "rank" in registered_defaults(n) else {})) for n in optimizers]
    return {r.label: r.step_ms for r in measure(candidates, tiny_shapes(model), repeats=repeats, warmup=2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="60M")
    parser.add_argument("--optimizers", default=",".join(DEFAULT))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    result = measure_overhead(tuple(args.optimizers.split(",")), args.model, args.repeats)
    print(f"fixed per-step cost on {len(tiny_shapes(args.model))} tiny matrices, {args.threads} thread(s):")
    for label, ms in result.items():
        print(f"  {label:35s} {ms:7.2f} ms")


if __name__ == "__main__":
    main()
