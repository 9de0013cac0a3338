"""Optimizer step time and memory on a model's matrices, measured side by side.

All candidates step the same parameters' shapes with the same random gradients; each round
times one step of every candidate in a fresh random order (interleaved, so that load on the
machine hits all of them alike), and the table reports medians over rounds. Optimizers with a
periodic subspace switch (``update_interval`` = K, e.g. Alice) are amortised: a second
instance switches on every step, and ``t = t_steady + (t_switch - t_steady) / K``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fimkit.memory import optimizer_state_numel, state_bytes
from fimkit.optim import registered
from fimkit.optim.chain import ChainOptimizer

from .machine import peak_rss, peak_rss_tracking, reset_peak_rss
from .paper_tables import PAPER_MODELS
from .targets import SERIAL_ROW

Build = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
Progress = Callable[[str], None]


@dataclass
class Candidate:
    label: str
    build: Build
    #: K for an optimizer whose switch step (every K steps) is amortised
    amortise_over: int | None = None
    build_switching: Build | None = None
    registered_name: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    #: the registered fimkit name of the algorithm (for floors and targets), its package, and how
    #: a package's version differs from fimkit's
    algorithm: str | None = None
    package: str = "fimkit"
    differs: str = ""
    #: steps write into ``p.grad`` (pytorch-optimizer's Muon): it gets a private copy of the gradients
    writes_gradients: bool = False
    #: untimed steps it needs at least (heavyball compiles on its first two steps)
    min_warmup: int = 0


@dataclass
class Result:
    label: str
    step_ms: float
    state_mib: float
    predicted_state_numel: int | None
    peak_rss_mib: float | None
    notes: list[str] = field(default_factory=list)
    #: for an amortised candidate: the median steady step and the median switch step (ms)
    steady_ms: float | None = None
    switch_ms: float | None = None
    algorithm: str | None = None
    package: str = "fimkit"
    differs: str = ""
    #: every hyperparameter of the steady instance (registered defaults and overrides)
    hyperparameters: dict = field(default_factory=dict)


def amortised_step(steady: float, switch: float, interval: int) -> float:
    """Mean step time when one step in ``interval`` costs ``switch`` and the others ``steady``."""
    return steady + (switch - steady) / interval


def model_matrix_shapes(size: str = "60M") -> list[tuple[int, ...]]:
    """The attention and MLP matrices of a paper model (e.g. 60M: 8 x {4 (512, 512),
    2 (1376, 512), 1 (512, 1376)}), shapes only."""
    return [shape for _, shape, role in PAPER_MODELS[size].parameters() if role == "matrix"]


def torch_adam(kind: str) -> Candidate:
    """``torch.optim.Adam`` with ``foreach=True`` or ``fused=True`` (lr 1e-3, the paper's Adam)."""
    return Candidate(f"torch Adam ({kind})", lambda params: torch.optim.Adam(params, lr=1e-3, **{kind: True}),
                     algorithm="adam", package="torch")


#: periodic refreshes whose step is amortised: the hyperparameter that sets the period, and
#: whether the run's K overrides it (a subspace switch) or the optimizer keeps its own period
REFRESH_PERIODS = (("update_interval", True), ("precondition_frequency", False))


def registered_defaults(name: str | None) -> dict:
    """The default hyperparameters of the registered optimizer ``name`` ({} for None, a name not
    registered, or an optimizer that is not a ChainOptimizer)."""
    cls = registered().get(name or "")
    return cls.default_hyperparameters() if cls and issubclass(cls, ChainOptimizer) else {}


def fimkit_candidate(name: str, amortise_over: int = 200, **hyperparameters) -> Candidate:
    """A registered fimkit optimizer with its defaults (plus ``hyperparameters``). A periodic
    refresh (:data:`REFRESH_PERIODS`) is amortised: a second instance refreshes every step."""
    cls = registered()[name]
    defaults = registered_defaults(name)
    for key, run_k in REFRESH_PERIODS:
        period = amortise_over if run_k else defaults.get(key, 1)
        if key in defaults and period > 1:
            steady = {**hyperparameters, key: period}
            every_step = {**hyperparameters, key: 1}
            label = f"{name} (K={period}, amortised)" if run_k else f"{name} (every {period}, amortised)"
            return Candidate(label, lambda params: cls(params, **steady), period,
                             lambda params: cls(params, **every_step), name, steady, algorithm=name)
    return Candidate(name, lambda params: cls(params, **hyperparameters), registered_name=name,
                     hyperparameters=hyperparameters, algorithm=name)


#: a switch of fimkit's optimizers benched beside their default step: (attribute, the value benched,
#: the row's label, the optimizers that have it): the compiled fused step, and the serial loop
#: where the default steps matrices in two threads (fimkit.optim.threaded_steps)
VARIANTS = (("fused_step", True, "fused_step", ("adam", "racs")),
            ("threaded_step", False, SERIAL_ROW.strip(" ()"), ("racs", "sinkgd")))


def variant_candidates(names) -> list[Candidate]:
    """A row per :data:`VARIANTS` entry that ``names`` has."""
    return [variant_candidate(name, attribute, value, label)
            for attribute, value, label, covered in VARIANTS for name in names if name in covered]


def variant_candidate(name: str, attribute: str, value, label: str) -> Candidate:
    """``name`` with ``optimizer.<attribute> = value`` (its defaults otherwise)."""
    cls = registered()[name]

    def build(params):
        optimizer = cls(params)
        setattr(optimizer, attribute, value)
        return optimizer
    return Candidate(f"{name} ({label})", build, registered_name=name, algorithm=name, min_warmup=2)


def all_hyperparameters(candidate: Candidate) -> dict:
    """The candidate's registered defaults with its overrides (what its floor is computed from)."""
    return {**registered_defaults(candidate.registered_name), **candidate.hyperparameters}


def _make_params(shapes, grads, device, seed) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter((0.02 * torch.randn(s, generator=gen)).to(device)) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g          # shared, except with a candidate that writes into it
    return params


def _timed_step(optimizer: torch.optim.Optimizer, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _peak_rss_mib(optimizer: torch.optim.Optimizer, params, grads) -> float | None:
    """Growth of resident memory during one step (Linux): temporaries that needed new pages.
    Temporaries served from memory freed earlier in the process do not show."""
    if not peak_rss_tracking():
        return None
    for p, g in zip(params, grads):
        p.grad = g
    before = reset_peak_rss()
    optimizer.step()
    return max(0, peak_rss() - before) / 2**20


def measure(candidates: list[Candidate], shapes: list[tuple[int, ...]], repeats: int = 15, warmup: int = 2,
            seed: int = 0, device: torch.device | str = "cpu", progress: Progress | None = None) -> list[Result]:
    """Median step time (ms) of every candidate, interleaved over ``repeats`` rounds;
    ``progress`` (if given) is told after the warmup and after every round."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    grads = [(1e-3 * torch.randn(s, generator=gen)).to(device) for s in shapes]
    instances: dict[tuple[int, str], torch.optim.Optimizer] = {}
    attached: dict[tuple[int, str], tuple[list, list]] = {}
    for index, candidate in enumerate(candidates):
        own = [g.clone() for g in grads] if candidate.writes_gradients else grads
        builds = {"steady": candidate.build, "switch": candidate.build_switching}
        for kind, build in builds.items():
            if build is not None:
                params = _make_params(shapes, own, device, seed + 1)
                instances[(index, kind)] = build(params)
                attached[(index, kind)] = (params, own)

    def step(key) -> float:
        params, own = attached[key]
        for p, g in zip(params, own):
            p.grad = g      # again every step: heavyball sets p.grad to None after its step
        return _timed_step(instances[key], device)

    started = time.perf_counter()
    for key in instances:
        for _ in range(max(warmup, candidates[key[0]].min_warmup)):
            step(key)
    if progress:
        progress(f"{len(instances)} instances built and warmed up in {time.perf_counter() - started:.0f} s")
    times: dict[tuple[int, str], list[float]] = {key: [] for key in instances}
    order = list(instances)
    shuffle = random.Random(seed)
    for done in range(1, repeats + 1):
        round_start = time.perf_counter()
        shuffle.shuffle(order)
        for key in order:
            times[key].append(step(key))
        if progress:
            took = time.perf_counter() - round_start
            progress(f"round {done}/{repeats} in {took:.0f} s (about {took * (repeats - done):.0f} s to go)")

    results = []
    for index, candidate in enumerate(candidates):
        steady = statistics.median(times[(index, "steady")])
        notes, parts = [], {}
        if candidate.amortise_over:
            switch = statistics.median(times[(index, "switch")])
            notes.append(f"steady {steady * 1e3:.1f} ms, switch step {switch * 1e3:.1f} ms")
            parts = {"steady_ms": steady * 1e3, "switch_ms": switch * 1e3}
            steady = amortised_step(steady, switch, candidate.amortise_over)
        optimizer = instances[(index, "steady")]
        predicted = None
        name = candidate.registered_name
        if name in registered():
            predicted = sum(optimizer_state_numel(name, s, **candidate.hyperparameters) for s in shapes)
        peak = _peak_rss_mib(optimizer, *attached[(index, "steady")])
        results.append(Result(candidate.label, steady * 1e3, state_bytes(optimizer) / 2**20, predicted,
                              peak, notes, **parts, algorithm=candidate.algorithm, package=candidate.package,
                              differs=candidate.differs, hyperparameters=all_hyperparameters(candidate)))
    return results


def format_results(results: list[Result], machine: dict[str, str], command: str, shapes_label: str) -> str:
    """Markdown: the machine, the command, and one row per optimizer with ratios to both Adams."""
    by_label = {r.label: r for r in results}
    foreach = by_label.get("torch Adam (foreach)")
    fused = by_label.get("torch Adam (fused)")
    lines = [f"Optimizer step time on {shapes_label}, median over interleaved rounds.", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    lines += ["", f"Command: `{command}`", "",
              "| optimizer | step (ms) | / Adam foreach | / Adam fused | state (MiB, measured) "
              "| state elements (predicted) | peak RSS growth (MiB) | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = lambda ref: f"{r.step_ms / ref.step_ms:.2f}" if ref else "n/a"  # noqa: E731
        predicted = f"{r.predicted_state_numel:,}" if r.predicted_state_numel is not None else "n/a"
        peak = f"{r.peak_rss_mib:.1f}" if r.peak_rss_mib is not None else "n/a"
        lines.append(f"| {r.label} | {r.step_ms:.1f} | {ratio(foreach)} | {ratio(fused)} | {r.state_mib:.1f} "
                     f"| {predicted} | {peak} | {'; '.join(r.notes)} |")
    return "\n".join(lines)
