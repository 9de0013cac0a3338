"""The README's Python examples run as written (the worked example is a contract with users)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_worked_example_runs_as_written(capsys):
    blocks = [b for b in _blocks() if "TiedColumns" in b]
    assert len(blocks) == 2, "the worked example is two consecutive blocks"
    namespace = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert out.startswith("generic") and losses[-1] < 0.6 * losses[0]


def test_readme_three_calls_run_as_written_and_their_racs_is_fimkit_optim_racs():
    (block,) = [b for b in _blocks() if "fimkit.solve(RowColumn(), grads)" in b]
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)
    import torch

    import fimkit

    assert namespace["approx"].solver == "fixed point"
    assert isinstance(namespace["optimizer"], torch.optim.Optimizer)
    racs, registered = namespace["RACS"], fimkit.optim.RACS
    assert racs.default_hyperparameters() == registered.default_hyperparameters()
    for shape in ((4, 8), (8, 4)):
        params = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for _ in range(2)]
        optimizers = racs([params[0]]), registered([params[1]])
        gen = torch.Generator().manual_seed(0)
        for _ in range(6):
            grad = torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + torch.rand((), generator=gen))
            for param, optimizer in zip(params, optimizers):
                param.grad = grad.clone()
                optimizer.step()
        assert torch.equal(params[0], params[1])
        assert all(torch.equal(optimizers[0].state[params[0]][k], optimizers[1].state[params[1]][k])
                   for k in ("q", "s", "phi"))
