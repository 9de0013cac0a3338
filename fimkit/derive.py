"""``fimkit.derive``: a structure in, a ``torch.optim.Optimizer`` class out."""

from __future__ import annotations

from typing import Any

from .optim.blocks import LearningRate, Momentum, Precondition
from .optim.chain import Block, ChainOptimizer
from .structures.base import Structure


def derive(structure: Structure, *, name: str | None = None, post: tuple[Block, ...] = (),
           momentum: bool = True, matrix_only: bool | None = None, doc: str | None = None,
           **defaults: Any) -> type[ChainOptimizer]:
    """The optimizer whose update is the structure's square-root natural-gradient step.

    Per parameter, each step: EMAs of the statistics the structure names
    (``structure.statistics``), the structured member ``F~`` fitted to them
    (``structure.fit``), a momentum ``M`` of the gradient (when ``momentum`` and ``betas[0] > 0``),
    and the step ``W <- W - lr * (post blocks)(Mat(F~^{-power} vec(M)))``.

    ``defaults`` become the class's default hyperparameters (``lr``, ``betas``, ``eps``,
    ``power``, ``weight_decay``, ``bias_correction``, ``precondition_frequency``, ...; every one
    can be overridden per param group). ``post`` inserts blocks between the preconditioner and
    the learning rate (e.g. RACS's limiter and scale). ``matrix_only`` defaults to the
    structure's own.
    """
    if not isinstance(structure, Structure):
        raise TypeError(f"derive() needs a fimkit Structure, got {structure!r}")
    blocks = ((Momentum(),) if momentum else ()) + (Precondition(structure),) + tuple(post) + (LearningRate(),)
    class_name = name or f"Derived{type(structure).__name__}"
    namespace = {
        "blocks": blocks,
        "hyperparameters": dict(defaults),
        "matrix_only": structure.matrix_only if matrix_only is None else matrix_only,
        "structure": structure,
        "__doc__": doc or f"Optimizer derived by fimkit from {structure!r}.",
        "__module__": "fimkit.optim",
    }
    return type(class_name, (ChainOptimizer,), namespace)
