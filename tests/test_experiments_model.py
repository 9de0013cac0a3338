"""The LLaMA decoder: shapes, causality, parameter counts of the paper's and the CPU presets."""

import pytest
import torch

from experiments.model import (
    LLaMA,
    ModelConfig,
    apply_rope,
    count_parameters,
    rope_tables,
)
from experiments.presets import PRESETS, get_preset

SMALL = ModelConfig(dim=32, n_layers=2, n_heads=4, vocab_size=97, max_seq_len=16)


def analytic_count(dim, intermediate, layers, vocab):
    # embedding + lm_head (untied) + per layer (q,k,v,o + gate,up,down + 2 norms) + final norm
    return 2 * vocab * dim + layers * (4 * dim * dim + 3 * dim * intermediate + 2 * dim) + dim


def test_logits_have_batch_time_vocab_shape():
    model = LLaMA(SMALL)
    tokens = torch.randint(0, 97, (3, 10))
    assert model(tokens).shape == (3, 10, 97)


def test_loss_with_targets_is_a_scalar_near_log_vocab_at_init():
    torch.manual_seed(0)
    model = LLaMA(SMALL)
    tokens = torch.randint(0, 97, (2, 12))
    loss = model(tokens, tokens)
    assert loss.ndim == 0
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.2


def test_sum_reduction_equals_mean_times_token_count():
    model = LLaMA(SMALL)
    tokens = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(model(tokens, tokens, reduction="sum"), model(tokens, tokens) * 24)


def test_future_tokens_do_not_change_past_logits():
    model = LLaMA(SMALL)
    a = torch.randint(0, 97, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 97
    torch.testing.assert_close(model(a)[0, :8], model(b)[0, :8])


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_tables(8, 32, 10000.0)
    q, k = torch.randn(8), torch.randn(8)
    score = lambda i, j: apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j])
    torch.testing.assert_close(score(3, 1), score(20, 18))


def test_sequence_longer_than_max_seq_len_is_rejected():
    with pytest.raises(ValueError, match="max_seq_len"):
        LLaMA(SMALL)(torch.zeros(1, 17, dtype=torch.long))


def test_lm_head_is_untied_from_the_embedding():
    model = LLaMA(SMALL)
    assert model.lm_head.weight.data_ptr() != model.embed_tokens.weight.data_ptr()
    assert "lm_head.weight" in dict(model.named_parameters())


@pytest.mark.parametrize(
    "size, dim, intermediate, layers, heads, millions",
    [("60M", 512, 1376, 8, 8, 58.07), ("130M", 768, 2048, 12, 12, 134.11),
     ("350M", 1024, 2736, 24, 16, 367.97), ("1.3B", 2048, 5461, 24, 32, 1339.08)],
)
def test_paper_presets_match_galore_configs_and_parameter_counts(size, dim, intermediate, layers, heads, millions):
    cfg = get_preset(size).model
    assert (cfg.dim, cfg.mlp_width, cfg.n_layers, cfg.n_heads, cfg.vocab_size) == (dim, intermediate, layers, heads, 32000)
    count = count_parameters(cfg)  # on the meta device: no 1.3B allocation
    assert count == analytic_count(dim, intermediate, layers, 32000)
    assert count / 1e6 == pytest.approx(millions, abs=0.01)


def test_1b_preset_has_the_papers_matrix_parameter_count():
    # [P] App F.4: "1273M parameters on Alice" = every attention/MLP matrix plus lm_head.
    cfg = get_preset("1.3B").model
    matrices = cfg.n_layers * (4 * cfg.dim**2 + 3 * cfg.dim * cfg.mlp_width) + cfg.vocab_size * cfg.dim
    assert round(matrices / 1e6) == 1273


@pytest.mark.parametrize("name, millions", [("nano", 3.1), ("tiny", 7.6), ("small", 16.9)])
def test_cpu_presets_match_the_measured_sizes_of_targets_md(name, millions):
    cfg = get_preset(name).model
    assert cfg.vocab_size == 8192 and get_preset(name).seq_len == 256
    assert count_parameters(cfg) / 1e6 == pytest.approx(millions, abs=0.05)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="tiny"):
        get_preset("huge")


def test_every_preset_builds_on_meta():
    for name, preset in PRESETS.items():
        assert count_parameters(preset.model) > 0, name
