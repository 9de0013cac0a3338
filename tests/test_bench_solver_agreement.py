"""``benchmarks.solver_agreement``: the diagnostic reports the gaps it claims to."""

from benchmarks.solver_agreement import agreement, short_name
from fimkit.structures import Diagonal, EigenvalueCorrected, Full, Identity, Kronecker


def test_closed_form_diagonal_agrees_with_the_generic_solver():
    worst = agreement(Diagonal(), seeds=(0,))
    assert worst["solver"] == "closed form" and not worst["generic_better"]
    assert worst["objective"] < 1e-12 and worst["matrix"] < 1e-6


def test_structures_get_short_names():
    assert short_name(EigenvalueCorrected(Kronecker(Full(), Identity()))) == "EigenvalueCorrected(Kronecker(Full, Identity))"
