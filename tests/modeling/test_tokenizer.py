"""Tokenizer training and inspection: round trips, the transformers-format output, domain terms, the CLI."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from common.errors import UserError
from curation.paths import InputError
from modeling.tokenizer import (
    CorpusSplit,
    TokenizerTrainConfig,
    TokenizerTrainError,
    count_docs,
    format_inspect_report,
    inspect_tokenizers,
    is_heldout,
    main,
    parse_train,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[2]

# ---- tiny corpora, built here so the test says what it is about -------------------------------------------

GENERAL_WORDS = ["the", "a", "people", "city", "river", "market", "school", "morning", "evening", "friend", "family", "house", "garden", "road", "music", "book", "letter", "train", "weather", "summer", "winter", "window", "table", "bread", "coffee", "story", "game", "team", "village", "teacher", "walked", "visited", "opened", "closed", "found", "carried", "painted", "cooked", "wrote", "read", "played", "watched", "built", "quiet", "bright", "old", "new", "small", "large", "early", "late", "warm", "cold", "busy", "happy", "long", "short", "green", "blue"]
CLINICAL_TERMS = (
    "myocardial infarction", "troponin elevation", "electrocardiogram", "percutaneous coronary intervention",
    "atrial fibrillation", "anticoagulation", "hypertension", "echocardiography", "myocardial ischemia",
)
CLINICAL_FRAME = (
    "The patient presented with {} and was admitted.", "Findings were consistent with {}.",
    "History of {} was noted at discharge.", "We started treatment for {} on day two.",
)


def general_doc(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 5)):
        words = rng.choices(GENERAL_WORDS, k=rng.randint(5, 12))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ", and then."]))
    return " ".join(sentences) + rng.choice(["", "\n", "\n\nP.S. 42\tcoffee"])


def clinical_doc(rng: random.Random) -> str:
    parts = [rng.choice(CLINICAL_FRAME).format(rng.choice(CLINICAL_TERMS)) for _ in range(rng.randint(2, 5))]
    return " ".join(parts) + "\n" + general_doc(rng)


@pytest.fixture(scope="module")
def general_texts() -> list[str]:
    rng = random.Random(1)
    return [general_doc(rng) for _ in range(400)]


@pytest.fixture(scope="module")
def clinical_texts() -> list[str]:
    rng = random.Random(2)
    return [clinical_doc(rng) for _ in range(400)]


def write_parquet(path: Path, texts: list[object], column: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts, "id": list(range(len(texts)))}), path)
    return path


def write_jsonl(path: Path, texts: list[str], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    if gz:
        path.write_bytes(gzip.compress(lines.encode()))
    else:
        path.write_text(lines)
    return path


@pytest.fixture(scope="module")
def general_dir(tmp_path_factory: pytest.TempPathFactory, general_texts: list[str]) -> Path:
    d = tmp_path_factory.mktemp("general")
    write_parquet(d / "part-0.parquet", general_texts)
    return d


@pytest.fixture(scope="module")
def clinical_dir(tmp_path_factory: pytest.TempPathFactory, clinical_texts: list[str]) -> Path:
    d = tmp_path_factory.mktemp("clinical")
    write_parquet(d / "part-0.parquet", clinical_texts[:300])
    write_jsonl(d / "part-1.jsonl", clinical_texts[300:])
    return d


def make_cfg(inputs: Path | str, output: Path, **kw: object) -> TokenizerTrainConfig:
    kw.setdefault("vocab_size", 400)
    kw.setdefault("show_progress", False)
    return TokenizerTrainConfig(input=str(inputs), output=str(output), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["unigram", "bpe", "wordpiece"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            general_dir: Path) -> tuple[TokenizerTrainConfig, dict, Path]:
    out = tmp_path_factory.mktemp(f"tok-{request.param}")
    cfg = make_cfg(general_dir, out, model=request.param, extra_special_tokens=("<|sep|>",),
                   heldout_fraction=0.05)
    return cfg, train_tokenizer(cfg), out


# ---- each model type: trains, round-trips, loads ----------------------------------------------------------

ROUND_TRIP_TEXTS = [
    "The old teacher walked to the market.",
    "trailing spaces, double  spaces   and    more  ",
    "tabs\tand\ttabs\n\nblank line above\nlast line\n",
    "\nstarts with a newline",
    "river<|sep|>road, <|sep|>the river and the <|sep|> road",
    "<|sep|>starts with a special token",
    "",
]
LEADING_SPACE_TEXTS = [" one leading space", "  two leading spaces", " <|sep|> then a special token"]


def round_trip(hf: PreTrainedTokenizerFast, text: str) -> str:
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert hf.unk_token_id not in ids, (text, hf.convert_ids_to_tokens(ids))
    return hf.decode(ids)


def test_round_trip_through_transformers(trained: tuple[TokenizerTrainConfig, dict, Path]) -> None:
    cfg, _, out = trained
    hf = AutoTokenizer.from_pretrained(out)
    for text in ROUND_TRIP_TEXTS:
        assert round_trip(hf, text) == text, (cfg.model, hf.tokenize(text))
    for text in LEADING_SPACE_TEXTS:
        # With a prefix space (unigram/wordpiece default) exactly one leading space is lost, as in SentencePiece.
        expected = text[1:] if cfg.prefix_space else text
        assert round_trip(hf, text) == expected, (cfg.model, hf.tokenize(text))


@pytest.mark.parametrize("model", ["unigram", "wordpiece"])
def test_without_prefix_space_everything_round_trips(tmp_path: Path, general_dir: Path, model: str) -> None:
    cfg = make_cfg(general_dir, tmp_path / "tok", model=model, add_prefix_space=False,
                   extra_special_tokens=("<|sep|>",))
    assert train_tokenizer(cfg)["config"]["add_prefix_space"] is False
    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in ROUND_TRIP_TEXTS + LEADING_SPACE_TEXTS:
        assert round_trip(hf, text) == text, (model, hf.tokenize(text))


@pytest.mark.parametrize(("model", "prefix"), [("unigram", True), ("unigram", False), ("wordpiece", True),
                                               ("bpe", None)])
def test_prefix_space_splits_first_word_like_inner_words(tmp_path: Path, general_dir: Path, model: str,
                                                        prefix: bool | None) -> None:
    cfg = make_cfg(general_dir, tmp_path / "tok", model=model, add_prefix_space=prefix)
    train_tokenizer(cfg)
    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    first, inner = hf.tokenize("river"), hf.tokenize("the river")[len(hf.tokenize("the")) :]
    assert (first == inner) is cfg.prefix_space, (first, inner)


def test_nfkc_normalizer_folds_compatibility_characters(tmp_path: Path, general_dir: Path) -> None:
    folded = train_tokenizer(make_cfg(general_dir, tmp_path / "nfkc", model="bpe", vocab_size=300))
    raw = train_tokenizer(make_cfg(general_dir, tmp_path / "raw", model="bpe", vocab_size=300, normalizer="none"))
    assert folded["config"]["normalizer"] == "nfkc" and raw["config"]["normalizer"] == "none"
    nfkc = Tokenizer.from_file(str(tmp_path / "nfkc" / "tokenizer.json"))
    keep = Tokenizer.from_file(str(tmp_path / "raw" / "tokenizer.json"))
    text = "ﬁne ２０２４ café"  # ligature, full-width digits
    assert nfkc.decode(nfkc.encode(text).ids) == "fine 2024 café"
    assert keep.decode(keep.encode(text).ids) == text


def test_saved_dir_has_special_tokens_and_ids(trained: tuple[TokenizerTrainConfig, dict, Path]) -> None:
    cfg, stats, out = trained
    assert {p.name for p in out.iterdir()} >= {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "train_stats.json"
    }
    hf = AutoTokenizer.from_pretrained(out)
    expected = {"unk_token": ("<unk>", 0), "bos_token": ("<s>", 1), "eos_token": ("</s>", 2),
                "pad_token": ("<pad>", 3)}
    for name, (token, idx) in expected.items():
        assert getattr(hf, name) == token and getattr(hf, f"{name}_id") == idx, name
        assert stats["special_tokens"][name] == {"token": token, "id": idx}
    assert hf.pad_token_id != hf.eos_token_id
    assert stats["special_tokens"]["<|sep|>"]["id"] == 4
    assert "<|sep|>" in hf.all_special_tokens
    assert hf.tokenize("river<|sep|>road").count("<|sep|>") == 1  # kept whole, never split
    assert len(hf) == stats["vocab_size"] <= cfg.vocab_size

    # The bare tokenizer.json knows the ids; transformers only learns the roles when told them.
    bare = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    assert bare.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<pad>"]) == [0, 1, 2, 3]
    named = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), pad_token="<pad>",
                                    eos_token="</s>")
    assert (named.pad_token_id, named.eos_token_id) == (3, 2)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # resolvable by transformers 4 and 5
    assert config["clean_up_tokenization_spaces"] is False


def test_transformers_resave_matches_our_files(trained: tuple[TokenizerTrainConfig, dict, Path],
                                               tmp_path: Path) -> None:
    # We write tokenizer_config.json ourselves (no transformers import at train time); transformers' own
    # save_pretrained of the loaded tokenizer must describe the same tokenizer.
    _, _, out = trained
    ours = AutoTokenizer.from_pretrained(out)
    ours.save_pretrained(tmp_path / "resaved")
    again = AutoTokenizer.from_pretrained(tmp_path / "resaved")
    assert again.all_special_tokens == ours.all_special_tokens
    assert again.all_special_ids == ours.all_special_ids
    text = ROUND_TRIP_TEXTS[2] + "<|sep|>" + ROUND_TRIP_TEXTS[0]
    assert again(text)["input_ids"] == ours(text)["input_ids"]
    assert again.decode(again(text)["input_ids"]) == ours.decode(ours(text)["input_ids"]) == text
    resaved = json.loads((tmp_path / "resaved" / "tokenizer_config.json").read_text())
    written = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("unk_token", "bos_token", "eos_token", "pad_token", "clean_up_tokenization_spaces"):
        assert resaved[key] == written[key], key


def test_train_stats_describe_the_run(trained: tuple[TokenizerTrainConfig, dict, Path],
                                      general_texts: list[str]) -> None:
    cfg, stats, out = trained
    assert json.loads((out / "train_stats.json").read_text()) == stats
    heldout = [t for t in general_texts if is_heldout(t, cfg.heldout_fraction)]
    assert 0 < len(heldout) < len(general_texts) // 5
    assert stats["train_docs"] == len(general_texts) - len(heldout)
    assert stats["train_chars"] == sum(map(len, general_texts)) - sum(map(len, heldout))
    ev = stats["heldout"]
    assert ev["docs"] == len(heldout) and ev["chars"] == sum(map(len, heldout))
    assert ev["chars_per_token"] == pytest.approx(ev["chars"] / ev["tokens"], rel=1e-3)
    assert ev["chars_per_token"] > 1.5  # a trained vocabulary beats one character per token
    words = sum(len(t.split()) for t in heldout)
    assert ev["tokens_per_word"] == pytest.approx(ev["tokens"] / words, rel=1e-3)
    assert stats["train_seconds"] > 0 and stats["total_seconds"] >= stats["train_seconds"]
    assert stats["config"]["model"] == cfg.model


def test_bos_eos_post_processor(tmp_path: Path, general_dir: Path) -> None:
    train_tokenizer(make_cfg(general_dir, tmp_path / "wrap", model="unigram", add_bos_eos=True))
    train_tokenizer(make_cfg(general_dir, tmp_path / "plain", model="unigram"))
    wrap = AutoTokenizer.from_pretrained(tmp_path / "wrap")
    plain = AutoTokenizer.from_pretrained(tmp_path / "plain")
    ids = wrap("the river")["input_ids"]
    assert ids[0] == wrap.bos_token_id and ids[-1] == wrap.eos_token_id
    assert ids[1:-1] == plain("the river")["input_ids"]
    assert wrap.decode(ids, skip_special_tokens=True) == "the river"
    pair = wrap("the river", "a road")["input_ids"]
    assert pair.count(wrap.bos_token_id) == 2 and pair.count(wrap.eos_token_id) == 2


# ---- the point of a domain tokenizer -----------------------------------------------------------------------

def test_domain_tokenizer_keeps_domain_terms_whole(tmp_path: Path, general_dir: Path, clinical_dir: Path) -> None:
    for model in ("unigram", "bpe"):
        train_tokenizer(make_cfg(general_dir, tmp_path / f"general-{model}", model=model, vocab_size=800))
        train_tokenizer(make_cfg(clinical_dir, tmp_path / f"clinical-{model}", model=model, vocab_size=800))
        general = AutoTokenizer.from_pretrained(tmp_path / f"general-{model}")
        clinical = AutoTokenizer.from_pretrained(tmp_path / f"clinical-{model}")
        for term in ("myocardial infarction", "electrocardiogram", "atrial fibrillation"):
            n_general, n_clinical = len(general.tokenize(term)), len(clinical.tokenize(term))
            # At least halved: the general tokenizer never saw these words and spells them out.
            assert 2 * n_clinical <= n_general, (model, term, clinical.tokenize(term), general.tokenize(term))


# ---- reading the corpus --------------------------------------------------------------------------------------

def test_heldout_choice_is_deterministic_and_order_free(general_texts: list[str]) -> None:
    def heldout_of(texts: list[str]) -> list[str]:
        split = CorpusSplit(iter([texts[i : i + 64] for i in range(0, len(texts), 64)]), 0.1, 1000)
        list(split)
        return split.heldout

    shuffled = general_texts[:]
    random.Random(7).shuffle(shuffled)
    chosen = heldout_of(general_texts)
    assert sorted(heldout_of(shuffled)) == sorted(chosen)  # same documents whatever the file order
    assert 0.04 * len(general_texts) < len(chosen) < 0.2 * len(general_texts)
    assert not any(is_heldout(t, 0.0) for t in general_texts)
    assert set(chosen) <= {t for t in general_texts if is_heldout(t, 0.3)}  # a larger fraction only adds


def test_corpus_split_caps_heldout_and_counts(general_texts: list[str]) -> None:
    batches = [general_texts[i : i + 50] for i in range(0, len(general_texts), 50)]
    split = CorpusSplit(iter(batches), heldout_fraction=0.5, heldout_max_docs=7)
    train = [t for batch in split for t in batch]
    assert len(split.heldout) == 7
    assert sorted(train + split.heldout) == sorted(general_texts)
    assert split.train_docs == len(train) and split.train_chars == sum(map(len, train))


def test_count_docs_per_format(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "a.parquet", ["x", "y", "z"])
    j = write_jsonl(tmp_path / "b.jsonl", ["x", "y"])
    t = tmp_path / "c.txt"
    t.write_text("one document\nover two lines")
    assert count_docs([p, j, t]) == 6
    assert count_docs([p, write_jsonl(tmp_path / "d.jsonl.gz", ["x"], gz=True)]) is None


# ---- bad input stops early and says what to change -----------------------------------------------------------

def test_empty_corpus(tmp_path: Path) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", ["", None, ""])
    with pytest.raises(InputError, match=r"corpus is empty.*--text-column"):
        train_tokenizer(make_cfg(tmp_path / "in", tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # A corpus whose only documents all land in the held-out share is as good as empty for training.
    only = next(t for t in (f"document {i}" for i in range(100)) if is_heldout(t, 0.5))
    write_parquet(tmp_path / "in" / "a.parquet", [only])
    with pytest.raises(InputError, match=r"all 1 documents .* held-out fraction: lower --heldout-fraction"):
        train_tokenizer(make_cfg(tmp_path / "in", tmp_path / "out", heldout_fraction=0.5))


def test_missing_text_column(tmp_path: Path, general_texts: list[str]) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", general_texts[:5], column="content")
    with pytest.raises(InputError, match=r"no column 'text'.*'content'.*--text-column"):
        train_tokenizer(make_cfg(tmp_path / "in", tmp_path / "out"))
    stats = train_tokenizer(make_cfg(tmp_path / "in", tmp_path / "out", text_column="content",
                                     vocab_size=400, heldout_fraction=0.0))
    assert stats["train_docs"] == 5 and stats["heldout"] is None


@pytest.mark.parametrize(("model", "vocab", "needed"), [("bpe", 100, 260), ("unigram", 20, None),
                                                          ("wordpiece", 20, None)])
def test_vocab_below_alphabet(tmp_path: Path, general_dir: Path, model: str, vocab: int,
                              needed: int | None) -> None:
    with pytest.raises(TokenizerTrainError, match=r"--vocab-size \d+ is below the alphabet") as err:
        train_tokenizer(make_cfg(general_dir, tmp_path / "out", model=model, vocab_size=vocab))
    if needed is not None:
        assert f"at least {needed}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_vocab_below_an_alphabet_seen_only_after_the_first_batch(tmp_path: Path) -> None:
    # The first batch passes the early check (few characters); the full alphabet shows up later, and the
    # Unigram trainer's own failure is turned into the same kind of message.
    texts = ["ab ba ab"] * 2 + ["".join(chr(c) for c in range(0x3B1, 0x3C9)) + " xyz"] * 2
    write_parquet(tmp_path / "in" / "a.parquet", texts)
    # with byte fallback: 4 specials + 256 byte tokens + the first batch's 3 characters and the 19 that spell
    # byte tokens = 282 passes the early check; the Greek letters later do not fit
    cfg = make_cfg(tmp_path / "in", tmp_path / "out", model="unigram", vocab_size=290, batch_size=2,
                   heldout_fraction=0.0)
    with pytest.raises(TokenizerTrainError, match=r"--vocab-size 290 is below the corpus alphabet.*256 byte-fallback"):
        train_tokenizer(cfg)


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pad token must differ from eos"):
        make_cfg(tmp_path, tmp_path, pad_token="</s>")
    with pytest.raises(ValueError, match="--model one of"):
        make_cfg(tmp_path, tmp_path, model="sentencepiece")
    with pytest.raises(ValueError, match="--heldout-fraction"):
        make_cfg(tmp_path, tmp_path, heldout_fraction=0.9)
    with pytest.raises(ValueError, match="byte-level BPE keeps the GPT-2 convention"):
        make_cfg(tmp_path, tmp_path, model="bpe", add_prefix_space=True)
    with pytest.raises(ValueError, match="--vocab-size must be >= 1"):
        make_cfg(tmp_path, tmp_path, vocab_size=0)


# ---- CLI: YAML + flags, subprocess runs ---------------------------------------------------------------------

def test_flags_override_yaml_and_yaml_overrides_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "tok.yaml"
    conf.write_text("# python -m modeling.tokenizer train --config tok.yaml\nmodel: bpe\nvocab_size: 900\n"
                    "extra_special_tokens: ['<|a|>', '<|b|>']\nadd_bos_eos: true\n")
    cfg = parse_train(["--config", str(conf), "--input", "x", "y", "--output", "o", "--vocab-size", "700",
                       "--no-add-bos-eos"])
    assert (cfg.model, cfg.vocab_size, cfg.input, cfg.add_bos_eos) == ("bpe", 700, ("x", "y"), False)
    assert cfg.extra_special_tokens == ("<|a|>", "<|b|>") and cfg.text_column == "text"

    conf.write_text("vocab_sise: 900\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['vocab_sise'\].*vocab_size"):
        parse_train(["--config", str(conf), "--input", "x", "--output", "o"])
    conf.write_text("vocab_size: 32k\n")
    with pytest.raises(UserError, match=r"vocab_size: must be a whole number, got '32k'"):
        parse_train(["--config", str(conf), "--input", "x", "--output", "o"])
    with pytest.raises(UserError, match="missing --output"):
        parse_train(["--input", "x"])


def test_every_tokenizer_config_parses_and_names_its_command() -> None:
    paths = sorted((REPO / "configs" / "tokenizer").glob("*.yaml"))
    assert {p.name for p in paths} >= {"unigram-32k.yaml", "bpe-32k.yaml", "demo.yaml"}
    for path in paths:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# python -m modeling.tokenizer train") and f"configs/tokenizer/{path.name}" in first
        cfg = parse_train(["--config", str(path), "--input", "x", "--output", "o"])
        assert set(yaml.safe_load(path.read_text())) <= set(cfg.__dataclass_fields__)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "modeling.tokenizer", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_train_on_mixed_shards_then_inspect(tmp_path: Path, general_texts: list[str],
                                                clinical_texts: list[str], general_dir: Path) -> None:
    shards = tmp_path / "curated"
    write_parquet(shards / "a.parquet", clinical_texts[:200])
    write_jsonl(shards / "b.jsonl.gz", clinical_texts[200:350], gz=True)
    for i, text in enumerate(clinical_texts[350:]):
        (shards / "txt" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (shards / "txt" / f"{i}.txt").write_text(text)
    (shards / "_SUCCESS").write_text("")
    conf = tmp_path / "tok.yaml"
    conf.write_text("model: unigram\nvocab_size: 900\nheldout_fraction: 0.05\nmax_docs: 1000\n")
    out = tmp_path / "tok-clinical"
    proc = run_cli("train", "--input", str(shards), "--output", str(out), "--config", str(conf),
                   "--vocab-size", "450", "--no-show-progress")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "train_stats.json").read_text())
    held = sum(is_heldout(t, 0.05) for t in clinical_texts)
    assert stats["input_files"] == 2 + 50
    assert stats["train_docs"] + stats["heldout"]["docs"] == len(clinical_texts)
    assert stats["heldout"]["docs"] == held
    assert stats["vocab_size_requested"] == 450 and stats["vocab_size"] <= 450

    general_out = tmp_path / "tok-general"
    assert train_tokenizer(make_cfg(general_dir, general_out, vocab_size=450))["vocab_size"] <= 450
    eval_dir = write_parquet(tmp_path / "eval" / "e.parquet", clinical_texts[::7])
    proc = run_cli("inspect", "--tokenizer", str(out), "--tokenizer", str(general_out), "--eval", str(eval_dir),
                   "--text", "myocardial infarction", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    clinical, general = report["tokenizers"]
    assert report["eval_docs"] == len(clinical_texts[::7])
    assert clinical["eval"]["chars_per_token"] > general["eval"]["chars_per_token"]
    assert clinical["eval"]["tokens_per_word"] < general["eval"]["tokens_per_word"]
    assert clinical["texts"][0]["n_tokens"] < general["texts"][0]["n_tokens"]
    assert clinical["special_tokens"]["pad_token"] == {"token": "<pad>", "id": 3}


def test_inspect_text_report_compares_side_by_side(trained: tuple[TokenizerTrainConfig, dict, Path],
                                                   clinical_dir: Path) -> None:
    _, _, out = trained
    report = inspect_tokenizers([str(out), str(out / "tokenizer.json")], ["the river"], [str(clinical_dir)],
                                max_docs=20)
    by_dir, by_file = report["tokenizers"]
    assert report["eval_docs"] == 20
    assert by_dir["texts"] == by_file["texts"] and by_dir["eval"] == by_file["eval"]
    text = format_inspect_report(report)
    assert "text: 'the river'" in text and "compression on 20 held-out documents" in text
    assert text.count(str(out)) >= 4


def test_cli_error_exit_code_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", ["some text"], column="body")
    assert main(["train", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no column 'text'" in err and "'body'" in err and "--text-column" in err
    assert main(["train", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--text-column", "body", "--pad-token", "</s>"]) == 2
    assert "--pad-token" in capsys.readouterr().err
    assert main(["inspect", "--tokenizer", str(tmp_path / "nothing-here")]) == 2
    assert "neither a tokenizer directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- the one tokenizer loader every stage uses --------------------------------------------------------------

def no_eos_tokenizer(tokenizer_dir: Path, out: Path) -> Path:
    """The test tokenizer saved without an eos token (unk and pad only)."""
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"), unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(out)
    return out


def test_one_loader_the_same_rules_under_each_commands_flag(tokenizer_dir: Path, tmp_path: Path) -> None:
    from modeling.data import DataConfigError
    from modeling.export import ModelLoadError
    from modeling.tokenizer.load import load_tokenizer

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("x")
    no_eos = no_eos_tokenizer(tokenizer_dir, tmp_path / "no-eos")
    # training says --data.tokenizer (and raises its own DataConfigError), evaluate/generate say --tokenizer
    for flag, error in (("--data.tokenizer", DataConfigError), ("--tokenizer", ModelLoadError)):
        name = re.escape(flag)
        with pytest.raises(error, match=rf"^{name} '.*missing': no such directory\. Train one .*point {name} at"):
            load_tokenizer(tmp_path / "missing", flag, error=error)
        with pytest.raises(error, match=rf"^{name} '.*notes' holds no tokenizer .*'notes\.txt'"):
            load_tokenizer(tmp_path / "notes", flag, error=error)
        with pytest.raises(error, match=rf"^{name} '.*tokenizer\.json' is a file: give the directory"):
            load_tokenizer(tokenizer_dir / "tokenizer.json", flag, error=error)
        with pytest.raises(error, match=rf"^{name} '.*no-eos' has no eos token, which separates packed documents"):
            load_tokenizer(no_eos, flag, error=error)
        assert load_tokenizer(no_eos, flag, error=error, require_eos=False).eos_token_id is None
    # a path that came from elsewhere (a checkpoint) is named as such; the fix still names the flag to pass
    with pytest.raises(InputError, match=r"^the checkpoint's data\.tokenizer '.*missing': no such .*point --tokenizer"):
        load_tokenizer(tmp_path / "missing", named="the checkpoint's data.tokenizer")
    # inspect's options: a bare tokenizer.json too, local paths only (no minute of hub retries for a typo)
    bare = load_tokenizer(tokenizer_dir / "tokenizer.json", require_eos=False, hub=False, json_file=True)
    assert bare.get_vocab() == load_tokenizer(tokenizer_dir).get_vocab()
    with pytest.raises(InputError, match=r"'typo' is neither a tokenizer directory nor a tokenizer\.json file"):
        load_tokenizer("typo", require_eos=False, hub=False, json_file=True)


def test_training_refuses_a_tokenizer_without_eos_naming_its_flag(tokenizer_dir: Path, tmp_path: Path) -> None:
    from modeling.data import DataConfigError, TextDataModule

    no_eos = no_eos_tokenizer(tokenizer_dir, tmp_path / "no-eos")
    with pytest.raises(DataConfigError, match=r"--data\.tokenizer '.*no-eos' has no eos token.*add_special_tokens"):
        TextDataModule(tokenizer=str(no_eos), path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
