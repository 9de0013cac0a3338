"""``fimkit.derive``: a structure in, a ``torch.optim.Optimizer`` class out.

Every named optimizer of ``fimkit.optim`` is one call of :func:`derive` (or, for APOLLO, which
is not a Frobenius fit, of :func:`recipe` over the same blocks), and :func:`expression` prints
that call exactly (``fimkit optimizers``): evaluating it builds a class that steps identically.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .optim.blocks import LearningRate, Momentum, tracking_blocks
from .optim.chain import Block, ChainOptimizer
from .structures.base import Structure


@dataclass(frozen=True)
class Declaration:
    """The arguments an optimizer class was declared with (what :func:`expression` prints)."""

    structure: Structure | None
    pre: tuple[Block, ...] = ()
    post: tuple[Block, ...] = ()
    step: Block | None = None
    matrix_only: bool | None = None
    refresh_offset: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)
    #: the blocks of a :func:`recipe` (no structure)
    chain: tuple[Block, ...] = ()

    def recipe(self) -> dict[str, Any]:
        """``derive``'s keyword arguments of this declaration (all but the structure), so that a
        variant is ``derive(other_structure, **Base.declaration.recipe())``."""
        options = {"pre": self.pre, "post": self.post, "step": self.step, "matrix_only": self.matrix_only,
                   "refresh_offset": self.refresh_offset}
        return {**options, **self.defaults}


def derive(structure: Structure, *, name: str | None = None, pre: Block | tuple[Block, ...] | None = None,
           momentum: bool | None = None, post: tuple[Block, ...] = (), step: Block | None = None,
           matrix_only: bool | None = None, refresh_offset: int = 0, paper_hparams: dict | None = None,
           doc: str | None = None, **defaults: Any) -> type[ChainOptimizer]:
    """The optimizer whose update is the structure's square-root natural-gradient step.

    Per parameter, each step: the ``pre`` blocks (default: a momentum ``M`` of the gradient,
    ``Momentum()``, off when ``betas[0] == 0``; ``momentum=False`` is ``pre=()``), then the
    structure tracked online from the gradients and applied to the direction
    (``tracking_blocks(structure)``: EMAs of ``structure.statistics``, ``structure.fit``,
    ``Mat(F~^{-power} vec(M))``), then the ``post`` blocks (e.g. RACS's limiter and scale), then
    ``step`` (default ``LearningRate()``: ``W <- W - lr * X``).

    ``defaults`` become the class's default hyperparameters (``lr``, ``betas``, ``eps``,
    ``power``, ``weight_decay``, ``bias_correction``, ``precondition_frequency``, ...; every one
    can be overridden per param group). ``matrix_only`` defaults to the structure's own; a
    matrix-only class steps every tensor that is not 2-D with its built-in Adam and has that
    Adam's hyperparameters too (``non_matrix``, ``adam_lr``, ``adam_betas``, ``adam_eps``,
    ``adam_weight_decay``: :mod:`fimkit.optim.builtin_adam`; ``defaults`` may set them);
    ``refresh_offset=1`` moves the periodic refreshes one step later (official GaLore's
    convention, see DECISIONS.md); ``paper_hparams`` (size -> overrides) feeds
    ``fimkit.optim.paper_hparams``.
    """
    if not isinstance(structure, Structure):
        raise TypeError(f"derive() needs a fimkit Structure, got {structure!r}")
    if pre is not None and momentum is not None:
        raise TypeError("derive() takes pre= or momentum=, not both (momentum=False is pre=())")
    if pre is None:
        pre = (Momentum(),) if momentum in (None, True) else ()
    pre = (pre,) if isinstance(pre, Block) else tuple(pre)
    blocks = pre + tracking_blocks(structure, refresh_offset) + tuple(post) + (step or LearningRate(),)
    declaration = Declaration(structure, pre, tuple(post), step, matrix_only, refresh_offset, dict(defaults))
    matrix_only = structure.matrix_only if matrix_only is None else matrix_only
    return _optimizer_class(name or f"Derived{type(structure).__name__}", blocks, declaration, matrix_only,
                            paper_hparams, doc or f"Optimizer derived by fimkit from {structure!r}.")


def recipe(*blocks: Block, name: str = "Recipe", matrix_only: bool = True, paper_hparams: dict | None = None,
           doc: str | None = None, **defaults: Any) -> type[ChainOptimizer]:
    """An optimizer that is a chain of ``blocks`` with no structure fitted (APOLLO: Adam's
    scaling coarsened to channels in a random subspace is not a Frobenius fit)."""
    declaration = Declaration(None, matrix_only=matrix_only, defaults=dict(defaults), chain=tuple(blocks))
    return _optimizer_class(name, tuple(blocks), declaration, matrix_only, paper_hparams,
                            doc or f"Optimizer chaining {', '.join(map(repr, blocks))}.")


def _optimizer_class(name, blocks, declaration, matrix_only, paper_hparams, doc) -> type[ChainOptimizer]:
    namespace = {
        "blocks": blocks,
        "hyperparameters": dict(declaration.defaults),
        "matrix_only": matrix_only,
        "structure": declaration.structure,
        "declaration": declaration,
        "paper_hparams": dict(paper_hparams or {}),
        "__doc__": doc,
        # the module whose code declared it (help(), pickling by reference)
        "__module__": sys._getframe(2).f_globals.get("__name__", "fimkit.optim"),
        "__qualname__": name,
    }
    return type(name, (ChainOptimizer,), namespace)


def expression(optimizer: type[ChainOptimizer]) -> str:
    """The ``derive(...)`` (or ``recipe(...)``) call that builds ``optimizer``, exactly: its
    structure, recipe blocks and defaults (names from :data:`fimkit.catalog.NAMES`)."""
    declaration = getattr(optimizer, "declaration", None)
    if declaration is None:
        raise ValueError(f"{optimizer.__name__} was not declared with fimkit.derive or fimkit.recipe")
    defaults = [f"{key}={value!r}" for key, value in declaration.defaults.items()]
    if declaration.structure is None:
        arguments = [repr(block) for block in declaration.chain]
        if not declaration.matrix_only:
            arguments.append("matrix_only=False")
        return f"recipe({', '.join(arguments + defaults)})"
    arguments = [repr(declaration.structure)]
    if declaration.pre == ():
        arguments.append("momentum=False")
    elif [repr(b) for b in declaration.pre] != [repr(Momentum())]:
        arguments.append(f"pre={_tuple(declaration.pre)}")
    if declaration.post:
        arguments.append(f"post={_tuple(declaration.post)}")
    if declaration.step is not None:
        arguments.append(f"step={declaration.step!r}")
    if declaration.matrix_only is not None:
        arguments.append(f"matrix_only={declaration.matrix_only!r}")
    if declaration.refresh_offset:
        arguments.append(f"refresh_offset={declaration.refresh_offset!r}")
    return f"derive({', '.join(arguments + defaults)})"


def _tuple(blocks: tuple[Block, ...]) -> str:
    return f"({', '.join(map(repr, blocks))}{',' if len(blocks) == 1 else ''})"
