"""``model.fused_cross_entropy``: the chunked head + loss gives the standard path's loss, gradients and metrics (GPT-2
and Llama, tied and untied, fp32 and bf16 autocast, IGNORE_INDEX labels, LoRA incl. adapters on the head), refuses
what it cannot do by naming the flag, and trains the same through the CLI."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import modeling.loss
from modeling.fused_loss import check_fused_supported
from modeling.loss import default_chunk_size, linear_cross_entropy
from modeling.module import IGNORE_INDEX, CausalLMModule, LoraConfig, ModelConfigError, ScratchModelConfig

VOCAB = 300


@pytest.fixture
def small_chunks(monkeypatch):
    """7 tokens per chunk: every module test crosses chunk boundaries (48 tokens: 6 chunks of 7, one of 6)."""
    monkeypatch.setattr(modeling.loss, "default_chunk_size", lambda n_tokens, vocab: 7)


def test_default_chunk_size_targets_a_fixed_number_of_logits():
    assert default_chunk_size(16 * 1024, 50304) == 256  # GPT-2: 256 x 50304 fp32 logits = 52 MB per chunk
    assert default_chunk_size(16 * 1024, 32000) == 512
    assert default_chunk_size(16 * 1024, 128256) == 128  # Llama 3
    assert default_chunk_size(100, 320) == 100  # never more than the tokens there are
    assert default_chunk_size(10**6, 10**8) == 16


def batch(vocab: int = VOCAB, seed: int = 1) -> dict[str, torch.Tensor]:
    """3 x 16 tokens; labels with a masked prompt (row 0) and padding (row 1)."""
    ids = torch.randint(0, vocab, (3, 16), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels}


def step(module: CausalLMModule, data: dict[str, torch.Tensor], autocast: bool = False, stage: str = "val"):
    """Loss, every trainable parameter's gradient and the accuracy metric of one step through ``_shared_step``."""
    module.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks on both paths (the fine-tuned GPT-2 keeps dropout 0.1)
    module.metrics[f"{stage}_metrics"]["acc"].reset()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = module._shared_step(data, stage)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, module.metrics[f"{stage}_metrics"]["acc"].compute()


def fresh(fused: str, **kwargs) -> CausalLMModule:
    torch.manual_seed(0)
    module = CausalLMModule(fused_cross_entropy=fused, **kwargs)
    module.configure_model()
    module.train()
    return module


def assert_grads_close(a: dict, b: dict, rtol: float, atol_frac: float) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        scale = a[name].abs().max().item() + 1e-12
        torch.testing.assert_close(b[name], a[name], rtol=rtol, atol=atol_frac * scale, msg=name)


# ------------------------------------------------------------------------------------------- the function
@pytest.mark.parametrize("chunk", [1, 5, 16, 1000])
def test_function_matches_linear_then_cross_entropy(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 12, generator=g, requires_grad=True)
    weight = torch.randn(50, 12, generator=g, requires_grad=True)
    bias = torch.randn(50, generator=g, requires_grad=True)
    u = torch.randn(37, 3, generator=g, requires_grad=True)  # a LoRA term: (tokens, r) @ (vocab, r).T
    b = torch.randn(50, 3, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    targets[::4] = IGNORE_INDEX
    inputs = [hidden, weight, bias, u, b]

    logits = F.linear(hidden, weight, bias) + u @ b.t()
    ref = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    ref_grads = torch.autograd.grad(ref * 3.0, inputs)  # an upstream factor (accumulation, GradScaler)
    keep = targets != IGNORE_INDEX
    ref_correct = (logits.argmax(-1) == targets)[keep].sum()

    loss, correct = linear_cross_entropy(hidden, weight, targets, bias, [(u, b)], chunk_size=chunk,
                                         with_accuracy=True)
    grads = torch.autograd.grad(loss * 3.0, inputs)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert correct.item() == ref_correct.item()
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)

    with torch.no_grad():  # evaluation: no gradient work, same loss
        loss_ng, _ = linear_cross_entropy(hidden, weight, targets, bias, [(u, b)], chunk_size=chunk)
    torch.testing.assert_close(loss_ng, ref.detach(), rtol=1e-6, atol=1e-6)


def test_function_under_bf16_autocast_matches_the_autocast_standard_path():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=g, requires_grad=True)
    weight = (0.3 * torch.randn(64, 16, generator=g)).requires_grad_()
    targets = torch.randint(0, 64, (40,), generator=g)
    targets[-5:] = IGNORE_INDEX
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=IGNORE_INDEX)
        loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_size=7)
    assert loss.dtype == torch.float32
    ref_grads = torch.autograd.grad(ref, [hidden, weight])
    grads = torch.autograd.grad(loss, [hidden, weight])
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-3)
    for mine, theirs in zip(grads, ref_grads):
        assert mine.dtype == torch.float32  # fp32 parameters get fp32 gradients
        torch.testing.assert_close(mine, theirs, rtol=2e-2, atol=2e-2 * theirs.abs().max().item())


def test_function_with_no_labelled_token_gives_nan_loss_and_zero_gradients():
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    targets = torch.full((4,), IGNORE_INDEX)
    loss, correct = linear_cross_entropy(hidden, weight, targets, with_accuracy=True)
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(hidden @ weight.t(), targets))  # as the standard loss
    loss.backward()
    assert correct.item() == 0 and not hidden.grad.any() and not weight.grad.any()


# ----------------------------------------------------------------------------------------- the module
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_module_loss_gradients_and_metrics_match_the_standard_path(arch, tie, small_chunks):
    scratch = ScratchModelConfig(arch=arch, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=2,
                                 tie_word_embeddings=tie)
    data = batch()
    standard, fused = fresh("off", scratch=scratch, vocab_size=VOCAB), fresh("chunked", scratch=scratch,
                                                                            vocab_size=VOCAB)
    assert (standard.model.lm_head.weight is standard.model.get_input_embeddings().weight) == tie
    loss_a, grads_a, acc_a = step(standard, data)
    loss_b, grads_b, acc_b = step(fused, data)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    assert_grads_close(grads_a, grads_b, rtol=1e-5, atol_frac=1e-5)
    assert acc_b.item() == pytest.approx(acc_a.item())
    for key in ("loss", "ppl"):
        assert (fused.metrics["val_metrics"][key].compute().item()
                == pytest.approx(standard.metrics["val_metrics"][key].compute().item(), rel=1e-5))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_module_under_bf16_autocast_is_as_close_to_fp32_as_the_standard_path(arch, small_chunks):
    """bf16 rounds differently on each path; each path's distance to the fp32 gradients is what must agree."""
    scratch = ScratchModelConfig(arch=arch, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=2)
    data = batch()
    _, grads_32, _ = step(fresh("off", scratch=scratch, vocab_size=VOCAB), data)
    loss_a, grads_a, _ = step(fresh("off", scratch=scratch, vocab_size=VOCAB), data, autocast=True)
    loss_b, grads_b, _ = step(fresh("chunked", scratch=scratch, vocab_size=VOCAB), data, autocast=True)
    torch.testing.assert_close(loss_b, loss_a, rtol=2e-3, atol=2e-3)
    assert_grads_close(grads_a, grads_b, rtol=5e-2, atol_frac=5e-2)

    def error(grads):
        return max(((grads[n] - grads_32[n]).norm() / grads_32[n].norm()).item() for n in grads_32)

    assert error(grads_b) <= 1.5 * error(grads_a) + 1e-3, (error(grads_a), error(grads_b))


def test_accuracy_counts_only_labelled_tokens_per_chunk(small_chunks):
    """A 6-token vocabulary: a random model's argmax hits often, so the accuracy is not trivially 0."""
    scratch = ScratchModelConfig(arch="llama", max_position_embeddings=32, hidden_size=16, num_layers=1, num_heads=2)
    data = batch(vocab=6, seed=3)
    _, _, acc_a = step(fresh("off", scratch=scratch, vocab_size=6), data)
    _, _, acc_b = step(fresh("chunked", scratch=scratch, vocab_size=6), data)
    assert 0 < acc_a.item() < 1 and acc_b.item() == pytest.approx(acc_a.item())


class LossRecorder:
    """Wraps a module's training_step to record each step's loss."""

    def __init__(self, module: CausalLMModule) -> None:
        self.losses: list[float] = []
        step = module.training_step

        def recording(batch, batch_idx):
            loss = step(batch, batch_idx)
            self.losses.append(loss.item())
            return loss

        module.training_step = recording


def fit_and_record(fused: str, precision: str, **kwargs) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Three steps of fit_tiny (clipping on): each step's loss and every weight's total update."""
    from tests.modeling.test_module import TINY, fit_tiny

    torch.manual_seed(0)
    module = CausalLMModule(scratch=TINY, vocab_size=50, fused_cross_entropy=fused, **kwargs)
    module.configure_model()
    before = {k: v.float().clone() for k, v in module.model.state_dict().items()}
    recorder = LossRecorder(module)
    fit_tiny(module, steps=3, precision=precision, gradient_clip_val=1.0)
    return recorder.losses, {k: v.float() - before[k] for k, v in module.model.state_dict().items()}


def relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return (sum((a[k] - b[k]).norm() ** 2 for k in a) ** 0.5 / sum(b[k].norm() ** 2 for k in b) ** 0.5).item()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
def test_training_under_every_precision_follows_the_standard_path(precision, small_chunks):
    """Through a Trainer: autocast, the fp16 GradScaler (a scaled upstream gradient), bf16 weights, clipping. In
    half precision each path rounds differently and Adam's first steps are sign-like, so the updates are compared
    by their distance to the fp32 run's: the fused path's must be no larger than the standard path's."""
    losses_a, updates_a = fit_and_record("off", precision)
    losses_b, updates_b = fit_and_record("chunked", precision)
    assert len(losses_a) == 3
    if precision == "32-true":
        assert losses_b == pytest.approx(losses_a, rel=1e-6)
        assert relative_distance(updates_b, updates_a) < 1e-4
        return
    assert losses_b == pytest.approx(losses_a, rel=1e-4)
    _, updates_32 = fit_and_record("off", "32-true")
    error_a, error_b = relative_distance(updates_a, updates_32), relative_distance(updates_b, updates_32)
    assert error_b <= 1.5 * error_a + 1e-3, (error_a, error_b)


def test_gradient_checkpointing_with_the_fused_loss(small_chunks):
    losses_a, updates_a = fit_and_record("off", "32-true")
    losses_b, updates_b = fit_and_record("chunked", "32-true", gradient_checkpointing=True)
    assert losses_b == pytest.approx(losses_a, rel=1e-6) and relative_distance(updates_b, updates_a) < 1e-4


def randomize_lora_b(module: CausalLMModule) -> None:
    """Fresh LoRA B matrices are zero (the adapter is the identity): make them matter for the comparison."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=g))


@pytest.mark.parametrize("fixture", ["gpt2_dir", "llama_dir"])
@pytest.mark.parametrize("head", ["default", "lora_on_head", "head_in_modules_to_save"])
def test_lora_matches_the_standard_path(request, fixture, head, small_chunks):
    pretrained = str(request.getfixturevalue(fixture))
    attention = "c_attn" if fixture == "gpt2_dir" else "q_proj"
    lora = {"default": LoraConfig(r=4, dropout=0.0),
            "lora_on_head": LoraConfig(r=4, dropout=0.1, target_modules=(attention, "lm_head")),
            "head_in_modules_to_save": LoraConfig(r=4, dropout=0.0, modules_to_save=("lm_head",))}[head]
    modules = []
    for fused in ("off", "chunked"):
        module = fresh(fused, pretrained=pretrained, lora=lora)
        randomize_lora_b(module)
        modules.append(module)
    standard, fused = modules
    if head == "lora_on_head":
        assert any("lm_head.lora_B" in n for n, p in fused.model.named_parameters() if p.requires_grad)
    data = batch(vocab=fused.model.get_input_embeddings().weight.shape[0])
    loss_a, grads_a, acc_a = step(standard, data, stage="train")
    loss_b, grads_b, acc_b = step(fused, data, stage="train")
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert_grads_close(grads_a, grads_b, rtol=1e-4, atol_frac=1e-5)
    assert acc_b.item() == pytest.approx(acc_a.item())


# ------------------------------------------------------------------------------------------ refusals
def test_liger_without_cuda_or_package_is_refused_when_training_starts(monkeypatch):
    """Not at construction: a checkpoint trained with Liger must still load (for evaluation) on any machine."""
    from tests.modeling.test_module import TINY, fit_tiny

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = CausalLMModule(scratch=TINY, vocab_size=50, fused_cross_entropy="liger")
    module.configure_model()
    with pytest.raises(ModelConfigError, match=r"fused_cross_entropy=liger needs a CUDA GPU.*chunked"):
        fit_tiny(module, steps=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # not installed
    with pytest.raises(ModelConfigError, match=r"needs Liger-Kernel: pip install liger-kernel"):
        module._shared_step(batch(vocab=50), "val")


@pytest.fixture
def fake_liger(monkeypatch):
    """A stand-in for liger_kernel.transformers with Liger's call signature, on CPU (the real one needs Triton)."""
    calls = []

    class LigerFusedLinearCrossEntropyLoss(torch.nn.Module):
        def __init__(self, ignore_index=-100, reduction="mean"):
            super().__init__()
            self.ignore_index = ignore_index

        def forward(self, lin_weight, _input, target, bias=None):
            calls.append((lin_weight.shape, _input.shape))
            return F.cross_entropy(F.linear(_input, lin_weight, bias).float(), target, ignore_index=self.ignore_index)

    package = types.ModuleType("liger_kernel")
    package.transformers = types.ModuleType("liger_kernel.transformers")
    package.transformers.LigerFusedLinearCrossEntropyLoss = LigerFusedLinearCrossEntropyLoss
    monkeypatch.setitem(sys.modules, "liger_kernel", package)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", package.transformers)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return calls


def test_liger_is_called_with_the_head_weight_and_hidden_states(fake_liger):
    scratch = ScratchModelConfig(arch="llama", max_position_embeddings=32, hidden_size=16, num_layers=1, num_heads=2)
    data = batch(vocab=6, seed=3)
    loss_a, grads_a, acc_a = step(fresh("off", scratch=scratch, vocab_size=6), data)
    loss_b, grads_b, acc_b = step(fresh("liger", scratch=scratch, vocab_size=6), data)
    assert fake_liger == [((6, 16), (48, 16))]
    torch.testing.assert_close(loss_b, loss_a)
    assert_grads_close(grads_a, grads_b, rtol=1e-5, atol_frac=1e-6)
    assert acc_b.item() == pytest.approx(acc_a.item()) and acc_a.item() > 0  # from a chunked pass without grads


def test_liger_refuses_lora_on_the_head(fake_liger, gpt2_dir):
    module = CausalLMModule(pretrained=str(gpt2_dir), lora=LoraConfig(r=4, target_modules=("c_attn", "lm_head")),
                            fused_cross_entropy="liger")
    with pytest.raises(ModelConfigError, match=r"fused_cross_entropy=liger does not support LoRA adapters on the "
                                               r"output head.*target_modules, or use chunked"):
        module.configure_model()


def test_models_that_transform_their_logits_are_refused(monkeypatch):
    scratch = ScratchModelConfig(arch="llama", max_position_embeddings=32, hidden_size=16, num_layers=1, num_heads=2)
    module = CausalLMModule(scratch=scratch, vocab_size=50, fused_cross_entropy="chunked")
    module.configure_model()
    module.model.config.final_logit_softcapping = 30.0  # as Gemma 2 sets it
    with pytest.raises(ModelConfigError, match=r"transforms its logits \(final_logit_softcapping=30.0\).*off"):
        check_fused_supported(module.model, "chunked")

    # a model we know nothing about whose forward rescales the logits: caught by the first step's check
    module = fresh("chunked", scratch=scratch, vocab_size=50)
    forward = module.model.forward

    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    monkeypatch.setattr(module.model, "forward", scaled)
    with pytest.raises(ModelConfigError, match=r"logits are not its output head applied to the last hidden state"):
        module._shared_step(batch(vocab=50), "train")


def test_compile_option_compiles_the_body_and_the_chunk_function(monkeypatch):
    compiled = []

    def fake_compile(fn, *args, **kwargs):  # as in test_module: a real CPU compile takes minutes
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    from tests.modeling.test_module import TINY, fit_tiny

    module = CausalLMModule(scratch=TINY, vocab_size=50, compile=True, fused_cross_entropy="chunked")
    module.configure_model()
    keys = list(module.model.state_dict())
    fit_tiny(module, steps=2, precision="bf16-mixed")
    assert compiled == ["_call_impl", "chunk_cross_entropy"]
    assert module.model.transformer._compiled_call_impl is not None  # the body, which the fused path calls
    assert list(module.model.state_dict()) == keys


# ----------------------------------------------------------------------------------------- through the CLI
@pytest.mark.slow
def test_cli_run_with_the_option_follows_the_same_loss_curve(tmp_path, tokenizer_dir, shards_dir):
    from modeling.train import main
    from tests.modeling.test_train import read_metrics, series, tiny_args

    curves = {}
    for fused in ("off", "chunked"):
        cli = main(tiny_args(tmp_path / fused, tokenizer_dir, shards_dir, "--model.fused_cross_entropy", fused,
                             "--data.max_docs", "100", "--trainer.max_steps", "12",
                             "--trainer.val_check_interval", "6", "--trainer.limit_val_batches", "2"))
        assert cli.model.fused_cross_entropy == fused
        rows = read_metrics(Path(cli.trainer.log_dir))
        curves[fused] = {key: series(rows, key) for key in ("train_loss_step", "val_loss", "val_acc", "val_ppl")}
    off, chunked = curves["off"], curves["chunked"]
    assert len(off["train_loss_step"]) == 12 and len(off["val_loss"]) == 2
    for key in ("train_loss_step", "val_loss", "val_ppl"):  # Adam turns rounding differences into ~1e-5 drifts
        assert chunked[key] == pytest.approx(off[key], rel=1e-4), key
    assert chunked["val_acc"] == pytest.approx(off["val_acc"], abs=0.02)  # a near-tie argmax may flip
    assert off["train_loss_step"][-1] < off["train_loss_step"][0]
    # its checkpoint loads like any other (the option is a hyperparameter; forward still gives logits)
    from modeling.export import load_causal_lm

    model, _ = load_causal_lm(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
    assert model(torch.tensor([[5, 6, 7]])).logits.shape[:2] == (1, 3)


@pytest.mark.slow
def test_benchmark_script_runs_and_writes_its_section(tmp_path):
    """benchmarks/fused_cross_entropy.py at toy sizes: both variants run, agree, and the docs section renders."""
    import json
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    md, out = tmp_path / "bench-fused-ce.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(repo / "benchmarks/fused_cross_entropy.py"), "--vocab", "512", "--seq", "32",
         "--batch", "2", "--layers", "1", "--width", "32", "--steps", "3", "--warmup", "1", "--repeats", "1",
         "--json", str(out), "--write-md", str(md)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["max_loss_diff"] < 1e-4 and set(report["runs"]) == {"off", "chunked"}
    assert all(r["peak_mb"] >= 0 and r["step_s"] > 0 for runs in report["runs"].values() for r in runs)
    text = md.read_text()
    assert text.startswith("### Fused cross-entropy") and "| chunked |" in text and "chunked vs off" in text
