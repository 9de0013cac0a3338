"""``fimkit optimizers`` prints, for every registered optimizer, the declaration that builds it:
each printed expression, evaluated, steps exactly like the registered class (issue 9)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import fimkit
from fimkit.catalog import names
from fimkit.cli import main
from fimkit.optim import registered
from test_trajectory_fingerprints import LIBRARY, LOW_RANK, gradients

#: a switch / refresh inside the steps, rank below the short side
SMALL = {"update_interval": 3, "seed": 0, "precondition_frequency": 3, "rank": 2, "leading": 1}


def printed_declarations(capsys) -> dict[str, str]:
    assert main(["optimizers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: following.strip() for line, following in zip(lines, lines[1:])
            if line and not line.startswith((" ", "#"))}


def _steps(cls, shape, **hparams):
    hparams = {k: v for k, v in hparams.items() if k in cls.default_hyperparameters()}
    param = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = cls([param], **hparams)
        for grad in gradients(shape, torch.float64)[:10]:
            param.grad = grad
            optimizer.step()
    return param.detach(), optimizer.state[param]


def test_every_frobenius_fit_is_a_derive_call_and_apollo_a_recipe(capsys):
    declarations = printed_declarations(capsys)
    assert set(LIBRARY) <= set(declarations)
    for name in LIBRARY:
        kind = "recipe(" if name in ("apollo", "apollo_mini") else "derive("
        assert declarations[name].startswith(kind), (name, declarations[name])


@pytest.mark.parametrize("name", LIBRARY)
def test_printed_declaration_steps_identically_to_the_registered_optimizer(capsys, name):
    registered_class = registered()[name]
    rebuilt = eval(printed_declarations(capsys)[name], names())  # noqa: S307 - our own printed code
    assert rebuilt.default_hyperparameters() == registered_class.default_hyperparameters()
    assert rebuilt.matrix_only == registered_class.matrix_only
    hparams = SMALL if name in LOW_RANK + ("soap", "eigen_adam") else {}
    for shape in ((5, 8), (8, 5)):
        ours, ours_state = _steps(rebuilt, shape, **hparams)
        theirs, theirs_state = _steps(registered_class, shape, **hparams)
        assert torch.equal(ours, theirs)
        assert set(ours_state) == set(theirs_state)
        assert all(torch.equal(ours_state[k], theirs_state[k]) for k in ours_state)


@pytest.mark.parametrize("name", LIBRARY)
def test_signature_lists_every_hyperparameter_with_its_default(name):
    cls = registered()[name]
    signature = inspect.signature(cls)
    defaults = cls.default_hyperparameters()
    assert list(signature.parameters)[0] == "params"
    assert {k: p.default for k, p in signature.parameters.items() if k != "params"} == defaults
    assert next(iter(signature.parameters.values())).kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for k, p in signature.parameters.items() if k != "params")
    assert inspect.signature(cls.__init__).parameters.keys() - {"self"} == signature.parameters.keys()


def test_two_blocks_declaring_one_hyperparameter_with_different_defaults_is_an_error():
    from fimkit.optim.blocks import LearningRate, Scale

    with pytest.raises(TypeError, match="alpha.*different defaults"):
        fimkit.recipe(Scale("alpha", 0.5), Scale("alpha", 2.0), LearningRate())
    resolved = fimkit.recipe(Scale("alpha", 0.5), Scale("alpha", 2.0), LearningRate(), alpha=1.0)
    assert resolved.default_hyperparameters()["alpha"] == 1.0
    agreeing = fimkit.recipe(Scale("alpha", 0.5), Scale("alpha", 0.5), LearningRate())
    assert agreeing.default_hyperparameters()["alpha"] == 0.5


def test_derived_classes_belong_to_the_module_that_declared_them():
    assert fimkit.optim.RACS.__module__ == "fimkit.optim.racs"
    assert fimkit.optim.AliceZero.__module__ == "fimkit.optim.alice0"
    assert fimkit.derive(fimkit.structures.Diagonal()).__module__ == __name__
