"""The machine's floor for one optimizer step: what any implementation of the algorithm must move
and compute, as a pure function of the matrix shape and the hyperparameters.

A step cannot take less than ``max(bytes / bandwidth, flops / matmul rate)``: the bytes are the
tensors the algorithm must read or write once per step (the weight, the gradient, its state; a
temporary that a fused kernel would keep in registers or cache does not count), the flops are its
necessary matrix products (elementwise arithmetic is bandwidth-bound and hides under the bytes).
Periodic work (an SVD, ``eigh`` or QR every K steps) counts with its share 1/K. Both rates are
measured in the same run: the bandwidth by torch's fused Adam (28 bytes per fp32 weight, see
``adam`` below), the matmul rate by a timed GEMM of the run's shapes. LAPACK factorisations run
slower than GEMM, so their share of the floor is optimistic: the floor is a lower bound.

Every function gets ``m <= n`` (the short side first: each low-rank or one-sided optimizer
transposes to it, and the two-sided ones are symmetric in m and n), the element size in bytes
and the optimizer's hyperparameters (its registered defaults, overridden by the run's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Necessary traffic (bytes) and matrix-product work (flops) of one step, amortised."""

    bytes: float
    flops: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.bytes + other.bytes, self.flops + other.flops)


@dataclass(frozen=True)
class Rates:
    """What this machine did in this run: bytes/s (from torch's fused Adam) and flop/s (GEMM)."""

    bandwidth: float
    matmul: float


def floor_seconds(cost: Cost, rates: Rates) -> float:
    return max(cost.bytes / rates.bandwidth, cost.flops / rates.matmul)


# --------------------------------------------------------------- helpers (counts in elements)
def _rank(m: int, hp: dict) -> int:
    return min(int(hp.get("rank", 128)), m)


def _eigh(k: int) -> float:
    """Symmetric eigendecomposition with vectors: ~9 k^3 flops (Golub & Van Loan, Sec 8.3)."""
    return 9.0 * k**3


def _power_qr(k: int) -> float:
    """One power iteration on a k x k Gram and its QR (SOAP's refresh): 2 k^3 + 4/3 k^3."""
    return 2.0 * k**3 + 4.0 / 3.0 * k**3


def _elementwise(m: int, n: int, size: int, full_tensors: int, extra_elements: float = 0.0) -> float:
    """Bytes of a pass that reads G, reads and writes W (3 m x n tensors), plus ``full_tensors``
    more m x n reads or writes (state), plus ``extra_elements`` small ones."""
    return size * ((3 + full_tensors) * m * n + extra_elements)


def _low_rank(m: int, n: int, size: int, hp: dict, extra_flops: float = 0.0, extra_elements: float = 0.0) -> Cost:
    """GaLore's steady step: ``sigma = U^T G`` and ``U omega`` are the two m x r x n products
    (2 m r n flops each); the Adam moments live in r x n (read and write both: 4 r n) and the
    basis is read (m r). G, W in and W out are the m x n traffic. Fira's and Alice's
    compensation reuse ``sigma`` (``||G - U sigma||^2 = ||G||^2 - ||sigma||^2`` for orthonormal
    U), so they need no third product."""
    r = _rank(m, hp)
    return Cost(_elementwise(m, n, size, 0, 4 * r * n + m * r + extra_elements), 4.0 * m * r * n + extra_flops)


def _svd_switch(m: int, n: int, hp: dict) -> float:
    """Left singular vectors of the m x n gradient, every K steps: ~4 m^2 n + 8 m^3."""
    return (4.0 * m * m * n + 8.0 * m**3) / int(hp.get("update_interval", 200))


# ------------------------------------------------------------------------------- the table
def adam(m, n, size, hp):
    # read p, g, exp_avg, exp_avg_sq; write p, exp_avg, exp_avg_sq: 7 tensors, 28 B per fp32 weight
    return Cost(_elementwise(m, n, size, 4), 0.0)


def racs(m, n, size, hp):
    # read G and W, write W; the fixed point (Eq 16) runs on G*G, which a fused kernel keeps in
    # cache for the shapes here: 2 matrix-vector products (2 m n flops each) per iteration.
    # q, s and their EMAs are vectors.
    return Cost(_elementwise(m, n, size, 0, 4 * (m + n)), 4.0 * m * n * int(hp.get("fixed_point_iters", 5)))


def adafactor(m, n, size, hp):
    # factored second moment (row and column means of G*G): read G and W, write W, vectors;
    # a first moment (beta1 > 0) adds its read and write.
    momentum = 2 if hp.get("betas", (0.0, 0.0))[0] else 0
    return Cost(_elementwise(m, n, size, momentum, 4 * (m + n)), 0.0)


def sinkgd(m, n, size, hp):
    # Sinkhorn balancing of G: row and column scales (vectors), iterated on G in cache
    return Cost(_elementwise(m, n, size, 0, 2 * (m + n) * int(hp.get("sinkhorn_iters", 5))), 0.0)


def swan(m, n, size, hp):
    # whitening (G G^T)^(-1/2) G: the Gram (2 m^2 n), its eigh (9 m^3), the inverse root from the
    # eigenvectors (2 m^3) and the product (2 m^2 n), every step
    return Cost(_elementwise(m, n, size, 0, 2 * m * m), 4.0 * m * m * n + _eigh(m) + 2.0 * m**3)


def muon(m, n, size, hp):
    # momentum read and written (2 m x n); each Newton-Schulz step on the m x n iterate X:
    # A = X X^T (2 m^2 n), B = b A + c A^2 (2 m^3), B X (2 m^2 n)
    steps = int(hp.get("ns_steps", 5))
    return Cost(_elementwise(m, n, size, 2), steps * (4.0 * m * m * n + 2.0 * m**3))


def galore(m, n, size, hp):
    # two products a step; the SVD of G every K steps
    return _low_rank(m, n, size, hp, _svd_switch(m, n, hp))


def fira(m, n, size, hp):
    # GaLore plus the residual's norm (from sigma, no product) and a scalar limiter
    return _low_rank(m, n, size, hp, _svd_switch(m, n, hp), extra_elements=n)


def apollo(m, n, size, hp):
    # one product: the random projection R = P G (2 r m n); Adam moments in r x n; the channel
    # (or tensor) scale then multiplies G itself, so no back-projection. P is regenerated from
    # a seed every K steps (elementwise, free at the floor).
    r = _rank(m, hp)
    return Cost(_elementwise(m, n, size, 0, 4 * r * n + m * r + n), 2.0 * m * r * n)


def alice(m, n, size, hp):
    # GaLore's two products plus the tracked r x r Gram sigma sigma^T (2 r^2 n; read and written
    # r^2); the compensation's column energies (n). Every K steps: the Gram G G^T (2 m^2 n), the
    # eigh of the m x m tracked Gram reconstruction (9 m^3) and orthogonalising the complement
    # (QR of m x r: 4 m r^2).
    r = _rank(m, hp)
    tracked = float(hp.get("tracking_beta", 0.0)) > 0.0
    switch = (2.0 * m * m * n + _eigh(m) + 4.0 * m * r * r) / int(hp.get("update_interval", 200))
    tracking = 2.0 * r * r * n if tracked else 0.0
    return _low_rank(m, n, size, hp, tracking + switch, extra_elements=2 * n + (2 * r * r if tracked else 0))


def eigen_adam(m, n, size, hp):
    # one-sided SOAP: the rotation U^T G and back (2 m^2 n each), the Gram G G^T (2 m^2 n), Adam
    # moments in the rotated m x n space (read and write both), the Gram (r/w) and basis (read);
    # the basis refresh (power iteration + QR) every precondition_frequency steps
    f = int(hp.get("precondition_frequency", 10))
    return Cost(_elementwise(m, n, size, 4, 3 * m * m), 6.0 * m * m * n + _power_qr(m) / f)


def soap(m, n, size, hp):
    # two-sided rotation L^T G R and back (2 m^2 n + 2 m n^2 each), both Grams (2 m^2 n, 2 m n^2),
    # Adam moments in the rotated space; both refreshes every precondition_frequency steps
    f = int(hp.get("precondition_frequency", 10))
    flops = 6.0 * (m * m * n + m * n * n) + (_power_qr(m) + _power_qr(n)) / f
    return Cost(_elementwise(m, n, size, 4, 3 * (m * m + n * n)), flops)


def shampoo(m, n, size, hp):
    # both Kronecker factors accumulated (G G^T, G^T G), the preconditioned update
    # L^(-1/4) G R^(-1/4) (2 m^2 n + 2 m n^2), and the roots by eigh plus their formation
    # (9 k^3 + 2 k^3 a side) every precondition_frequency steps; factors read and written,
    # roots read
    f = int(hp.get("precondition_frequency", 1))
    flops = 4.0 * (m * m * n + m * n * n) + (11.0 * m**3 + 11.0 * n**3) / f
    return Cost(_elementwise(m, n, size, 0, 3 * (m * m + n * n)), flops)


#: registered name -> cost of one step of one matrix, ``f(m, n, element_size, hyperparameters)``
FLOORS: dict[str, Callable[[int, int, int, dict], Cost]] = {
    "adam": adam, "racs": racs, "adafactor": adafactor, "sinkgd": sinkgd, "swan": swan, "muon": muon,
    "galore": galore, "fira": fira, "apollo": apollo, "apollo_mini": apollo,
    "alice": alice, "alice0": alice, "eigen_adam": eigen_adam, "soap": soap, "shampoo": shampoo,
}


def step_cost(name: str, shapes: list[tuple[int, ...]], hyperparameters: dict | None = None,
              element_size: int = 4) -> Cost | None:
    """The floor's bytes and flops of one step of ``name`` over ``shapes`` (None: no entry)."""
    if name not in FLOORS:
        return None
    total = Cost(0.0, 0.0)
    for shape in shapes:
        m, n = sorted((shape[0], math.prod(shape[1:])))
        total = total + FLOORS[name](m, n, element_size, dict(hyperparameters or {}))
    return total

