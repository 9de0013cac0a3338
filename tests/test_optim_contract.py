"""The contract every optimizer in ``fimkit.optim`` keeps (one suite, parametrised over the
registry, so an optimizer is covered the day it is registered)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from fimkit.optim import registered

OPTIMIZERS = sorted(registered())
#: refresh periods shortened so that checkpoints fall between refreshes
PERIOD_NAMES = ("precondition_frequency", "update_interval")
#: optimizers that keep no state for a matrix: the state halves of the tests below hold trivially
#: for their matrices (their vectors have the built-in Adam's state)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ranks clipped on a 6 x 10 matrix
    STATELESS = [n for n in OPTIMIZERS if not registered()[n].state_shapes(6, 10)]


def _make(name, params, **overrides):
    cls = registered()[name]
    defaults = cls.default_hyperparameters()
    hparams = {k: 3 for k in PERIOD_NAMES if k in defaults}
    if "rank" in defaults:
        hparams["rank"] = 2
    if "leading" in defaults:
        hparams["leading"] = 1
    hparams.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a rank clipped on tiny test matrices
        return cls(params, **hparams)


class Problem:
    """A strictly convex least-squares problem on a wide and a tall matrix and a vector (which a
    matrix-only optimizer steps with its built-in Adam): ``sum_W mean((X_W W - Y_W)^2)``, targets
    of entry scale ``scale``, parameters from zero (or, with ``start``, from random entries of that
    scale)."""

    def __init__(self, name, dtype=torch.float32, seed=0, scale=0.5, start=0.0):
        gen = torch.Generator().manual_seed(seed)
        shapes = [(6, 10), (10, 6), (10,)]
        self.params, self.data = [], []
        for shape in shapes:
            rows = shape[0]
            x = torch.randn(32, rows, generator=gen)
            target = torch.randn(shape, generator=gen) * scale
            self.data.append((x, x @ target if len(shape) == 2 else x * target))
            initial = torch.randn(shape, generator=gen) * start if start else torch.zeros(shape)
            self.params.append(initial.to(dtype).requires_grad_())

    def loss(self):
        total = 0.0
        for p, (x, y) in zip(self.params, self.data):
            pred = x @ p.float() if p.ndim == 2 else x * p.float()
            total = total + (pred - y).square().mean()
        return total

    def backward(self):
        for p in self.params:
            p.grad = None
        loss = self.loss()
        loss.backward()
        return loss.detach()


def _run(problem, optimizer, steps):
    for _ in range(steps):
        problem.backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_converges_on_a_convex_problem_at_its_default_lr_and_stays_finite_at_larger_ones(name):
    """At entry scale 0.01, where the paper defaults' step sizes (about 1e-3 per entry) apply:
    the default lr at least halves the loss in 250 steps (SWAN's fixed-size steps stall near a
    quarter of it), every lr up to 100x the default stays finite, and one of them converges."""
    make = lambda: Problem(name, scale=0.01, start=0.01)  # noqa: E731
    initial = make().loss().item()
    finals = []
    base_lr = registered()[name].default_hyperparameters()["lr"]
    for scale in (1.0, 10.0, 100.0):
        problem = make()
        opt = _make(name, problem.params, lr=base_lr * scale)
        _run(problem, opt, 250)
        finals.append(problem.loss().item())
    assert all(math.isfinite(f) for f in finals), f"final losses {finals}"
    assert finals[0] < 0.5 * initial, f"default lr: final loss {finals[0]} vs initial {initial}"
    assert min(finals) < 0.3 * initial, f"final losses {finals} vs initial {initial}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_then_continuing_is_bit_exact(name):
    """For the STATELESS optimizers only the continued parameters are compared."""
    problem = Problem(name)
    opt = _make(name, problem.params)
    _run(problem, opt, 4)
    saved_state = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in problem.params]
    _run(problem, opt, 7)

    resumed = Problem(name)
    with torch.no_grad():
        for p, saved in zip(resumed.params, saved_params):
            p.copy_(saved)
    opt2 = _make(name, resumed.params)
    opt2.load_state_dict(saved_state)
    _run(resumed, opt2, 7)
    for a, b in zip(problem.params, resumed.params):
        assert torch.equal(a, b)
    for p, q in zip(problem.params, resumed.params):
        assert bool(opt.state[p]) == (name not in STATELESS or p.ndim != 2)  # a vector: Adam's state
        for key, value in opt.state[p].items():
            assert torch.equal(value, opt2.state[q][key]), key


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in STATELESS])
def test_state_is_tensors_only(name):
    problem = Problem(name)
    opt = _make(name, problem.params)
    _run(problem, opt, 2)
    for p in problem.params:
        assert opt.state[p] and all(isinstance(v, torch.Tensor) for v in opt.state[p].values())
    assert all(isinstance(v, torch.Tensor) for s in opt.state_dict()["state"].values() for v in s.values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lr_scheduler_controls_the_step(name):
    problem = Problem(name)
    opt = _make(name, problem.params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch == 0 else 0.0)
    _run(problem, opt, 1)
    scheduler.step()
    after_first = [p.detach().clone() for p in problem.params]
    assert not all(torch.equal(a, torch.zeros_like(a)) for a in after_first)
    _run(problem, opt, 1)
    for before, p in zip(after_first, problem.params):
        assert torch.equal(before, p)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_with_closure_returns_its_loss_and_calls_it_once(name):
    problem = Problem(name)
    opt = _make(name, problem.params)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = problem.loss()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1 and torch.is_tensor(loss)
    assert any(p.abs().sum() > 0 for p in problem.params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_param_groups_use_their_own_lr(name):
    problem = Problem(name)
    frozen, moving = problem.params[0], problem.params[1:]
    opt = _make(name, [{"params": [frozen], "lr": 0.0}, {"params": moving}])
    _run(problem, opt, 3)
    assert torch.equal(frozen, torch.zeros_like(frozen))
    assert all(p.abs().sum() > 0 for p in moving)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_without_gradient_are_skipped(name):
    problem = Problem(name)
    idle = torch.zeros(6, 10, requires_grad=True)
    opt = _make(name, problem.params + [idle])
    _run(problem, opt, 2)
    assert torch.equal(idle, torch.zeros_like(idle))
    assert not opt.state[idle]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_parameters_are_updated_with_float32_state(name):
    problem = Problem(name, dtype=torch.bfloat16)
    opt = _make(name, problem.params)
    _run(problem, opt, 5)
    for p in problem.params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all() and p.abs().sum() > 0
        floating = [v for k, v in opt.state[p].items() if v.is_floating_point() and k != "step"]
        assert bool(floating) == (name not in STATELESS or p.ndim != 2)  # stateless: the parameters only
        assert all(v.dtype == torch.float32 for v in floating)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_all_zero_gradient_gives_no_nan(name):
    problem = Problem(name)
    opt = _make(name, problem.params)
    for _ in range(3):
        for p in problem.params:
            p.grad = torch.zeros_like(p)
        opt.step()
    for p in problem.params:
        assert torch.isfinite(p).all()
        assert all(torch.isfinite(v).all() for v in opt.state[p].values() if v.is_floating_point())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_non_finite_gradient_leaves_parameter_and_state_untouched(name):
    problem = Problem(name)
    opt = _make(name, problem.params)
    _run(problem, opt, 2)
    params_before = [p.detach().clone() for p in problem.params]
    state_before = copy.deepcopy({i: opt.state[p] for i, p in enumerate(problem.params)})
    problem.backward()
    problem.params[0].grad[0, 0] = float("nan")
    problem.params[1].grad[1, 1] = float("inf")
    problem.params[2].grad[3] = float("-inf")  # the vector: the built-in Adam is guarded too
    with pytest.warns(UserWarning, match="non-finite"):
        opt.step()
    for i, (p, before) in enumerate(zip(problem.params, params_before)):
        assert torch.equal(p, before)
        assert bool(state_before[i]) == (name not in STATELESS or p.ndim != 2)  # stateless: the parameters only
        for key, value in state_before[i].items():
            assert torch.equal(opt.state[p][key], value)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sparse_gradient_is_rejected_naming_the_parameter(name):
    weight = torch.zeros(6, 10, requires_grad=True)
    opt = _make(name, [{"params": [weight], "param_names": ["encoder.weight"]}])
    weight.grad = torch.zeros(6, 10).to_sparse()
    with pytest.raises(ValueError, match="encoder.weight.*sparse"):
        opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_complex_parameter_is_rejected_naming_the_parameter(name):
    weight = torch.zeros(6, 10, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match="rotary.weight.*complex"):
        _make(name, [{"params": [weight], "param_names": ["rotary.weight"]}])


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if getattr(registered()[n], "matrix_only", True)])
def test_matrix_only_optimizer_with_non_matrix_raise_rejects_a_vector_naming_it(name):
    bias = torch.zeros(10, requires_grad=True)
    with pytest.raises(ValueError, match="norm.bias.*not a matrix"):
        _make(name, [{"params": [bias], "param_names": ["norm.bias"]}], non_matrix="raise")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_any_model_parameters_are_accepted_and_every_tensor_moves(name):
    """A bias, a norm's gain, a scalar and a convolution kernel beside the matrices (issue 12)."""
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 8),
                                torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    temperature = torch.nn.Parameter(torch.tensor(1.0))
    params = list(model.parameters()) + [temperature]
    opt = _make(name, params)
    before = [p.detach().clone() for p in params]
    for _ in range(2):
        opt.zero_grad()
        (model(torch.randn(5, 2, 6)) * temperature).square().mean().backward()
        opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(params, before))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_unknown_hyperparameter_is_rejected_listing_the_valid_ones(name):
    with pytest.raises(TypeError, match="valid"):
        _make(name, [torch.zeros(6, 10, requires_grad=True)], learning_rate=0.1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_and_every_step_stay_on_the_parameters_device(name):
    """Stands in for CUDA on a CPU machine: a tensor a step creates on the CPU meets the meta
    parameter and raises, as it would on a GPU (0-d CPU tensors are allowed by both). For the
    STATELESS optimizers only the steps themselves are checked."""
    shapes = [(6, 10), (10, 6), (10,)]
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]
    optimizer = _make(name, params, on_nonfinite="ignore")  # the finite check reads values
    for _ in range(4):  # past a refresh of the basis / preconditioner (period 3)
        for p in params:
            p.grad = torch.empty(p.shape, device="meta")
        optimizer.step()
    for p in params:
        misplaced = {k: v.device for k, v in optimizer.state[p].items()
                     if v.is_floating_point() and k != "step" and v.device != p.device}
        assert not misplaced, misplaced
