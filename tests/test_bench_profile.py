"""`python -m benchmarks.profile`: the split of a step into products, passes and the rest."""

from __future__ import annotations

import pytest

from benchmarks.profile import CATEGORIES, format_profiles, kernel_category, profile_candidate
from benchmarks.step_time import fimkit_candidate, torch_adam

SHAPES = [(32, 48), (48, 32), (32, 32)]


def test_kernel_category_tells_products_factorisations_passes_and_small_kernels_apart():
    assert kernel_category("aten::addmv", [[32, 48]], 1000) == "products"
    assert kernel_category("aten::_linalg_eigh", [[32, 32]], 1000) == "factorisations"
    assert kernel_category("aten::mul", [[32, 48], []], 1000) == "passes over matrices"
    assert kernel_category("aten::mul", [[32], [32]], 1000) == "small kernels"
    assert kernel_category("aten::sqrt", [[32, 48]], 1000) == "passes over matrices"   # not a "qr"


@pytest.fixture(scope="module")
def profiles():
    return {c.label: profile_candidate(c, SHAPES, steps=2) for c in (torch_adam("foreach"), fimkit_candidate("racs"))}


def test_profile_splits_the_whole_profiled_step(profiles):
    for p in profiles.values():
        assert set(p.split_ms) == set(CATEGORIES)
        assert sum(p.split_ms.values()) == pytest.approx(p.profiled_ms, rel=1e-6)


def test_racs_step_has_matrix_vector_products_and_adam_none(profiles):
    # 5 fixed-point iterations, each two matrix-vector products and two squared norms (dots)
    assert profiles["racs"].calls["products"] == 20 * len(SHAPES)
    assert profiles["torch Adam (foreach)"].calls["products"] == 0


def test_profile_table_has_a_row_per_optimizer(profiles):
    text = format_profiles(list(profiles.values()), "# header")
    assert text.count("\n| ") == 1 + len(profiles) and "racs" in text
