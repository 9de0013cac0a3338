"""Matrix-only optimizers step every tensor that is not a matrix with a built-in Adam (issue 12):
it equals ``torch.optim.Adam`` on those tensors, leaves the matrices' trajectory untouched, keeps
its options per param group, follows the schedule, and old checkpoints still load."""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch

import fimkit
from fimkit.optim import RACS, Adafactor, Adam, Muon, registered
from fimkit.optim.builtin_adam import HYPERPARAMETERS

MATRIX_ONLY = sorted(n for n, cls in registered().items() if cls.matrix_only)
#: one of each kind of tensor that is not a matrix: a bias, a norm's gain, a scalar, a conv kernel
NON_MATRIX_SHAPES = ((8,), (12,), (), (3, 2, 3))
STEPS = 6


def _make(name, params, **hparams):
    cls = registered()[name]
    defaults = cls.default_hyperparameters()
    small = {k: v for k, v in {"rank": 2, "leading": 1, "update_interval": 3, "precondition_frequency": 3}.items()
             if k in defaults}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks clipped on small matrices
        return cls(params, **{**small, **hparams})


def _tensors(shapes, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype)) for shape in shapes]


def _gradients(params, steps=STEPS, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)]


def _run(optimizer, params, gradients, scheduler=None):
    for grads in gradients:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_non_matrix_tensors_follow_torch_adam_with_per_group_options(name):
    """Two groups in float64: one at the defaults (Adam at the group's lr), one with its own
    adam_lr, betas, eps and a decoupled adam_weight_decay (AdamW), and a weight_decay meant for
    the matrices that the Adam tensors do not get."""
    matrices = _tensors([(8, 12), (12, 8)], seed=2)
    first, second = _tensors(NON_MATRIX_SHAPES[:2]), _tensors(NON_MATRIX_SHAPES[2:], seed=3)
    overrides = {"lr": 0.02, "weight_decay": 0.3, "adam_lr": 0.003, "adam_betas": (0.8, 0.99), "adam_eps": 1e-6,
                 "adam_weight_decay": 0.1}
    ours = _make(name, [{"params": [matrices[0], *first], "lr": 0.01}, {"params": [matrices[1], *second], **overrides}])
    copies = [torch.nn.Parameter(p.detach().clone()) for p in first + second]
    oracle = torch.optim.AdamW([{"params": copies[:2], "lr": 0.01, "weight_decay": 0.0},
                                {"params": copies[2:], "lr": 0.003, "betas": (0.8, 0.99), "eps": 1e-6,
                                 "weight_decay": 0.1}])
    gradients = _gradients(matrices + first + second)
    _run(ours, matrices + first + second, gradients)
    _run(oracle, copies, [grads[2:] for grads in gradients])
    for p, q in zip(first + second, copies):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(ours.state[p][key], oracle.state[q][key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_matrix_trajectory_is_bit_identical_with_or_without_non_matrix_tensors(name):
    def run(with_others):
        torch.manual_seed(0)  # low-rank optimizers draw switch seeds from the global generator
        matrices = _tensors([(8, 12), (12, 8)], dtype=torch.float32)
        others = _tensors(NON_MATRIX_SHAPES, dtype=torch.float32, seed=4) if with_others else []
        params = [matrices[0], *others, matrices[1]]
        gradients = [a + b for a, b in zip(_gradients(matrices), _gradients(others, seed=5))]
        optimizer = _make(name, params)
        _run(optimizer, matrices + others, gradients)
        return [(m.detach(), optimizer.state[m]) for m in matrices]

    for (a, state_a), (b, state_b) in zip(run(True), run(False)):
        assert torch.equal(a, b)
        assert set(state_a) == set(state_b)
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_adam_lr_follows_the_learning_rate_schedule():
    """``adam_lr`` moves with the group's lr (``adam_lr * lr / initial_lr``), as a group of its own
    would under the same scheduler."""
    schedule = lambda step: min(1.0, (step + 1) / 3) * 0.5 ** step  # noqa: E731 - warmup, then decay
    matrix, bias = _tensors([(8, 12), (8,)])
    ours = Muon([matrix, bias], lr=0.02, adam_lr=0.003)
    copy_ = torch.nn.Parameter(bias.detach().clone())
    oracle = torch.optim.Adam([copy_], lr=0.003)
    gradients = _gradients([matrix, bias])
    _run(ours, [matrix, bias], gradients, torch.optim.lr_scheduler.LambdaLR(ours, schedule))
    _run(oracle, [copy_], [g[1:] for g in gradients], torch.optim.lr_scheduler.LambdaLR(oracle, schedule))
    torch.testing.assert_close(bias, copy_, rtol=0, atol=1e-12)


def test_adam_lr_none_is_the_groups_lr():
    bias, = _tensors([(8,)])
    copy_ = torch.nn.Parameter(bias.detach().clone())
    ours, oracle = RACS([bias], lr=0.05), torch.optim.Adam([copy_], lr=0.05)
    gradients = _gradients([bias])
    _run(ours, [bias], gradients)
    _run(oracle, [copy_], gradients)
    torch.testing.assert_close(bias, copy_, rtol=0, atol=1e-12)


def test_lower_state_dtype_stores_the_moments_in_it_and_computes_in_float32():
    """One step from zero state: the parameter is float32 Adam's (the arithmetic ran in float32)
    and the stored moments are float32 Adam's rounded to bfloat16."""
    bias, = _tensors([(8,)], dtype=torch.float32)
    copy_ = torch.nn.Parameter(bias.detach().clone())
    ours, oracle = RACS([bias], state_dtype=torch.bfloat16), torch.optim.Adam([copy_], lr=0.02)
    gradients = _gradients([bias], steps=1)
    _run(ours, [bias], gradients)
    _run(oracle, [copy_], gradients)
    assert torch.equal(bias, copy_)
    for key in ("exp_avg", "exp_avg_sq"):
        assert ours.state[bias][key].dtype == torch.bfloat16
        assert torch.equal(ours.state[bias][key], oracle.state[copy_][key].to(torch.bfloat16))


def test_bf16_parameter_is_stepped_in_float32_and_rounded_once():
    bias = torch.nn.Parameter(torch.linspace(-1, 1, 8, dtype=torch.bfloat16))
    master = torch.nn.Parameter(bias.detach().float())
    ours, oracle = RACS([bias]), torch.optim.Adam([master], lr=0.02)
    gradients = _gradients([master], steps=1)
    _run(ours, [bias], [[g.to(torch.bfloat16) for g in grads] for grads in gradients])
    _run(oracle, [master], [[g.to(torch.bfloat16).float() for g in grads] for grads in gradients])
    assert torch.equal(bias, master.to(torch.bfloat16))
    assert ours.state[bias]["exp_avg"].dtype == torch.float32


def test_huge_gradients_keep_the_adam_state_finite_and_the_update_scale_free():
    """A gradient of 1e30 squares past float32's range; the state is kept in a power-of-two unit of
    the gradient (fimkit.optim.units), so the state stays finite and the step is Adam's."""
    def run(scale):
        bias = torch.nn.Parameter(torch.zeros(8))
        optimizer = RACS([bias])
        _run(optimizer, [bias], [[g * scale for g in grads] for grads in _gradients([bias])])
        return bias.detach(), optimizer.state[bias]

    (huge, state), (ordinary, _) = run(1e30), run(1.0)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    torch.testing.assert_close(huge, ordinary, rtol=1e-5, atol=0)


def test_nonfinite_gradient_of_a_bias_raises_naming_it_under_on_nonfinite_raise():
    matrix, bias = _tensors([(8, 12), (8,)], dtype=torch.float32)
    optimizer = RACS([{"params": [matrix, bias], "param_names": ["fc.weight", "fc.bias"]}], on_nonfinite="raise")
    matrix.grad, bias.grad = torch.ones(8, 12), torch.full((8,), float("nan"))
    with pytest.raises(FloatingPointError, match="fc.bias"):
        optimizer.step()


def test_flatten_gives_a_conv_kernel_the_matrix_algorithm_of_its_matrix_view():
    kernel, = _tensors([(3, 2, 3)])
    matrix = torch.nn.Parameter(kernel.detach().reshape(3, 6).clone())
    gradients = _gradients([kernel])
    ours, reference = RACS([kernel], non_matrix="flatten"), RACS([matrix])
    _run(ours, [kernel], gradients)
    _run(reference, [matrix], [[g.reshape(3, 6) for g in grads] for grads in gradients])
    assert torch.equal(kernel.detach().reshape(3, 6), matrix.detach())
    assert "exp_avg_sq" not in ours.state[kernel]


def test_flatten_still_gives_vectors_the_builtin_adam():
    bias, = _tensors([(8,)])
    optimizer = RACS([bias], non_matrix="flatten")
    _run(optimizer, [bias], _gradients([bias]))
    assert set(optimizer.state[bias]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("key, value, valid", [
    ("non_matrix", "matrix", "one of 'adam', 'flatten', 'raise'"),
    ("adam_lr", -1.0, "None or a finite number >= 0"),
    ("adam_betas", (0.9, 1.0), "a pair"),
    ("adam_eps", 0.0, "a finite number > 0"),
    ("adam_weight_decay", float("nan"), "a finite number >= 0"),
])
def test_bad_builtin_adam_hyperparameter_is_refused_naming_it(key, value, valid):
    with pytest.raises(ValueError, match=f"RACS: param group 0: {key}=.* is not {valid}"):
        RACS([torch.zeros(4, 4, requires_grad=True)], **{key: value})


@pytest.mark.parametrize("cls", [Adam, Adafactor])
def test_optimizers_that_take_any_tensor_have_no_builtin_adam(cls):
    assert not set(HYPERPARAMETERS) & set(cls.default_hyperparameters())
    with pytest.raises(TypeError, match="adam_lr"):
        cls([torch.zeros(4, requires_grad=True)], adam_lr=0.1)


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_builtin_adam_options_are_in_the_signature_and_the_defaults(name):
    cls = registered()[name]
    assert {k: cls.default_hyperparameters()[k] for k in HYPERPARAMETERS} == HYPERPARAMETERS
    assert set(HYPERPARAMETERS) <= set(inspect.signature(cls).parameters)


def test_predicted_state_of_a_vector_is_the_live_state():
    bias, = _tensors([(8,)], dtype=torch.float32)
    optimizer = Muon([bias])
    _run(optimizer, [bias], _gradients([bias], steps=1))
    live = {k: (tuple(v.shape), v.dtype) for k, v in optimizer.state[bias].items()}
    assert live == {k: tuple(v) for k, v in Muon.param_state_shapes((8,)).items()}


# ------------------------------------------------------------------------- checkpoints
def _without_new_keys(state_dict):
    old = copy.deepcopy(state_dict)
    for group in old["param_groups"]:
        for key in HYPERPARAMETERS:
            del group[key]
    return old


def _model_params():
    return _tensors([(8, 12), (8,), (12,)], dtype=torch.float32)


def test_checkpoint_saved_before_the_builtin_adam_loads_and_resumes_exactly():
    params = _model_params()
    gradients = _gradients(params, steps=7)
    optimizer = RACS(params)
    _run(optimizer, params, gradients[:3])
    old = _without_new_keys(optimizer.state_dict())
    saved = [p.detach().clone() for p in params]
    _run(optimizer, params, gradients[3:])

    resumed = [torch.nn.Parameter(p) for p in saved]
    fresh = RACS(resumed)
    fresh.load_state_dict(old)
    assert {k: fresh.param_groups[0][k] for k in HYPERPARAMETERS} == HYPERPARAMETERS
    assert "non_matrix" not in old["param_groups"][0]  # the caller's dict is left as it was
    _run(fresh, resumed, gradients[3:])
    assert all(torch.equal(a, b) for a, b in zip(params, resumed))


def test_checkpoint_lacking_a_hyperparameter_takes_the_loading_optimizers_value():
    params = _model_params()
    optimizer = RACS(params)
    _run(optimizer, params, _gradients(params, steps=2))
    fresh = RACS(_model_params(), adam_lr=0.5)
    fresh.load_state_dict(_without_new_keys(optimizer.state_dict()))
    assert fresh.param_groups[0]["adam_lr"] == 0.5


def test_group_loaded_by_a_container_without_the_new_keys_gets_the_defaults_at_step():
    """A container that loads groups itself (the routed optimizer loads through torch's
    ``load_state_dict``) can hand a ChainOptimizer a group from an older checkpoint."""
    params = _model_params()
    optimizer = RACS(params)
    for key in HYPERPARAMETERS:
        del optimizer.param_groups[0][key]
    _run(optimizer, params, _gradients(params, steps=1))
    assert {k: optimizer.param_groups[0][k] for k in HYPERPARAMETERS} == HYPERPARAMETERS


def test_routing_still_gives_non_matrix_tensors_to_torch_adam():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    routed = fimkit.build_optimizer(model, "racs")
    assert type(routed.children["adam"]) is torch.optim.Adam
    assert all(p.ndim == 2 for g in routed.children["racs"].param_groups for p in g["params"])
    assert {id(p) for g in routed.children["adam"].param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.ndim != 2}
