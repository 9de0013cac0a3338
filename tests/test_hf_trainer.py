"""fimkit optimizers inside Hugging Face's ``Trainer`` (issue 12): given as
``optimizer_cls_and_kwargs`` (the class gets every parameter; its built-in Adam takes biases and
norms) or as ``optimizers=(fimkit.build_optimizer(model, ...), None)`` (the paper's routing).

The oracle is a hand-written loop: the same optimizer, the same model inputs (recorded by a
forward pre-hook: the batches in the Trainer's order and the ``num_items_in_batch`` it
normalises the loss by), the same schedule (``get_linear_schedule_with_warmup``) and gradient
clipping; after the Trainer's steps the parameters must be equal bit for bit. A run resumed from a Trainer checkpoint must end where the uninterrupted run does.
Tiny LlamaForCausalLM and GPT-2 models are built from configs: offline, nothing is downloaded.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it: never reach the hub
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it (transformers[torch])

import fimkit  # noqa: E402

VOCAB, SEQ, BATCH, STEPS = 64, 16, 4, 4
#: every hyperparameter the Trainer's runs give the fimkit classes (Alice's switch seed fixed, so
#: its draws do not depend on the Trainer's use of the global generator)
KWARGS = {
    "alice": {"lr": 0.01, "rank": 4, "leading": 1, "update_interval": 2, "seed": 0, "adam_lr": 0.003},
    "racs": {"lr": 0.01, "adam_lr": 0.003, "adam_weight_decay": 0.1},
}
CLASSES = {"alice": fimkit.optim.Alice, "racs": fimkit.optim.RACS}


def tiny_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ)
        return transformers.LlamaForCausalLM(config)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


def token_dataset(rows: int = BATCH * STEPS) -> list[dict[str, torch.Tensor]]:
    tokens = torch.randint(0, VOCAB, (rows, SEQ), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": row, "labels": row} for row in tokens]


def collate(examples):
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


class RecordedInputs:
    """The keyword arguments of every forward call of ``model``, in order (a forward pre-hook).
    The Trainer passes ``num_items_in_batch``, the count it normalises the summed loss by: the
    predicted tokens (``labels[..., 1:]``) for Llama, every label for GPT-2, whose config names
    no loss type; replaying the recorded inputs reproduces either."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})


def training_arguments(output_dir, **overrides) -> transformers.TrainingArguments:
    options = dict(output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=BATCH, report_to=[],
                   lr_scheduler_type="linear", warmup_steps=1, max_grad_norm=1.0, save_strategy="no",
                   logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0)
    return transformers.TrainingArguments(**{**options, **overrides})


def train(model, output_dir, **trainer_options) -> list[dict]:
    """Train ``model`` with a Trainer; the inputs of its forward calls, in order."""
    arguments = training_arguments(output_dir, **trainer_options.pop("arguments", {}))
    resume = trainer_options.pop("resume_from_checkpoint", None)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=token_dataset(), data_collator=collate,
                                   **trainer_options)
    inputs = RecordedInputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ranks clipped on the tiny matrices
        trainer.train(resume_from_checkpoint=resume)
    inputs.handle.remove()
    return inputs.calls


def hand_written_loop(model, optimizer, inputs) -> None:
    """What the Trainer does per step, written out: the loss of the recorded inputs, backward,
    clip to norm 1, step, schedule, zero the gradients."""
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=STEPS)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in inputs:
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            model.zero_grad()


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), f"{name} differs by {(p - q).abs().max().item():.3g}"


def grouped_like_the_trainer(model) -> list[dict]:
    """The two param groups the Trainer gives ``optimizer_cls`` (weight decay off for biases and
    norms; ``weight_decay`` 0 everywhere in these runs)."""
    decay = transformers.Trainer.get_decay_parameter_names(None, model)
    params = dict(model.named_parameters())
    return [{"params": [p for n, p in params.items() if n in decay], "weight_decay": 0.0},
            {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0}]


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("name", ["alice", "racs"])
def test_trainer_with_optimizer_cls_and_kwargs_steps_as_the_hand_written_loop(tmp_path, kind, name):
    model = tiny_model(kind)
    reference = copy.deepcopy(model)
    inputs = train(model, tmp_path, optimizer_cls_and_kwargs=(CLASSES[name], dict(KWARGS[name])))
    assert len(inputs) == STEPS
    hand_written_loop(reference, CLASSES[name](grouped_like_the_trainer(reference), **KWARGS[name]), inputs)
    assert_same_parameters(model, reference)


def test_trainer_gives_biases_and_norms_to_the_builtin_adam(tmp_path):
    model = tiny_model("gpt2")
    trainer = transformers.Trainer(model=model, args=training_arguments(tmp_path), train_dataset=token_dataset(),
                                   data_collator=collate,
                                   optimizer_cls_and_kwargs=(fimkit.optim.RACS, dict(KWARGS["racs"])))
    trainer.train()
    optimizer = trainer.optimizer.optimizer  # inside accelerate's wrapper
    for name, p in model.named_parameters():
        expected = {"step", "exp_avg", "exp_avg_sq"} if p.ndim != 2 else {"q", "s", "phi"}
        assert set(optimizer.state[p]) == expected, name


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_trainer_with_build_optimizer_steps_as_the_hand_written_loop(tmp_path, kind):
    model = tiny_model(kind)
    reference = copy.deepcopy(model)
    options = {"lr": 0.01, "rank": 4, "leading": 1, "update_interval": 2, "seed": 0}
    inputs = train(model, tmp_path, optimizers=(fimkit.build_optimizer(model, "alice", **options), None))
    hand_written_loop(reference, fimkit.build_optimizer(reference, "alice", **options), inputs)
    assert_same_parameters(model, reference)


@pytest.mark.parametrize("how", ["optimizer_cls_and_kwargs", "optimizers"])
def test_trainer_resumed_from_its_checkpoint_ends_where_the_uninterrupted_run_does(tmp_path, how):
    def options(model):
        if how == "optimizers":
            return {"optimizers": (fimkit.build_optimizer(model, "racs", lr=0.01), None)}
        return {"optimizer_cls_and_kwargs": (fimkit.optim.Alice, dict(KWARGS["alice"]))}

    saving = {"save_strategy": "steps", "save_steps": STEPS // 2}
    uninterrupted = tiny_model("llama")
    train(uninterrupted, tmp_path / "full", arguments=saving, **options(uninterrupted))
    resumed = tiny_model("llama")
    inputs = train(resumed, tmp_path / "resumed", arguments=saving, **options(resumed),
                   resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{STEPS // 2}"))
    assert len(inputs) == STEPS - STEPS // 2  # it resumed, rather than training from the start
    assert_same_parameters(uninterrupted, resumed)


@pytest.mark.parametrize("name", ["racs", "alice", "galore", "adam"])
def test_gpt2_conv1d_weight_steps_as_the_transposed_linear_weight(name):
    """GPT-2's Conv1D stores its weight ``in x out`` (nn.Linear: ``out x in``) and fimkit sees the
    tensor as stored. Optimizers that work on the short side (``transpose_to_short_side``) or are
    elementwise give the same update either way; Muon's aspect-ratio factor, SWAN's row
    standardisation and SinkGD's alternation do not (see the next test)."""
    conv = transformers.pytorch_utils.Conv1D(nf=24, nx=8)
    linear = torch.nn.Linear(8, 24)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    cls = fimkit.optim.get_optimizer(name)
    hparams = {"rank": 2, "seed": 0} if "rank" in cls.default_hyperparameters() else {}
    optimizers = [cls(m.parameters(), **hparams) for m in (conv, linear)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            conv.zero_grad()
            conv(x).square().mean().backward()  # the same gradient for both, each in its layout
            linear.weight.grad, linear.bias.grad = conv.weight.grad.T.clone(), conv.bias.grad.clone()
            for optimizer in optimizers:
                optimizer.step()
    assert torch.equal(conv.weight, linear.weight.T) and torch.equal(conv.bias, linear.bias)


def test_muon_steps_a_conv1d_weight_with_the_aspect_ratio_of_its_stored_shape():
    """Muon's factor sqrt(max(1, rows / cols)) reads the stored shape: 1 for Conv1D's 8 x 24 weight,
    sqrt(3) for the same layer as nn.Linear (24 x 8)."""
    conv_weight = torch.nn.Parameter(torch.zeros(8, 24))
    linear_weight = torch.nn.Parameter(torch.zeros(24, 8))
    gradient = torch.randn(8, 24, generator=torch.Generator().manual_seed(3))
    conv_weight.grad, linear_weight.grad = gradient, gradient.T.clone()
    for weight in (conv_weight, linear_weight):
        fimkit.optim.Muon([weight], whitening="eigh").step()
    torch.testing.assert_close(linear_weight.T, 3**0.5 * conv_weight)
