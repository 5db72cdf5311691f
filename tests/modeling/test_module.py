"""CausalLMModule in isolation: building models, the vocab link, LoRA, QLoRA checks, metrics, the schedule."""

from __future__ import annotations

import itertools
import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from transformers import AutoModelForCausalLM

from modeling.module import (
    IGNORE_INDEX,
    CausalLMModule,
    LoraConfig,
    ModelConfigError,
    QuantizationConfig,
    ScratchModelConfig,
    WarmupCosineLR,
)
from modeling.optim import describe_optimization

TINY = ScratchModelConfig(arch="gpt2", max_position_embeddings=32, hidden_size=16, num_layers=1, num_heads=2)


def test_the_schedule_keeps_its_old_import_path():
    """Configs name ``modeling.optim.WarmupCosineLR``; older ones (and saved run configs) ``modeling.module``'s."""
    import modeling.module
    import modeling.optim

    assert modeling.module.WarmupCosineLR is modeling.optim.WarmupCosineLR is WarmupCosineLR


def test_schedule_warms_up_then_decays_to_the_floor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert sched.lr_factor(20) == pytest.approx(0.1) and sched.lr_factor(12) == pytest.approx(0.55)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_scratch_model_follows_the_tokenizer_vocab(arch):
    module = CausalLMModule(scratch=ScratchModelConfig(arch=arch, max_position_embeddings=32, hidden_size=16,
                                                       num_layers=1, num_heads=2), vocab_size=123)
    module.configure_model()
    assert module.model.config.model_type == arch
    assert module.model.get_input_embeddings().weight.shape[0] == 123


def test_vocab_mismatch_is_a_clear_error():
    module = CausalLMModule(scratch=ScratchModelConfig(vocab_size=100, hidden_size=16, num_layers=1, num_heads=2),
                            vocab_size=120)
    with pytest.raises(ModelConfigError, match=r"tokenizer has 120 tokens.*model.scratch.vocab_size is 100"):
        module.configure_model()


def test_pretrained_embeddings_grow_for_added_tokens(gpt2_dir):
    rows = AutoModelForCausalLM.from_pretrained(gpt2_dir).get_input_embeddings().weight.shape[0]
    module = CausalLMModule(pretrained=str(gpt2_dir), vocab_size=rows + 5)
    module.configure_model()
    assert module.model.get_input_embeddings().weight.shape[0] == rows + 5
    assert module.model.get_output_embeddings().weight.shape[0] == rows + 5


def test_needs_exactly_one_weight_source(gpt2_dir):
    with pytest.raises(ModelConfigError, match=r"exactly one of --model\.pretrained"):
        CausalLMModule()
    with pytest.raises(ModelConfigError, match=r"exactly one of --model\.pretrained"):
        CausalLMModule(pretrained=str(gpt2_dir), scratch=TINY)


def test_qlora_without_cuda_stops_at_construction(gpt2_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    with pytest.raises(ModelConfigError, match=r"needs a CUDA GPU.*remove --model.quantization"):
        CausalLMModule(pretrained=str(gpt2_dir), lora=LoraConfig(), quantization=QuantizationConfig())
    with pytest.raises(ModelConfigError, match=r"set --model\.pretrained and --model\.lora"):
        CausalLMModule(pretrained=str(gpt2_dir), quantization=QuantizationConfig())


@pytest.mark.parametrize(("fixture", "expected"), [("gpt2_dir", {"c_attn"}), ("llama_dir", {"q_proj", "v_proj"})])
def test_lora_targets_are_detected_per_architecture(request, fixture, expected):
    module = CausalLMModule(pretrained=str(request.getfixturevalue(fixture)), lora=LoraConfig(r=4))
    module.configure_model()
    # names look like ...attn.c_attn.lora_A.default.weight
    assert {n.split(".")[-4] for n, _ in module.model.named_parameters() if "lora_A" in n} == expected
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for n, p in module.model.named_parameters() if p.requires_grad)
    assert 0 < module.trainable_params < sum(p.numel() for p in module.model.parameters())


def test_lora_keeps_adapters_fp32_on_a_half_precision_base(gpt2_dir):
    module = CausalLMModule(pretrained=str(gpt2_dir), lora=LoraConfig(r=4), dtype="float16")
    module.configure_model()
    dtypes = {p.dtype for p in module.model.parameters() if not p.requires_grad}
    assert torch.float16 in dtypes
    assert {p.dtype for p in module.model.parameters() if p.requires_grad} == {torch.float32}


def test_unknown_architecture_asks_for_target_modules(monkeypatch, gpt2_dir):
    import peft.utils.constants as constants

    monkeypatch.delitem(constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, "gpt2")
    module = CausalLMModule(pretrained=str(gpt2_dir), lora=LoraConfig())
    with pytest.raises(ModelConfigError, match=r"set --model.lora.target_modules.*c_attn"):
        module.configure_model()


def test_metrics_count_only_labelled_tokens():
    torch.manual_seed(0)
    module = CausalLMModule(scratch=TINY, vocab_size=50)
    module.configure_model()
    module.eval()
    ids = torch.randint(0, 50, (2, 12))
    labels = ids.clone()
    labels[1, 7:] = IGNORE_INDEX  # padding at the end of the second row
    loss = module._shared_step({"input_ids": ids, "labels": labels}, "val")
    reference = module.model(input_ids=ids, labels=labels).loss  # transformers' own shifted loss
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    metrics = module.metrics["val_metrics"]
    assert metrics["ppl"].compute().item() == pytest.approx(math.exp(reference.item()), rel=1e-5)
    logits = module.model(input_ids=ids).logits[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    expected_acc = (logits.argmax(-1) == targets)[keep].float().mean().item()
    assert metrics["acc"].compute().item() == pytest.approx(expected_acc)


def test_gradient_checkpointing_is_non_reentrant():
    module = CausalLMModule(scratch=TINY, vocab_size=50, gradient_checkpointing=True)
    module.configure_model()
    assert module.model.is_activation_checkpointing
    module.train()
    ids = torch.randint(0, 50, (2, 8))
    module._shared_step({"input_ids": ids}, "train").backward()
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that records, at each step, the gradient norm it is handed and what the GradScaler told it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, object]] = []

    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning runs forward and backward in the closure (except under GradScaler)
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad.float() for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.seen.append((torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item(),
                          getattr(self, "grad_scale", None)))
        super().step()
        return loss


def fit_tiny(module: CausalLMModule, steps: int = 3, precision: str = "32-true", **trainer_kwargs) -> pl.Trainer:
    """A few optimizer steps on random token ids, on CPU, without logging or checkpoints.

    ``16-mixed`` is given as a plugin: from the flag alone Lightning swaps it for bf16-mixed on a CPU, and the
    fp16 GradScaler path (the QLoRA config's, on GPUs) would go untested.
    """
    if precision == "16-mixed":
        trainer_kwargs["plugins"] = [MixedPrecision("16-mixed", device="cpu")]
    else:
        trainer_kwargs["precision"] = precision
    ids = torch.randint(0, 50, (4 * steps, 8), generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader([{"input_ids": row} for row in ids], batch_size=4)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
def test_adamw_clips_true_gradients_under_every_precision(precision, fused):
    """The shipped configs' combination (fused AdamW + clipping + mixed precision) trains; the optimizer sees the
    gradients unscaled exactly once and clipped (a limit of 1e-3 always binds here)."""
    torch.manual_seed(0)
    optimizers = []

    def make(params):
        optimizers.append(RecordingAdamW(params, lr=1e-3, fused=fused, foreach=None if fused else True))
        return optimizers[0]

    module = CausalLMModule(scratch=TINY, vocab_size=50, optimizer=make)
    trainer = fit_tiny(module, gradient_clip_val=1e-3, precision=precision)
    norms = [norm for norm, _ in optimizers[0].seen if math.isfinite(norm)]
    assert len(optimizers[0].seen) == 3 and norms, optimizers[0].seen
    assert max(norms) <= 1e-3 * 1.01, norms
    if fused and precision == "16-mixed":  # unscaled by us: the scaler must not hand the fused step its scale
        assert all(scale is None for _, scale in optimizers[0].seen)
    line = describe_optimization(optimizers[0], trainer)
    assert f"fused={fused}" in line and precision in line and "clipped to norm 0.001" in line


def test_clipping_off_and_the_log_line_says_so():
    module = CausalLMModule(scratch=TINY, vocab_size=50)  # the default optimizer: fused AdamW
    trainer = fit_tiny(module, steps=1, precision="16-mixed")
    line = describe_optimization(trainer.optimizers[0], trainer)
    assert line.startswith("optimizer: AdamW fused=True, precision 16-mixed") and "no gradient clipping" in line


class DropoutSpy(CausalLMModule):
    """Records, inside each training_step, whether the Hugging Face model's dropout layers are in training mode."""

    def training_step(self, batch, batch_idx):
        self.dropout_modes = {m.training for m in self.model.modules() if isinstance(m, torch.nn.Dropout)}
        self.dropout_probs = {m.p for m in self.model.modules() if isinstance(m, torch.nn.Dropout)}
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("lora", [None, LoraConfig(r=4, dropout=0.1)], ids=["full", "lora"])
def test_fine_tuning_a_pretrained_model_trains_with_dropout_on(gpt2_dir, lora):
    # the tiny GPT-2 keeps GPT-2's dropout of 0.1; from_pretrained hands it over in eval mode
    assert not AutoModelForCausalLM.from_pretrained(gpt2_dir).training
    module = DropoutSpy(pretrained=str(gpt2_dir), lora=lora)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_tiny(module, steps=1)
    assert module.dropout_modes == {True} and max(module.dropout_probs) > 0
    assert not [w for w in caught if "eval mode" in str(w.message)]


def test_compile_option_compiles_model_and_loss_when_training_starts(monkeypatch):
    compiled = []

    def fake_compile(fn, *args, **kwargs):  # a real compile takes minutes on a small CPU; the wiring is the point
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = CausalLMModule(scratch=TINY, vocab_size=50, compile=True)
    module.configure_model()
    keys = list(module.model.state_dict())
    assert compiled == []  # not at build time: a model loaded for evaluation stays uncompiled
    fit_tiny(module, steps=2, precision="bf16-mixed", gradient_clip_val=1.0)
    assert compiled == ["_call_impl", "token_cross_entropy"]
    assert list(module.model.state_dict()) == keys  # checkpoints and exports look as without compile
    assert callable(module.compile)  # the option does not hide nn.Module.compile
