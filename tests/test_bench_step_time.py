"""``fimkit bench``: the side-by-side timing harness and its table (tiny shapes, few rounds)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.cli import bench_command
from benchmarks.machine import describe_machine
from benchmarks.step_time import (
    amortised_step, fimkit_candidate, format_results, measure, model_matrix_shapes, torch_adam,
)

TINY = [(8, 8), (8, 8), (12, 8), (8, 12)]


def test_bench_60m_shapes_are_the_papers_matrices():
    shapes = model_matrix_shapes("60M")
    assert len(shapes) == 56
    assert shapes.count((512, 512)) == 32 and shapes.count((1376, 512)) == 16 and shapes.count((512, 1376)) == 8


def test_bench_measures_every_candidate_and_reports_ratios_to_both_adams():
    candidates = [torch_adam("foreach"), torch_adam("fused"), fimkit_candidate("racs")]
    results = measure(candidates, TINY, repeats=3, warmup=1)
    assert [r.label for r in results] == ["torch Adam (foreach)", "torch Adam (fused)", "racs"]
    assert all(r.step_ms > 0 for r in results)
    assert results[2].predicted_state_numel == sum(m + n + 1 for m, n in TINY)
    table = format_results(results, describe_machine(torch.device("cpu")), "fimkit bench", "tiny")
    assert "| racs |" in table and "/ Adam foreach" in table and "torch threads" in table and "cpu" in table


def test_bench_amortises_the_switch_step_over_k():
    candidate = fimkit_candidate("alice", amortise_over=200, rank=2)
    assert candidate.amortise_over == 200 and candidate.build_switching is not None
    (result,) = measure([candidate], TINY, repeats=2, warmup=1)
    assert result.step_ms == pytest.approx(amortised_step(result.steady_ms, result.switch_ms, 200), rel=1e-12)
    assert "steady" in result.notes[0] and "switch step" in result.notes[0]


def test_amortised_step_spreads_the_switch_cost_over_the_interval():
    assert amortised_step(steady=1.0, switch=201.0, interval=200) == 2.0
    assert amortised_step(steady=3.0, switch=3.0, interval=7) == 3.0


def test_bench_candidates_do_not_change_the_shared_gradients():
    grad_before = torch.ones(3, 3)
    param = torch.nn.Parameter(torch.zeros(3, 3))
    param.grad = grad_before.clone()
    for name in ("racs", "swan", "sinkgd", "muon"):
        fimkit_candidate(name).build([param]).step()
        assert torch.equal(param.grad, grad_before), name


def test_bench_command_prints_table3(capsys):
    assert bench_command(["--table3"]) == 0
    assert "| RACS |" in capsys.readouterr().out


def test_bench_command_refuses_unknown_optimizers_before_timing(capsys, tmp_path):
    target = tmp_path / "table.md"
    code = bench_command(["--optimizers", "not_an_optimizer", "--out", str(target)])
    assert code == 2 and "'not_an_optimizer' is not a registered optimizer" in capsys.readouterr().err
    assert not target.exists()


def test_bench_command_writes_the_table(capsys, tmp_path):
    target = tmp_path / "table.md"
    assert bench_command(["--optimizers", "adam", "--repeats", "1", "--warmup", "0", "--out", str(target)]) == 0
    assert "torch Adam (fused)" in target.read_text()
