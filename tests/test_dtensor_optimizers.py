"""Every registered fimkit optimizer on DTensor parameters (FSDP2's ``fully_shard``) and under DDP,
2 CPU processes with gloo (issue 13, the optimizer half; ``fimkit.optim.sharded``).

Oracle: the same optimizer on the same model in one process, which every worker also runs (so
each test spawns its processes once and loops over the optimizers inside them). The model has
two matrices whose row counts (5 and 7) do not split evenly over 2 ranks, one of them tall (RACS,
Muon... transpose it to the short side), a 1 x 7 matrix and a bias of one entry (rank 1 holds
empty shards of them), and vectors (biases, a norm's gain and bias) that matrix-only optimizers
give their built-in Adam. fimkit's Adam steps local shards; RACS and Adafactor too, their row and
column statistics completed by partial sums across the ranks; the rest gather. Subspace
optimizers switch every 3 steps and SOAP / Eigen-Adam refresh their bases every 3, so 10 steps
include several switches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fimkit
from experiments.distributed import free_port
from fimkit.optim.registry import registered

NAMES = sorted(registered())
#: and fimkit.build_optimizer's routing: Alice on the matrices, torch's Adam (sharded state) on the vectors
ROUTED = "routed:alice"
CASES = [*NAMES, ROUTED]
#: fimkit's Adam with ``sharded_step="gather"`` (the debugging switch: gathered like the rest)
GATHERED = "gather:adam"
STEPS = 10
#: relative error allowed against one process (gradients are averaged in another order)
TOLERANCE = 1e-5
SUBSPACE = {"rank": 2, "leading": 1, "update_interval": 3}
SETTINGS = {"alice": SUBSPACE, "alice0": SUBSPACE, "galore": SUBSPACE, "fira": SUBSPACE, "apollo": SUBSPACE,
            "apollo_mini": {**SUBSPACE, "rank": 1}, "soap": {"precondition_frequency": 3},
            "eigen_adam": {"precondition_frequency": 3}}
BATCH, POISON_STEP, SAVE_STEP = 8, 3, 4


# ---------------------------------------------------------------------------- the problem
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 5)  # 5 x 6: rows 3 + 2 on two ranks
        self.norm = nn.LayerNorm(5)
        self.down = nn.Linear(5, 7, bias=False)  # 7 x 5: tall
        self.head = nn.Linear(7, 1)  # 1 x 7 and a bias of 1: rank 1's shards are empty

    def forward(self, x):
        down = self.down(torch.tanh(self.norm(self.up(x))))
        return torch.cat([down, self.head(down)], dim=-1)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 6, generator=gen), torch.randn(BATCH, 8, generator=gen)


def build(name: str, parallel: str, seed: int = 0):
    """The model (wrapped for ``parallel``) and ``name``'s optimizer on it; the global generator
    seeded alike for every run, so Alice's switch seed is drawn alike too."""
    torch.manual_seed(seed)
    model = Tiny()
    module = model
    if parallel == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.up)
        fully_shard(model.down)
        fully_shard(model)
    elif parallel == "ddp":
        module = nn.parallel.DistributedDataParallel(model)
    torch.manual_seed(seed)
    if name == GATHERED:
        optimizer = registered()["adam"](model.parameters())
        optimizer.sharded_step = "gather"
        return model, module, optimizer
    if name.startswith("routed:"):
        name = name.removeprefix("routed:")
        return model, module, fimkit.build_optimizer(model, name, **SETTINGS.get(name, {}))
    return model, module, registered()[name](model.parameters(), **SETTINGS.get(name, {}))


def train(module, optimizer, steps: range, parallel: str, poison=None, micro_batches: int = 2) -> None:
    """``steps`` of the global batch, whose gradient is the mean of its ``micro_batches`` halves'
    mean gradients: each rank takes its half, one process accumulates both (then the two gradients
    are the same sums; ``micro_batches=1``: one process takes the batch in one backward, whose sums
    differ in rounding). ``poison(step)`` runs between backward and step."""
    ranks = range(dist.get_rank(), dist.get_rank() + 1) if parallel != "none" else range(micro_batches)
    for step in steps:
        x, y = batch(step)
        for part in ranks:
            rows = slice(part * BATCH // micro_batches, (part + 1) * BATCH // micro_batches)
            loss = nn.functional.mse_loss(module(x[rows]), y[rows])
            (loss if parallel != "none" else loss / micro_batches).backward()
        if poison is not None:
            poison(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def whole(model) -> dict[str, torch.Tensor]:
    """Every parameter, whole (a collective for DTensors)."""
    return {k: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for k, p in model.named_parameters()}


def relative_error(a: dict, b: dict) -> float:
    return max(((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30)).item() for k in a)


def state_digest(optimizer, plain_only: bool = False) -> str:
    """A hash of every state tensor (to check that the ranks hold the same state); ``plain_only``:
    of the plain ones alone (which a checkpoint saves once, as if replicated)."""
    digest = hashlib.sha256()
    for state in optimizer.state.values():
        for key in sorted(state):
            value = state[key]
            if isinstance(value, torch.Tensor) and not (plain_only and hasattr(value, "to_local")):
                value = value.full_tensor() if hasattr(value, "full_tensor") else value
                raw = value.detach().cpu().reshape(-1).contiguous().view(torch.uint8)
                digest.update(key.encode() + raw.numpy().tobytes())
    return digest.hexdigest()


def same_on_every_rank(value) -> bool:
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


# -------------------------------------------------------------------------------- scenarios
def equivalence(parallel: str, folder: Path) -> dict:
    """Per optimizer: the relative error against one process after ``STEPS`` steps, and whether
    every rank holds the same state."""
    results = {}
    for name in (*CASES, GATHERED):
        model, module, optimizer = build(name, "none")
        train(module, optimizer, range(STEPS), "none")
        oracle = whole(model)
        model, module, optimizer = build(name, "none")
        train(module, optimizer, range(STEPS), "none", micro_batches=1)
        one_backward = whole(model)
        model, module, optimizer = build(name, parallel)
        with counting_gathers() as gathers, counting_all_reduces() as all_reduces:
            train(module, optimizer, range(STEPS), parallel)
        results[name] = {"error": relative_error(whole(model), oracle),
                         "error_one_backward": relative_error(whole(model), one_backward),
                         "same_state": same_on_every_rank(state_digest(optimizer)),
                         "same_plain_state": same_on_every_rank(state_digest(optimizer, plain_only=True)),
                         "gathers": gathers[0], "all_reduces": all_reduces[0],
                         "layout": state_layout(model, optimizer)}
    return results


@contextlib.contextmanager
def counting_gathers():
    """``[n]``: how many times ``DTensor.full_tensor`` (the gathered step's all-gather of a whole
    tensor) ran inside the block (calls from the optimizer's step only: the test's own gathers
    come after it)."""
    from torch.distributed.tensor import DTensor

    count, original = [0], DTensor.full_tensor

    def full_tensor(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    DTensor.full_tensor = full_tensor
    try:
        yield count
    finally:
        DTensor.full_tensor = original


@contextlib.contextmanager
def counting_all_reduces():
    """``[n]``: how many ``torch.distributed.all_reduce`` calls ran inside the block (the guard's and
    the partial sums'; FSDP2's own collectives are reduce-scatters and all-gathers)."""
    count, original = [0], dist.all_reduce

    def all_reduce(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    dist.all_reduce = all_reduce
    try:
        yield count
    finally:
        dist.all_reduce = original


def state_layout(model, optimizer) -> dict[str, str]:
    """Per parameter: "sharded" when every state tensor with entries is a DTensor on the parameter's
    mesh, cut where the parameter is (the local part of its sharded dimension as long as the
    parameter's local rows), "plain" when every one is a plain tensor, "mixed" when both (RACS's
    ``q`` per sharded row and ``s`` per whole column), "wrongly sharded" for any other DTensor."""
    layout = {}
    for name, p in model.named_parameters():
        kinds = set()
        for value in optimizer.state[p].values():
            if not isinstance(value, torch.Tensor) or not value.ndim:
                continue
            kinds.add(("sharded" if cut_as(value, p) else "wrongly sharded") if hasattr(value, "to_local")
                      else "plain")
        if "wrongly sharded" in kinds:
            layout[name] = "wrongly sharded"
        else:
            layout[name] = kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "none"
    return layout


def cut_as(value, p) -> bool:
    """Whether the DTensor ``value`` is on ``p``'s mesh, sharded on one dimension whose whole length
    is ``p``'s rows and whose local part is as long as ``p``'s local part (``p`` is ``Shard(0)``)."""
    shards = [pl.dim for pl in value.placements if pl.is_shard()]
    if value.device_mesh != p.device_mesh or len(set(shards)) != 1:
        return False
    return value.shape[shards[0]] == p.shape[0] and value.to_local().shape[shards[0]] == p.to_local().shape[0]


def nonfinite_on_one_rank(parallel: str, folder: Path) -> dict:
    """Per optimizer: a NaN written into rank 1's shard of ``up.weight``'s reduced gradient at
    step ``POISON_STEP``, against one process with the NaN in the same entry of the whole gradient."""
    def poisoner(model, row: int):
        def poison(step):
            grad = model.up.weight.grad
            if step != POISON_STEP:
                return
            if hasattr(grad, "to_local"):
                if dist.get_rank() == 1:
                    grad.to_local()[0, 0] = float("nan")
            else:
                grad[row, 0] = float("nan")
        return poison

    results = {}
    first_row_of_rank_1 = -(-5 // 2)  # Shard(0) splits 5 rows as torch.chunk does: 3 + 2
    for name in CASES:
        model, module, optimizer = build(name, "none")
        train(module, optimizer, range(STEPS), "none", poisoner(model, first_row_of_rank_1))
        oracle, oracle_skips = whole(model), optimizer.nonfinite_skips
        model, module, optimizer = build(name, parallel)
        train(module, optimizer, range(STEPS), parallel, poisoner(model, first_row_of_rank_1))
        skips = optimizer.nonfinite_skips
        results[name] = {"error": relative_error(whole(model), oracle), "oracle_skips": oracle_skips,
                         "skips": skips, "same_skips": same_on_every_rank(skips),
                         "same_state": same_on_every_rank(state_digest(optimizer))}
    return results


def checkpoint_resume(parallel: str, folder: Path) -> dict:
    """Per optimizer: a straight FSDP2 run against one saved at step ``SAVE_STEP`` with
    ``torch.distributed.checkpoint`` and resumed into a freshly built model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    results = {}
    for name in CASES:
        model, module, optimizer = build(name, parallel)
        train(module, optimizer, range(STEPS), parallel)
        straight, straight_state = whole(model), state_digest(optimizer)

        model, module, optimizer = build(name, parallel)
        train(module, optimizer, range(SAVE_STEP), parallel)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder / name)
        metadata = dcp.FileSystemReader(folder / name).read_metadata().state_dict_metadata
        # the state tensors saved in one chunk per rank (sharded), not once (replicated)
        chunked = sorted(key.removeprefix("optimizer.state.") for key, entry in metadata.items()
                         if key.startswith("optimizer.state.") and len(getattr(entry, "chunks", ())) > 1)

        model, module, optimizer = build(name, parallel, seed=1)  # other weights, another switch seed
        fresh = whole(model)
        model_state, optimizer_state = get_state_dict(model, optimizer)  # torch's zero-gradient lr=0 step
        init_step_kept_weights = all(torch.equal(a, b) for a, b in zip(whole(model).values(), fresh.values()))
        loaded = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(loaded, checkpoint_id=folder / name)
        set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
        train(module, optimizer, range(SAVE_STEP, STEPS), parallel)
        resumed = whole(model)
        results[name] = {"exact": all(torch.equal(resumed[k], straight[k]) for k in straight),
                         "same_state": state_digest(optimizer) == straight_state,
                         "init_step_kept_weights": init_step_kept_weights, "chunked": chunked}
    return results


def compiled(parallel: str, folder: Path) -> dict:
    """Per optimizer (RACS, Alice): ``torch.compile`` of a function calling ``step()`` against the
    eager step, and whether ``traceable_step=True`` is refused with a ``ValueError``."""
    results = {}
    for name in ("racs", "alice"):
        model, module, optimizer = build(name, parallel)
        train(module, optimizer, range(STEPS), parallel)
        eager = whole(model)
        model, module, optimizer = build(name, parallel)
        optimizer.step = torch.compile(optimizer.step)
        train(module, optimizer, range(STEPS), parallel)
        same = all(torch.equal(a, b) for a, b in zip(whole(model).values(), eager.values()))
        model, module, optimizer = build(name, parallel)
        optimizer.traceable_step = True
        try:
            train(module, optimizer, range(1), parallel)
            refused = False
        except ValueError as exc:
            refused = "DTensor" in str(exc)
        results[name] = {"same": same, "refused": refused}
    return results


SCENARIOS = {"equivalence": equivalence, "nonfinite": nonfinite_on_one_rank, "checkpoint": checkpoint_resume,
             "compiled": compiled}


def _worker(rank: int, world: int, port: int, scenario: str, parallel: str, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the skip warnings of the non-finite scenario
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = SCENARIOS[scenario](parallel, Path(folder))
        if rank == 0:
            torch.save(results, Path(folder) / "results.pt")
        # No rank tears gloo down while the other still uses it (a SIGABRT seen once under load).
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Done, and the results are saved: leave without the interpreter's teardown, where a gloo
    # worker thread still holding a tensor aborted the process now and then under load
    # ("terminate called without an active exception", SIGABRT; pytorch/pytorch#179291)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def on_two_ranks(scenario: str, parallel: str, folder: Path) -> dict:
    mp.start_processes(_worker, args=(2, free_port(), scenario, parallel, str(folder)), nprocs=2,
                       start_method="spawn")
    return torch.load(folder / "results.pt")


# ------------------------------------------------------------------------------------ tests
def test_every_registered_optimizer_is_covered():
    assert len(NAMES) == 15


@pytest.mark.parametrize("parallel", ["fsdp2", "ddp"])
def test_every_optimizer_on_two_ranks_gives_the_single_process_weights(parallel, tmp_path):
    results = on_two_ranks("equivalence", parallel, tmp_path)
    print({name: f"{r['error']:.1e} ({r['error_one_backward']:.1e})" for name, r in results.items()})
    assert sorted(results) == sorted([*CASES, GATHERED])
    assert {name: r["error"] for name, r in results.items() if not r["error"] <= TOLERANCE} == {}
    assert [name for name, r in results.items() if not (r["same_state"] and r["same_plain_state"])] == []
    if parallel == "fsdp2":  # element-wise steps on local shards (bit for bit), the gathered ones
        # bit for bit; partial sums (RACS, Adafactor) within rounding
        exact = [name for name in results if name not in ON_SHARDS[1:]]
        assert {name: results[name]["error"] for name in exact} == dict.fromkeys(exact, 0.0)
        cases = [*CASES, GATHERED]
        assert {name: r["gathers"] for name, r in results.items()} == {name: expected_gathers(name) for name in cases}
        assert {name: r["layout"] for name, r in results.items()} == {name: expected_layout(name) for name in cases}
        # beyond the guard's (all Adam makes): RACS 8 per matrix and step (the maximum of G*G, a sum
        # per fixed-point iteration, the floor's mean, the limiter's norm); Adafactor 4 per matrix (column
        # sums, their trace, two RMS) and 3 per vector (its row sum; the trace is local)
        partial = {name: results[name]["all_reduces"] - results["adam"]["all_reduces"] for name in ON_SHARDS[1:]}
        assert partial == {"racs": STEPS * 8 * len(MATRICES),
                           "adafactor": STEPS * (4 * len(MATRICES) + 3 * len(VECTORS))}


MATRICES = ("up.weight", "down.weight", "head.weight")
VECTORS = ("up.bias", "norm.weight", "norm.bias", "head.bias")


#: the optimizers whose every step runs on the local shard: element-wise (fimkit's Adam) or with
#: their row and column statistics completed by partial sums across the shards
ON_SHARDS = ("adam", "racs", "adafactor")


def expected_gathers(name: str) -> int:
    """All-gathers of a whole tensor in ``STEPS`` steps: G and W of every tensor a step gathers;
    none for the steps on shards (fimkit's Adam, RACS, Adafactor, the built-in Adam of a
    matrix-only optimizer's vectors, torch's Adam of the routed case's vectors)."""
    if name in ON_SHARDS:
        return 0
    if name == GATHERED:
        return 2 * STEPS * len(MATRICES + VECTORS)
    gathered = MATRICES if name == ROUTED or registered()[name].matrix_only else MATRICES + VECTORS
    return 2 * STEPS * len(gathered)


def expected_layout(name: str) -> dict[str, str]:
    """Per parameter, what ``state_layout`` finds: sharded state for the element-wise steps, sharded
    per-row and whole per-column state for the partial-sum steps (RACS, Adafactor: "mixed"),
    plain (whole, the same on every rank) for the gathered ones."""
    if name == GATHERED:
        return dict.fromkeys(MATRICES + VECTORS, "plain")
    if name == "adam" or name == ROUTED:
        return {**dict.fromkeys(VECTORS, "sharded"), **dict.fromkeys(MATRICES, "sharded" if name == "adam" else "plain")}
    cls = registered()[name]
    stateless = name in ("swan", "sinkgd")  # their matrices keep no per-entry state
    matrices = "mixed" if name in ON_SHARDS else "none" if stateless else "plain"
    vectors = "sharded" if cls.matrix_only else "mixed" if name in ON_SHARDS else "plain"
    return {**dict.fromkeys(VECTORS, vectors), **dict.fromkeys(MATRICES, matrices)}


def test_a_nan_in_one_ranks_shard_makes_every_rank_skip_that_step(tmp_path):
    results = on_two_ranks("nonfinite", "fsdp2", tmp_path)
    assert sorted(results) == sorted(CASES)
    for name, r in results.items():
        assert r["oracle_skips"] == 1 and r["skips"] == 1 and r["same_skips"], (name, r)
        assert r["error"] <= TOLERANCE and r["same_state"], (name, r)


def test_an_fsdp2_checkpoint_resumes_every_optimizer_exactly(tmp_path):
    results = on_two_ranks("checkpoint", "fsdp2", tmp_path)
    assert sorted(results) == sorted(CASES)
    assert [name for name, r in results.items() if not all(v for k, v in r.items() if k != "chunked")] == []
    # sharded state is saved sharded (a chunk per rank), the gathered steps' state once
    assert {name: r["chunked"] for name, r in results.items()} == {name: expected_chunked(name) for name in CASES}


def expected_chunked(name: str) -> list[str]:
    if name == "adam":
        return sorted(f"{p}.{key}" for p in MATRICES + VECTORS for key in ("exp_avg", "fisher_d"))
    if name == "racs":  # q per row of the wide matrices, s per row of the tall one (transposed)
        return sorted(["up.weight.q", "head.weight.q", "down.weight.s",
                       *(f"{p}.{key}" for p in VECTORS for key in ("exp_avg", "exp_avg_sq"))])
    if name == "adafactor":  # the statistic along the rows (a vector's entries are its columns)
        return sorted([*(f"{p}.fisher_rows" for p in MATRICES), *(f"{p}.fisher_cols" for p in VECTORS)])
    if name == ROUTED or registered()[name].matrix_only:  # their vectors' (built-in or torch's) Adam
        return sorted(f"{p}.{key}" for p in VECTORS for key in ("exp_avg", "exp_avg_sq"))
    return []


@pytest.mark.slow  # torch.compile: half a minute on 2 cores
def test_a_compiled_step_over_dtensors_runs_the_eager_step_and_traceable_step_is_refused(tmp_path):
    results = on_two_ranks("compiled", "fsdp2", tmp_path)
    assert results == {name: {"same": True, "refused": True} for name in ("racs", "alice")}
