"""Generic numerical Frobenius minimisation: ``min_theta ||F - F~(theta)||_F^2`` for any structure.

Works for a user's new structure from its ``parameter_spec`` and ``dense`` alone. Given gradient
samples instead of a dense Fisher, it never forms ``F``: with ``F = E[g g^T]``,

    ||F - F~||^2 = ||F||^2 - 2 E[g^T F~ g] + ||F~||^2,

where ``||F||^2 = mean_{k,l} (g_k . g_l)^2`` comes from the samples' Gram matrix and the other
two terms from the structure's (possibly matrix-free) ``quadratic_form`` and ``frobenius_sq``.
Constraints are handled by reparametrisation (log for positive, symmetrisation, exponential of a
skew matrix for orthogonal) and the smooth problem is solved by L-BFGS-B with exact gradients
from autograd, in float64, from the structure's initial point plus seeded random restarts.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from .fim import vec
from .structures.base import Params, ParamSpec, Structure


class _Packing:
    """Maps a flat unconstrained vector to constrained parameter tensors (and back for inits)."""

    def __init__(self, spec: dict[str, ParamSpec], init: Params):
        self.spec = spec
        self.init = dict(init)
        self.sizes = {name: math.prod(s.shape) for name, s in spec.items()}
        for name, s in spec.items():
            if s.constraint == "stiefel":  # rotate an orthogonal completion of the m x r start
                q, r = torch.linalg.qr(init[name].to(torch.float64), mode="complete")
                q[:, : s.shape[1]] *= torch.where(torch.diagonal(r) < 0, -1.0, 1.0)  # keep signs
                self.init[name] = q
                self.sizes[name] = s.shape[0] ** 2

    def to_theta(self, params: Params) -> np.ndarray:
        parts = []
        for name, s in self.spec.items():
            p = params[name].detach().to(torch.float64)
            if s.constraint == "positive":
                p = p.clamp_min(1e-300).log()
            elif s.constraint in ("orthogonal", "stiefel"):
                p = torch.zeros(self.sizes[name], dtype=torch.float64)  # a rotation *from* the start
            parts.append(p.reshape(-1))
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def to_params(self, theta: Tensor) -> Params:
        params, offset = {}, 0
        for name, s in self.spec.items():
            raw = theta[offset: offset + self.sizes[name]]
            offset += self.sizes[name]
            raw = raw.reshape(s.shape[0], s.shape[0]) if s.constraint == "stiefel" else raw.reshape(s.shape)
            if s.constraint == "positive":
                raw = raw.exp()
            elif s.constraint == "symmetric":
                raw = 0.5 * (raw + raw.mT)
            elif s.constraint in ("orthogonal", "stiefel"):
                raw = self.init[name].to(torch.float64) @ torch.linalg.matrix_exp(raw - raw.mT)
                raw = raw[:, : s.shape[1]]
            params[name] = raw
        return params


@contextmanager
def _single_threaded():
    """The generic solver evaluates many tiny (mn x mn) objectives: intra-op threads only add
    contention there (20x slower on a loaded 2-core machine), so run them on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def frobenius_objective(structure: Structure, params: Params, shape: tuple[int, int], *,
                        fim: Tensor | None = None, grads: Tensor | None = None) -> Tensor:
    """``||F - F~(params)||_F^2`` from a dense ``fim`` or, matrix-free, from gradient samples."""
    m, n = shape
    if fim is not None:
        return (fim - structure.dense(params, m, n)).square().sum()
    g = vec(grads)
    fim_sq = (g @ g.mT).square().mean()
    return fim_sq - 2 * structure.quadratic_form(params, grads).mean() + structure.frobenius_sq(params, m, n)


def generic_fit(structure: Structure, shape: tuple[int, int], *, fim: Tensor | None = None,
                grads: Tensor | None = None, fixed: Params | None = None, init: Params | None = None,
                restarts: int = 2, seed: int = 0, maxiter: int = 20_000) -> Params:
    """Numerically optimal parameters of ``structure`` for ``fim`` (or for ``grads`` samples).

    ``fixed`` holds some parameter blocks constant (e.g. a basis); ``init`` overrides the
    structure's starting point; ``restarts`` adds seeded random perturbations of it, and the best
    result is returned.
    """
    if (fim is None) == (grads is None):
        raise ValueError("generic_fit needs exactly one of fim= (dense Fisher) or grads= (samples)")
    m, n = shape
    fixed = {k: v.detach().to(torch.float64) for k, v in (fixed or {}).items()}
    fim64 = None if fim is None else fim.detach().to(torch.float64)
    grads64 = None if grads is None else grads.detach().to(torch.float64)
    if fim64 is not None:
        scale = float(torch.diagonal(fim64).mean().clamp_min(1e-300))
        norm_sq = float(fim64.square().sum().clamp_min(1e-300))
    else:
        g = vec(grads64)
        scale = float(g.square().mean().clamp_min(1e-300))
        norm_sq = float((g @ g.mT).square().mean().clamp_min(1e-300))

    full_spec = structure.parameter_spec(m, n)
    unknown = set(fixed) - set(full_spec)
    if unknown:
        raise ValueError(f"fixed= names unknown parameters {sorted(unknown)}; "
                         f"{type(structure).__name__} has {sorted(full_spec)}")
    spec = {k: v for k, v in full_spec.items() if k not in fixed}
    start = {k: v.to(torch.float64) for k, v in (init or structure.initial_params(m, n, scale)).items()}
    packing = _Packing(spec, start)

    @torch.enable_grad()  # also when called from an optimizer's step (which runs under no_grad)
    def objective(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.from_numpy(theta_np).requires_grad_(True)
        params = {**packing.to_params(theta), **fixed}
        value = frobenius_objective(structure, params, shape, fim=fim64, grads=grads64) / norm_sq
        (grad,) = torch.autograd.grad(value, theta) if theta.numel() else (torch.zeros(0),)
        return float(value.detach()), grad.numpy().astype(np.float64)

    theta0 = packing.to_theta(start)
    if theta0.size == 0:
        return dict(fixed)
    rng = np.random.default_rng(seed)
    starts = [theta0] + [theta0 + rng.normal(scale=0.5, size=theta0.shape) for _ in range(restarts)]
    best = None
    with _single_threaded():
        for start_theta in starts:
            result = scipy.optimize.minimize(
                objective, start_theta, jac=True, method="L-BFGS-B",
                options={"maxiter": maxiter, "maxfun": 4 * maxiter, "ftol": 1e-16, "gtol": 1e-13, "maxcor": 50},
            )
            if best is None or result.fun < best.fun:
                best = result
    with torch.no_grad():
        return {**packing.to_params(torch.from_numpy(best.x)), **fixed}
