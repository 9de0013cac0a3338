"""add_param_group on build_optimizer's result routes each new tensor by the rules that built
it (issue 12 item 2): the new parameter really moves, as the child's class alone would move it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fimkit


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3))


def new_parameter(*shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return nn.Parameter(torch.randn(*shape, generator=gen))


def step_with_grads(optimizer, tensors, steps=3, seed=2):
    gen = torch.Generator().manual_seed(seed)
    grads = [[torch.randn(t.shape, generator=gen) for t in tensors] for _ in range(steps)]
    for step in grads:
        for t, g in zip(tensors, step):
            t.grad = g.clone()
        optimizer.step()
    return grads


def stepped_alone(optimizer_class, start, grads, **hparams):
    p = nn.Parameter(start.detach().clone())
    optimizer = optimizer_class([p], **hparams)
    for (g,) in grads:
        p.grad = g.clone()
        optimizer.step()
    return p


def group_of(optimizer, tensor):
    return next(g for g in optimizer.param_groups if any(p is tensor for p in g["params"]))


def test_a_new_matrix_goes_to_the_structured_optimizer_and_moves_as_that_class_alone():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    w = new_parameter(5, 7)
    start = w.detach().clone()
    optimizer.add_param_group({"params": [w]})
    assert group_of(optimizer, w)["optimizer"] == "racs"
    grads = step_with_grads(optimizer, [w])
    assert torch.equal(w, stepped_alone(fimkit.optim.RACS, start, grads, lr=0.01))


def test_a_new_vector_goes_to_adam_and_moves_as_torch_adam_alone():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    b = new_parameter(6)
    start = b.detach().clone()
    optimizer.add_param_group({"params": b})
    assert group_of(optimizer, b)["optimizer"] == "adam"
    grads = step_with_grads(optimizer, [b])
    assert torch.equal(b, stepped_alone(torch.optim.Adam, start, grads, lr=0.01, foreach=True))


def test_a_group_naming_an_optimizer_goes_to_that_child():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01, adam_lr=0.003)
    w = new_parameter(5, 7)  # an embedding, say: a matrix that Adam should train
    start = w.detach().clone()
    optimizer.add_param_group({"params": [w], "optimizer": "adam"})
    assert group_of(optimizer, w)["optimizer"] == "adam"
    grads = step_with_grads(optimizer, [w])
    assert torch.equal(w, stepped_alone(torch.optim.Adam, start, grads, lr=0.003, foreach=True))


def test_a_mixed_group_is_split_by_the_routing_rules_and_keeps_its_own_hyperparameters():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    w, b = new_parameter(5, 7), new_parameter(7, seed=3)
    count = len(optimizer.param_groups)
    optimizer.add_param_group({"params": [w, b], "lr": 0.5})
    assert len(optimizer.param_groups) == count + 2
    assert group_of(optimizer, w)["optimizer"] == "racs" and group_of(optimizer, b)["optimizer"] == "adam"
    assert group_of(optimizer, w)["lr"] == group_of(optimizer, b)["lr"] == 0.5


def test_a_new_group_takes_the_routes_hyperparameters_not_the_class_defaults():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01, alpha=0.1, adam_lr=0.003)
    w, b = new_parameter(5, 7), new_parameter(7)
    optimizer.add_param_group({"params": [w, b]})
    assert group_of(optimizer, w)["lr"] == 0.01 and group_of(optimizer, w)["alpha"] == 0.1
    assert group_of(optimizer, b)["lr"] == 0.003 and group_of(optimizer, b)["betas"] == (0.9, 0.999)


def test_names_come_from_param_names_or_name_tensor_pairs_or_the_position():
    optimizer = fimkit.build_optimizer(model(), "racs")
    w, v, u = new_parameter(5, 7), new_parameter(4, 4), new_parameter(3, 3)
    optimizer.add_param_group({"params": [w], "param_names": ["extra.weight"]})
    optimizer.add_param_group({"params": [("pair.weight", v)]})
    optimizer.add_param_group({"params": [u]})
    assert group_of(optimizer, w)["param_names"] == ["extra.weight"]
    assert group_of(optimizer, v)["param_names"] == ["pair.weight"]
    assert group_of(optimizer, u)["param_names"] == ["added.8"]  # 6 model tensors, then w and v


def test_the_children_step_the_new_groups():
    optimizer = fimkit.build_optimizer(model(), "racs")
    optimizer.add_param_group({"params": [new_parameter(5, 7), new_parameter(7)]})
    assert sum(len(c.param_groups) for c in optimizer.children.values()) == len(optimizer.param_groups) == 4
    assert optimizer.children["racs"].param_groups[-1] is optimizer.param_groups[-2]


def test_a_scheduler_created_afterwards_schedules_the_new_group():
    optimizer = fimkit.build_optimizer(model(), "racs", lr=0.01)
    w = new_parameter(5, 7)
    optimizer.add_param_group({"params": [w]})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    optimizer.step()
    scheduler.step()
    assert group_of(optimizer, w)["lr"] == pytest.approx(0.005)


def test_a_new_kernel_follows_the_conv_setting():
    kernel = new_parameter(3, 2, 3)
    by_adam = fimkit.build_optimizer(model(), "racs")
    by_adam.add_param_group({"params": [kernel]})
    assert group_of(by_adam, kernel)["optimizer"] == "adam"
    as_matrix = fimkit.build_optimizer(model(), "racs", conv="matrix")
    as_matrix.add_param_group({"params": [kernel]})
    assert group_of(as_matrix, kernel)["optimizer"] == "racs"
    start = kernel.detach().clone()
    grads = step_with_grads(as_matrix, [kernel])
    expected = stepped_alone(fimkit.optim.RACS, start.reshape(3, 6), [(g.reshape(3, 6),) for (g,) in grads])
    assert torch.equal(kernel.detach().reshape(3, 6), expected.detach())


def test_an_unknown_optimizer_name_is_an_error_naming_the_children():
    optimizer = fimkit.build_optimizer(model(), "racs")
    with pytest.raises(ValueError, match=r"optimizer='soap' is not one of .*\['adam', 'racs'\]"):
        optimizer.add_param_group({"params": [new_parameter(3, 3)], "optimizer": "soap"})


def test_a_tensor_already_in_the_optimizer_is_an_error_naming_it():
    net = model()
    optimizer = fimkit.build_optimizer(net, "racs")
    with pytest.raises(ValueError, match=r"'again' \(shape \(6,\)\) is already in this optimizer"):
        optimizer.add_param_group({"params": [net[1].weight], "param_names": ["again"]})


def test_a_misspelt_hyperparameter_is_an_error_with_a_suggestion():
    optimizer = fimkit.build_optimizer(model(), "racs")
    with pytest.raises(TypeError, match="did you mean 'alpha'"):
        optimizer.add_param_group({"params": [new_parameter(3, 3)], "alpah": 0.1})


def test_a_refused_part_leaves_the_optimizer_as_it_was():
    optimizer = fimkit.build_optimizer(model(), "racs")
    before = [list(map(id, g["params"])) for g in optimizer.param_groups]
    non_leaf = new_parameter(7) * 2  # torch's Adam refuses it, after the matrix went to RACS
    with pytest.raises(ValueError, match="non-leaf"):
        optimizer.add_param_group({"params": [new_parameter(3, 3), non_leaf]})
    assert [list(map(id, g["params"])) for g in optimizer.param_groups] == before
    assert sum(len(c.param_groups) for c in optimizer.children.values()) == len(before)


def test_gradient_release_refuses_add_param_group_and_says_what_to_do():
    optimizer = fimkit.build_optimizer(model(), "racs", gradient_release=True)
    with pytest.raises(ValueError, match="gradient_release=True.*build it again"):
        optimizer.add_param_group({"params": [new_parameter(3, 3)]})


def test_a_checkpoint_after_add_param_group_resumes_into_one_given_the_same_group():
    optimizer = fimkit.build_optimizer(model(), "racs")
    w = new_parameter(5, 7)
    optimizer.add_param_group({"params": [w]})
    step_with_grads(optimizer, [w], steps=2)
    saved = optimizer.state_dict()
    resumed = fimkit.build_optimizer(model(), "racs")
    w2 = nn.Parameter(w.detach().clone())
    resumed.add_param_group({"params": [w2]})
    resumed.load_state_dict(saved)
    step_with_grads(optimizer, [w], steps=2, seed=5)
    step_with_grads(resumed, [w2], steps=2, seed=5)
    assert torch.equal(w, w2)


def test_a_tensor_the_child_refuses_leaves_the_child_as_it_was():
    optimizer = fimkit.build_optimizer(model(), "racs")
    racs = optimizer.children["racs"]
    with pytest.raises(ValueError, match="complex"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(3, 3, dtype=torch.complex64))]})
    assert len(racs.param_groups) == 1 and racs.param_groups[0] is optimizer.param_groups[0]


def test_a_group_with_a_matrix_and_a_kernel_gives_each_its_own_route():
    optimizer = fimkit.build_optimizer(model(), "racs", conv="matrix")
    w, kernel = new_parameter(5, 7), new_parameter(3, 2, 3)
    optimizer.add_param_group({"params": [w, kernel]})
    assert group_of(optimizer, w) is not group_of(optimizer, kernel)
    assert group_of(optimizer, kernel)["optimizer"] == "racs"
    assert group_of(optimizer, kernel).get("non_matrix", "flatten") == "flatten"
