"""``fimkit derive``: names, expressions, user structures, LaTeX, errors and memory formulas."""

import pathlib
import sys
import textwrap

import pytest

import fimkit.cli
from derivations.cli import derive_command, fitted_memory, memory_agrees
from derivations import derivation_for
from derivations.resolve import ALIASES, known_names, resolve


def run(capsys, *argv):
    code = derive_command(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_racs_prints_the_fixed_point_and_the_memory_formula(capsys):
    code, out, _ = run(capsys, "racs")
    assert code == 0
    assert "s = P^T q / ||q||^2,  q = P s / ||s||^2" in out
    assert "top singular triple of P = E[G*G]" in out
    assert "memory     : m + n" in out and "agrees with structure.state_numel" in out
    assert "python -m derivations.row_column" in out


def test_latex_output_is_a_description_list(capsys):
    code, out, _ = run(capsys, "whiten_left", "--latex")
    assert code == 0
    assert out.startswith(r"\begin{description}") and out.rstrip().endswith(r"\end{description}")
    assert r"M = \mathbb{E}[G G^\top]/n" in out and "$m^{2}$" in out


def test_unknown_name_is_an_error_that_lists_the_names(capsys):
    code, _, err = run(capsys, "adamw_typo")
    assert code == 2
    assert "unknown structure name 'adamw_typo'" in err
    assert all(name in err for name in ("racs", "shampoo", "whiten_left", "low_rank"))


def test_expression_is_parsed_over_the_structures_namespace(capsys):
    code, out, _ = run(capsys, "Kronecker(Identity(), DiagonalFactor())")
    assert code == 0 and "s = E[colsum(G*G)] / m" in out


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "Kronecker(Full(), Identity()).rows",
                                  "Diagonal(**{})", "open('x')"])
def test_expression_with_code_is_refused(capsys, text):
    code, _, err = run(capsys, text)
    assert code == 2 and "fimkit derive:" in err


def test_list_names_every_alias(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0 and all(name in out for name in ALIASES)


USER_MODULE = """
from dataclasses import dataclass
import torch
from fimkit.structures import ParamSpec, Structure

@dataclass(frozen=True)
class TiedDiagonal(Structure):
    '''F~ = c * diag(vec(W0)) for a fixed pattern: no closed form is declared.'''
    def parameter_spec(self, m, n):
        return {"c": ParamSpec((), "positive")}
    def dense(self, params, m, n):
        return params["c"] * torch.eye(m * n, dtype=params["c"].dtype)

TIED = TiedDiagonal()
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_structures.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_structures"
    sys.modules.pop("my_structures", None)


def test_user_structure_without_closed_form_says_the_generic_solver_applies(capsys, user_module):
    code, out, _ = run(capsys, f"{user_module}:TIED")
    assert code == 0
    assert "only the numerical solver applies" in out and "generic" in out
    assert "memory     : m^2 n^2" in out  # the dense-Fisher fallback state, fitted from state_numel


def test_user_structure_class_path_with_a_derivation(capsys):
    code, out, _ = run(capsys, "derivations.block_whitening:BlockWhitening")
    assert code == 0 and "M_b = E[G_b G_b^T] / |b|" in out and "agrees with structure.state_numel" in out


def test_module_attribute_that_is_not_a_structure_is_an_error(capsys):
    code, _, err = run(capsys, "math:pi")
    assert code == 2 and "not a fimkit Structure" in err


@pytest.mark.parametrize("name", known_names())
def test_memory_formula_agrees_with_state_numel(name):
    structure = resolve(name)
    derivation = derivation_for(structure)
    assert derivation is not None
    assert memory_agrees(structure, derivation.memory(structure).formula)


def test_memory_formula_is_fitted_for_a_user_structure(user_module):
    structure = resolve(f"{user_module}:TIED")
    formula = fitted_memory(structure)
    assert formula is not None and memory_agrees(structure, formula)


def test_derive_is_reachable_through_the_fimkit_command(capsys):
    assert fimkit.cli.main(["derive", "soap"]) == 0
    assert "D = E[(U_rows^T G U_cols)^2]" in capsys.readouterr().out


def test_fimkit_never_imports_derivations():
    root = pathlib.Path(fimkit.cli.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py")
                 if "import derivations" in p.read_text() or "from derivations" in p.read_text()]
    assert offenders == []
