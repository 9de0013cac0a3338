"""Optimizer memory: measured from live state, predicted from shapes, and a whole model's budget.

- :func:`state_numel`, :func:`state_bytes`: what a live optimizer holds (measured).
- :func:`predicted_state`: the state an optimizer *would* allocate for a parameter shape, read
  from its own state initialisation on the ``meta`` device (nothing is allocated), so it works
  for every registered :class:`~fimkit.optim.ChainOptimizer`, including ones written later.
- :func:`optimizer_state_numel`: the elements [P] counts (floating state; step counters and
  random-generator states are bookkeeping and left out).
- :data:`STATE_FORMULAS`: the spec's closed forms (algorithms.md §5 H, [P] Table 6), used to
  check the above and as a fallback for optimizers that are not registered.
- :func:`model_memory` and :func:`paper_table3`: [P] Table 3 from the paper's LLaMA configs:
  weights + Adam states of non-matrix parameters + optimizer states of the matrices, BF16
  (2 bytes an element), "GB" = GiB. [P] = arXiv 2502.07752.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

GIB = 2**30


# --------------------------------------------------------------------------- measured
def state_numel(optimizer: torch.optim.Optimizer, param: torch.Tensor | None = None) -> int:
    """Elements held in optimizer state tensors (of one parameter, or of all), the step counter
    included; generator states and other non-floating bookkeeping tensors are included too."""
    states = [optimizer.state[param]] if param is not None else list(optimizer.state.values())
    return sum(v.numel() for s in states for v in s.values() if isinstance(v, torch.Tensor))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (measured, not estimated)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))


# ------------------------------------------------------------------------- predicted
def _optimizer_class(optimizer: str | type) -> type:
    from .optim import get_optimizer  # local: fimkit.optim imports this package's modules

    return get_optimizer(optimizer) if isinstance(optimizer, str) else optimizer


def predicted_state(optimizer: str | type, shape: tuple[int, ...],
                    **hyperparameters: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{state key: (shape, dtype)}`` that ``optimizer`` allocates for a parameter of ``shape``.

    The optimizer (a registered name or a ``ChainOptimizer`` class) is built on a ``meta``
    parameter and its own state initialisation runs under ``torch.device("meta")``, so the
    answer follows the code (including the transpose of tall matrices to the short side and
    ``state_dtype``) and no memory is allocated, whatever the shape.
    """
    from .optim.chain import ChainOptimizer, matrix_shape

    cls = _optimizer_class(optimizer)
    if not (isinstance(cls, type) and issubclass(cls, ChainOptimizer)):
        raise TypeError(f"predicted_state needs a fimkit ChainOptimizer (or its registered name), got {cls!r}")
    if "seed" in cls.default_hyperparameters():
        # a seed drawn at initialisation would be a random number on meta; shapes do not depend on it
        hyperparameters = {"seed": 0, **hyperparameters}
    with torch.device("meta"):
        param = torch.nn.Parameter(torch.empty(shape))
        instance = cls([param], **hyperparameters)
        group = instance.param_groups[0]
        m, n = matrix_shape(param.shape)
        if group["transpose_to_short_side"] and m > n:  # as ChainOptimizer._step_param does
            m, n = n, m
        state = instance._init_state(m, n, torch.empty(m, n), group, instance._state_dtype(param, group))
    return {key: (tuple(value.shape), value.dtype) for key, value in state.items()}


def counted_state(state: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, int]:
    """Elements of each state tensor that [P] counts: floating, not the step counter."""
    return {key: math.prod(shape) for key, (shape, dtype) in state.items()
            if dtype.is_floating_point and key != "step"}


def optimizer_state_numel(optimizer: str | type, shape: tuple[int, ...], **hyperparameters: Any) -> int:
    """State elements per parameter of ``shape`` as [P] counts them (see :func:`counted_state`)."""
    return sum(counted_state(predicted_state(optimizer, shape, **hyperparameters)).values())


# --------------------------------------------------------------------------- formulas
Formula = Callable[[int, int, int], dict[str, int]]


def _low_rank(m: int, n: int, r: int, **extra: int) -> dict[str, int]:
    return {"exp_avg": n * r, "exp_avg_sq": n * r, "basis": m * r, **extra}


#: Closed forms of the state of each optimizer for a weight with short side m, long side n and
#: rank r <= m, by component (algorithms.md §5 H; [P] Table 6 and App B.12). Eigen-Adam and
#: SOAP keep m and n as given (SOAP is two-sided; Eigen-Adam rotates the short side).
STATE_FORMULAS: dict[str, Formula] = {
    "adam": lambda m, n, r: {"exp_avg": m * n, "exp_avg_sq": m * n},
    "eigen_adam": lambda m, n, r: {"exp_avg": m * n, "exp_avg_sq": m * n, "gram": m * m, "basis": m * m},
    "soap": lambda m, n, r: {"exp_avg": m * n, "exp_avg_sq": m * n, "rows_gram": m * m, "rows_basis": m * m,
                             "cols_gram": n * n, "cols_basis": n * n},
    "racs": lambda m, n, r: {"q": m, "s": n, "phi": 1},
    "galore": lambda m, n, r: _low_rank(m, n, r),
    "fira": lambda m, n, r: _low_rank(m, n, r, phi=1),
    "apollo": lambda m, n, r: _low_rank(m, n, r, phi=1),  # Apollo-svd: GaLore's memory ([P] B.12)
    "apollo_mini": lambda m, n, r: {"exp_avg": n, "exp_avg_sq": n, "scalars": 2},   # mn + 2n + 2
    "alice": lambda m, n, r: _low_rank(m, n, r, tracking=r * r, compensation=n, phi=1),
    "alice_zero": lambda m, n, r: _low_rank(m, n, r, compensation=n, phi=1),
    "swan": lambda m, n, r: {},
    "sinkgd": lambda m, n, r: {},
    "muon": lambda m, n, r: {"exp_avg": m * n},
}


def formula_state(name: str, shape: tuple[int, ...], rank: int | None = None) -> dict[str, int]:
    """:data:`STATE_FORMULAS` for a parameter of ``shape`` (vectors are 1 x n; rank clipped to m)."""
    if name not in STATE_FORMULAS:
        raise ValueError(f"no state formula for {name!r}; known: {sorted(STATE_FORMULAS)}")
    dims = (1,) * max(0, 2 - len(shape)) + tuple(shape)
    m, n = sorted((dims[0], math.prod(dims[1:])))
    return STATE_FORMULAS[name](m, n, min(rank, m) if rank else m)


# --------------------------------------------------------------------- whole models
@dataclass(frozen=True)
class LlamaShapes:
    """A LLaMA decoder's parameter shapes (GaLore's configs, untied lm_head), no weights."""

    hidden: int
    intermediate: int
    heads: int
    layers: int
    vocab: int = 32000

    def parameters(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``(name, shape, role)`` with role "matrix" (attention and MLP), "embedding",
        "vector" (RMSNorm weights) or "lm_head", as fimkit's routing assigns them."""
        h, i = self.hidden, self.intermediate
        params = [("embed_tokens", (self.vocab, h), "embedding")]
        for layer in range(self.layers):
            prefix = f"layers.{layer}."
            params += [(prefix + f"attn.{w}_proj", (h, h), "matrix") for w in "qkvo"]
            params += [(prefix + "mlp.gate_proj", (i, h), "matrix"), (prefix + "mlp.up_proj", (i, h), "matrix"),
                       (prefix + "mlp.down_proj", (h, i), "matrix")]
            params += [(prefix + "input_norm", (h,), "vector"), (prefix + "post_attention_norm", (h,), "vector")]
        return params + [("norm", (h,), "vector"), ("lm_head", (self.vocab, h), "lm_head")]

    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.parameters())


#: [P] Table 10 / GaLore configs (1.3B: GaLore's llama_1b, see targets.md §1.1)
PAPER_MODELS = {
    "60M": LlamaShapes(512, 1376, 8, 8),
    "130M": LlamaShapes(768, 2048, 12, 12),
    "350M": LlamaShapes(1024, 2736, 16, 24),
    "1.3B": LlamaShapes(2048, 5461, 32, 24),
}

#: ranks of [P] Tables 7 and 11 (GaLore, Fira, Alice, Apollo-svd)
PAPER_RANKS = {"60M": 128, "130M": 256, "350M": 256, "1.3B": 512}


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's training memory for one optimizer, in bytes, and where its states came from."""

    weights: int
    adam_states: int
    matrix_states: int
    source: str

    @property
    def total(self) -> int:
        return self.weights + self.adam_states + self.matrix_states

    @property
    def gib(self) -> float:
        return self.total / GIB


def state_elements(optimizer: str, shape: tuple[int, ...], rank: int | None = None,
                   registered_class: type | None = None, **hyperparameters: Any) -> tuple[dict[str, int], str]:
    """Counted state elements of one parameter by component, and their source: the registered
    optimizer's own initialisation when ``registered_class`` is given (``rank`` passed as its
    ``rank`` hyperparameter when it has one), the spec formula ``optimizer`` otherwise."""
    if registered_class is not None:
        known = registered_class.default_hyperparameters()
        if rank is not None and "rank" in known:
            hyperparameters = {"rank": rank, **hyperparameters}
        return dict(_registered_counts(registered_class, tuple(shape), tuple(sorted(hyperparameters.items())))), \
            "registered"
    return formula_state(optimizer, shape, rank), "formula"


@functools.lru_cache(maxsize=4096)
def _registered_counts(cls: type, shape: tuple[int, ...], hyperparameters: tuple) -> tuple[tuple[str, int], ...]:
    """Cached :func:`counted_state` of :func:`predicted_state` (a model repeats few shapes)."""
    return tuple(counted_state(predicted_state(cls, shape, **dict(hyperparameters))).items())


def model_memory(model: LlamaShapes, optimizer: str, lm_head: str = "adam", rank: int | None = None,
                 bytes_per_element: int = 2, component_bytes: dict[str, int] | None = None,
                 registered_class: type | None = None, **hyperparameters: Any) -> MemoryEstimate:
    """[P]'s memory estimate: weights, Adam's two moments for every parameter routed to Adam
    (embeddings, norms and, with ``lm_head="adam"``, the head), and ``optimizer``'s state for
    the matrices (and the head with ``lm_head="matrix"``). ``component_bytes`` overrides the
    bytes of named state components (e.g. one kept in float32 while the rest is BF16)."""
    if lm_head not in ("adam", "matrix"):
        raise ValueError(f"lm_head must be 'adam' or 'matrix', got {lm_head!r}")
    widths = component_bytes or {}
    weights = adam = matrix = 0
    sources = set()
    for _, shape, role in model.parameters():
        weights += math.prod(shape) * bytes_per_element
        if role == "matrix" or (role == "lm_head" and lm_head == "matrix"):
            counts, source = state_elements(optimizer, shape, rank, registered_class, **hyperparameters)
            matrix += sum(count * widths.get(key, bytes_per_element) for key, count in counts.items())
            sources.add(source)
        else:
            adam += 2 * math.prod(shape) * bytes_per_element
    return MemoryEstimate(weights, adam, matrix, "+".join(sorted(sources)))


# ---------------------------------------------------------------------- [P] Table 3
@dataclass(frozen=True)
class Table3Row:
    """One method of [P] Table 3: its formula, its fimkit class (``fimkit.optim.<name>``),
    whether it is low-rank (takes the paper's rank), and the paper's GB per size as
    ``(Mem, Mem*)`` (Mem: lm_head on the method; Mem*: lm_head on Adam; None: "NA")."""

    label: str
    formula: str
    class_name: str
    low_rank: bool
    paper: dict[str, tuple[float | None, float]]
    hyperparameters: tuple[tuple[str, Any], ...] = ()


def _cells(*pairs):
    return dict(zip(PAPER_MODELS, pairs))


_GALORE = _cells((0.21, 0.26), (0.51, 0.57), (1.2, 1.29), (4.25, 4.43))
PAPER_TABLE3 = (
    Table3Row("Adam", "adam", "Adam", False, _cells((None, 0.32), (None, 0.75), (None, 2.05), (None, 7.48))),
    Table3Row("GaLore", "galore", "GaLore", True, _GALORE),
    Table3Row("Fira", "fira", "Fira", True, _GALORE),
    Table3Row("Apollo-mini", "apollo_mini", "APOLLOMini", False,
              _cells((None, 0.23), (None, 0.43), (None, 0.93), (None, 2.98))),
    Table3Row("Apollo-svd", "apollo", "APOLLO", True, _cells((None, 0.26), (None, 0.57), (None, 1.29), (None, 4.43))),
    Table3Row("RACS", "racs", "RACS", False, _cells((None, 0.23), (None, 0.43), (None, 0.93), (None, 2.98))),
    Table3Row("Alice-0", "alice_zero", "AliceZero", True, _cells((0.21, 0.26), (0.51, 0.57), (1.2, 1.29), (4.25, 4.44))),
    Table3Row("Alice", "alice", "Alice", True, _cells((0.22, 0.26), (0.53, 0.59), (1.24, 1.33), (4.42, 4.6))),
)


def table3_cell(row: Table3Row, size: str, lm_head: str, use_registered: bool = True,
                component_bytes: dict[str, int] | None = None) -> MemoryEstimate:
    """Our estimate of one cell of [P] Table 3 (``lm_head="adam"`` is Mem*). Uses the
    registered ``fimkit.optim`` class when it exists (and ``use_registered``), else the formula."""
    from . import optim

    cls = getattr(optim, row.class_name, None) if use_registered else None
    rank = PAPER_RANKS[size] if row.low_rank else None
    hyperparameters = dict(row.hyperparameters)
    if cls is None and "rank" in hyperparameters:
        rank = hyperparameters.pop("rank")
    try:
        return model_memory(PAPER_MODELS[size], row.formula, lm_head, rank=rank, component_bytes=component_bytes,
                            registered_class=cls, **hyperparameters)
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        if cls is None:
            raise
        # the registered optimizer does not take these options or cannot initialise on meta
        return table3_cell(row, size, lm_head, use_registered=False, component_bytes=component_bytes)


def paper_table3(use_registered: bool = True, component_bytes: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every cell of [P] Table 3, ours against the paper: dicts with ``method``, ``size``,
    ``column`` ("Mem" or "Mem*"), ``ours`` (GiB), ``paper`` (GB as printed, None for NA) and
    ``source`` ("registered" or "formula")."""
    cells = []
    for row in PAPER_TABLE3:
        for size, (mem, mem_star) in row.paper.items():
            for column, lm_head, paper in (("Mem", "matrix", mem), ("Mem*", "adam", mem_star)):
                estimate = table3_cell(row, size, lm_head, use_registered, component_bytes)
                cells.append({"method": row.label, "size": size, "column": column, "ours": estimate.gib,
                              "paper": paper, "source": estimate.source})
    return cells


def format_table3(cells: list[dict[str, Any]]) -> str:
    """Markdown table ``ours / paper`` per method and size (NA where the paper has none)."""
    sizes = list(PAPER_MODELS)
    header = "| method | " + " | ".join(f"{s} {c}" for s in sizes for c in ("Mem", "Mem*")) + " | source |"
    lines = [header, "|---" * (2 * len(sizes) + 2) + "|"]
    for row in PAPER_TABLE3:
        mine = {(c["size"], c["column"]): c for c in cells if c["method"] == row.label}
        if not mine:
            continue
        entries = []
        for size in sizes:
            for column in ("Mem", "Mem*"):
                cell = mine[(size, column)]
                entries.append("NA" if cell["paper"] is None else f"{cell['ours']:.3f} / {cell['paper']:g}")
        source = "/".join(sorted({c["source"] for c in mine.values()}))
        lines.append(f"| {row.label} | " + " | ".join(entries) + f" | {source} |")
    return "\n".join(lines)


#: [P]'s Alice column is matched when its r x r tracking state counts 4 bytes an element (as if
#: kept in float32) and all else 2; with every state in BF16 (the spec formula) Alice at
#: 130M/350M/1.3B comes out 0.01/0.02/0.08 GB below the paper.
ALICE_TRACKING_IN_FP32 = {"tracking": 4}


def print_table3() -> None:
    """Print [P] Table 3, ours / paper (GB = GiB), and the Alice reading that matches it."""
    print(format_table3(paper_table3()))
    print("\nAlice with its r x r tracking state counted in float32 (spec formula):")
    alice = paper_table3(use_registered=False, component_bytes=ALICE_TRACKING_IN_FP32)
    print(format_table3([c for c in alice if c["method"] == "Alice"]))


if __name__ == "__main__":  # python -m fimkit.memory
    print_table3()
