"""``model.document_mask``: a document's logits do not depend on the documents packed before it, equal those of
the document run alone, and training with it learns; the boundary helpers on hand-made blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modeling.document_mask import (
    document_attention_mask,
    document_inputs,
    document_position_ids,
    mask_document_starts,
)
from modeling.module import IGNORE_INDEX, CausalLMModule, LoraConfig, ModelConfigError, ScratchModelConfig
from tests.modeling.test_module import fit_tiny

EOS = 3
DOC_B = [20, 21, 22, 23, 24]
# docA changes both its tokens and its length; docB sits at another offset in each block
BEFORE_B = ([10, 11, 12, 13, 14, 15], [30, 31])


def scratch(arch: str, attn: str, document_mask: bool = True, **kwargs) -> CausalLMModule:
    torch.manual_seed(0)
    module = CausalLMModule(
        scratch=ScratchModelConfig(arch=arch, max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=2),
        vocab_size=50, attn_implementation=attn, document_mask=document_mask, eos_token_id=EOS, **kwargs)
    module.configure_model()
    return module.eval()


@torch.no_grad()
def doc_b_logits(module: CausalLMModule, doc_a: list[int], after: list[int] = ()) -> torch.Tensor:
    """Logits at docB's tokens in the block [docA, eos, docB, *after]."""
    ids = torch.tensor([[*doc_a, EOS, *DOC_B, *after]])
    start = len(doc_a) + 1
    return module(ids)[0, start:start + len(DOC_B)].float()


# ----------------------------------------------------------------------------------------- the helpers
def test_positions_restart_after_every_eos():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, EOS, 4],
                        [EOS, 1, 2, 13, EOS, 6, 7, 8, 9]])
    assert document_position_ids(ids, EOS).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 0],
                                                        [0, 0, 1, 2, 3, 0, 1, 2, 3]]


def test_mask_is_causal_and_block_diagonal():
    ids = torch.tensor([[5, EOS, 7, 8]])
    allowed = document_attention_mask(ids, EOS)[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0],
                       [1, 1, 0, 0],
                       [0, 0, 1, 0],
                       [0, 0, 1, 1]]
    additive = document_attention_mask(ids, EOS, torch.float32)[0, 0]
    assert (additive == 0).int().tolist() == allowed and additive.min() == torch.finfo(torch.float32).min


def test_first_token_of_each_document_is_not_a_target():
    ids = torch.tensor([[5, EOS, 7, 8, EOS, 9]])
    labels = mask_document_starts(ids, ids, EOS)
    assert labels.tolist() == [[5, EOS, IGNORE_INDEX, 8, EOS, IGNORE_INDEX]]
    assert ids.tolist() == [[5, EOS, 7, 8, EOS, 9]]  # a copy


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flash_attention_3", "kernels-community/flash-attn3"])
def test_flash_attention_gets_one_flat_row_of_restarting_positions(kernel):
    ids = torch.tensor([[5, EOS, 7], [8, 9, EOS]])
    inputs = document_inputs(ids, EOS, kernel)
    assert inputs["input_ids"].tolist() == [[5, EOS, 7, 8, 9, EOS]]
    assert inputs["position_ids"].tolist() == [[0, 1, 0, 0, 1, 2]]  # each row starts a document too
    assert "attention_mask" not in inputs
    flex = document_inputs(ids, EOS, "flex_attention")  # masking_utils builds the block mask, batch as it is
    assert flex["position_ids"].tolist() == [[0, 1, 0], [0, 1, 2]] and "attention_mask" not in flex
    with pytest.raises(ModelConfigError, match="use attn_implementation sdpa or eager"):
        document_inputs(ids, EOS, "flash_attention_2", padding_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))


# ------------------------------------------------------------------------------------ the models
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_document_does_not_see_the_one_before(arch, attn):
    on = scratch(arch, attn)
    first, second = (doc_b_logits(on, doc_a) for doc_a in BEFORE_B)
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-5)
    # ... and equals the document run alone as its own sequence (positions restart, so GPT-2's learned ones match)
    torch.testing.assert_close(first, on(torch.tensor([DOC_B]))[0].detach(), rtol=1e-5, atol=1e-5)
    # later documents do not reach back either: a causal model's logits ignore what follows
    torch.testing.assert_close(first, doc_b_logits(on, BEFORE_B[0], after=[EOS, 40, 41]), rtol=1e-5, atol=1e-5)

    off = scratch(arch, attn, document_mask=False)  # the mutant: same weights, plain causal attention
    leaked = (doc_b_logits(off, BEFORE_B[0]) - doc_b_logits(off, BEFORE_B[1])).abs().max()
    assert leaked > 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_rows_of_a_batch_are_packed_apart(arch):
    """Each row has its own documents; a row's first token starts one whatever the row before ended with."""
    module = scratch(arch, "sdpa")
    a = [*BEFORE_B[0], EOS, *DOC_B]
    b = [*DOC_B, EOS, *BEFORE_B[1], EOS, 40, 41, 42]
    with torch.no_grad():
        batch = module(torch.tensor([a, b]))
        torch.testing.assert_close(batch[0], module(torch.tensor([a]))[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch[1], module(torch.tensor([b]))[0], rtol=1e-5, atol=1e-5)


def test_a_bfloat16_lora_model_keeps_documents_apart(gpt2_dir):
    """A peft-wrapped, half-precision base passes the position ids and the mask through."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(gpt2_dir).eos_token_id
    torch.manual_seed(0)
    module = CausalLMModule(pretrained=str(gpt2_dir), lora=LoraConfig(r=4, dropout=0.0), dtype="bfloat16",
                            attn_implementation="eager", document_mask=True)  # eos from the model's config
    module.configure_model()
    module.eval()
    doc_b = [40, 41, 42, 43]
    with torch.no_grad():
        first = module(torch.tensor([[50, 51, 52, eos, *doc_b]]))[0, 4:].float()
        second = module(torch.tensor([[60, eos, *doc_b]]))[0, 2:].float()
    assert module.eos_token_id == eos
    torch.testing.assert_close(first, second, rtol=0, atol=0.05)  # bf16 rounding of differently shaped matmuls
    module.document_mask = False
    with torch.no_grad():
        leaked = module(torch.tensor([[50, 51, 52, eos, *doc_b]]))[0, 4:].float()
    assert (leaked - first).abs().max() > 0.05


def test_the_loss_skips_each_documents_first_token():
    from modeling.loss import next_token_targets, token_cross_entropy

    module = scratch("gpt2", "eager")
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 10, 11, 12, 13, EOS]])
    with torch.no_grad():
        loss = module._shared_step({"input_ids": ids}, "val")
        logits = module(ids)[0]
    kept = token_cross_entropy(logits, next_token_targets(mask_document_starts(ids, ids, EOS))[0])
    every = token_cross_entropy(logits, next_token_targets(ids)[0])
    torch.testing.assert_close(loss, kept)
    assert (loss - every).abs() > 1e-4  # the two eos -> next-document targets are left out


def test_fused_loss_sees_the_same_documents():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 10, 11, 12, 13, EOS]])
    losses = [scratch("llama", "eager", fused_cross_entropy=fused)._shared_step({"input_ids": ids}, "val")
              for fused in ("off", "chunked")]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)


def test_without_an_eos_id_the_error_names_the_fix():
    module = CausalLMModule(scratch=ScratchModelConfig(hidden_size=16, num_layers=1, num_heads=2), vocab_size=50,
                            document_mask=True)
    with pytest.raises(ModelConfigError, match=r"--model\.document_mask needs the eos token id"):
        module.configure_model()


# ------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(("precision", "checkpointing"), [("32-true", False), ("bf16-mixed", True)])
def test_training_steps_run_with_the_mask(precision, checkpointing):
    module = scratch("gpt2", "eager", gradient_checkpointing=checkpointing,
                     optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2)).train()
    trainer = fit_tiny(module, steps=3, precision=precision)
    assert trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_cli_run_with_the_mask_learns(tmp_path: Path, tokenizer_dir: Path, shards_dir: Path):
    """Through ``python -m modeling.train``: the CLI links the tokenizer's eos, and the loss falls."""
    from modeling.train import main
    from tests.modeling.test_train import read_metrics, series, tiny_args

    cli = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, "--model.document_mask", "true",
                         "--trainer.max_steps", "30", "--trainer.val_check_interval", "30",
                         "--data.max_docs", "200"))
    module = cli.model
    assert module.document_mask and module.eos_token_id == cli.datamodule.tokenizer.eos_token_id
    losses = series(read_metrics(Path(cli.trainer.log_dir)), "train_loss_step")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
