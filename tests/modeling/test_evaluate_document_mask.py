"""``modeling.evaluate`` and the held-out callback score a ``--model.document_mask`` model as it was trained:
evaluation's perplexity is the module's own validation perplexity under the mask, the setting is read from a
checkpoint and from an export's ``training.json``, and bits per byte leaves out the bytes of the targets the mask
leaves out."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

from modeling.evaluate import EvaluateConfig, evaluate
from modeling.evaluation.heldout import HeldoutBitsPerByte
from modeling.evaluation.scoring import BYTES, TOKENS, score_blocks
from modeling.export import TRAINING_FILE, ModelLoadError, export_hf, load_checkpoint, trained_document_mask
from modeling.module import CausalLMModule
from modeling.packing import SEPARATOR, PackedBlocks
from tests.modeling.conftest import make_docs, write_shards
from tests.modeling.model_forms import train_checkpoint

BLOCK = 32


@pytest.fixture(scope="module")
def masked_ckpt(tmp_path_factory, tokenizer_dir, shards_dir) -> Path:
    """Two training steps of a tiny GPT-2 with ``document_mask=True``, saved as a training run saves it."""
    return train_checkpoint(tmp_path_factory.mktemp("masked"), tokenizer_dir, shards_dir, block_size=BLOCK,
                            document_mask=True)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("heldout"), make_docs(16, seed=7), n_shards=1)


def load_module(ckpt: Path) -> CausalLMModule:
    state = load_checkpoint(ckpt)
    module = CausalLMModule(**state["hyper_parameters"])
    module.configure_model()
    module.load_state_dict(state["state_dict"])
    return module.eval()


def run_evaluate(model: Path, data: Path, out: Path, **kwargs) -> dict:
    cfg = EvaluateConfig(model=str(model), data=(str(data),), device="cpu", output=str(out / "metrics.json"),
                         report=False, **kwargs)
    return evaluate(cfg)


def read_docs(data: Path) -> list[str]:
    return [d for f in sorted(data.glob("*.parquet")) for d in pq.read_table(f)["text"].to_pylist()]


def test_evaluate_scores_a_masked_checkpoint_as_its_validation_step_does(masked_ckpt, heldout, tokenizer_dir,
                                                                          tmp_path):
    module = load_module(masked_ckpt)
    assert module.document_mask
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    blocks = list(PackedBlocks([read_docs(heldout)], tok, BLOCK))
    assert len(blocks) > 3 and len(blocks[-1]) < BLOCK  # several blocks, and a short last one
    with torch.no_grad():
        for ids in blocks:  # one block per step: the short last one needs no padding
            module.validation_step({"input_ids": torch.tensor([ids])}, 0)
    val = module.metrics["val_metrics"]
    val_ppl, val_loss = float(val["ppl"].compute()), float(val["loss"].compute())

    got = run_evaluate(masked_ckpt, heldout, tmp_path, batch_size=3)  # None: the checkpoint's setting
    lm = got["details"]["language_modeling"]
    assert (lm["document_mask"], lm["document_mask_from"]) == (True, "the checkpoint's model.document_mask")
    assert lm["block_size"] == BLOCK
    assert got["metrics"]["perplexity"] == pytest.approx(val_ppl, rel=1e-5)
    assert lm["loss"] == pytest.approx(val_loss, rel=1e-5)
    starts = sum(1 for ids in blocks for t in range(1, len(ids)) if ids[t - 1] == tok.eos_token_id)
    assert lm["tokens"] == sum(len(ids) - 1 for ids in blocks) - starts  # no document start is a target

    off = run_evaluate(masked_ckpt, heldout, tmp_path, batch_size=3, document_mask=False)
    lm_off = off["details"]["language_modeling"]
    assert (lm_off["document_mask"], lm_off["document_mask_from"]) == (False, "--document-mask")
    assert lm_off["tokens"] == lm["tokens"] + starts
    assert abs(off["metrics"]["perplexity"] - val_ppl) > 1e-3 * val_ppl  # context from other documents


def test_an_export_records_the_mask_and_evaluate_reads_it(masked_ckpt, heldout, tokenizer_dir, tmp_path):
    module = load_module(masked_ckpt)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out = export_hf(module, tok, tmp_path / "hf", block_size=BLOCK)
    assert json.loads((out / TRAINING_FILE).read_text()) == {"block_size": BLOCK, "document_mask": True}
    exported = run_evaluate(out, heldout, tmp_path)
    lm = exported["details"]["language_modeling"]
    assert (lm["document_mask"], lm["document_mask_from"]) == (True, "the export's training.json")
    from_ckpt = run_evaluate(masked_ckpt, heldout, tmp_path)  # the same weights, scored the same way
    assert exported["metrics"]["perplexity"] == pytest.approx(from_ckpt["metrics"]["perplexity"], rel=1e-5)

    # an export from before the record: training.json without the key means trained without the mask
    (out / TRAINING_FILE).write_text(json.dumps({"block_size": BLOCK}))
    lm = run_evaluate(out, heldout, tmp_path)["details"]["language_modeling"]
    assert (lm["document_mask"], lm["document_mask_from"]) == (False, "the export's training.json")
    (out / TRAINING_FILE).unlink()
    lm = run_evaluate(out, heldout, tmp_path, block_size=BLOCK)["details"]["language_modeling"]
    assert (lm["document_mask"], lm["document_mask_from"]) == (False, "not recorded with the model (off)")

    (out / TRAINING_FILE).write_text(json.dumps({"document_mask": "yes"}))
    with pytest.raises(ModelLoadError, match="pass --document-mask"):
        trained_document_mask(out)


def test_bits_per_byte_under_the_mask_leaves_out_document_starts_and_their_bytes(hf_model):
    model, tok = hf_model
    docs = make_docs(10, seed=3)
    blocks = list(PackedBlocks([docs], tok, 16).blocks(with_bytes=True))
    pad = tok.pad_token_id
    off = score_blocks(model, blocks, pad, batch_size=4)
    on = score_blocks(model, blocks, pad, batch_size=4, document_mask=True, eos_token_id=tok.eos_token_id)

    start_tokens, start_bytes = 0, 0
    per_doc_starts = np.zeros(len(on.per_doc))
    for block in blocks:
        for t in range(1, len(block.ids)):
            if block.ids[t - 1] == tok.eos_token_id:
                start_tokens += 1
                start_bytes += block.nbytes[t] if block.nbytes[t] != SEPARATOR else 0
                per_doc_starts[block.docs[t]] += 1
    assert start_tokens > 5 and start_bytes > 0
    assert on.tokens == off.tokens - start_tokens
    assert on.totals()[BYTES] == off.totals()[BYTES] - start_bytes  # an excluded target's bytes go with it
    np.testing.assert_array_equal(on.per_doc[:, TOKENS], off.per_doc[:, TOKENS] - per_doc_starts)
    assert on.bits_per_byte != pytest.approx(off.bits_per_byte, rel=1e-4)


def test_the_heldout_callback_scores_with_the_modules_setting(masked_ckpt, heldout, tokenizer_dir):
    module = load_module(masked_ckpt)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    callback = HeldoutBitsPerByte(str(heldout), max_docs=None)
    callback._tokenizer, callback.block_size, callback._files = tok, BLOCK, sorted(heldout.glob("*.parquet"))
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(forward_context=nullcontext))
    got = callback.score(trainer, module)
    blocks = list(PackedBlocks([read_docs(heldout)], tok, BLOCK).blocks(with_bytes=True))
    want = score_blocks(module.model, blocks, tok.pad_token_id, 4, document_mask=True,
                        eos_token_id=tok.eos_token_id)
    assert got["bpb"] == pytest.approx(want.bits_per_byte, rel=1e-6)
    assert got["ppl"] == pytest.approx(want.perplexity, rel=1e-6)
    module.document_mask = False  # the same weights, trained without the mask: scored without it
    assert callback.score(trainer, module)["ppl"] != pytest.approx(want.perplexity, rel=1e-4)
