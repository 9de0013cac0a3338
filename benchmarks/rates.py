"""The two rates a floor divides by, measured in the same interleaved rounds as the optimizers.

Bandwidth: torch's fused Adam is one vectorised pass that moves Adam's necessary 28 bytes per
fp32 weight (read p, g, exp_avg, exp_avg_sq; write p, exp_avg, exp_avg_sq) and nothing more, so
its bytes over its time is the bandwidth an optimizer step can reach on this machine (it is
below the memory system's peak by whatever the fused kernel leaves; that is the point: it is
the rate a good implementation achieves on these shapes).

Matmul rate: a timed GEMM, as a candidate of its own in the rounds, of the two product shapes the
low-rank and whitening optimizers need on the run's largest matrix: ``(r x m) @ (m x n)``
(Alice's ``U^T G``) and ``(m x m) @ (m x n)`` (a Gram-sized product); the faster of the two is
the rate, so the floor stays a lower bound.
"""

from __future__ import annotations

import torch

from .floors import Rates, step_cost
from .step_time import Candidate, Result

PROBE_LABEL = "matmul probe"


class MatmulProbe(torch.optim.Optimizer):
    """Not an optimizer: ``step()`` runs the probe's GEMMs, so the harness times it alongside."""

    def __init__(self, params, products: list[tuple[int, int, int]], device: torch.device | str = "cpu"):
        super().__init__(params, {})
        gen = torch.Generator().manual_seed(0)
        self.operands = [(torch.randn(a, b, generator=gen).to(device), torch.randn(b, c, generator=gen).to(device))
                         for a, b, c in products]

    @torch.no_grad()
    def step(self, closure=None):
        for left, right in self.operands:
            torch.mm(left, right)


def probe_products(shapes: list[tuple[int, ...]], rank: int = 128) -> list[tuple[int, int, int]]:
    """``r x m x n`` and ``m x m x n`` for the largest matrix of the run (m <= n)."""
    m, n = sorted(max(shapes, key=lambda s: s[0] * s[1])[:2])
    return [(min(rank, m), m, n), (m, m, n)]


def matmul_candidates(shapes: list[tuple[int, ...]], rank: int = 128) -> list[Candidate]:
    """One probe candidate per product shape, so each gets its own median."""
    return [Candidate(f"{PROBE_LABEL} {a}x{b}x{c}", lambda params, prod=(a, b, c): MatmulProbe(params, [prod]),
                      package="probe", hyperparameters={"product": (a, b, c)})
            for a, b, c in probe_products(shapes, rank)]


def rates_from(results: list[Result], shapes: list[tuple[int, ...]]) -> Rates:
    """Bandwidth from torch's fused Adam, matmul rate from the fastest probe."""
    fused = next(r for r in results if r.label == "torch Adam (fused)")
    bandwidth = step_cost("adam", shapes).bytes / (fused.step_ms / 1e3)
    best = 0.0
    for r in results:
        if r.package == "probe":
            a, b, c = r.hyperparameters["product"]
            best = max(best, 2.0 * a * b * c / (r.step_ms / 1e3))
    return Rates(bandwidth, best)
