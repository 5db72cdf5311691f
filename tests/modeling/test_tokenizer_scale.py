"""Tokenizer training that scales: byte fallback (exact round trip of any text, never <unk>) and the hash-chosen
sample budget (deterministic, order-free, stable as the corpus grows, disjoint from the held-out documents)."""

from __future__ import annotations

import json
import logging
import random
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

from modeling.tokenizer import (
    BYTE_TOKENS,
    CorpusSplit,
    TokenizerTrainConfig,
    doc_hash,
    is_heldout,
    parse_train,
    plan_sample,
    save_transformers_dir,
    train_tokenizer,
)
from modeling.tokenizer.load import load_tokenizer
from modeling.tokenizer.sample import HASH_END, heldout_cut

WORDS = ["the", "river", "market", "school", "morning", "evening", "friend", "family", "house", "garden",
         "road", "music", "book", "letter", "train", "weather", "summer", "winter", "window", "table", "bread",
         "coffee", "story", "game", "team", "village", "teacher", "walked", "visited", "opened", "closed",
         "found", "carried", "painted", "cooked", "wrote", "read", "played", "watched", "built", "quiet",
         "bright"]


def corpus(n: int, seed: int = 0) -> list[str]:
    """English-like documents with punctuation and digits, nothing exotic: what the nasty texts are not."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))).capitalize() + rng.choice([".", "!", " 42."])
            + f" #{i}" for i in range(n)]


def random_unicode(rng: random.Random, n: int) -> str:
    """``n`` code points drawn from all of Unicode: no lone surrogates (not UTF-8), no U+2581 (see below)."""
    out: list[str] = []
    while len(out) < n:
        cp = rng.choice([rng.randrange(0x20, 0x80), rng.randrange(0, 0x3000), rng.randrange(0, 0x110000)])
        if not 0xD800 <= cp <= 0xDFFF and cp != 0x2581:
            out.append(chr(cp))
    return "".join(out)


_rng = random.Random(3)
NASTY = [
    "control \x00\x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m \x7f\x85 end",
    "backticks `code` and ```python\nprint('x')\n```",
    "runs of spaces:  two,   three,        eight, trailing   ",
    "tabs\t\tand\ttabs\t",
    "windows\r\nline\r\nends\r\n\r\n",
    "emoji 🙂👍🏽👨‍👩‍👧 🇫🇷",
    "CJK 漢字とかなカナ 한국어 中文",
    "combining e\u0301 a\u0308 Z\u0336\u0337 \u0915\u094d\u0937",
    "NBSP\xa0here, ideographic\u3000space, zero\u200bwidth\u200djoiner, ﬁ ligature, Ｆｕｌｌ",
    "a literal <0x41> and <0xC3><0xA9> in text",
    "mixed: מה שלום مرحبا Ελληνικά кириллица",
    *(random_unicode(_rng, 300) for _ in range(5)),
]


def write_parquet(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path)
    return path


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_parquet(d / "part-0.parquet", corpus(400))
    return d


def train(inputs: Path, out: Path, **kw: object) -> dict:
    kw.setdefault("vocab_size", 500)
    kw.setdefault("show_progress", False)
    return train_tokenizer(TokenizerTrainConfig(input=str(inputs), output=str(out), **kw))  # type: ignore[arg-type]


# ---- byte fallback: any text round-trips, nothing is unknown -----------------------------------------------

@pytest.fixture(scope="module", params=[("unigram", None), ("unigram", False), ("bpe", None)],
                ids=["unigram", "unigram-no-prefix", "bpe"])
def exact_tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    model, prefix = request.param
    out = tmp_path_factory.mktemp(f"tok-{model}")
    stats = train(corpus_dir, out, model=model, add_prefix_space=prefix, normalizer="none")
    assert stats["byte_fallback"] is True
    return out


def test_any_text_round_trips_exactly_and_never_unk(exact_tok: Path) -> None:
    tok = Tokenizer.from_file(str(exact_tok / "tokenizer.json"))
    unk = tok.token_to_id("<unk>")
    for text in NASTY:
        enc = tok.encode(text, add_special_tokens=False)
        assert unk not in enc.ids, (text, enc.tokens)
        assert tok.decode(enc.ids) == text, (text, enc.tokens)
    hf = AutoTokenizer.from_pretrained(exact_tok)  # the same through transformers, as training loads it
    joined = "\n".join(NASTY)
    assert hf.decode(hf(joined, add_special_tokens=False)["input_ids"]) == joined


def test_unigram_byte_tokens_are_in_the_vocab_and_counted(exact_tok: Path) -> None:
    stats = json.loads((exact_tok / "train_stats.json").read_text())
    if stats["model"] != "unigram":
        return
    vocab = Tokenizer.from_file(str(exact_tok / "tokenizer.json")).get_vocab()
    assert all(b in vocab for b in BYTE_TOKENS)
    assert len(vocab) == stats["vocab_size"] <= stats["vocab_size_requested"]
    data = json.loads((exact_tok / "tokenizer.json").read_text())
    assert data["model"]["byte_fallback"] is True
    assert "ByteFallback" in json.dumps(data["decoder"])
    # the byte tokens are vocabulary pieces, not added tokens: text spelling one is not matched as one
    assert not {t["content"] for t in data["added_tokens"]} & set(BYTE_TOKENS)


def test_nfkc_round_trip_is_exact_for_normalized_text(tmp_path: Path, corpus_dir: Path) -> None:
    train(corpus_dir, tmp_path / "nfkc", model="unigram")  # the default normalizer
    tok = Tokenizer.from_file(str(tmp_path / "nfkc" / "tokenizer.json"))
    for text in NASTY:
        enc = tok.encode(text)
        assert tok.token_to_id("<unk>") not in enc.ids
        assert tok.decode(enc.ids) == unicodedata.normalize("NFKC", text), text


def test_space_mark_and_leading_space_are_the_documented_exceptions(exact_tok: Path) -> None:
    tok = Tokenizer.from_file(str(exact_tok / "tokenizer.json"))
    config = json.loads((exact_tok / "train_stats.json").read_text())["config"]
    if config["model"] == "bpe":
        assert tok.decode(tok.encode(" a\u2581b").ids) == " a\u2581b"  # byte-level: no exception at all
        return
    # Metaspace models spell spaces as U+2581, so a literal U+2581 decodes as a space (as in SentencePiece)
    assert tok.decode(tok.encode("a\u2581b").ids) == "a b"
    lead = tok.decode(tok.encode("  two leading").ids)
    assert lead == (" two leading" if config["add_prefix_space"] is not False else "  two leading")


def test_without_byte_fallback_unseen_characters_are_unk(tmp_path: Path, corpus_dir: Path) -> None:
    # the mutant the round-trip test must catch: byte fallback off loses the text
    stats = train(corpus_dir, tmp_path / "tok", model="unigram", byte_fallback=False, normalizer="none")
    assert stats["byte_fallback"] is False
    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert "<0x41>" not in tok.get_vocab()
    lost = [t for t in NASTY if tok.decode(tok.encode(t).ids) != t]
    assert len(lost) >= len(NASTY) // 2
    assert tok.token_to_id("<unk>") in tok.encode(NASTY[0]).ids


def test_byte_fallback_options_refused_where_they_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WordPiece has no byte fallback"):
        TokenizerTrainConfig(input="x", output="o", model="wordpiece", byte_fallback=True)
    with pytest.raises(ValueError, match="byte-level BPE has a token for every byte"):
        TokenizerTrainConfig(input="x", output="o", model="bpe", byte_fallback=False)
    assert TokenizerTrainConfig(input="x", output="o", model="wordpiece").uses_byte_fallback is False
    assert parse_train(["--input", "x", "--output", "o", "--no-byte-fallback"]).uses_byte_fallback is False
    assert parse_train(["--input", "x", "--output", "o", "--sample-bytes", "null"]).sample_bytes is None
    assert TokenizerTrainConfig(input="x", output="o", sample_bytes=0).sample_bytes is None
    with pytest.raises(ValueError, match="--sample-bytes > 0"):
        TokenizerTrainConfig(input="x", output="o", sample_bytes=-1)


def test_a_tokenizer_dir_saved_before_byte_fallback_still_loads(tmp_path: Path) -> None:
    # the pipeline as it was written before byte fallback: Unigram, Metaspace decoder alone
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    tok.train_from_iterator(corpus(200), trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], unk_token="<unk>", show_progress=False))
    save_transformers_dir(tok, TokenizerTrainConfig(input="x", output=str(tmp_path)), tmp_path)
    hf = load_tokenizer(tmp_path)
    assert (hf.eos_token_id, hf.pad_token_id) == (2, 3)
    text = "The river  and the road."
    assert hf.decode(hf(text, add_special_tokens=False)["input_ids"]) == text


# ---- the sample budget ------------------------------------------------------------------------------------

def sampled(texts: list[str], budget: int, heldout: float = 0.05, batch: int = 37) -> tuple[set[str], list[str]]:
    """(documents trained on, held-out documents) for ``texts`` read in batches of ``batch``."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    plan = plan_sample(iter(batches), budget, heldout, progress_every=-1)
    split = CorpusSplit(iter(batches), heldout, 1000, sample_below=plan.threshold)
    return {t for b in split for t in b}, split.heldout


def test_sample_is_the_same_whatever_the_order_and_batching() -> None:
    texts = corpus(2000)
    budget = sum(len(t.encode()) for t in texts) // 4
    base, held = sampled(texts, budget)
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert sampled(shuffled, budget, batch=500) == (base, sorted(held, key=shuffled.index))
    assert 0 < sum(len(t.encode()) for t in base) <= budget
    assert sum(len(t.encode()) for t in base) > 0.9 * budget  # filled, not merely respected
    assert not base & set(held) and all(is_heldout(t, 0.05) for t in held)
    # the lowest hashes above the held-out cut: every sampled document hashes below every unsampled one
    rest = [t for t in texts if t not in base and not is_heldout(t, 0.05)]
    assert max(map(doc_hash, base)) < min(map(doc_hash, rest))


def test_sample_is_stable_as_the_corpus_grows() -> None:
    texts = corpus(1500)
    budget = sum(len(t.encode()) for t in texts) // 5
    before, _ = sampled(texts, budget)
    after, _ = sampled(texts + corpus(1500, seed=9), budget)
    assert after & set(texts) <= before  # no old document enters; some leave for lower-hash newcomers
    assert len(after & before) > len(before) // 3
    # a bigger budget on the same corpus only adds documents
    assert before <= sampled(texts, 2 * budget)[0]


def test_tiny_budget_still_trains_on_something(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modeling.tokenizer"):
        chosen, _ = sampled(corpus(50), 10)
    assert 1 <= len(chosen) <= 3 and "raise --sample-bytes" in caplog.text


def test_training_records_the_sample_and_reshards_alike(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    texts = corpus(600)
    one = write_parquet(tmp_path / "one" / "all.parquet", texts).parent
    shuffled = texts[:]
    random.Random(2).shuffle(shuffled)
    for i in range(3):
        write_parquet(tmp_path / "three" / f"part-{i}.parquet", shuffled[i::3])
    budget = sum(len(t.encode()) for t in texts) // 3
    with caplog.at_level(logging.INFO, logger="modeling.tokenizer"):
        a = train(one, tmp_path / "a", sample_bytes=budget, progress_seconds=0)
    b = train(tmp_path / "three", tmp_path / "b", sample_bytes=budget)
    sample = a["sample"]
    assert sample["sampled"] and sample["sizing_pass"] and sample["budget_bytes"] == budget
    assert sample["sizing_seconds"] > 0
    assert sample["docs"] == a["train_docs"] and sample["bytes"] == a["train_bytes"] <= budget
    assert sample["corpus_docs"] == len(texts) and sample["corpus_bytes"] == sum(len(t.encode()) for t in texts)
    same = [k for k in sample if k != "sizing_seconds"]
    assert {k: b["sample"][k] for k in same} == {k: sample[k] for k in same}  # same documents, 3 shuffled shards
    assert a["heldout"]["docs"] == b["heldout"]["docs"] == sum(is_heldout(t, 0.01) for t in texts)
    assert "sizing the corpus" in caplog.text and "reading the training documents" in caplog.text
    assert "sample:" in caplog.text and "builds the vocabulary" in caplog.text

    # a corpus the budget holds: no sizing pass (the files cannot hold more text), everything trained on
    whole = train(one, tmp_path / "c", sample_bytes=10 * budget)
    assert not whole["sample"]["sampled"] and not whole["sample"]["sizing_pass"]
    assert whole["train_docs"] + whole["heldout"]["docs"] == len(texts)


def test_sample_threshold_starts_above_the_heldout_cut() -> None:
    texts = corpus(800)
    chosen, held = sampled(texts, 10**9, heldout=0.3)
    assert chosen.isdisjoint(held) and len(chosen) + len(held) == len(texts)
    assert all(heldout_cut(0.3) <= doc_hash(t) < HASH_END for t in chosen)
