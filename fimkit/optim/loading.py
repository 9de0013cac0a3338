"""Loading an optimizer's state dict safely: nothing that belongs elsewhere, is out of range or
is not finite is loaded (issue 11).

``check_loadable`` runs before torch's ``load_state_dict`` changes anything and raises a
``ValueError`` that says what is wrong: a state saved by another optimizer class (Alice's state
loaded into GaLore would silently take Alice's configuration), a hyperparameter outside its
domain (a saved ``lr=-1``, ``rank=0``), a state tensor whose shape is not the one this optimizer
keeps for that parameter (a transposed weight), or a state tensor with a NaN or an infinity.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from .chain import ChainOptimizer
from .saved_classes import CLASSES_KEY, group_owner
from .sharded import extremes
from .units import UNIT_KEY


def check_loadable(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    name = type(optimizer).__name__
    saved_groups, groups = state_dict["param_groups"], optimizer.param_groups
    if len(saved_groups) != len(groups):
        raise ValueError(f"{name}: the state dict has {len(saved_groups)} param group(s), this optimizer "
                         f"{len(groups)}")
    classes = state_dict.get(CLASSES_KEY, [None] * len(groups))
    merged = []
    for index, (saved, group, saved_class) in enumerate(zip(saved_groups, groups, classes)):
        owner = group_owner(optimizer, group)
        if saved_class is not None and saved_class != type(owner).__name__:
            raise ValueError(f"{name}: param group {index} was saved by {saved_class}, not {type(owner).__name__}; "
                             f"load it into {saved_class} (its hyperparameters and state mean other things)")
        if saved.get("optimizer", group.get("optimizer")) != group.get("optimizer"):
            raise ValueError(f"{name}: param group {index} was saved for optimizer {saved['optimizer']!r}, this one "
                             f"is {group['optimizer']!r}")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"{name}: param group {index} has {len(saved['params'])} parameter(s) in the state "
                             f"dict and {len(group['params'])} here")
        values = {**group, **{k: v for k, v in saved.items() if k != "params"}}
        if isinstance(owner, ChainOptimizer):
            owner._validate_group(values, index)
        merged.append(values)

    checked, where = [], []
    pairs = zip(chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(((p, i, g) for p in g["params"]) for i, g in enumerate(merged)))
    for saved_id, (p, index, group) in pairs:
        saved = state_dict["state"].get(saved_id)
        if not saved:
            continue
        owner = group_owner(optimizer, groups[index])
        if isinstance(owner, ChainOptimizer):  # what it creates for p with the saved hyperparameters
            hyperparameters = {k: group[k] for k in owner.default_hyperparameters()}
            shapes = owner.param_state_shapes(tuple(p.shape), dtype=p.dtype, **hyperparameters)
            expected = {key: shape.shape for key, shape in shapes.items()}
        else:  # a torch optimizer (Adam): every non-scalar state tensor is shaped like the parameter
            expected = {k: tuple(p.shape) for k, v in saved.items() if isinstance(v, Tensor) and v.ndim}
        for key, value in saved.items():
            if not isinstance(value, Tensor) or key == UNIT_KEY:
                continue
            label = f"{name}: param group {index}, parameter of shape {tuple(p.shape)}, state {key!r}"
            if key in expected and tuple(value.shape) != expected[key]:
                raise ValueError(f"{label} has shape {tuple(value.shape)}, expected {expected[key]} (a state saved "
                                 f"for another parameter, e.g. a transposed one?)")
            if value.is_floating_point() and value.numel():
                checked.append(value.detach())
                where.append(label)
    if checked:  # one host sync for every tensor (sharded state: every rank decides alike)
        for label, largest in zip(where, extremes(checked)):
            if not math.isfinite(largest):
                raise ValueError(f"{label} is not finite (NaN or infinity); the checkpoint is damaged or was "
                                 f"saved after a divergence")


def with_missing_hyperparameters(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every hyperparameter that a saved group lacks and the live group has
    filled in from the live group (a checkpoint saved before ``non_matrix``, ``adam_lr``, ...
    existed loads and steps as the optimizer it is loaded into is configured). A shallow copy:
    the caller's dict and its groups are left as they are."""
    saved_groups, groups = state_dict["param_groups"], optimizer.param_groups
    if len(saved_groups) != len(groups):
        return state_dict  # check_loadable says what is wrong
    completed = [{**{k: v for k, v in group.items() if k not in ("params", "param_names")}, **saved}
                 for saved, group in zip(saved_groups, groups)]
    return {**state_dict, "param_groups": completed}


def restore_saved_state_dtypes(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any],
                               only: type | None = ChainOptimizer) -> None:
    """Undo ``Optimizer.load_state_dict``'s cast of floating state to the parameter dtype.

    Parameters are matched to saved ids in group order, as torch does. With ``only`` set, only
    parameters whose group belongs to an optimizer of that type are restored (``group_owner``).
    """
    saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
    params = chain.from_iterable(((p, group_owner(optimizer, g)) for p in g["params"]) for g in optimizer.param_groups)
    for saved_id, (p, owner) in zip(saved_ids, params):
        saved = state_dict["state"].get(saved_id)
        if saved is None or (only is not None and not isinstance(owner, only)):
            continue
        for key, value in saved.items():
            if isinstance(value, Tensor) and key not in ("step", UNIT_KEY):
                optimizer.state[p][key] = value.to(device=p.device, copy=True)
