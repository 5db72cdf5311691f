"""modeling.packing: documents joined by eos and cut into blocks, and the proof that evaluation scores exactly the
blocks training caches (evaluating the validation documents gives the validation blocks), with the training
module's own loss."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from modeling.data import TextDataModule
from modeling.evaluation.perplexity import language_model_metrics
from modeling.module import CausalLMModule
from modeling.packing import PackedBlocks, encode_documents
from modeling.splits import is_validation
from modeling.token_blocks import TokenBlocks
from tests.modeling.conftest import make_docs, write_shards


class DigitTokenizer:
    """Each space-separated number is its token id; eos is 0."""

    eos_token_id = 0

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[int(w) for w in t.split()] for t in texts]}


def test_blocks_pack_documents_like_training():
    batches = [["1 2 3", "4"], ["5 6 7 8 9"]]
    # documents end with eos (0); blocks run across documents and batches; the last one is short
    assert list(PackedBlocks(batches, DigitTokenizer(), 4)) == [[1, 2, 3, 0], [4, 0, 5, 6], [7, 8, 9, 0]]
    packed = PackedBlocks(batches, DigitTokenizer(), 5)
    assert list(packed) == [[1, 2, 3, 0, 4], [0, 5, 6, 7, 8], [9, 0]]
    assert (packed.docs, packed.tokens) == (3, 12)  # eos counted: the stream holds one per document
    assert encode_documents(DigitTokenizer(), ["7 8"]) == [[7, 8, 0]]


def test_a_tokenizer_without_eos_cannot_pack():
    class NoEos(DigitTokenizer):
        eos_token_id = None

    with pytest.raises(ValueError, match="no eos token"):
        list(PackedBlocks([["1 2"]], NoEos(), 4))


class RecordingModel(torch.nn.Module):
    """The model evaluation calls, recording the real (unmasked) tokens of every row it is handed."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows: list[list[int]] = []

    def forward(self, input_ids, attention_mask, use_cache):
        self.rows += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


@pytest.mark.parametrize("block_size", [16, 23])
def test_evaluation_scores_exactly_the_blocks_training_caches(hf_model, gpt2_dir, tokenizer_dir, tmp_path,
                                                               block_size):
    model, tok = hf_model
    shards = write_shards(tmp_path / "shards", make_docs(40, seed=7), n_shards=2)
    dm = TextDataModule(tokenizer=str(tokenizer_dir), path=str(shards), block_size=block_size, batch_size=4,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.25)
    cache = dm.build_cache()
    meta = json.loads((cache / "meta.json").read_text())["val"]
    cached = np.load(cache / "val.npy")
    training = [row.tolist() for row in cached]
    training[-1] = training[-1][: meta["last_block_tokens"]]  # the rest is padding, never scored

    # the validation documents (by the hash of their id), in corpus order, as a file evaluation can read
    rows = [r for f in sorted(shards.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    held = [r["text"] for r in rows if is_validation(r["id"], 0.25, seed=0)]
    assert held
    pq.write_table(pa.table({"text": held}), tmp_path / "val.parquet")
    recorder = RecordingModel(model)
    got = language_model_metrics(recorder, tok, [tmp_path / "val.parquet"], "text", block_size=block_size,
                                 batch_size=3)
    assert recorder.rows == training  # the same blocks, in the same order
    assert (got["docs"], got["blocks"]) == (meta["docs"], meta["blocks"])
    assert got["tokens"] == meta["tokens"] - meta["blocks"]  # every token but each block's first is predicted

    # and the same numbers: the training module's validation step over every cached block (its loss, its metrics)
    module = CausalLMModule(pretrained=str(gpt2_dir))
    module.configure_model()
    module.eval()
    every_block = TokenBlocks(cached, np.arange(len(cached)), meta["last_block_tokens"])
    with torch.no_grad():
        for batch in DataLoader(every_block, batch_size=4):
            module._shared_step(batch, "val")
    val = module.metrics["val_metrics"]
    assert got["perplexity"] == pytest.approx(val["ppl"].compute().item(), rel=1e-5)
    assert got["loss"] == pytest.approx(val["loss"].compute().item(), rel=1e-5)
    assert got["next_token_accuracy"] == pytest.approx(val["acc"].compute().item(), abs=1e-6)
