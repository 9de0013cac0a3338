"""How well does each Fisher structure, and each optimizer's own estimate, fit a real Fisher?

Input: gradient samples ``grads`` (k, m, n) of one weight, per-sample or per-micro-batch, from
any model (:func:`per_sample_gradients` collects them for ``nn.Linear`` blocks). The empirical
Fisher is ``F = E[vec(G) vec(G)^T]`` (row-major vec, :func:`fimkit.empirical_fim`). Reported:

- for every structure, the relative error ``||F - F~*||_F / ||F||_F`` of its Frobenius-optimal
  member (``fimkit.solve``; ``EigenvalueCorrected`` and ``LowRankPlusDiagonal`` are optimal given
  the Gram eigenbasis, the paper's one alternating round);
- for every optimizer, the error of the ``F~`` it actually uses after seeing the same samples
  (:mod:`fimkit.optimizer_fisher`), raw and after the optimal rescaling
  ``c* = <F, F~> / ||F~||^2``: a preconditioner's overall scale is absorbed by the learning rate.
  For a structure's optimum ``c* = 1`` (the families are cones), so both errors agree;
- the sampling noise of ``F`` itself (:func:`sampling_noise`): with ``k`` samples of an ``mn``-dim
  gradient, ``F`` is only known to about that relative accuracy, and no structure with few
  parameters can fit the noise, so errors near it do not distinguish structures.

    import fimkit.diagnostics as fd
    fits = fd.diagnose(grads)              # structures, optimizers and the noise floor
    print(fd.markdown_table(fits))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .fim import check_fim, check_samples, empirical_fim
from .optimizer_fisher import used_fisher
from .solve import solve
from .structures import (
    Diagonal, DiagonalFactor, EigenvalueCorrected, Full, Identity, Kronecker, LowRankPlusDiagonal, RowColumn, Structure,
)

#: optimizers replayed by default (those with a Fisher reader), in table order
DEFAULT_OPTIMIZERS = ("adam", "racs", "shampoo", "soap", "eigen_adam", "alice", "alice0", "galore", "fira")
DEFAULT_RANKS = (1, 2, 4, 8)
KINDS = ("structure", "optimizer", "noise")


@dataclass(frozen=True)
class Fit:
    """One row of a diagnostic.

    ``kind``: "structure" (Frobenius-optimal member), "optimizer" (what it uses after a replay)
    or "noise" (the sampling noise of ``F``). ``error`` is ``||F - F~|| / ||F||``;
    ``rescaled_error`` is ``min_c ||F - c F~|| / ||F||``, reached at ``scale`` = c*. ``numel``: the
    numbers that define ``F~`` (a structure's parameters) or that the optimizer stores for this
    weight (its whole state, momentum included). ``how``: the solver or the reader's description.
    """

    label: str
    kind: str
    error: float
    rescaled_error: float
    scale: float
    numel: int
    how: str
    half_error: float = math.nan
    extrapolated_error: float = math.nan


def builtin_structures(m: int, n: int, ranks: Iterable[int] = DEFAULT_RANKS) -> dict[str, Structure]:
    """Every built-in family for an ``m x n`` weight, by label; low ranks only where ``r < m``
    (a rank of ``m`` or more is ``EigenvalueCorrected(Full, Identity)``)."""
    sides = {"Full": Full(), "DiagonalFactor": DiagonalFactor(), "Identity": Identity()}
    structures: dict[str, Structure] = {"Identity (SGD)": Kronecker(Identity(), Identity()), "Diagonal": Diagonal(),
                                        "RowColumn": RowColumn()}
    for row_name, rows in sides.items():
        for col_name, cols in sides.items():
            if {row_name, col_name} not in ({"Identity"}, {"DiagonalFactor"}):
                structures[f"Kronecker({row_name}, {col_name})"] = Kronecker(rows, cols)
    structures["EigenvalueCorrected(Full, Identity)"] = EigenvalueCorrected(Kronecker(Full(), Identity()))
    structures["EigenvalueCorrected(Identity, Full)"] = EigenvalueCorrected(Kronecker(Identity(), Full()))
    structures["EigenvalueCorrected(Full, Full)"] = EigenvalueCorrected(Kronecker(Full(), Full()))
    for r in sorted(set(ranks)):
        if 1 <= r < m:
            structures[f"LowRankPlusDiagonal({r})"] = LowRankPlusDiagonal(rank=r)
    return structures


def parameter_numel(structure: Structure, m: int, n: int) -> int:
    """How many numbers define a member of ``structure`` (its parameter blocks, stored densely)."""
    return sum(math.prod(spec.shape) for spec in structure.parameter_spec(m, n).values())


def compare(fim: Tensor, approx: Tensor) -> tuple[float, float, float]:
    """``(||F - F~|| / ||F||, min_c ||F - c F~|| / ||F||, c*)`` with ``c* = <F, F~> / ||F~||^2``."""
    fim, approx = fim.double(), approx.double()
    norm = float(torch.linalg.matrix_norm(fim))
    approx_sq = float(approx.square().sum())
    scale = float((fim * approx).sum()) / approx_sq if approx_sq > 0 else 0.0
    error = float(torch.linalg.matrix_norm(fim - approx)) / norm
    rescaled = float(torch.linalg.matrix_norm(fim - scale * approx)) / norm
    return error, rescaled, scale


def sampling_noise(grads: Tensor) -> float:
    """Relative sampling noise of ``F`` from ``grads``: ``||F_odd - F_even|| / (2 ||F||)``.

    ``F_odd`` and ``F_even`` are the Fishers of the two interleaved halves; their difference has
    twice the variance of one half's noise, which has twice that of the whole sample's, hence
    the 2. A structure's measured error is about ``sqrt(error_true^2 + noise^2)``.
    """
    grads = check_samples(grads).double()
    if grads.shape[0] < 2:
        raise ValueError("sampling_noise needs at least 2 gradient samples")
    half = grads.shape[0] // 2
    odd, even = empirical_fim(grads[1 : 2 * half : 2]), empirical_fim(grads[0 : 2 * half : 2])
    return float(torch.linalg.matrix_norm(odd - even)) / (2 * float(torch.linalg.matrix_norm(empirical_fim(grads))))


def _as_fim(grads_or_fim: Tensor, shape: tuple[int, int] | None) -> tuple[Tensor, int, int]:
    if grads_or_fim.ndim == 3:
        grads = check_samples(grads_or_fim)
        return empirical_fim(grads.double()), grads.shape[-2], grads.shape[-1]
    if shape is None:
        raise ValueError("a dense (mn x mn) Fisher needs shape=(m, n)")
    return check_fim(grads_or_fim.double(), tuple(shape)), shape[0], shape[1]


def fit_structures(grads_or_fim: Tensor, structures: dict[str, Structure] | None = None,
                   shape: tuple[int, int] | None = None) -> list[Fit]:
    """The Frobenius-optimal member of each structure (default :func:`builtin_structures`), from
    gradient samples (k, m, n) or a dense Fisher with ``shape=(m, n)``."""
    fim, m, n = _as_fim(grads_or_fim, shape)
    fits = []
    for label, structure in (structures or builtin_structures(m, n)).items():
        approx = solve(structure, fim, (m, n))
        fits.append(Fit(label, "structure", *compare(fim, approx.matrix), parameter_numel(structure, m, n),
                        approx.solver))
    return fits


def fit_optimizers(grads: Tensor, optimizers: Iterable[str] | dict[str, tuple[str, dict]] = DEFAULT_OPTIMIZERS,
                   fim: Tensor | None = None) -> list[Fit]:
    """The ``F~`` each optimizer uses after a replay of ``grads`` (one sample a step), against ``F``.

    ``optimizers``: registered names, or ``{label: (name, hparams)}`` for variants (e.g.
    ``{"racs beta 0.99": ("racs", {"beta": 0.99})}``).
    """
    grads = check_samples(grads)
    fim = empirical_fim(grads.double()) if fim is None else fim
    specs = optimizers if isinstance(optimizers, dict) else {name: (name, {}) for name in optimizers}
    fits = []
    for label, (name, hparams) in specs.items():
        used = used_fisher(name, grads, **hparams)
        fits.append(Fit(label, "optimizer", *compare(fim, used.matrix), used.state_numel, used.description))
    return fits


def diagnose(grads: Tensor, structures: dict[str, Structure] | None = None,
             optimizers: Iterable[str] | dict[str, tuple[str, dict]] = DEFAULT_OPTIMIZERS) -> list[Fit]:
    """Structures, optimizers and the sampling noise of one weight's gradient samples (k, m, n),
    each fit also repeated on the two interleaved halves of the samples (``half_error``,
    ``extrapolated_error``)."""
    grads = check_samples(grads)
    m, n = grads.shape[-2:]
    structures = structures if structures is not None else builtin_structures(m, n)

    def fits_of(samples: Tensor) -> list[Fit]:
        fim = empirical_fim(samples.double())
        return [*fit_structures(fim, structures, shape=(m, n)), *fit_optimizers(samples, optimizers, fim=fim)]

    whole, halves = fits_of(grads), [fits_of(grads[0::2]), fits_of(grads[1::2])] if grads.shape[0] >= 4 else []
    fits = []
    for index, fit in enumerate(whole):
        if halves:
            half = sum(h[index].rescaled_error for h in halves) / 2
            extrapolated = math.sqrt(max(2 * fit.rescaled_error**2 - half**2, 0.0))
            fit = dataclasses.replace(fit, half_error=half, extrapolated_error=extrapolated)
        fits.append(fit)
    noise = sampling_noise(grads)
    return fits + [Fit("sampling noise of F", "noise", noise, noise, 1.0, 0, f"{grads.shape[0]} samples, halves")]


def markdown_table(fits: Iterable[Fit]) -> str:
    """The rows as a markdown table, best rescaled error first within each kind."""
    lines = ["| kind | F~ | rel. error | rescaled | c* | half samples | extrapolated | numbers stored | how |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fit in sorted(fits, key=lambda f: (KINDS.index(f.kind), f.rescaled_error)):
        lines.append(f"| {fit.kind} | {fit.label} | {fit.error:.4f} | {fit.rescaled_error:.4f} | {fit.scale:.3g} | "
                     f"{fit.half_error:.4f} | {fit.extrapolated_error:.4f} | {fit.numel} | {fit.how} |")
    return "\n".join(lines)


# ----------------------------------------------------------------- collecting gradient samples
@dataclass(frozen=True)
class LinearBlock:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of the weight (out x in) of the
    ``nn.Linear`` at ``module`` (a ``model.get_submodule`` path)."""

    module: str
    rows: tuple[int, int] = (0, 16)
    cols: tuple[int, int] = (0, 32)

    @property
    def label(self) -> str:
        return f"{self.module}[{self.rows[0]}:{self.rows[1]}, {self.cols[0]}:{self.cols[1]}]"

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]

    def linear(self, model: nn.Module) -> nn.Linear:
        """The block's layer in ``model``; ValueError if it is missing, not linear, or too small."""
        try:
            module = model.get_submodule(self.module)
        except AttributeError:
            raise ValueError(f"the model has no module {self.module!r}") from None
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{self.module!r} is a {type(module).__name__}, not an nn.Linear")
        m, n = module.weight.shape
        if not (0 <= self.rows[0] < self.rows[1] <= m and 0 <= self.cols[0] < self.cols[1] <= n):
            raise ValueError(f"block {self.label} is outside the {m} x {n} weight of {self.module!r}")
        return module


def per_sample_gradients(model: nn.Module, blocks: Iterable[LinearBlock],
                         per_sample_loss: Callable[[nn.Module], Tensor]) -> dict[LinearBlock, Tensor]:
    """Exact per-sample gradients of weight blocks of ``nn.Linear`` layers, from one backward pass.

    ``per_sample_loss(model)`` runs the forward pass and returns one loss per sample (B,); the
    samples must not interact (no batch statistics). For ``y = x W^T`` the gradient of sample
    ``b`` is ``sum_t dy[b, t]^T x[b, t]`` over its positions ``t``, so only each layer's input and
    output gradient are needed: the weights' own ``.grad`` is left untouched. Returns
    ``{block: (B, rows, cols)}`` in float32 (as the model computes).
    """
    blocks = list(blocks)
    captured: dict[LinearBlock, list[tuple[Tensor, Tensor]]] = {b: [] for b in blocks}
    handles = []
    for block in blocks:
        handles.append(block.linear(model).register_forward_hook(
            lambda mod, inputs, output, block=block: captured[block].append((inputs[0], output))))
    try:
        losses = per_sample_loss(model)
    finally:
        for handle in handles:
            handle.remove()
    if losses.ndim != 1:
        raise ValueError(f"per_sample_loss must return one loss per sample (shape (B,)), got {tuple(losses.shape)}")
    calls = [(block, x, y) for block in blocks for x, y in captured[block]]
    if len({b for b, _, _ in calls}) < len(blocks):
        missing = [b.module for b in blocks if not captured[b]]
        raise ValueError(f"the forward pass never called {missing}")
    output_grads = torch.autograd.grad(losses.sum(), [y for _, _, y in calls])
    grads = {block: 0.0 for block in blocks}
    for (block, x, _), dy in zip(calls, output_grads):
        b = x.shape[0]
        dy = dy[..., block.rows[0] : block.rows[1]].reshape(b, -1, block.shape[0])
        x = x[..., block.cols[0] : block.cols[1]].reshape(b, -1, block.shape[1])
        grads[block] = grads[block] + dy.mT @ x.detach()  # a layer called twice adds up
    return grads
