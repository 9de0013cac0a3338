"""The update-chain optimizer every fimkit optimizer is built on.

An optimizer is a chain of small :class:`Block` s (optax style; the protocol is in
:mod:`fimkit.optim.protocol`): each block declares the hyperparameters it reads from the param
group and the state tensors it owns, and maps the running update (starting from the gradient)
to a new one; the last block turns the direction into the signed parameter change (learning
rate, relative step size...). :class:`ChainOptimizer` does everything else once, for every
optimizer: validation with errors that name the parameter, the matrix view of a tensor,
transposing tall matrices to the short side, state dtype, the non-finite guard (one host sync
per param group and step, none per parameter), decoupled weight decay, closures, a step that
``torch.compile`` traces without graph breaks (:mod:`fimkit.optim.traced`), a
``load_state_dict`` that keeps the saved state dtypes and fills hyperparameters that older
checkpoints lack, and, for matrix-only optimizers, the built-in Adam of every tensor that is not
a matrix (:mod:`fimkit.optim.builtin_adam`).

Each optimizer class gets a real ``__init__`` signature (its hyperparameters with their defaults,
for ``help()``, ``inspect`` and tools that build optimizers from keyword arguments), and its
:meth:`~ChainOptimizer.state_shapes` says what state it keeps for a weight of a given shape.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import (builtin_adam, fast_path, fused_adam, fused_racs, guard, inplace_adam, sharded, threaded_steps, traced,
               units)
from .domains import BOOLEAN, NON_NEGATIVE, STATE_DTYPE, check_group, choice
from .protocol import (  # noqa: F401 - re-exported: fimkit.optim.chain was their home
    Block, Group, ScalarBlock, State, StateShape, init_with_signature, is_refresh_step, matrix_shape, working_shape)
from .saved_classes import with_saved_classes
from .units import gradient_extremes


#: attributes that copies and pickles keep (torch's ``__getstate__`` keeps none)
KEPT_ATTRIBUTES = ("nonfinite_skips", "traceable_step", "sharded_step", "inplace_step", "fused_step")

COMMON_HYPERPARAMETERS = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    # Run matrix algorithms on W^T when m > n (algorithms.md §1; the m side gets the Gram).
    "transpose_to_short_side": False,
    # None: promote(param dtype, float32). A lower dtype stores state compactly; the
    # arithmetic still runs in float32.
    "state_dtype": None,
    # "skip": leave parameter and state untouched for a non-finite gradient; "raise"; "ignore".
    "on_nonfinite": "skip",
}
COMMON_DOMAINS = {
    "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "transpose_to_short_side": BOOLEAN,
    "state_dtype": STATE_DTYPE, "on_nonfinite": choice("skip", "raise", "ignore"),
}


class ChainOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose per-parameter update is ``blocks`` applied in order."""

    blocks: ClassVar[tuple[Block, ...]] = ()
    #: default hyperparameters of this optimizer (overrides of the blocks' defaults)
    hyperparameters: ClassVar[dict[str, Any]] = {}
    #: True: the chain needs a 2-D weight; other tensors go to the built-in Adam (its
    #: hyperparameters ``non_matrix``, ``adam_lr``, ... are then part of the class's)
    matrix_only: ClassVar[bool] = True
    #: None: the traceable step (:mod:`fimkit.optim.traced`) while torch.compile traces, else the
    #: eager one; True: the traceable step always; False: the eager step always
    traceable_step: bool | None = None
    #: DTensor parameters: "auto" steps element-wise chains (every block ``Block.elementwise``:
    #: ``elementwise``) on local shards, "gather" gathers them too (fimkit.optim.sharded)
    sharded_step, elementwise = "auto", False
    #: the Adam chain's eager step with in-place temporaries (fimkit.optim.inplace_adam, bit-identical
    #: to the per-block step, which False keeps)
    inplace_step = True
    #: True: the Adam chain compiled, one call a group (fimkit.optim.fused_adam); RACS's element-wise
    #: part compiled, one call a matrix (fimkit.optim.fused_racs)
    fused_step = False
    #: True: on a CPU with torch using 2 or more threads, two Python threads step the group's
    #: matrices side by side, bit for bit the serial step (fimkit.optim.threaded_steps); chains whose
    #: per-matrix steps are independent and draw no random numbers declare it
    threaded_step = False

    @classmethod
    def common_hyperparameters(cls) -> dict[str, Any]:
        """The hyperparameters every optimizer of this kind has, whatever its blocks."""
        return {**COMMON_HYPERPARAMETERS, **(builtin_adam.HYPERPARAMETERS if cls.matrix_only else {})}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        known = cls.common_hyperparameters()
        declared_by: dict[str, Block] = {}
        for block in cls.blocks:
            for key, value in block.hyperparameters.items():
                first = declared_by.setdefault(key, block)
                if known.get(key, value) != value and key not in cls.hyperparameters:
                    raise TypeError(
                        f"{cls.__name__}: {first!r} and {block!r} declare hyperparameter {key!r} with different "
                        f"defaults ({known[key]!r} and {value!r}); give {key}= in the optimizer's own defaults")
                known.setdefault(key, value)
        unknown = set(cls.hyperparameters) - set(known)
        if unknown:
            raise TypeError(f"{cls.__name__}: default(s) for unknown hyperparameter(s) {sorted(unknown)}; "
                            f"its blocks read {sorted(known)}")
        cls.domains = {**COMMON_DOMAINS, **(builtin_adam.DOMAINS if cls.matrix_only else {}),
                       **{k: d for block in cls.blocks for k, d in block.domains.items()}}
        undeclared = set(known) - set(cls.domains)
        if undeclared:
            raise TypeError(f"{cls.__name__}: hyperparameter(s) {sorted(undeclared)} declare no domain; list the "
                            f"valid values in the domains of the block that reads them (fimkit.optim.domains)")
        for key, value in cls.default_hyperparameters().items():
            if not cls.domains[key].contains(value):
                raise TypeError(f"{cls.__name__}: the default {key}={value!r} is not {cls.domains[key].description}")
        if "__init__" not in cls.__dict__:
            cls.__init__ = init_with_signature(cls, ChainOptimizer.__init__)
        start = len(cls.blocks)
        while start > 0 and isinstance(cls.blocks[start - 1], ScalarBlock):
            start -= 1
        readers = [i for i in range(start + 1, len(cls.blocks)) if cls.blocks[i].reads_update]
        start = readers[-1] if readers else start
        cls._body, cls._scalar_tail = cls.blocks[:start], cls.blocks[start:]
        cls.elementwise = bool(cls.blocks) and all(block.elementwise for block in cls.blocks)

    @classmethod
    def default_hyperparameters(cls) -> dict[str, Any]:
        defaults = dict(COMMON_HYPERPARAMETERS)
        for block in cls.blocks:
            for key, value in block.hyperparameters.items():
                defaults.setdefault(key, value)
        defaults.update({k: v for k, v in cls.common_hyperparameters().items() if k not in defaults})
        defaults.update(cls.hyperparameters)
        return defaults

    @classmethod
    def state_shapes(cls, m: int, n: int, *, dtype: torch.dtype = torch.float32,
                     **hyperparameters: Any) -> dict[str, StateShape]:
        """``{state key: StateShape(shape, dtype)}`` this optimizer keeps for an ``m x n`` weight
        (the matrix view of any tensor, see :func:`matrix_shape`) of ``dtype`` with these
        hyperparameters (:meth:`param_state_shapes` of that shape)."""
        return cls.param_state_shapes((m, n), dtype=dtype, **hyperparameters)

    @classmethod
    def param_state_shapes(cls, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                           **hyperparameters: Any) -> dict[str, StateShape]:
        """The state this optimizer keeps for a parameter of any ``shape``: that of its matrix view,
        or, for a tensor that a matrix-only optimizer gives its built-in Adam, Adam's. Read from
        the optimizer's own state initialisation on the ``meta`` device, so it follows the code
        (transpose to the short side, ``state_dtype``, options that add or drop state) and
        allocates nothing, whatever the size; the global random generator is left as it was. A
        tensor this optimizer refuses (``non_matrix="raise"``) is a ``ValueError``."""
        with torch.random.fork_rng(devices=[]):
            param = torch.nn.Parameter(torch.empty(tuple(shape), dtype=dtype, device="meta"))
            param.grad = torch.empty_like(param)
            instance = cls([param], **hyperparameters)
            instance._fresh_state(param, instance.param_groups[0])
        return {key: StateShape(tuple(value.shape), value.dtype) for key, value in instance.state[param].items()}

    def __init__(self, params, **hyperparameters):
        defaults = self.default_hyperparameters()
        unknown = set(hyperparameters) - set(defaults)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown hyperparameter(s) {sorted(unknown)}; "
                f"valid: {sorted(defaults)}"
            )
        defaults.update(hyperparameters)
        super().__init__(params, defaults)
        self.nonfinite_skips = 0
        self._trace_handle = traced.register(self, weak=True)

    def __getstate__(self) -> dict[str, Any]:  # torch's keeps defaults, state and param_groups only
        return {**super().__getstate__(), **{k: v for k, v in self.__dict__.items() if k in KEPT_ATTRIBUTES}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite_skips", 0)
        self._trace_handle = traced.register(self, weak=True)  # a copy is an optimizer of its own

    # ------------------------------------------------------------------------ validation
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if len({id(p) for p in params}) != len(params):  # torch only warns, then steps it twice
            raise ValueError(f"{type(self).__name__}: param group {len(self.param_groups)} lists a tensor more "
                             f"than once; list each parameter once")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._validate_group(group, len(self.param_groups) - 1)
        except ValueError:
            self.param_groups.pop()  # a refused group is not kept
            raise
        for index, p in enumerate(group["params"]):
            self._check_tensor(p, self._param_name(group, index), group)

    def _validate_group(self, group: Group, index: int) -> None:
        """Every hyperparameter in its domain, then the blocks' checks of combinations."""
        check_group(type(self).__name__, index, group, self.domains)
        for block in self.blocks:
            try:
                block.validate(group)
            except ValueError as exc:
                raise ValueError(f"{type(self).__name__}: param group {index}: {exc}") from None

    def _param_name(self, group: Group, index: int) -> str:
        names = group.get("param_names")
        if names and index < len(names):
            return repr(names[index])
        position = next(i for i, g in enumerate(self.param_groups) if g is group)
        return f"param_groups[{position}]['params'][{index}]"

    def _check_tensor(self, p: Tensor, name: str, group: Group) -> None:
        what = f"{type(self).__name__}: parameter {name} (shape {tuple(p.shape)}, {p.dtype})"
        if p.is_complex():
            raise ValueError(f"{what} is complex; fimkit optimizers support real tensors only "
                             f"(view it as real with torch.view_as_real, or route it elsewhere)")
        if not p.is_floating_point():
            raise ValueError(f"{what} is not floating point")
        if self.matrix_only and p.ndim != 2 and group["non_matrix"] == "raise":
            raise ValueError(
                f"{what} is not a matrix; {type(self).__name__} updates 2-D weights only. Route it "
                f"to Adam (fimkit.param_groups / fimkit.build_optimizer do this for you)."
                f" (non_matrix='raise'; the default non_matrix='adam' steps it with the built-in Adam.)"
            )

    # ------------------------------------------------------------------------------ step
    def step(self, closure=None, *, gradient_extremes: dict[Tensor, float] | None = None):
        """``gradient_extremes`` (``{param: max |grad|}``) are read by a container (the routed
        optimizer) for all its children at once, so that a step makes one host sync in all."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_mode = torch.is_grad_enabled()  # the traceable step restores it if it raises
        with torch.no_grad():
            if not traced.wanted(self):
                self._eager_step(gradient_extremes)
            elif self._takes_eager_step():  # DTensor parameters: the eager step, outside the graph
                torch.compiler.disable(self._eager_step)(gradient_extremes)
            else:  # reads its own gradients' extremes, in the graph
                traced.step(self, grad_mode)
        return loss

    def _eager_step(self, gradient_extremes: dict[Tensor, float] | None) -> None:
        for group in self.param_groups:
            self._step_group(group, gradient_extremes)

    def _takes_eager_step(self) -> bool:  # also asked by the routed optimizer's traced step
        return sharded.takes_eager_step(self)

    def _step_group(self, group: Group, known: dict[Tensor, float] | None = None) -> None:
        live = guard.live_params(self, group)
        if not live:
            return
        extremes = [None] * len(live)
        if group["on_nonfinite"] != "ignore":
            extremes = ([known[p] for _, p in live] if known is not None
                        else gradient_extremes([p.grad for _, p in live]))
        # fimkit's Adam: the same operations with in-place temporaries (bit-identical, DECISIONS B6)
        adam_chain = inplace_adam.wanted(self, group)
        step = functools.partial(inplace_adam.step_param, self) if adam_chain else self._step_param
        if not adam_chain and fused_racs.wanted(self, group):  # RACS's element-wise part compiled
            step = functools.partial(fused_racs.step_param, self)
        admitted = ((p, grad_max) for (index, p), grad_max in zip(live, extremes)
                    if guard.admit(self, group, index, grad_max))
        with fast_path.recompile_room() if self.fused_step else contextlib.nullcontext():
            if self.fused_step and adam_chain:  # one compiled call for the group
                admitted = fused_adam.step_group(self, group, list(admitted), len(live))
            threaded_steps.step_all(self, group, list(admitted), step)

    def _init_group(self, group: Group) -> None:
        """State for the group's parameters that have a gradient and no state yet (what their first
        step makes). torch.compile runs an optimizer's ``_init_group`` eagerly while it traces,
        so the traceable step calls this first and initialisation (seeds, warnings) is not traced."""
        for p in group["params"]:
            if p.grad is not None and not self.state[p]:
                self._fresh_state(p, group)

    def _fresh_state(self, p: Tensor, group: Group) -> None:
        state_dtype = self._state_dtype(p, group)
        if self._takes_builtin_adam(p, group):
            self.state[p].update(builtin_adam.init_state(p.detach(), state_dtype))
            return
        m, n = matrix_shape(p.shape)
        like = p.grad.reshape(m, n).to(torch.promote_types(p.dtype, torch.float32))
        m, n, transposed = working_shape(m, n, group["transpose_to_short_side"])
        self.state[p].update(self._init_state(m, n, like.mT if transposed else like, group, state_dtype))

    def _takes_builtin_adam(self, p: Tensor, group: Group) -> bool:
        return self.matrix_only and p.ndim != 2 and builtin_adam.takes_builtin_adam(p.shape, group)

    def _unit_rules(self, p: Tensor, group: Group):
        """``(limit, chain_units)`` of ``p``'s gradient unit (see :meth:`_gradient_unit`)."""
        compute_dtype = torch.promote_types(p.dtype, torch.float32)
        limit = min(units.comfort(compute_dtype), units.comfort(self._state_dtype(p, group)))
        if self._takes_builtin_adam(p, group):
            return limit, lambda: (builtin_adam.STATE_DEGREES, False)
        return limit, lambda: self._units(group)[::2]

    def _state_dtype(self, p: Tensor, group: Group) -> torch.dtype:
        return group["state_dtype"] or torch.promote_types(p.dtype, torch.float32)

    def _units(self, group: Group) -> tuple[dict[str, float], float, bool]:
        """(state degrees, degree of the update, whether the whole chain is scale-equivariant)."""
        degrees, degree = {}, 1.0
        for block in self.blocks:
            degrees.update(block.state_degrees(group, degree))
            degree = block.output_degree(group, degree)
        return degrees, degree, all(block.scale_equivariant(group) for block in self.blocks)

    def _gradient_unit(self, state: State, grad_max: float | None, limit: int, chain_units) -> int:
        """The exponent of the power-of-two unit the state is kept in (``fimkit.optim.units``),
        moved first when ``grad_max`` has left the comfortable range; ``chain_units()`` gives
        ``(state degrees, scale-equivariant)``, asked for only then."""
        unit = units.unit_exponent(state)
        if grad_max is not None and not units.comfortable(unit, grad_max, limit):
            degrees, equivariant = chain_units()
            units.move_unit(state, degrees, units.target_exponent(unit, grad_max, equivariant, limit), limit)
            unit = units.unit_exponent(state)
        return unit

    def _step_param(self, p: Tensor, group: Group, grad_max: float | None = None) -> None:
        if sharded.is_dtensor(p):  # on the local shard (element-wise steps) or gathered
            sharded.step_dtensor(self, p, group, grad_max)
            return
        if self._takes_builtin_adam(p, group):
            builtin_adam.step_param(self, p, group, grad_max)
            return
        compute_dtype = torch.promote_types(p.dtype, torch.float32)
        m, n = matrix_shape(p.shape)
        grad = p.grad.reshape(m, n).to(compute_dtype)
        # A view of p when it is contiguous in the compute dtype (float32 and wider), else a copy
        # that is written back once at the end (one rounding to a bf16 parameter, not two).
        weights = p.detach().reshape(m, n).to(compute_dtype)
        param = weights
        m, n, transposed = working_shape(m, n, group["transpose_to_short_side"])
        if transposed:
            grad, param = grad.mT, param.mT

        state = self.state[p]
        if not state:
            self._fresh_state(p, group)
        unit = self._gradient_unit(state, grad_max, *self._unit_rules(p, group))
        if unit:
            grad = units.scaled(grad, -unit)
        step = None
        if "step" in state:
            state["step"] += 1
            step = int(state["step"])  # a CPU tensor: no device sync
        working = {k: (v if k == "step" or v.dtype == compute_dtype or not v.is_floating_point()
                       else v.to(compute_dtype)) for k, v in state.items()}

        update, coefficient = self._run_chain(grad, param, working, group, step)
        if unit and self._units(group)[1]:  # an update that is not scale-free: back to true units
            coefficient = coefficient * 2.0 ** (unit * self._units(group)[1])

        for key, value in working.items():  # write back state kept in a lower dtype
            if value is not state[key]:
                state[key].copy_(value)
        if group["weight_decay"]:
            param.mul_(1 - group["lr"] * group["weight_decay"])
        if isinstance(coefficient, Tensor):  # param is a (transposed) view of weights
            param.addcmul_(update, coefficient.to(param.dtype))
        else:
            param.add_(update, alpha=coefficient)
        if weights.untyped_storage().data_ptr() != p.untyped_storage().data_ptr():
            p.copy_(weights.reshape(p.shape))

    def _run_chain(self, grad: Tensor, param: Tensor, working: State, group: Group,
                   step: int | Tensor | None) -> tuple[Tensor, float | Tensor]:
        """``(direction, coefficient)``: the body's blocks applied to ``grad``, and the product of
        the folded scalar tail's factors (the parameter change is ``coefficient * direction``)."""
        update = grad
        for block in self._body:
            update = block(update, grad, param, working, group, step)
        coefficient = 1.0
        for block in self._scalar_tail:
            coefficient = coefficient * block.factor(update, working, group, step)
        return update, coefficient

    def _init_state(self, m: int, n: int, like: Tensor, group: Group, dtype: torch.dtype) -> State:
        state: State = {}
        if any(block.needs_step for block in self.blocks):
            state["step"] = torch.tensor(0.0)
        for block in self.blocks:
            for key, value in block.init_state(m, n, like, group).items():
                if key in state:
                    raise RuntimeError(f"two blocks of {type(self).__name__} both own state {key!r}")
                # Floating state lives with the parameter (a block that forgot the device must
                # not put CUDA state on the CPU); integer bookkeeping (seeds) stays where it was
                # made, on the CPU, so reading it never syncs a device.
                state[key] = value.to(device=like.device, dtype=dtype) if value.is_floating_point() else value
        return state

    # --------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """As torch's, plus the class that saved it (``load_state_dict`` checks it)."""
        return with_saved_classes(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, after :func:`~fimkit.optim.loading.check_loadable` (the saving class, every
        hyperparameter in its domain, state shapes, finite state), and saved state keeps its
        dtype (torch casts floating state to the parameter's dtype, which would turn float32
        state of a bf16 parameter into bf16). A hyperparameter the saved groups lack (a
        checkpoint written before it existed, e.g. ``non_matrix``) keeps this optimizer's value
        for the group (:func:`~fimkit.optim.loading.with_missing_hyperparameters`)."""
        from .loading import check_loadable, restore_saved_state_dtypes, with_missing_hyperparameters

        state_dict = with_missing_hyperparameters(self, state_dict)
        check_loadable(self, state_dict)
        super().load_state_dict(state_dict)
        restore_saved_state_dtypes(self, state_dict)
