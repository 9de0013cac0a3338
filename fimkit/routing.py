"""Parameter routing: which optimizer updates which parameter.

Routing is data, not ``if`` statements (optax's ``partition``, torchtitan's name patterns):
each parameter gets a *role* from the first rule that matches, and each role maps to an
optimizer name. Matrices of linear layers go to the structured optimizer; embeddings, norms and
biases go to Adam; the output head goes where ``lm_head`` says. Every parameter is assigned
exactly once; one no rule matches is an error, and so is a user pattern that matches nothing.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from typing import Any

import torch
from torch import nn

from .optim.registry import get_optimizer
from .optim.builtin_adam import DOMAINS as BUILTIN_ADAM_DOMAINS
from .optim.domains import NON_NEGATIVE
from .optim.chain import matrix_shape
from .optim.matrix_views import make_viewing_matrices, views_in, views_matrices
from .optim.routed import NONFINITE_POLICIES, RoutedOptimizer, register_release

#: names of output heads (the last linear layer of a language model)
LM_HEAD_PATTERN = r"(^|\.)(lm_head|output|head)\.weight$"

#: the paper's Adam for everything that is not a matrix of attention or MLP [P App F.2]
ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}

#: optimizers whose main results in [P] (Table 2, the columns without ``*``) train the output
#: head with the candidate itself; every other optimizer's head goes to Adam (the ``*`` columns,
#: and the paper's choice for Adam, RACS and APOLLO).
LM_HEAD_ON_CANDIDATE = frozenset({"alice", "alice0", "galore", "fira"})
LM_HEAD_CHOICES = ("paper", "adam", "matrix")


#: options of the built-in Adam (``fimkit.optim.builtin_adam``) that routing gives torch's Adam
ROUTED_ADAM_OPTIONS = ("adam_betas", "adam_eps", "adam_weight_decay")


def routed_adam_settings(options: dict[str, Any]) -> dict[str, Any]:
    """torch Adam group settings for the built-in Adam's ``adam_betas``, ``adam_eps`` and
    ``adam_weight_decay`` (decoupled, as the built-in Adam's and every fimkit weight decay)."""
    for key, value in options.items():
        domain = BUILTIN_ADAM_DOMAINS[key]
        if not domain.contains(value):
            raise ValueError(f"{key}={value!r} is not {domain.description}")
    settings = {}
    if "adam_betas" in options:
        settings["betas"] = tuple(options["adam_betas"])
    if "adam_eps" in options:
        settings["eps"] = options["adam_eps"]
    if options.get("adam_weight_decay"):
        if "decoupled_weight_decay" not in inspect.signature(torch.optim.Adam).parameters:
            raise ValueError(f"adam_weight_decay={options['adam_weight_decay']!r} needs torch.optim.Adam's "
                             f"decoupled_weight_decay (torch >= 2.6); upgrade torch or leave it at 0")
        settings.update(weight_decay=options["adam_weight_decay"], decoupled_weight_decay=True)
    return settings


def paper_lm_head(matrix_optimizer: str) -> str:
    """Where [P]'s main results put the output head for ``matrix_optimizer``: "matrix" or "adam"."""
    return "matrix" if matrix_optimizer.lower() in LM_HEAD_ON_CANDIDATE else "adam"


def resolve_lm_head(lm_head: str, matrix_optimizer: str) -> str:
    """``"paper"`` -> the paper's choice for this optimizer; "adam" and "matrix" stay."""
    if lm_head == matrix_optimizer.lower():
        return "matrix"
    if lm_head not in LM_HEAD_CHOICES:
        raise ValueError(f"lm_head must be one of {LM_HEAD_CHOICES}, got {lm_head!r} ('paper': the head on "
                         f"the candidate for {', '.join(sorted(LM_HEAD_ON_CANDIDATE))}, on Adam otherwise)")
    return paper_lm_head(matrix_optimizer) if lm_head == "paper" else lm_head


def _owner(model: nn.Module, name: str) -> nn.Module:
    module_name = name.rpartition(".")[0]
    return model.get_submodule(module_name) if module_name else model


def _is_linear(module: nn.Module) -> bool:
    """``nn.Linear``, or Hugging Face's ``Conv1D`` (GPT-2's linear layer, weight stored ``in x out``;
    recognised by name so that transformers is never imported)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def parameter_roles(model: nn.Module, *, lm_head_pattern: str = LM_HEAD_PATTERN,
                    overrides: dict[str, str] | None = None) -> dict[str, str]:
    """name -> role ("embedding", "lm_head", "matrix", "vector", "conv" or "override:<optimizer>").

    Matrices are the weights of ``nn.Linear`` and HF ``Conv1D`` layers; "conv" are N-d weights of
    convolutions (Adam by default; ``conv="matrix"`` in :func:`param_groups` gives them to the
    structured optimizer, which views them as ``(out_channels, in_channels * kernel)`` matrices).

    ``overrides`` ({regex: optimizer name}) are tried first, in order; each must match at least
    one parameter.
    """
    overrides = dict(overrides or {})
    used = {pattern: False for pattern in overrides}
    roles, unmatched = {}, []
    for name, p in model.named_parameters():
        role = None
        for pattern, optimizer in overrides.items():
            if re.search(pattern, name):
                role, used[pattern] = f"override:{optimizer}", True
                break
        module = _owner(model, name)
        if role is None and isinstance(module, nn.Embedding):
            role = "embedding"
        elif role is None and re.search(lm_head_pattern, name):
            role = "lm_head"
        elif role is None and p.ndim == 2 and _is_linear(module):
            role = "matrix"
        elif role is None and p.ndim <= 1:
            role = "vector"
        elif role is None and p.ndim > 2 and isinstance(module, nn.modules.conv._ConvNd):
            role = "conv"
        if role is None:
            unmatched.append(f"{name} (shape {tuple(p.shape)}, in {type(module).__name__})")
        roles[name] = role
    if unmatched:
        raise ValueError(
            "no routing rule matches parameter(s): " + "; ".join(unmatched)
            + ". Pass overrides={regex: optimizer_name} to route them (e.g. {'conv': 'adam'})."
        )
    unused = [pattern for pattern, hit in used.items() if not hit]
    if unused:
        raise ValueError(f"override pattern(s) {unused} match no parameter of the model")
    return roles


def param_groups(model: nn.Module, matrix_optimizer: str = "alice", lm_head: str = "paper", *,
                 adam_lr: float | None = None, overrides: dict[str, str] | None = None, conv: str = "adam",
                 lm_head_pattern: str = LM_HEAD_PATTERN, **hparams: Any) -> list[dict[str, Any]]:
    """Param groups, one per optimizer, each with ``optimizer`` (its name) and ``param_names``.

    ``hparams`` go to the matrix optimizer's group (unknown names raise). The Adam group uses
    the paper's Adam (betas 0.9/0.999, no weight decay) with ``adam_lr``, by default the matrix
    optimizer's lr (GaLore's convention, which the paper follows). ``lm_head`` is ``"paper"``
    (default: the structured optimizer for Alice, Alice-0, GaLore and Fira, Adam for the rest, as
    in [P]'s main results), ``"adam"`` or ``"matrix"`` (the structured optimizer). With
    ``matrix_optimizer="adam"`` and an ``adam_lr``, the matrices keep ``lr`` and the other
    parameters get ``adam_lr`` (a per-role baseline).

    ``conv="matrix"`` gives convolution kernels to the structured optimizer, in a group of their
    own (the matrices' hyperparameters, and ``non_matrix="flatten"`` for a matrix-only class that
    has a built-in Adam): each is stepped as its matrix view ``(out_channels, in_channels *
    kernel)``, by the optimizer :func:`build_optimizer` returns whatever the class does with
    N-d tensors itself.
    """
    return _plan(model, matrix_optimizer, lm_head, adam_lr=adam_lr, overrides=overrides, conv=conv,
                 lm_head_pattern=lm_head_pattern, **hparams)[0]


def _plan(model: nn.Module, matrix_optimizer: str = "alice", lm_head: str = "paper", *,
          adam_lr: float | None = None, overrides: dict[str, str] | None = None, conv: str = "adam",
          lm_head_pattern: str = LM_HEAD_PATTERN,
          **hparams: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(the param groups, the routes): ``{kind: group template}`` for a tensor that is not yet in
    the model, by its kind (``fimkit.optim.routed.TENSOR_KINDS``): the template of the group a
    matrix, a vector or a convolution kernel of the model is in (``RoutedOptimizer.add_param_group``)."""
    matrix_optimizer = matrix_optimizer.lower()
    matrix_class = get_optimizer(matrix_optimizer)
    # A bare optimizer's built-in Adam options here mean the routed Adam (torch's), which steps
    # everything that is not the candidate's: its betas, eps and (decoupled) weight decay.
    adam_settings = routed_adam_settings({key: hparams.pop(key) for key in ROUTED_ADAM_OPTIONS if key in hparams})
    known = getattr(matrix_class, "default_hyperparameters", dict)()
    if matrix_optimizer == "adam":  # routing steps every Adam group with torch's own Adam
        known = {k: v.default for k, v in inspect.signature(torch.optim.Adam).parameters.items() if k != "params"}
        known["on_nonfinite"] = "skip"  # the routed optimizer's policy covers torch's Adam too
    unknown = set(hparams) - set(known)
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
                 for k in sorted(unknown)]
        raise TypeError(f"{matrix_class.__name__} has no hyperparameter(s) {', '.join(hints)}; valid: {sorted(known)}")
    if conv not in ("adam", "matrix"):
        raise ValueError(f"conv must be 'adam' or 'matrix', got {conv!r}")
    lm_head = resolve_lm_head(lm_head, matrix_optimizer)
    lr = hparams.get("lr", known.get("lr", 1e-3))
    # the non-finite policy covers the Adam-routed parameters too (torch's Adam has none)
    on_nonfinite = hparams.get("on_nonfinite", "skip")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
    for key, value in (("adam_lr", adam_lr), ("lr", lr)):  # torch's Adam takes lr=inf
        if value is not None and not NON_NEGATIVE.contains(value):
            raise ValueError(f"{key}={value!r} is not {NON_NEGATIVE.description}")
    role_to_optimizer = {
        "matrix": matrix_optimizer,
        "lm_head": "adam" if lm_head == "adam" else matrix_optimizer,
        "embedding": "adam",
        "vector": "adam",
        "conv": "adam" if conv == "adam" else matrix_optimizer,
    }
    roles = parameter_roles(model, lm_head_pattern=lm_head_pattern, overrides=overrides)
    params = dict(model.named_parameters())
    # An all-Adam model with its own adam_lr keeps two groups: matrices at lr, the rest at adam_lr.
    split_adam = matrix_optimizer == "adam" and adam_lr is not None

    # Kernels on the structured optimizer (conv="matrix") have a group of their own: the same
    # hyperparameters, and the matrix view whatever the matrices' group says of non-matrices
    # (a matrix-only class's non_matrix="flatten"; fimkit.optim.routed views them in any case).
    kernel_group = conv == "matrix" and matrix_optimizer != "adam"

    def hyperparameters(optimizer: str, candidate_role: bool, kernels: bool = False) -> dict[str, Any]:
        """The group of ``optimizer`` (the candidate's matrices when ``candidate_role`` and the
        Adam groups are split; its convolution kernels when ``kernels``), without its tensors."""
        # "role": "candidate" for the group holding the matrices, "adam" for the rest
        is_candidate_group = optimizer == matrix_optimizer and (candidate_role or not split_adam)
        group = {"optimizer": optimizer, "role": "candidate" if is_candidate_group else "adam"}
        if optimizer == matrix_optimizer and optimizer != "adam":
            group.update(hparams)
            if kernels and "non_matrix" in known:
                group["non_matrix"] = "flatten"
        else:
            group.update(ADAM_DEFAULTS, lr=adam_lr if adam_lr is not None else lr, on_nonfinite=on_nonfinite)
            group.update(adam_settings)
            if is_candidate_group:
                group.update(hparams)  # everything on Adam: the user's hparams win
        return group

    by_group: dict[tuple[str, bool, bool], list[str]] = {}
    for name, role in roles.items():
        target = role.partition(":")[2] if role.startswith("override:") else role_to_optimizer[role]
        is_candidate = role == "matrix" or (role == "lm_head" and lm_head == "matrix") or (role == "conv" and conv == "matrix")
        kernels = kernel_group and role == "conv"
        by_group.setdefault((target.lower(), split_adam and is_candidate, kernels), []).append(name)
    groups = [{"params": [params[n] for n in names], "param_names": names, **hyperparameters(*key)}
              for key, names in by_group.items()]
    matrix_route = hyperparameters(matrix_optimizer, split_adam)
    vector_route = hyperparameters("adam", False)
    routes = {"matrix": matrix_route, "vector": vector_route,
              "conv": hyperparameters(matrix_optimizer, split_adam, kernel_group) if conv == "matrix" else vector_route}
    return groups, routes


def _adam(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The standard tool for the non-matrix parameters: torch's Adam, fused on CUDA."""
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.Adam(groups, fused=True) if on_cuda else torch.optim.Adam(groups, foreach=True)


def build_optimizer(model: nn.Module, name: str, lm_head: str = "paper", *, gradient_release: bool = False,
                    **kwargs: Any) -> RoutedOptimizer:
    """One optimizer for the whole model: ``name`` for the matrices, Adam for the rest.

    Keyword arguments are those of :func:`param_groups`. The result has the full
    ``torch.optim.Optimizer`` interface (schedulers, momentum schedulers such as ``OneCycleLR``,
    checkpoints, ``copy.deepcopy``, ``pickle``, hooks), exposes the per-optimizer children as
    ``.children``, and routes tensors given to ``add_param_group`` by the same rules (its
    ``.routes``). A matrix-only optimizer steps a convolution kernel routed to it
    (``conv="matrix"``) as its matrix view ``(out_channels, in_channels * kernel)``.

    ``gradient_release=True`` is layer-wise gradient release (GaLore's ``layerwise``, [P] Fig 4):
    each parameter is stepped by its own optimizer in its post-accumulate-grad hook during
    ``backward()``, and its gradient is freed at once, so the full set of gradients never
    exists. ``step()`` then has nothing left to do. It cannot be combined with gradient
    accumulation or global-norm clipping (both need every gradient at once), nor with
    ``add_param_group``, and the non-finite guard then syncs once per parameter instead of once
    per group.
    """
    groups, routes = _plan(model, name, lm_head, **kwargs)
    by_optimizer: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        by_optimizer.setdefault(group["optimizer"], []).append(group)
    if not gradient_release:
        children = {optimizer: _make(optimizer, groups) for optimizer, groups in by_optimizer.items()}
        return RoutedOptimizer(children, routes={kind: route for kind, route in routes.items()
                                                 if route["optimizer"] in children})

    children: dict[str, torch.optim.Optimizer] = {}
    for optimizer, groups in by_optimizer.items():
        for group in groups:
            for param, param_name in zip(group["params"], group["param_names"]):
                single = {**group, "params": [param], "param_names": [param_name]}
                children[param_name] = child = _make(optimizer, [single])
                register_release(param, child)
    routed = RoutedOptimizer(children)
    routed.gradient_release = True
    return routed


def _make(optimizer: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return _adam(groups)
    return make_viewing_matrices(get_optimizer(optimizer), groups)


def describe(model: nn.Module, matrix_optimizer: str = "alice", lm_head: str = "paper", **kwargs: Any) -> str:
    """Where every parameter goes: a table of name, shape, role, optimizer and lr (a string to print).

    An N-d weight that a matrix-only optimizer steps as its matrix view shows that view in its
    role (``conv as 3x18``). Takes the arguments of :func:`param_groups`; nothing is built or
    changed."""
    kwargs_roles = {k: kwargs[k] for k in ("overrides", "lm_head_pattern") if k in kwargs}
    roles = parameter_roles(model, **kwargs_roles)
    groups = param_groups(model, matrix_optimizer, lm_head, **kwargs)
    shapes = dict(model.named_parameters())
    def lr_of(group):  # a candidate group without an explicit lr runs at its class default
        return group["lr"] if "lr" in group else get_optimizer(group["optimizer"]).default_hyperparameters()["lr"]

    def role_of(name, group):
        shape = shapes[name].shape
        cls = None if group["optimizer"] == "adam" else get_optimizer(group["optimizer"])
        viewed = cls is not None and views_matrices(cls) and views_in({**cls.default_hyperparameters(), **group})
        if len(shape) > 2 and viewed:
            return f"{roles[name]} as {'x'.join(map(str, matrix_shape(shape)))}"
        return roles[name]

    rows = [(name, tuple(shapes[name].shape), role_of(name, g), g["optimizer"], lr_of(g))
            for g in groups for name in g["param_names"]]
    width = max(len("parameter"), *(len(r[0]) for r in rows))
    role_width = max(10, *(len(r[2]) + 1 for r in rows))
    lines = [f"{'parameter':<{width}}  {'shape':<14} {'role':<{role_width}} {'optimizer':<12} lr"]
    lines += [f"{n:<{width}}  {str(shape):<14} {role:<{role_width}} {opt:<12} {lr:g}"
              for n, shape, role, opt, lr in rows]
    counts = {}
    for _, shape, _, opt, _ in rows:
        counts[opt] = counts.get(opt, 0) + math.prod(shape)
    lines.append("; ".join(f"{opt}: {count:,} elements" for opt, count in counts.items()))
    return "\n".join(lines)
