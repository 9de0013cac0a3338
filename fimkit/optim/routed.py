"""One ``torch.optim.Optimizer`` made of several, each owning some param groups.

The container's ``param_groups`` are the children's own group dicts and its ``state`` is shared
with them, so learning-rate schedulers, ``zero_grad``, ``state_dict`` and ``load_state_dict``
work on the container exactly as on any optimizer (torchtitan's OptimizersContainer idea).
It is an ordinary optimizer in the rest of torch's interface too:

- ``copy.deepcopy`` and ``pickle`` keep the children linked to the copy's groups and state (as
  for any torch optimizer, a copy has no hooks; copy the model with it, ``deepcopy((model,
  optimizer))``, for the copy to train the copied model).
- ``add_param_group`` routes each new tensor by the rules ``build_optimizer`` used (``routes``):
  a 2-D tensor to the structured optimizer, vectors to Adam, an N-d tensor as convolution
  kernels were; ``"optimizer": name`` sends a whole group to that child.
- Momentum schedulers (``OneCycleLR``, ``CyclicLR`` with ``cycle_momentum=True``, their
  default) need every group to have ``betas`` or ``momentum``. A group whose optimizer has no
  momentum (RACS, SWAN, SinkGD) carries ``betas = NO_MOMENTUM``, a key its optimizer does not
  read: the scheduler's learning rate applies, its momentum is recorded there and has no effect
  (RACS's ``beta`` is the EMA of its row and column statistics, Adam's ``beta2`` rather than a
  momentum, so it is left alone). The first step after a scheduler wrote a momentum there warns.
- Matrix-only children step an N-d tensor (a convolution kernel routed with ``conv="matrix"``)
  as its matrix view ``(d0, d1 * ... * dk)`` (``(out_channels, in_channels * kernel)``): the
  child sees a 2-D view sharing the tensor's storage, its gradient viewed alike, and its state
  is the state of that matrix. This holds in every group whose ``non_matrix`` is ``"flatten"``
  (routing sets it for the kernels' group) or that has none; a group that says ``"adam"`` or
  ``"raise"`` leaves N-d tensors to the child's own rule (``fimkit.optim.builtin_adam``).
- Step hooks (``register_step_pre_hook``, ``register_step_post_hook``) fire once per step of
  the container; torch's global optimizer hooks also see each child's step.

The non-finite policy (``on_nonfinite`` of each group: ``"skip"``, the default, ``"raise"`` or
``"ignore"``) covers every parameter, those of a torch child (the Adam of embeddings, norms and
biases) included: the container reads every gradient's extremes with one host sync per step and
hands them to its fimkit children; a torch child's parameter with a non-finite gradient is hidden
from it for that step (its gradient set aside and put back), so its value and state stay as
they were.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import warnings
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .chain import ChainOptimizer
from .saved_classes import with_saved_classes
from .loading import check_loadable, restore_saved_state_dtypes
from .matrix_views import add_group_viewing_matrices, matrix_views
from . import routed_traced, traced
from .child_guard import guarded_parameters, guarded_step, nonfinite_hidden
from .units import gradient_extremes

NONFINITE_POLICIES = ("skip", "raise", "ignore")

#: ``betas`` of a group whose optimizer has no momentum (beta1 = 0; nothing reads it)
NO_MOMENTUM = (0.0,)

#: what ``add_param_group`` calls a tensor's kind: its routing rule (see :func:`tensor_kind`)
TENSOR_KINDS = ("matrix", "vector", "conv")

#: keys torch's schedulers add to param groups; a group template never carries them
SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"})

#: parameters stepped by a gradient-release hook, and the child that steps each (so that a copy
#: of the optimizer sharing the parameter does not hook it twice)
_RELEASED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def tensor_kind(p: Tensor) -> str:
    """"matrix" (2-D), "vector" (0-D and 1-D) or "conv" (N-d, viewed as ``matrix_shape``)."""
    return "matrix" if p.ndim == 2 else "vector" if p.ndim < 2 else "conv"


def release_hook(child: torch.optim.Optimizer):
    """The post-accumulate-grad hook of layer-wise gradient release: step ``child`` (the
    parameter's own optimizer) and free the gradient."""
    def step_and_free(param: torch.Tensor) -> None:
        guarded_step(child)
        param.grad = None

    return step_and_free


def register_release(param: Tensor, child: torch.optim.Optimizer) -> None:
    """Step ``child`` in ``param``'s post-accumulate-grad hook (once per parameter)."""
    if param in _RELEASED:
        return
    param.register_post_accumulate_grad_hook(release_hook(child))
    _RELEASED[param] = child


class RoutedOptimizer(torch.optim.Optimizer):
    """Steps each child optimizer; looks like one optimizer from outside.

    ``children`` maps a name (the ``optimizer`` key of its groups) to an optimizer. ``routes``
    (``{kind: group template}`` for the kinds of :data:`TENSOR_KINDS`, each template naming its
    child in ``"optimizer"``) say where :meth:`add_param_group` sends a new tensor;
    ``build_optimizer`` gives the rules it routed the model with.
    """

    #: True for layer-wise gradient release (each parameter stepped in its gradient hook)
    gradient_release = False

    def __init__(self, children: dict[str, torch.optim.Optimizer],
                 routes: dict[str, dict[str, Any]] | None = None):
        if not children:
            raise ValueError("RoutedOptimizer needs at least one child optimizer")
        groups = [g for child in children.values() for g in child.param_groups]
        super().__init__([{"params": g["params"]} for g in groups], defaults={})
        self.children = dict(children)
        self.routes = copy.deepcopy(dict(routes or {}))  # kinds sharing a template keep sharing it
        unknown = set(self.routes) - set(TENSOR_KINDS)
        if unknown:
            raise ValueError(f"routes has unknown kind(s) {sorted(unknown)}; kinds are {TENSOR_KINDS}")
        for kind, template in self.routes.items():
            if template.get("optimizer") not in self.children:
                raise ValueError(f"routes[{kind!r}] names optimizer {template.get('optimizer')!r}, which is not a "
                                 f"child ({sorted(self.children)})")
        # a child's template for a group that names it: its first group's hyperparameters
        self.child_templates = {name: _template(child.param_groups[0]) for name, child in self.children.items()
                                if child.param_groups}
        self.param_groups = groups  # the children's own dicts, hyperparameters included
        self._owners = [name for name, child in self.children.items() for _ in child.param_groups]
        for child in self.children.values():
            for p, s in child.state.items():
                self.state[p] = s
        self._link()

    # ------------------------------------------------------------------ groups and state
    def _link(self) -> None:
        """Make the children use the container's group dicts and state dict; give every group
        whose optimizer has no momentum the ``betas`` a momentum scheduler writes (NO_MOMENTUM),
        and advertise in ``defaults`` the momentum key every group has."""
        for name, child in self.children.items():
            child.param_groups = [g for g, owner in zip(self.param_groups, self._owners) if owner == name]
            child.state = self.state
            if not _reads_momentum(child):
                for group in child.param_groups:
                    group.setdefault("betas", NO_MOMENTUM)
        template = next((g for g in self.param_groups if g.get("role") == "candidate"), self.param_groups[0])
        self.defaults = _template(template)
        for key in ("betas", "momentum"):
            if not all(key in g for g in self.param_groups):
                self.defaults.pop(key, None)
        # the torch children's handles for the traced step's host operator (a copy has its own)
        self._guard_handles = {name: traced.register(child, weak=True) for name, child in self.children.items()
                               if not isinstance(child, ChainOptimizer)}

    def group_owner(self, group: dict[str, Any]) -> torch.optim.Optimizer:
        for child in self.children.values():
            if any(g is group for g in child.param_groups):
                return child
        raise KeyError("group not owned by any child")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the tensors of ``param_group`` to the children the routing rules choose.

        Each tensor goes where ``build_optimizer`` would have sent it (``routes``): a 2-D tensor
        to the structured optimizer, a 0-D or 1-D one to Adam, an N-d one as convolution kernels
        were (``conv``). ``param_group["optimizer"]`` names one child for them all. The new
        groups (one per child reached, appended in the order of their first tensor) take the
        hyperparameters of that route, overridden by the group's own. Names come from
        ``param_names`` or ``(name, tensor)`` pairs, else ``"added.<position>"``. Nothing is
        added when any part is refused."""
        if "children" not in self.__dict__:  # torch's __init__ registering the children's tensors
            super().add_param_group(param_group)
            return
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if self.gradient_release:
            raise ValueError("add_param_group: this optimizer uses gradient_release=True (each parameter has "
                             "its own optimizer, stepped in its gradient hook); build it again with "
                             "fimkit.build_optimizer including the new parameters")
        params, names = _params_and_names(param_group, start=sum(len(g["params"]) for g in self.param_groups))
        known = {id(p) for g in self.param_groups for p in g["params"]}
        seen: set[int] = set()
        for p, name in zip(params, names):
            if id(p) in known or id(p) in seen:
                raise ValueError(f"add_param_group: parameter {name!r} (shape {tuple(p.shape)}) is already "
                                 f"{'in this optimizer' if id(p) in known else 'listed in this group'}; a "
                                 f"tensor can be in one group only")
            seen.add(id(p))
        extra = {k: v for k, v in param_group.items() if k not in ("params", "param_names")}
        by_target: dict[int, tuple[dict[str, Any], list[Tensor], list[str]]] = {}
        for p, name in zip(params, names):
            template = self._template_for(p, name, extra.get("optimizer"))
            key = id(template)  # one group per route (the kernels' differs from the matrices')
            by_target.setdefault(key, (template, [], []))
            by_target[key][1].append(p)
            by_target[key][2].append(name)
        self._check_keys(extra, {template["optimizer"] for template, _, _ in by_target.values()})

        added: list[tuple[str, dict[str, Any]]] = []
        try:
            for template, tensors, tensor_names in by_target.values():
                child = self.children[template["optimizer"]]
                group = {**template, **extra, "params": tensors}
                if all("param_names" in g for g in child.param_groups):
                    group["param_names"] = tensor_names
                add_group_viewing_matrices(child, group)
                added.append((template["optimizer"], child.param_groups[-1]))
        finally:  # refused or not, the children's lists are the container's again
            if len(added) == len(by_target):
                for child_name, group in added:
                    self.param_groups.append(group)
                    self._owners.append(child_name)
            self._link()

    def _template_for(self, p: Tensor, name: str, optimizer: str | None) -> dict[str, Any]:
        kind = tensor_kind(p)
        route = self.routes.get(kind)
        if optimizer is None:
            if route is None:
                raise ValueError(
                    f"add_param_group: no routing rule for parameter {name!r} (shape {tuple(p.shape)}, a {kind}): "
                    f"this optimizer has routes for {sorted(self.routes) or 'nothing'}; name its optimizer in the "
                    f"group, e.g. {{'params': [...], 'optimizer': {next(iter(self.children))!r}}}")
            return route
        if optimizer not in self.children:
            raise ValueError(f"add_param_group: optimizer={optimizer!r} is not one of this optimizer's children "
                             f"{sorted(self.children)}; name one of them, or leave 'optimizer' out to route by shape")
        if route is not None and route["optimizer"] == optimizer:
            return route
        return next((t for t in self.routes.values() if t["optimizer"] == optimizer), None) \
            or self.child_templates[optimizer]

    def _check_keys(self, extra: dict[str, Any], reached: set[str]) -> None:
        """A hyperparameter that no child the group reaches reads is a typo, not a setting."""
        known = {"optimizer", "role"} | SCHEDULER_KEYS
        for name in reached:
            child = self.children[name]
            known |= set(child.defaults) | (set() if _reads_momentum(child) else {"betas"})  # NO_MOMENTUM's key
        for template in [*self.routes.values(), *self.child_templates.values()]:
            if template["optimizer"] in reached:
                known |= set(template)
        unknown = sorted(set(extra) - known)
        if unknown:
            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1))
                     else repr(k) for k in unknown]
            readers = ", ".join(sorted(type(self.children[name]).__name__ for name in reached))
            raise TypeError(f"add_param_group: hyperparameter(s) {', '.join(hints)} are not read by {readers}; "
                            f"valid: {sorted(known)}")

    # ------------------------------------------------------------------------------ step
    def step(self, closure=None):
        """Each child's step, the non-finite policy applied to all. Traced by ``torch.compile``,
        one graph with one host read (:mod:`fimkit.optim.routed_traced`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_mode = torch.is_grad_enabled()  # the traced step restores it if it raises
        with torch.no_grad():
            self._warn_unused_momentum()
            if routed_traced.wanted(self):
                routed_traced.step(self, grad_mode)
            else:
                self._eager_step()
        return loss

    def _eager_step(self) -> None:
        extremes = self._gradient_extremes()
        for child in self.children.values():
            if isinstance(child, ChainOptimizer):
                with matrix_views(child, extremes):
                    child.step(gradient_extremes=extremes)
            else:
                with nonfinite_hidden(child, extremes):
                    child.step()

    def _warn_unused_momentum(self) -> None:
        if self.__dict__.get("_warned_momentum"):
            return
        # read through the children's lists: traced, dynamo then knows each group as its child's
        # (its torch-optimizer support looks a group up there), not as the container's
        written = [(child, g) for child in self.children.values() if not _reads_momentum(child)
                   for g in child.param_groups if g.get("betas", NO_MOMENTUM) != NO_MOMENTUM]
        if not written:
            return
        index, child, group = min((next(i for i, g in enumerate(self.param_groups) if g is group), child, group)
                                  for child, group in written)
        self._warned_momentum = True
        warnings.warn(
            f"RoutedOptimizer: param group {index} ({type(child).__name__}) has no momentum; the "
            f"betas={group['betas']!r} a scheduler wrote there (cycle_momentum) is recorded and not "
            f"used, its lr is scheduled as usual. Pass cycle_momentum=False to the scheduler to "
            f"silence this.", UserWarning, stacklevel=3)

    def _gradient_extremes(self) -> dict[torch.Tensor, float]:
        """``max |grad|`` of every guarded parameter of every child: one host sync per step."""
        guarded = [p for child in self.children.values() for p in guarded_parameters(child)]
        return dict(zip(guarded, gradient_extremes([p.grad for p in guarded]))) if guarded else {}

    @property
    def nonfinite_skips(self) -> int:
        """Parameter updates skipped for a non-finite gradient, in every child."""
        return sum(getattr(child, "nonfinite_skips", 0) for child in self.children.values())

    # ---------------------------------------------------------------- checkpoints, copies
    def state_dict(self) -> dict[str, Any]:
        return with_saved_classes(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, after :func:`~fimkit.optim.loading.check_loadable` (the state of an N-d
        tensor stepped as a matrix is that matrix's); a hyperparameter a saved group lacks (a
        checkpoint older than it) keeps the value the group has here."""
        if len(state_dict["param_groups"]) == len(self.param_groups):
            state_dict = {**state_dict, "param_groups": [{**_template(group), **saved} for saved, group
                                                         in zip(state_dict["param_groups"], self.param_groups)]}
        with contextlib.ExitStack() as views:  # the state of an N-d tensor is its matrix view's
            for child in self.children.values():
                views.enter_context(matrix_views(child))
            check_loadable(self, state_dict)
        # torch rebuilds self.param_groups and self.state (through __setstate__, which re-shares
        # them with the children)
        super().load_state_dict(state_dict)
        restore_saved_state_dtypes(self, state_dict)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({k: self.__dict__[k] for k in ("children", "routes", "child_templates", "_owners",
                                                    "gradient_release") if k in self.__dict__})
        # torch pickles an optimizer's defaults, state and groups only; keep the children's own
        # counters (nonfinite_skips) too
        state["_child_attributes"] = {
            name: {k: v for k, v in vars(child).items()
                   if not k.startswith("_") and k not in ("defaults", "state", "param_groups") and not callable(v)}
            for name, child in self.__dict__.get("children", {}).items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        child_attributes = state.pop("_child_attributes", {})
        super().__setstate__(state)
        if "children" not in self.__dict__:
            return
        for name, attributes in child_attributes.items():
            vars(self.children[name]).update(attributes)
        if not isinstance(self.state, defaultdict):
            self.state = defaultdict(dict, self.state)
        self._link()
        if self.gradient_release and "_owners" in state:  # a copy: hook the copied parameters
            for child in self.children.values():
                for group in child.param_groups:
                    for p in group["params"]:
                        register_release(p, child)

    def __repr__(self) -> str:
        inner = ", ".join(f"{role}={type(c).__name__}({sum(len(g['params']) for g in c.param_groups)} "
                          f"tensors)" for role, c in self.children.items())
        return f"RoutedOptimizer({inner})"


def _reads_momentum(optimizer: torch.optim.Optimizer) -> bool:
    return "betas" in optimizer.defaults or "momentum" in optimizer.defaults


def _template(group: dict[str, Any]) -> dict[str, Any]:
    """A group's hyperparameters: what a new group routed like it starts with."""
    return {k: v for k, v in group.items() if k not in ("params", "param_names") and k not in SCHEDULER_KEYS}


def _params_and_names(group: dict[str, Any], start: int) -> tuple[list[Tensor], list[str]]:
    params = group["params"]
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, set):
        raise TypeError("add_param_group: params must be an ordered collection (a list), not a set, so that "
                        "the order of tensors is the same in every run")
    params = list(params)
    pairs = [p for p in params if isinstance(p, tuple)]
    if pairs and len(pairs) != len(params):
        raise ValueError("add_param_group: give every tensor as a (name, tensor) pair or none")
    names = [name for name, _ in pairs] if pairs else group.get("param_names")
    tensors = [t for _, t in pairs] if pairs else params
    for index, p in enumerate(tensors):
        if not isinstance(p, Tensor):
            raise TypeError(f"add_param_group: params[{index}] is a {type(p).__name__}, not a tensor")
    if names is None:
        names = [f"added.{start + i}" for i in range(len(tensors))]
    elif len(names) != len(tensors):
        raise ValueError(f"add_param_group: {len(names)} param_names for {len(tensors)} tensors; give one name "
                         f"per tensor")
    return tensors, list(names)
