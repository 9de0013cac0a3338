"""``benchmarks.floors``: the necessary bytes and flops of a step, on hand-computed cases."""

from __future__ import annotations

import pytest

from benchmarks.floors import FLOORS, Cost, Rates, floor_seconds, step_cost
from benchmarks.paper_tables import STATE_FORMULAS


def test_adam_moves_28_bytes_per_fp32_weight_and_multiplies_nothing():
    # read p, g, m, v and write p, m, v: 7 tensors of 12 floats
    assert step_cost("adam", [(3, 4)]) == Cost(bytes=7 * 12 * 4, flops=0.0)


def test_racs_reads_g_and_w_writes_w_plus_its_vectors():
    cost = step_cost("racs", [(3, 4)], {"fixed_point_iters": 5})
    assert cost.bytes == 4 * (3 * 12 + 4 * (3 + 4))
    assert cost.flops == 5 * 4 * 12   # two matrix-vector products an iteration


def test_alice_flops_are_two_low_rank_products_tracking_and_the_amortised_switch():
    m, r, n, k = 64, 8, 96, 200
    hp = {"rank": r, "update_interval": k, "tracking_beta": 0.999}
    expected = 2 * (2 * m * r * n) + 2 * r * r * n + (2 * m * m * n + 9 * m**3 + 4 * m * r * r) / k
    assert step_cost("alice", [(m, n)], hp).flops == pytest.approx(expected)
    assert step_cost("alice", [(n, m)], hp) == step_cost("alice", [(m, n)], hp)   # the short side is m
    assert step_cost("alice0", [(m, n)], {**hp, "tracking_beta": 0.0}).flops < expected


def test_the_rank_is_clipped_to_the_short_side():
    assert step_cost("galore", [(4, 6)], {"rank": 128}) == step_cost("galore", [(4, 6)], {"rank": 4})


def test_a_floor_is_the_slower_of_moving_the_bytes_and_doing_the_products():
    rates = Rates(bandwidth=1e9, matmul=1e10)
    assert floor_seconds(Cost(bytes=2e9, flops=1e10), rates) == 2.0
    assert floor_seconds(Cost(bytes=1e8, flops=3e10), rates) == 3.0


def test_costs_add_over_the_model_matrices():
    one = step_cost("muon", [(8, 12)], {"ns_steps": 5})
    assert step_cost("muon", [(8, 12), (12, 8)], {"ns_steps": 5}) == one + one
    assert step_cost("not_an_optimizer", [(8, 12)]) is None


def test_every_optimizer_with_a_state_formula_has_a_floor():
    assert set(STATE_FORMULAS) <= set(FLOORS)
