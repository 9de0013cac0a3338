"""fimkit.diagnostics against hand-computed cases: errors of structure optima, the rescaling, the
sampling-noise correction and per-sample gradient collection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fimkit
import fimkit.diagnostics as fd
from fimkit.linalg import psd_matrix_power
from fimkit.structures import Diagonal, Full, Identity, Kronecker, RowColumn

A = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
B = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def exactly_kronecker_samples(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Samples whose empirical Fisher is exactly kron(a, b): ``a^1/2 Z b^1/2`` over the scaled
    standard basis ``Z = sqrt(mn) E_ij``, whose own Fisher is the identity."""
    m, n = a.shape[0], b.shape[0]
    basis = torch.eye(m * n, dtype=torch.float64).reshape(m * n, m, n) * math.sqrt(m * n)
    return psd_matrix_power(a, 0.5) @ basis @ psd_matrix_power(b, 0.5)


def errors(fits):
    return {f.label: f for f in fits}


def test_the_samples_have_exactly_a_kronecker_fisher():
    assert torch.allclose(fimkit.empirical_fim(exactly_kronecker_samples(A, B)), torch.kron(A, B), atol=1e-12)


def test_kronecker_fisher_hand_computed_errors():
    # ||kron(A, B)||^2 = ||A||^2 ||B||^2 = 10 * 3.5 = 35. Diagonal keeps diag(A) x diag(B): 8 * 3 = 24;
    # kron(M, c I) keeps A (x) (tr B / n) I: 10 * 9 / 3 = 30; kron(c I, M): 3.5 * 16 / 2 = 28; a rank-1
    # basis per column (A's top eigenvector, exact for A) loses the off-diagonal blocks of B: 10 * 0.5.
    expected = {"Kronecker(Full, Full)": 0.0, "EigenvalueCorrected(Full, Full)": 0.0,
                "Diagonal": math.sqrt(11 / 35), "RowColumn": math.sqrt(11 / 35),
                "Kronecker(Full, Identity)": math.sqrt(5 / 35), "Kronecker(Identity, Full)": math.sqrt(7 / 35),
                "LowRankPlusDiagonal(1)": math.sqrt(5 / 35), "Identity (SGD)": math.sqrt(11 / 35)}
    fits = errors(fd.fit_structures(exactly_kronecker_samples(A, B)))
    for label, value in expected.items():
        assert fits[label].error == pytest.approx(value, abs=1e-9), label
        assert fits[label].rescaled_error == pytest.approx(value, abs=1e-9), label
    # an optimum of a cone is already optimally scaled
    assert all(f.scale == pytest.approx(1.0, abs=1e-9) for f in fits.values() if f.error > 1e-9)


def test_sgd_differs_from_diagonal_when_the_diagonal_is_not_constant():
    a = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
    fits = errors(fd.fit_structures(exactly_kronecker_samples(a, B)))
    # diag(F) = (1, 1, 1, 3, 3, 3): c I with c = 2 misses 6 * 1 of ||F||^2 = 10 * 3.5
    assert fits["Identity (SGD)"].error == pytest.approx(math.sqrt((6 + 10 * 0.5) / 35), abs=1e-9)
    assert fits["Diagonal"].error == pytest.approx(math.sqrt(10 * 0.5 / 35), abs=1e-9)


def test_compare_rescales_optimally():
    fim = torch.kron(A, B)
    error, rescaled, scale = fd.compare(fim, 2 * fim)
    assert (error, rescaled, scale) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12), pytest.approx(0.5))
    diagonal = torch.diag(torch.diagonal(fim))
    error, rescaled, scale = fd.compare(fim, 3 * diagonal)
    assert scale == pytest.approx(1 / 3)
    assert rescaled == pytest.approx(math.sqrt(11 / 35))
    assert error == pytest.approx(math.sqrt(11 + 4 * 24) / math.sqrt(35))  # off-diagonal + (3-1)^2 * diagonal


def test_dense_fisher_and_samples_give_the_same_fits():
    grads = torch.randn(20, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    from_samples = fd.fit_structures(grads)
    from_fim = fd.fit_structures(fimkit.empirical_fim(grads), shape=(3, 4))
    assert [f.error for f in from_samples] == pytest.approx([f.error for f in from_fim], abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        fd.fit_structures(fimkit.empirical_fim(grads))


def test_builtin_structures_cover_the_families():
    labels = set(fd.builtin_structures(4, 6, ranks=(1, 2, 4, 8)))
    assert {"Diagonal", "RowColumn", "Kronecker(Full, Full)", "Kronecker(Full, Identity)", "Kronecker(Identity, Full)",
            "EigenvalueCorrected(Full, Full)", "EigenvalueCorrected(Full, Identity)", "LowRankPlusDiagonal(1)",
            "LowRankPlusDiagonal(2)"} <= labels
    assert "LowRankPlusDiagonal(4)" not in labels  # rank m is EigenvalueCorrected(Full, Identity)
    assert "Kronecker(DiagonalFactor, DiagonalFactor)" not in labels  # that is RowColumn
    assert fd.parameter_numel(RowColumn(), 4, 6) == 10
    assert fd.parameter_numel(Kronecker(Full(), Identity()), 4, 6) == 17


def gaussian_kronecker(k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)) + 0.3
    b = torch.eye(6, dtype=torch.float64) + 0.4 * torch.ones(6, 6, dtype=torch.float64)
    z = torch.randn(k, 4, 6, generator=gen, dtype=torch.float64)
    return a, b, psd_matrix_power(a, 0.5) @ z @ psd_matrix_power(b, 0.5)


def test_extrapolation_removes_the_sampling_noise():
    a, b, grads = gaussian_kronecker(2000)
    structures = {"kron": Kronecker(Full(), Full()), "diag": Diagonal(), "rows": Kronecker(Full(), Identity())}
    fits = errors(fd.diagnose(grads, structures, optimizers=()))
    # the true Fisher is kron(a, b): the measured Kronecker error is all sampling noise
    assert fits["kron"].rescaled_error > 0.03
    assert fits["kron"].half_error > fits["kron"].rescaled_error
    assert fits["kron"].extrapolated_error ** 2 < 0.25 * fits["kron"].rescaled_error ** 2  # most of it removed
    # Diagonal's error on the true Fisher, by hand: 1 - ||diag a||^2 ||diag b||^2 / (||a||^2 ||b||^2)
    true_diag = math.sqrt(1 - float(torch.diagonal(a).square().sum() * torch.diagonal(b).square().sum()
                                    / (a.square().sum() * b.square().sum())))
    assert fits["diag"].extrapolated_error == pytest.approx(true_diag, abs=0.01)
    noise = fits["sampling noise of F"]
    assert noise.kind == "noise" and 0.02 < noise.error < 0.2


def test_sampling_noise_is_zero_for_identical_samples_and_falls_with_more():
    grads = torch.randn(1, 3, 4, dtype=torch.float64).expand(8, 3, 4)
    assert fd.sampling_noise(grads) == pytest.approx(0.0, abs=1e-12)
    few, many = fd.sampling_noise(gaussian_kronecker(200)[2]), fd.sampling_noise(gaussian_kronecker(3200)[2])
    assert many < few / 2.5  # 1 / sqrt(k): a factor 4 for 16 times the samples
    with pytest.raises(ValueError, match="at least 2"):
        fd.sampling_noise(grads[:1])


def test_markdown_table_orders_by_kind_then_error():
    table = fd.markdown_table(fd.diagnose(exactly_kronecker_samples(A, B), optimizers=("adam",)))
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    kinds = [row[0].lstrip("| ") for row in rows]
    assert kinds == sorted(kinds, key=fd.KINDS.index) and kinds[-1] == "noise" and "optimizer" in kinds
    structures = [(row[1], float(row[3])) for row in rows if row[0] == "| structure"]
    assert [e for _, e in structures] == sorted(e for _, e in structures)
    # Kronecker samples are fitted exactly by Kronecker(Full, Full) (and by the eigenvalue-corrected
    # family, which contains it), so they lead at round-off level in either order
    assert ("Kronecker(Full, Full)", 0.0) in [(label, round(e, 4)) for label, e in structures[:2]]


# ---------------------------------------------------------------------- per-sample gradients
class TwoUses(nn.Module):
    """A shared layer applied twice, on 3-d inputs (batch, positions, features)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def reference_gradients(model, block, x, y):
    weight, out = block.linear(model).weight, []
    for i in range(x.shape[0]):
        model.zero_grad()
        ((model(x[i : i + 1]) - y[i : i + 1]) ** 2).mean().backward()
        out.append(weight.grad[block.rows[0] : block.rows[1], block.cols[0] : block.cols[1]].clone())
    return torch.stack(out)


def test_per_sample_gradients_equal_one_backward_per_sample():
    torch.manual_seed(0)
    model = TwoUses().double()
    x, y = torch.randn(4, 7, 5, dtype=torch.float64), torch.randn(4, 7, 3, dtype=torch.float64)
    blocks = [fd.LinearBlock("inner", (1, 4), (0, 5)), fd.LinearBlock("head", (0, 2), (2, 5))]

    def loss(model):
        return ((model(x) - y) ** 2).mean((1, 2))

    grads = fd.per_sample_gradients(model, blocks, loss)
    for block in blocks:
        assert grads[block].shape == (4, *block.shape)
        assert torch.allclose(grads[block], reference_gradients(model, block, x, y), atol=1e-12)


def test_per_sample_gradients_leave_weight_gradients_alone():
    model = TwoUses().double()
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    fd.per_sample_gradients(model, [fd.LinearBlock("head", (0, 3), (0, 5))], lambda m: m(x).sum((1, 2)))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("block, message", [
    (fd.LinearBlock("missing", (0, 1), (0, 1)), "no module 'missing'"),
    (fd.LinearBlock("", (0, 1), (0, 1)), "not an nn.Linear"),
    (fd.LinearBlock("head", (0, 4), (0, 5)), "outside the 3 x 5 weight"),
])
def test_per_sample_gradients_reject_bad_blocks(block, message):
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match=message):
        fd.per_sample_gradients(TwoUses(), [block], lambda m: m(x).sum(-1))


def test_per_sample_gradients_need_one_loss_per_sample():
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match="one loss per sample"):
        fd.per_sample_gradients(TwoUses(), [fd.LinearBlock("head", (0, 1), (0, 1))], lambda m: m(x).sum())


def test_block_label_and_shape():
    block = fd.LinearBlock("layers.1.attn.q_proj", (0, 16), (32, 64))
    assert block.label == "layers.1.attn.q_proj[0:16, 32:64]" and block.shape == (16, 32)


def test_readme_diagnostics_example_runs_as_written(capsys):
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "fimkit.diagnostics" in b]
    assert len(blocks) == 1, "the README has one diagnostics example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "| structure | " in out and "| optimizer | alice |" in out and "best structure: " in out
