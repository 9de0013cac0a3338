"""``benchmarks.overhead``: the fixed per-step cost, on the model's matrix count at tiny sizes."""

from __future__ import annotations

from benchmarks.overhead import measure_overhead, tiny_shapes


def test_tiny_shapes_keep_the_models_matrix_count_and_aspects():
    shapes = tiny_shapes("60M")
    assert len(shapes) == 56
    assert shapes.count((8, 8)) == 32 and shapes.count((16, 8)) == 16 and shapes.count((8, 16)) == 8


def test_overhead_times_torchs_adams_and_the_named_optimizers():
    result = measure_overhead(("racs", "alice"), repeats=1)
    assert set(result) == {"torch Adam (foreach)", "torch Adam (fused)", "racs", "alice (K=200, amortised)"}
    assert all(ms > 0 for ms in result.values())
