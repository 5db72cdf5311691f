"""Bits per byte: against a hand computation on a tiny model, byte counts that add up to each document's UTF-8
length for BPE, byte-level BPE and Unigram tokenizers, breakdowns that add up to the totals, the report, and the
training callback in a short CPU fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from modeling.evaluate import EvaluateConfig, evaluate
from modeling.evaluation.perplexity import language_model_metrics
from modeling.packing import SEPARATOR, PackedBlocks, encode_documents, encode_documents_with_bytes
from tests.modeling.conftest import SPECIALS, make_docs

#: Whitespace runs, tabs, newlines, accents, CJK, an emoji, leading and trailing spaces: what offsets get wrong.
HARD_DOCS = ["  the patient\twas given  aspirin.\n\nafter ", "café naïve — 日本語 😀 the party", "x",
             "the contract says\r\nthe party shall pay   ", " ﬁnal ﬁeld", "\n"]


def unigram_tokenizer(tmp_path: Path) -> PreTrainedTokenizerFast:
    """A Unigram/metaspace tokenizer with an NFKC normalizer (offsets then point into the unnormalized text)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=list(SPECIALS.values()), unk_token="<unk>")
    tok.train_from_iterator(make_docs(200, seed=2), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def whitespace_bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A classic (not byte-level) BPE on whitespace-split words, with an unk for unseen characters."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=list(SPECIALS.values()))
    tok.train_from_iterator(make_docs(200, seed=3), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


@pytest.mark.parametrize("kind", ["byte_level_bpe", "bpe", "unigram"])
def test_byte_counts_of_a_document_sum_to_its_utf8_length(kind, hf_model, tmp_path):
    tok = {"byte_level_bpe": lambda: hf_model[1], "bpe": whitespace_bpe_tokenizer,
           "unigram": lambda: unigram_tokenizer(tmp_path)}[kind]()
    docs = HARD_DOCS + make_docs(5, seed=9)
    ids, counts = encode_documents_with_bytes(tok, docs)
    assert ids == encode_documents(tok, docs)  # the ids training sees are unchanged
    for text, c in zip(docs, counts, strict=True):
        assert c[-1] == SEPARATOR and SEPARATOR not in c[:-1]  # only the eos after the document covers no text
        assert min(c[:-1], default=0) >= 0
        # a document the tokenizer maps to no token at all ("\n" for a whitespace pre-tokenizer) has no bytes
        assert sum(c[:-1]) == (len(text.encode("utf-8")) if len(c) > 1 else 0), (kind, text)
    # and through the packer: the same blocks as training's, each token tagged with its document
    plain = list(PackedBlocks([docs[:6], docs[6:]], tok, 7))
    blocks = list(PackedBlocks([docs[:6], docs[6:]], tok, 7).blocks(with_bytes=True))
    assert [b.ids for b in blocks] == plain
    per_doc = [0] * len(docs)
    for b in blocks:
        for n, d in zip(b.nbytes, b.docs, strict=True):
            per_doc[d] += max(n, 0)
    assert per_doc == [len(d.encode()) if len(c) > 1 else 0 for d, c in zip(docs, counts, strict=True)]
    assert sum(len(c) == 1 for c in counts) == (1 if kind == "bpe" else 0)


def hand_bpb(model, tok, docs: list[str], block_size: int) -> tuple[float, int]:
    """Independently of the packer's byte accounting and the scoring loop: pack by hand, one plain forward pass
    per block, log-softmax, and each byte-level token's bytes read off its string (one character per byte)."""
    stream, is_eos = [], []
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        stream += [*ids, tok.eos_token_id]
        is_eos += [False] * len(ids) + [True]
    nll, nbytes = 0.0, 0
    for start in range(0, len(stream), block_size):
        block = stream[start : start + block_size]
        if len(block) < 2:
            continue
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([block])).logits[0].double(), -1)
        for t in range(1, len(block)):
            if is_eos[start + t]:
                continue
            nll += -logp[t - 1, block[t]].item()
            nbytes += len(tok.convert_ids_to_tokens(block[t]))
    return nll / (math.log(2) * nbytes), nbytes


@pytest.mark.parametrize("block_size", [7, 64])
def test_bits_per_byte_matches_a_hand_computation(hf_model, tmp_path, block_size):
    model, tok = hf_model
    docs = ["the patient was given aspirin.", "  the contract  says the party shall pay.", "of the first part"]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    got = language_model_metrics(model, tok, [path], "text", block_size=block_size, batch_size=2)
    want, nbytes = hand_bpb(model, tok, docs, block_size)
    assert got["bytes"] == nbytes
    assert got["bits_per_byte"] == pytest.approx(want, rel=1e-6)
    assert 0 < got["bits_per_byte"] < 20


def write_grouped(root: Path) -> Path:
    """Shards with source and lang columns: 5 sources of different sizes, 2 languages, some nulls."""
    root.mkdir(parents=True, exist_ok=True)
    docs = make_docs(30, seed=11)
    sources = [f"src{i % 5}" if i % 7 else "big" for i in range(len(docs))]
    langs = ["en" if i % 3 else None for i in range(len(docs))]
    pq.write_table(pa.table({"text": docs[:20], "source": sources[:20], "lang": langs[:20]}), root / "a.parquet")
    pq.write_table(pa.table({"text": docs[20:], "source": sources[20:]}), root / "b.parquet")  # no lang column
    return root


def test_breakdowns_add_up_to_the_totals_and_the_report_is_written(gpt2_dir, tmp_path):
    data = write_grouped(tmp_path / "grouped")
    out = tmp_path / "eval" / "metrics.json"
    cfg = EvaluateConfig(model=str(gpt2_dir), data=(str(data),), block_size=16, device="cpu", output=str(out),
                         max_groups=3)
    result = evaluate(cfg)
    assert set(result["metrics"]) == {"perplexity", "next_token_accuracy", "bits_per_byte"}
    lm = result["details"]["language_modeling"]
    by_source, by_lang = result["breakdowns"]["source"], result["breakdowns"]["lang"]
    assert by_source["total_groups"] == 6 and len(by_source["groups"]) == 4  # 3 shown + (other)
    assert by_source["groups"][-1]["group"] == "(other)" and by_source["groups"][-1]["groups"] == 3
    assert {g["group"] for g in by_lang["groups"]} == {"en", "(none)"}
    total_nll_bits = result["metrics"]["bits_per_byte"] * lm["bytes"]
    for table in (by_source, by_lang):
        groups = table["groups"]
        assert sum(g["tokens"] for g in groups) == lm["tokens"]
        assert sum(g["bytes"] for g in groups) == lm["bytes"]
        assert sum(g["docs"] for g in groups) == lm["docs"] == 30
        assert sum(g["bits_per_byte"] * g["bytes"] for g in groups) == pytest.approx(total_nll_bits, rel=1e-9)
        assert sum(g["next_token_accuracy"] * g["tokens"] for g in groups) == pytest.approx(
            result["metrics"]["next_token_accuracy"] * lm["tokens"], rel=1e-6)
        assert sum(math.log(g["perplexity"]) * g["tokens"] for g in groups) == pytest.approx(
            lm["loss"] * lm["tokens"], rel=1e-5)
    assert json.loads(out.read_text())["breakdowns"] == result["breakdowns"]
    report = (out.parent / "metrics.md").read_text()
    assert "| bits_per_byte |" in report and "## By source" in report and "| (other) |" in report
    assert (out.parent / "metrics-bpb.png").stat().st_size > 1000


def test_each_target_token_counts_for_its_own_document(hf_model, tmp_path):
    """In one block holding three documents, each document's tokens (and eos) are its own; the block's first
    token is never a target."""
    model, tok = hf_model
    docs = ["the patient was given aspirin.", "the contract says", "of the first part"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": d, "source": s}) + "\n" for d, s in zip(docs, "abc", strict=True)))
    got = language_model_metrics(model, tok, [data], "text", block_size=64, breakdown_columns=["source"])
    groups = {g["group"]: g for g in got["breakdowns"]["source"]["groups"]}
    lengths = [len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs]
    assert [groups[s]["tokens"] for s in "abc"] == [lengths[0] - 1, lengths[1], lengths[2]]
    first_token_bytes = len(tok.convert_ids_to_tokens(tok(docs[0], add_special_tokens=False)["input_ids"][0]))
    assert [groups[s]["bytes"] for s in "abc"] == [len(docs[0]) - first_token_bytes, len(docs[1]), len(docs[2])]


def test_the_training_callback_logs_heldout_bpb_as_evaluation_scores_it(tmp_path, tokenizer_dir, shards_dir):
    from modeling.train import main
    from tests.modeling.test_train import read_metrics, series, tiny_args

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"text": d}) + "\n" for d in make_docs(30, seed=21)))
    cli = main(tiny_args(tmp_path / "runs", tokenizer_dir, shards_dir, "--trainer.max_steps", "4",
                         "--data.max_docs", "60", "--trainer.callbacks+", "modeling.evaluation.heldout.HeldoutBitsPerByte",
                         "--trainer.callbacks.data", str(heldout), "--trainer.callbacks.every_n_steps", "2",
                         "--trainer.callbacks.max_docs", "20"))
    rows = read_metrics(Path(cli.trainer.log_dir))
    bpb, ppl = series(rows, "heldout/bpb"), series(rows, "heldout/ppl")
    assert len(bpb) == 2 and len(ppl) == 2 and len(series(rows, "heldout/acc")) == 2  # steps 2 and 4
    assert [int(r["step"]) for r in rows if r.get("heldout/bpb")] == [2, 4]
    # the last one is what evaluation computes for the trained model on the same documents and block size
    model, tok = cli.model.model.eval(), cli.datamodule.tokenizer
    want = language_model_metrics(model, tok, [heldout], "text", block_size=32, max_docs=20)
    assert bpb[-1] == pytest.approx(want["bits_per_byte"], rel=1e-5)
    assert ppl[-1] == pytest.approx(want["perplexity"], rel=1e-5)
    assert bpb[-1] < bpb[0]  # it learns (the held-out documents are like the training ones)


def test_a_slow_tokenizer_leaves_bpb_out_by_default_and_is_an_error_when_asked(gpt2_dir, tmp_path, monkeypatch):
    from modeling.evaluate import EvaluateError

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": d, "source": "s"}) + "\n" for d in make_docs(4, seed=4)))
    monkeypatch.setattr(PreTrainedTokenizerFast, "is_fast", property(lambda self: False))  # no offsets

    def run(**kw):
        return evaluate(EvaluateConfig(model=str(gpt2_dir), data=(str(data),), block_size=16, device="cpu",
                                       output=str(tmp_path / "m.json"), **kw))

    result = run()
    assert set(result["metrics"]) == {"perplexity", "next_token_accuracy"} and "breakdowns" not in result
    with pytest.raises(EvaluateError, match=r"need a fast tokenizer.*--tokenizer.*--metrics perplexity"):
        run(metrics=("perplexity", "bits_per_byte"))
