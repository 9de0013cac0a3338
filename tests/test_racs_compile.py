"""``torch.compile`` of RACS's step gives the eager result (issue 4 item 7)."""

from __future__ import annotations

import pytest
import torch

from fimkit.optim import RACS


def compiled_and_eager_runs(backend: str, steps: int = 3):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(6, 4, generator=gen)
    grads = [torch.randn(6, 4, generator=gen) for _ in range(steps)]
    eager_param, compiled_param = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    eager, compiled = RACS([eager_param]), RACS([compiled_param])
    compiled_step = torch.compile(compiled.step, backend=backend)
    for g in grads:
        eager_param.grad, compiled_param.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    return (eager_param, eager.state[eager_param]), (compiled_param, compiled.state[compiled_param])


def assert_same_runs(runs, rtol):
    (eager_param, eager_state), (compiled_param, compiled_state) = runs
    assert torch.allclose(compiled_param, eager_param, rtol=rtol, atol=1e-7)
    assert set(compiled_state) == set(eager_state)
    for key, value in eager_state.items():
        assert torch.allclose(compiled_state[key], value, rtol=rtol, atol=1e-7), key


def test_racs_compiled_step_equals_eager_step():
    """Dynamo traces the whole step (graph breaks allowed); the eager backend keeps this fast."""
    torch._dynamo.reset()
    assert_same_runs(compiled_and_eager_runs("eager"), rtol=1e-6)


@pytest.mark.slow
def test_racs_aot_eager_compiled_step_equals_eager_step():
    torch._dynamo.reset()
    assert_same_runs(compiled_and_eager_runs("aot_eager"), rtol=1e-6)


@pytest.mark.slow
def test_racs_inductor_compiled_step_equals_eager_step():
    """Inductor generates and compiles C++ on CPU (about 45 s on the 2-core machine)."""
    torch._dynamo.reset()
    assert_same_runs(compiled_and_eager_runs("inductor"), rtol=1e-5)
