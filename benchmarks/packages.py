"""The same algorithms from other packages, built with fimkit's hyperparameters, for side-by-side
timing. Installed only for benchmarking (``pip install -e '.[bench]'``); a package that is not
installed (or fails to import) is skipped with a note, never an error.

Each entry says which fimkit optimizer it stands beside and, where the package's algorithm is not
step for step fimkit's, how it differs. ``interval`` is the period of the refresh whose cost is
amortised (GaLore's ``update_proj_gap``, SOAP's ``precondition_frequency``): the steady instance
uses it, a second instance refreshes every step, exactly as for fimkit's own candidates.
Adam is compared with torch's own implementations (foreach and fused), which every row shows.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fimkit.optim import registered

from .step_time import Candidate

#: ``make(module, params, interval) -> optimizer``; interval: the refresh period (or None)
Make = Callable[[object, list[torch.nn.Parameter], int | None], torch.optim.Optimizer]


@dataclass(frozen=True)
class ThirdParty:
    algorithm: str       # the registered fimkit name it stands beside
    distribution: str    # pip name (what the `bench` extra installs)
    module: str          # import name
    make: Make
    #: "K": amortised over the run's K (``--amortise-over``); an int: that period; None: no refresh
    interval: str | int | None = None
    differs: str = ""
    writes_gradients: bool = False
    min_warmup: int = 0


def _galore_group(params, interval, scale=0.3, **extra):
    return [dict(params=params, rank=128, update_proj_gap=interval, scale=scale, **extra)]


def _apollo_group(params, interval, rank, scale_type, scale):
    return [dict(params=params, rank=rank, proj="random", scale_type=scale_type, update_proj_gap=interval,
                 scale=scale, proj_type="std")]


#: fimkit's registered defaults (rank 128, K, betas, lr) spelled in each package's arguments
THIRD_PARTY: tuple[ThirdParty, ...] = (
    ThirdParty("racs", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.RACS(p, lr=0.02, beta=0.9, alpha=0.05, gamma=1.01, eps=1e-8),
               differs="no fixed point: q, s are the row and column means of G*G (one pass)"),
    ThirdParty("alice", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.Alice(p, lr=0.02, betas=(0.9, 0.9, 0.999), alpha=0.3, alpha_c=0.4,
                                         update_interval=k, rank=128, gamma=1.01, leading_basis=40),
               interval="K"),
    ThirdParty("galore", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.GaLore(_galore_group(p, k, projection_type="std"), lr=0.02, eps=1e-6),
               interval="K"),
    ThirdParty("fira", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.Fira(_galore_group(p, k, projection_type="std"), lr=0.02, eps=1e-6),
               interval="K"),
    ThirdParty("adafactor", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.AdaFactor(p, lr=0.01, betas=(None, 0.999), decay_rate=-0.8, clip_threshold=1.0,
                                             scale_parameter=False, relative_step=False, eps2=1e-3),
               differs="eps1 1e-30 (fimkit: float32 eps^2 of the rms)"),
    ThirdParty("muon", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.Muon([dict(params=p, use_muon=True)], lr=0.02, momentum=0.95, nesterov=True,
                                        ns_steps=5),
               differs="Newton-Schulz in bfloat16 (fimkit: float32)", writes_gradients=True),
    ThirdParty("soap", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.SOAP(p, lr=0.003, betas=(0.95, 0.95), shampoo_beta=0.95, weight_decay=0.0,
                                        precondition_frequency=k),
               interval=10),
    ThirdParty("shampoo", "pytorch-optimizer", "pytorch_optimizer",
               lambda po, p, k: po.Shampoo(p, lr=1e-3, momentum=0.0, preconditioning_compute_steps=1,
                                           matrix_eps=1e-6),
               differs="matrix roots by its own power iteration"),
    ThirdParty("galore", "galore-torch", "galore_torch",
               lambda gt, p, k: gt.GaLoreAdamW(_galore_group(p, k, proj_type="std"), lr=0.02, eps=1e-6),
               interval="K", differs="official GaLore (Zhao et al.)"),
    ThirdParty("apollo", "apollo-torch", "apollo_torch",
               lambda at, p, k: at.APOLLOAdamW(_apollo_group(p, k, 128, "channel", 1.0), lr=0.01, eps=1e-6),
               interval="K", differs="official APOLLO (Zhu et al.)"),
    ThirdParty("apollo_mini", "apollo-torch", "apollo_torch",
               lambda at, p, k: at.APOLLOAdamW(_apollo_group(p, k, 1, "tensor", 128**0.5), lr=0.01, eps=1e-6),
               interval="K", differs="official APOLLO-Mini (Zhu et al.)"),
    ThirdParty("muon", "heavyball", "heavyball",
               lambda hb, p, k: _heavyball(hb).Muon(p, lr=0.02, betas=(0.95, 0.95), nesterov=True, weight_decay=0.0),
               differs="Newton-Schulz in bfloat16 (fimkit: float32); torch.compile'd (inductor C++, default mode)",
               min_warmup=3),
    ThirdParty("soap", "heavyball", "heavyball",
               lambda hb, p, k: _heavyball(hb).SOAP(p, lr=0.003, betas=(0.95, 0.95), shampoo_beta=0.95,
                                                    weight_decay=0.0, precondition_frequency=k,
                                                    max_precond_dim=10_000, use_precond_schedule=False),
               interval=10, differs="torch.compile'd (inductor C++, default mode)", min_warmup=3),
)


def _heavyball(hb):
    """heavyball with inductor's default mode: its own default, max-autotune, benchmarks GEMM
    choices for every shape on its first steps, which took over 20 minutes on the 60M matrices on
    this CPU (the generated fused C++ is the same kind either way)."""
    hb.utils.compile_mode = "default"
    return hb


def _import(module: str):
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # noqa: BLE001  (a broken optional install is a skip, not a failure)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def third_party_candidates(algorithms: list[str], amortise_over: int = 200,
                           table: tuple[ThirdParty, ...] = THIRD_PARTY) -> tuple[list[Candidate], list[str]]:
    """Candidates for every package version of ``algorithms``, and a note per skipped package."""
    candidates, notes, missing = [], [], {}
    for entry in table:
        if entry.algorithm not in algorithms:
            continue
        if entry.module not in missing:
            module, error = _import(entry.module)
            missing[entry.module] = (module, error)
        module, error = missing[entry.module]
        if module is None:
            note = f"{entry.distribution} not installed ({error}): skipped; pip install -e '.[bench]'"
            if note not in notes:
                notes.append(note)
            continue
        candidates.append(_candidate(entry, module, amortise_over))
    return candidates, notes


def _candidate(entry: ThirdParty, module, amortise_over: int) -> Candidate:
    interval = amortise_over if entry.interval == "K" else entry.interval
    label = f"{entry.distribution} {entry.algorithm}" + (f" (every {interval}, amortised)" if interval else "")
    make = entry.make
    # the floor of the package's row is computed from fimkit's hyperparameters of the algorithm,
    # which the package is built with (rank 1 for APOLLO-Mini, Alice's tracking, the interval)
    hyperparameters = {**registered()[entry.algorithm].default_hyperparameters()}
    if interval and "update_interval" in hyperparameters:
        hyperparameters["update_interval"] = interval
    return Candidate(label, lambda params: make(module, params, interval), amortise_over=interval,
                     hyperparameters=hyperparameters,
                     build_switching=(lambda params: make(module, params, 1)) if interval else None,
                     algorithm=entry.algorithm, package=entry.distribution, differs=entry.differs,
                     writes_gradients=entry.writes_gradients, min_warmup=entry.min_warmup)
