"""The built-in Adam of matrix-only optimizers: what RACS, Alice, SOAP, Muon, GaLore... do with
a bias, a norm's gain, a scalar or (by default) a convolution kernel (issue 12).

A matrix-only optimizer's preconditioner needs a 2-D weight. Rather than refusing every other
tensor, which makes ``RACS(model.parameters())`` and ``Trainer(optimizer_cls_and_kwargs=...)``
fail on the first bias, each such optimizer steps its non-matrix tensors with Adam, as
``MuonWithAuxAdam`` does, under hyperparameters of its own (every one per param group):

- ``non_matrix``: ``"adam"`` (default) every tensor that is not 2-D goes to Adam; ``"flatten"``
  N-d tensors (convolution kernels) are viewed as ``(d0, d1 * ... * dk)`` matrices and take the
  matrix algorithm, vectors and scalars go to Adam; ``"raise"`` is the matrix-only behaviour, a
  ``ValueError`` naming the tensor.
- ``adam_lr``: ``None`` (default) the group's ``lr`` (GaLore's convention, which [P] and
  ``fimkit.param_groups`` follow). A number is that learning rate, moved by a learning-rate
  schedule as the group's ``lr`` is: the Adam tensors step with ``adam_lr * lr / initial_lr``
  once a ``torch.optim.lr_scheduler`` has recorded ``initial_lr`` on the group.
- ``adam_betas`` (0.9, 0.999), ``adam_eps`` 1e-8: torch's defaults.
- ``adam_weight_decay`` 0.0: **decoupled** (AdamW: ``p <- p (1 - lr_adam * wd)``), like every
  fimkit weight decay, and separate from the group's ``weight_decay`` so that decaying the
  matrices does not decay biases and norms.

The step is :func:`adam_step`, torch's single-tensor Adam (AdamW with a weight decay) written
as a pure function over tensors, so in float64 it equals ``torch.optim.Adam`` to rounding. The
state is torch's too: ``step`` (a float32 CPU scalar), ``exp_avg`` and ``exp_avg_sq`` shaped like
the parameter, kept in the group's ``state_dtype`` (default: the parameter's dtype promoted to
float32) while the arithmetic runs in float32 or wider.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .domains import DECAY, NON_NEGATIVE, POSITIVE, choice, optional, pair
from .protocol import Group, StateShape

HYPERPARAMETERS = {
    "non_matrix": "adam",
    "adam_lr": None,
    "adam_betas": (0.9, 0.999),
    "adam_eps": 1e-8,
    "adam_weight_decay": 0.0,
}
DOMAINS = {
    "non_matrix": choice("adam", "flatten", "raise"),
    "adam_lr": optional(NON_NEGATIVE),
    # beta2 < 1: its bias correction 1 - beta2^t divides; eps > 0: a zero gradient would be 0 / 0
    "adam_betas": pair(DECAY, DECAY),
    "adam_eps": POSITIVE,
    "adam_weight_decay": NON_NEGATIVE,
}
#: how the state scales with the gradient (``fimkit.optim.units``): the update
#: ``exp_avg / sqrt(exp_avg_sq)`` has degree 0, and ``adam_eps`` makes it not scale-free
STATE_DEGREES = {"exp_avg": 1.0, "exp_avg_sq": 2.0}


def takes_builtin_adam(shape: torch.Size | tuple[int, ...], group: Group) -> bool:
    """Whether a matrix-only optimizer steps a tensor of ``shape`` with Adam under ``group``'s
    ``non_matrix`` (False: with the matrix algorithm). ``"raise"`` and a tensor that is not 2-D
    is a ``ValueError`` (optimizers refuse such a tensor when it is added; this catches a group
    switched to ``"raise"`` later, e.g. by loading a state dict)."""
    if len(shape) == 2:
        return False
    mode = group["non_matrix"]
    if mode == "raise":
        raise ValueError(f"a tensor of shape {tuple(shape)} is not a matrix and its param group has "
                         f"non_matrix='raise'; use non_matrix='adam' or route it to another optimizer")
    return mode == "adam" or len(shape) < 2


def learning_rate(group: Group) -> float:
    """The Adam tensors' learning rate now: ``lr``, or ``adam_lr`` scaled as the schedule has
    scaled ``lr`` (``lr / initial_lr``; ``adam_lr`` itself without a schedule or from a zero)."""
    adam_lr = group["adam_lr"]
    if adam_lr is None:
        return group["lr"]
    initial = group.get("initial_lr")
    return adam_lr * (group["lr"] / initial) if initial else adam_lr


def state_shapes(shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, StateShape]:
    """What the built-in Adam keeps for a parameter of ``shape``, state in ``dtype``."""
    return {"step": StateShape((), torch.float32), "exp_avg": StateShape(tuple(shape), dtype),
            "exp_avg_sq": StateShape(tuple(shape), dtype)}


def init_state(param: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    # step: a CPU float32 scalar, as torch's Adam keeps it (reading it never syncs a device)
    return {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(param, dtype=dtype),
            "exp_avg_sq": torch.zeros_like(param, dtype=dtype)}


def adam_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int | Tensor, *, lr: float,
              betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One Adam step at step count ``step`` (1 for the first), in place on ``param``, ``exp_avg``
    and ``exp_avg_sq``, in the operations and order of torch's single-tensor Adam with decoupled
    weight decay (``torch.optim.AdamW``; ``torch.optim.Adam`` when ``weight_decay`` is 0)."""
    beta1, beta2 = betas
    if weight_decay:
        param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    if isinstance(step_size, Tensor):  # a step counter the graph holds (fimkit.optim.traced)
        param.add_(exp_avg * (-step_size).to(param.dtype) / denom)
    else:
        param.addcdiv_(exp_avg, denom, value=-step_size)


def step_param(optimizer, p: Tensor, group: Group, grad_max: float | None) -> None:
    """``optimizer``'s eager step of ``p`` with Adam: the same compute dtype, state dtype and
    gradient unit as the chain's path (``fimkit.optim.chain``)."""
    from .units import scaled

    compute_dtype = torch.promote_types(p.dtype, torch.float32)
    state = optimizer.state[p]
    if not state:
        state.update(init_state(p.detach(), optimizer._state_dtype(p, group)))
    unit = optimizer._gradient_unit(state, grad_max, *optimizer._unit_rules(p, group))
    grad = p.grad.to(compute_dtype)
    if unit:  # eps then acts relative to the unit, as in the chain's Adam
        grad = scaled(grad, -unit)
    state["step"] += 1
    moments = {key: state[key] if state[key].dtype == compute_dtype else state[key].to(compute_dtype)
               for key in STATE_DEGREES}
    weights = p.detach().to(compute_dtype)  # a view of p in float32 and wider, else a copy
    adam_step(weights, grad, moments["exp_avg"], moments["exp_avg_sq"], int(state["step"]),
              lr=learning_rate(group), betas=tuple(group["adam_betas"]), eps=group["adam_eps"],
              weight_decay=group["adam_weight_decay"])
    for key, value in moments.items():
        if value is not state[key]:
            state[key].copy_(value)
    if weights.untyped_storage().data_ptr() != p.untyped_storage().data_ptr():
        p.copy_(weights)
