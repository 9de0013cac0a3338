"""Every derivation module's symbolic proofs hold and its closed form agrees with fimkit.

These run the same functions as ``python -m derivations.<name>``; a disagreement between the
library and the derivation raises ``DerivationMismatch`` and fails the test.
"""

import pytest

import derivations
from derivations import low_rank, report


@pytest.mark.parametrize("name", derivations.RESULT_MODULES)
def test_symbolic_derivation_holds(name):
    module = derivations.result_module(name)
    steps = report.verify(module.PROOFS, None)
    assert steps and all(isinstance(step, report.Step) for step in steps)


@pytest.mark.parametrize("name", derivations.RESULT_MODULES)
def test_fimkit_agrees_with_the_derivation(name):
    results = derivations.result_module(name).check()
    assert results and all(r.status == "ok" for r in results), [r for r in results if r.status != "ok"]


def test_low_rank_compensation_matches_the_fimkit_structure():
    results = low_rank.library_check()
    assert results and all(r.status == "ok" for r in results)


def test_every_printed_derivation_names_a_runnable_module():
    for derivation in derivations.all_derivations():
        assert derivation.module.startswith("derivations.")
        assert derivation.module.split(".", 1)[1] in derivations.RESULT_MODULES
