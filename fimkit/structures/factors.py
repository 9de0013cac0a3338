"""Factor families: what one side of a Kronecker structure may be.

Each family is a linear space of symmetric ``k x k`` matrices (any symmetric matrix, diagonal
matrices, multiples of the identity). A side is described by which entries of the rearranged
second moment it keeps (``subscripts``), which turns every Kronecker composition's Frobenius
problem into one projected rank-1 problem (Van Loan and Pitsianis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..linalg import eigh_descending, psd_matrix_power
from .base import ParamSpec


@dataclass(frozen=True)
class FactorFamily:
    """Base class of a Kronecker factor family (one side, of size ``k``)."""

    def spec(self, k: int) -> ParamSpec:
        raise NotImplementedError

    def matrix(self, param: Tensor, k: int) -> Tensor:
        """The dense ``k x k`` factor from its compact parameter."""
        raise NotImplementedError

    def subscripts(self, first: str, second: str) -> tuple[str, str, str]:
        """einsum roles of this side in ``E[G_{first,.} G_{second,.}]`` -> (a, b, kept)."""
        raise NotImplementedError

    def moment_shape(self, k: int) -> tuple[int, ...]:
        raise NotImplementedError

    def coordinate_scale(self, k: int) -> float:
        """Norm of one kept moment entry's basis matrix (1, or sqrt(k) for ``Identity``)."""
        return 1.0

    def from_moment(self, x: Tensor, k: int) -> Tensor:
        """Compact parameter from a kept-moment vector (flattened ``moment_shape``)."""
        raise NotImplementedError

    def power(self, param: Tensor, p: float) -> Tensor:
        """Compact parameter of ``factor ** p`` (PSD)."""
        raise NotImplementedError

    def eig(self, param: Tensor) -> tuple[Tensor | None, Tensor]:
        """(eigenvectors or None when the factor is diagonal, eigenvalues)."""
        raise NotImplementedError

    def trace(self, param: Tensor, k: int) -> Tensor:
        raise NotImplementedError

    def identity(self, k: int, dtype=torch.float32) -> Tensor:
        """The identity factor in compact form (I, ones, or 1)."""
        raise NotImplementedError

    def numel(self, k: int) -> int:
        return math.prod(self.spec(k).shape)


@dataclass(frozen=True)
class Full(FactorFamily):
    """Any symmetric (SPD) ``k x k`` factor: Shampoo's and whitening's side."""

    def spec(self, k: int) -> ParamSpec:
        return ParamSpec((k, k), "symmetric")

    def matrix(self, param: Tensor, k: int) -> Tensor:
        return param

    def subscripts(self, first: str, second: str) -> tuple[str, str, str]:
        return first, second, first + second

    def moment_shape(self, k: int) -> tuple[int, ...]:
        return (k, k)

    def from_moment(self, x: Tensor, k: int) -> Tensor:
        a = x.reshape(k, k)
        return 0.5 * (a + a.mT)

    def power(self, param: Tensor, p: float) -> Tensor:
        return psd_matrix_power(param, p)

    def eig(self, param: Tensor) -> tuple[Tensor | None, Tensor]:
        evals, evecs = eigh_descending(param)
        return evecs, evals

    def trace(self, param: Tensor, k: int) -> Tensor:
        return torch.diagonal(param, dim1=-2, dim2=-1).sum(-1)

    def identity(self, k: int, dtype=torch.float32) -> Tensor:
        return torch.eye(k, dtype=dtype)


@dataclass(frozen=True)
class DiagonalFactor(FactorFamily):
    """A positive diagonal factor, stored as a vector: RACS's and Adafactor's side."""

    def spec(self, k: int) -> ParamSpec:
        return ParamSpec((k,), "positive")

    def matrix(self, param: Tensor, k: int) -> Tensor:
        return torch.diag_embed(param)

    def subscripts(self, first: str, second: str) -> tuple[str, str, str]:
        return first, first, first

    def moment_shape(self, k: int) -> tuple[int, ...]:
        return (k,)

    def from_moment(self, x: Tensor, k: int) -> Tensor:
        return x.reshape(k)

    def power(self, param: Tensor, p: float) -> Tensor:
        return param.clamp_min(0).pow(p)

    def eig(self, param: Tensor) -> tuple[Tensor | None, Tensor]:
        return None, param

    def trace(self, param: Tensor, k: int) -> Tensor:
        return param.sum(-1)

    def identity(self, k: int, dtype=torch.float32) -> Tensor:
        return torch.ones(k, dtype=dtype)


@dataclass(frozen=True)
class Identity(FactorFamily):
    """``c * I``, stored as the scalar ``c``: the side a one-sided structure leaves alone."""

    def spec(self, k: int) -> ParamSpec:
        return ParamSpec((), "positive")

    def matrix(self, param: Tensor, k: int) -> Tensor:
        return param * torch.eye(k, dtype=param.dtype, device=param.device)

    def subscripts(self, first: str, second: str) -> tuple[str, str, str]:
        return first, first, ""

    def moment_shape(self, k: int) -> tuple[int, ...]:
        return ()

    def coordinate_scale(self, k: int) -> float:
        return math.sqrt(k)

    def from_moment(self, x: Tensor, k: int) -> Tensor:
        return x.reshape(())

    def power(self, param: Tensor, p: float) -> Tensor:
        return param.clamp_min(0).pow(p)

    def eig(self, param: Tensor) -> tuple[Tensor | None, Tensor]:
        return None, param

    def trace(self, param: Tensor, k: int) -> Tensor:
        return param * k

    def identity(self, k: int, dtype=torch.float32) -> Tensor:
        return torch.ones((), dtype=dtype)
