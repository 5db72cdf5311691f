"""Train domain tokenizers on curated shards and inspect how they split text.

A domain tokenizer keeps the domain's terms whole ("myocardial infarction" in a clinical corpus) where a
general one shreds them into many pieces, which costs context length and makes the terms harder to learn.

Usage:
    python -m modeling.tokenizer train --input data/curated --output out/tokenizer-unigram-32k \\
        --config configs/tokenizer/unigram-32k.yaml
    python -m modeling.tokenizer train --input 'data/curated/*.parquet' --output out/tokenizer-bpe \\
        --model bpe --vocab-size 32000 --max-docs 1000000
    python -m modeling.tokenizer inspect --tokenizer out/tokenizer-unigram-32k --text "myocardial infarction"
    python -m modeling.tokenizer inspect --tokenizer out/tok-clinical --tokenizer out/tok-general \\
        --eval data/heldout --text "myocardial infarction"

The output directory loads with ``AutoTokenizer.from_pretrained(dir)`` (special tokens set) and its
``tokenizer.json`` with ``PreTrainedTokenizerFast(tokenizer_file=...)``; ``train_stats.json`` next to it
records the vocabulary reached, the corpus seen, the time taken and the compression on held-out documents.

Round trip: the pre-tokenizer/decoder pairs are chosen so that ``decode(encode(text)) == text`` for
normalized text, spaces, tabs and newlines included (the seed's ``pre_tokenizers.Whitespace()`` dropped them):

- ``unigram`` (SentencePiece style) and ``wordpiece``: spaces become "▁" (Metaspace) and are kept inside the
  pieces; the decoder turns them back. With the default prefix space ("▁" added at the start of a text so
  its first word splits like any other), a text that itself starts with a space loses that one space, as
  in SentencePiece; ``--no-add-prefix-space`` round-trips even that. Text after a special token gets no
  prefix, so "<|user|>Hello" decodes as it was.
- ``bpe`` (GPT-2 style byte-level): every byte has a token, so any text round-trips and nothing is unknown.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import docstring_parser
import pyarrow.parquet as pq
import tokenizers
import xxhash
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from curation.config import ConfigError, from_dict, load_yaml
from curation.paths import InputError, detect_format
from modeling.corpus import iter_text_batches, resolve_text_files

log = logging.getLogger(__name__)

ModelType = Literal["unigram", "bpe", "wordpiece"]
NormalizerType = Literal["nfkc", "none"]

#: Metaspace's stand-in for a space (U+2581), as in SentencePiece.
SPACE_MARK = "▁"
#: Prefix WordPiece puts on pieces that continue a word.
CONTINUATION_PREFIX = "##"
#: Name of the statistics file written next to the tokenizer.
STATS_FILE = "train_stats.json"


class TokenizerTrainError(RuntimeError):
    """Training could not produce a usable tokenizer; the message says which setting to change."""


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Everything ``python -m modeling.tokenizer train`` needs; YAML keys and ``--flags`` mirror the fields."""

    input: tuple[str, ...]
    """Curated shards: files, directories or globs of .parquet, .jsonl[.gz] or .txt files."""
    output: str
    """Directory to write tokenizer.json, tokenizer_config.json, special_tokens_map.json and train_stats.json."""
    model: ModelType = "unigram"
    """unigram (SentencePiece style, good default for domain text), bpe (GPT-2 byte-level: no unknown
    characters ever) or wordpiece (BERT style)."""
    vocab_size: int = 32000
    """Target vocabulary size, special tokens included. Unigram may stop below it on a small corpus."""
    text_column: str = "text"
    """Column holding the text in parquet/jsonl shards (plain .txt files are one document each)."""
    max_docs: int | None = None
    """Read at most this many documents (held-out ones included); None reads the whole corpus."""
    min_frequency: int = 2
    """bpe/wordpiece: a merge must occur at least this often to enter the vocabulary (filters typos)."""
    max_piece_length: int = 16
    """unigram: longest piece in characters; raise it to keep long domain terms whole."""
    normalizer: NormalizerType = "nfkc"
    """nfkc folds compatibility characters (ligatures, full-width forms) like the curation step does;
    none keeps text byte for byte."""
    add_prefix_space: bool | None = None
    """unigram/wordpiece: mark the first word of a text like any other word (as if preceded by a space), so
    "infarction" splits the same at the start of a text as inside it. None means yes for unigram/wordpiece
    (SentencePiece) and no for bpe (GPT-2; byte-level BPE supports only no). The price: one leading space of
    a text that starts with a space is dropped on decode (curated text never does)."""
    unk_token: str = "<unk>"
    """Token for text the vocabulary cannot express (never produced by bpe, which falls back to bytes)."""
    bos_token: str = "<s>"
    """Beginning-of-sequence token."""
    eos_token: str = "</s>"
    """End-of-sequence token; the data module puts it between packed documents."""
    pad_token: str = "<pad>"
    """Padding token; distinct from eos so that a loss mask on padding never hides a real end of text."""
    extra_special_tokens: tuple[str, ...] = ()
    """More special tokens (e.g. chat markers "<|user|>"), added after unk, bos, eos, pad in that order."""
    add_bos_eos: bool = False
    """Add a post-processor that wraps every encoded text in bos ... eos (off by default: the data module
    adds eos itself when it packs documents)."""
    heldout_fraction: float = 0.01
    """Fraction of documents kept out of training to measure compression; chosen by a hash of the text, so
    the same documents are held out whatever the file order."""
    heldout_max_docs: int = 1000
    """Cap on held-out documents (they are kept in memory); once reached, the rest all go to training."""
    batch_size: int = 1000
    """Documents per batch handed to the trainer; memory is bounded by this, not by the corpus."""
    show_progress: bool = True
    """Show the trainer's progress bar (counts documents up front for its length; cheap for parquet)."""

    def __post_init__(self) -> None:
        inputs = (self.input,) if isinstance(self.input, str) else tuple(str(p) for p in self.input)
        object.__setattr__(self, "input", inputs)
        object.__setattr__(self, "extra_special_tokens", tuple(self.extra_special_tokens))
        if not inputs:
            raise ValueError("input is empty: pass --input DIR_OR_GLOB (or input: in the config)")
        if self.model not in typing.get_args(ModelType):
            raise ValueError(f"model {self.model!r} is unknown: use --model one of {typing.get_args(ModelType)}")
        if self.normalizer not in typing.get_args(NormalizerType):
            raise ValueError(
                f"normalizer {self.normalizer!r} is unknown: use --normalizer one of "
                f"{typing.get_args(NormalizerType)}"
            )
        for name in ("vocab_size", "batch_size", "min_frequency", "max_piece_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}: --{name.replace('_', '-')} must be >= 1")
        if self.model == "bpe" and self.add_prefix_space:
            raise ValueError(
                "add_prefix_space is true but model is bpe: byte-level BPE keeps the GPT-2 convention (no prefix "
                "space, exact round trip); drop --add-prefix-space or use --model unigram"
            )
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs is {self.max_docs}: pass --max-docs >= 1, or leave it out to read all")
        if not 0.0 <= self.heldout_fraction <= 0.5:
            raise ValueError(
                f"heldout_fraction is {self.heldout_fraction}: --heldout-fraction must be in [0, 0.5] "
                "(0 turns the held-out compression figures off)"
            )
        tokens = self.special_tokens
        if any(not t or t.isspace() for t in tokens):
            raise ValueError(f"special tokens must be non-blank strings, got {tokens}: set --unk-token etc.")
        if len(set(tokens)) != len(tokens):
            raise ValueError(
                f"special tokens must be distinct, got {tokens}. In particular the pad token must differ from "
                "eos (a padding mask would otherwise also hide real ends of text): set --pad-token"
            )

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens in id order: unk=0, bos=1, eos=2, pad=3, then the extras."""
        return [self.unk_token, self.bos_token, self.eos_token, self.pad_token, *self.extra_special_tokens]

    @property
    def prefix_space(self) -> bool:
        """``add_prefix_space`` with the model's default filled in."""
        return self.add_prefix_space if self.add_prefix_space is not None else self.model != "bpe"


# --------------------------------------------------------------------------------------------------------
# Building the pipeline (normalizer -> pre-tokenizer -> model -> post-processor, decoder) and its trainer
# --------------------------------------------------------------------------------------------------------


def build_tokenizer(cfg: TokenizerTrainConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """Return an untrained tokenizer and its trainer, set up so that decode(encode(text)) == text."""
    specials = cfg.special_tokens
    if cfg.model == "bpe":
        tok = Tokenizer(models.BPE())  # no unk: every byte has a token
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=cfg.show_progress,
        )
    else:
        # "first" marks only the start of the text, not the text after a special token, so "<|user|>Hi"
        # decodes without a stray space (transformers' legacy=False fix for Llama does the same).
        scheme = "first" if cfg.prefix_space else "never"
        tok = Tokenizer(
            models.Unigram() if cfg.model == "unigram"
            else models.WordPiece(unk_token=cfg.unk_token, continuing_subword_prefix=CONTINUATION_PREFIX)
        )
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARK, prepend_scheme=scheme)
        # WordPiece's own decoder joins pieces with spaces (lossy): strip the prefix, then un-mark spaces.
        strip_prefix = [decoders.Replace(Regex(f"^{CONTINUATION_PREFIX}"), "")] if cfg.model == "wordpiece" else []
        tok.decoder = decoders.Sequence(
            [*strip_prefix, decoders.Metaspace(replacement=SPACE_MARK, prepend_scheme=scheme)]
        )
        if cfg.model == "unigram":
            trainer = trainers.UnigramTrainer(
                vocab_size=cfg.vocab_size,
                special_tokens=specials,
                unk_token=cfg.unk_token,
                max_piece_length=cfg.max_piece_length,
                show_progress=cfg.show_progress,
            )
        else:
            trainer = trainers.WordPieceTrainer(
                vocab_size=cfg.vocab_size,
                min_frequency=cfg.min_frequency,
                special_tokens=specials,
                continuing_subword_prefix=CONTINUATION_PREFIX,
                show_progress=cfg.show_progress,
            )
    if cfg.normalizer == "nfkc":
        tok.normalizer = normalizers.NFKC()
    return tok, trainer


def add_bos_eos(tok: Tokenizer, cfg: TokenizerTrainConfig) -> None:
    """Wrap every encoding in bos ... eos (pairs: bos A eos bos B eos), with the trained ids."""
    bos, eos = cfg.bos_token, cfg.eos_token
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {bos}:1 $B:1 {eos}:1",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )


def min_vocab_size(cfg: TokenizerTrainConfig, tok: Tokenizer, sample: Sequence[str]) -> tuple[int, int]:
    """Smallest vocabulary that can hold the alphabet plus the special tokens, and the alphabet size.

    Byte-level BPE always needs its 256 byte tokens. Unigram and WordPiece need every character they see;
    the alphabet is estimated on ``sample`` (normalized the way training will), a lower bound for the corpus.
    """
    if cfg.model == "bpe":
        alphabet = len(pre_tokenizers.ByteLevel.alphabet())
    else:
        chars: set[str] = set()
        for text in sample:
            chars.update(tok.normalizer.normalize_str(text) if tok.normalizer is not None else text)
        chars.discard(" ")
        chars.add(SPACE_MARK)
        alphabet = len(chars)
    return alphabet + len(cfg.special_tokens), alphabet


# --------------------------------------------------------------------------------------------------------
# Streaming the corpus: split off held-out documents, count what training saw
# --------------------------------------------------------------------------------------------------------


def is_heldout(text: str, fraction: float) -> bool:
    """Deterministic, order-independent choice: hash the text and keep the lowest ``fraction`` of hashes."""
    return fraction > 0 and xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass")) < fraction * 2**64


@dataclass
class CorpusSplit:
    """Streams training batches out of text batches, setting aside held-out documents and counting."""

    batches: Iterator[list[str]]
    heldout_fraction: float
    heldout_max_docs: int
    train_docs: int = 0
    train_chars: int = 0
    heldout: list[str] = field(default_factory=list)

    def next_train_batch(self) -> list[str] | None:
        """The next non-empty batch of training documents, or None at the end of the corpus."""
        for batch in self.batches:
            if self.heldout_fraction > 0 and len(self.heldout) < self.heldout_max_docs:
                train = []
                for text in batch:
                    if len(self.heldout) < self.heldout_max_docs and is_heldout(text, self.heldout_fraction):
                        self.heldout.append(text)
                    else:
                        train.append(text)
                batch = train
            if batch:
                self.train_docs += len(batch)
                self.train_chars += sum(map(len, batch))
                return batch
        return None

    def __iter__(self) -> Iterator[list[str]]:
        while (batch := self.next_train_batch()) is not None:
            yield batch


def count_docs(files: Sequence[Path]) -> int | None:
    """Documents in ``files`` for the progress bar, or None when counting would mean decompressing.

    Parquet footers give row counts for free; plain jsonl is counted by newlines (fast, bytes only); a .txt
    file is one document. Null and empty rows are counted too: an estimate, which is all a progress bar needs.
    """
    total = 0
    for path in files:
        fmt = detect_format(path)
        if fmt == "parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        elif fmt == "text":
            total += 1
        elif path.name.endswith(".gz"):
            return None
        else:
            with open(path, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return total


# --------------------------------------------------------------------------------------------------------
# Compression figures and the transformers-format output
# --------------------------------------------------------------------------------------------------------


def measure_compression(
    tok: Tokenizer, texts: Sequence[str], unk_id: int | None = None, batch_size: int = 256
) -> dict[str, Any]:
    """Characters per token, tokens per whitespace-separated word and unknown-token rate on ``texts``.

    Special tokens a post-processor would add are left out, so tokenizers with and without bos/eos compare
    fairly. Higher chars/token and lower tokens/word mean more text fits in the same context.
    """
    n_chars = n_tokens = n_words = n_unk = 0
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        for text, enc in zip(chunk, tok.encode_batch(chunk, add_special_tokens=False)):
            n_chars += len(text)
            n_words += len(text.split())
            n_tokens += len(enc.ids)
            if unk_id is not None:
                n_unk += enc.ids.count(unk_id)
    return {
        "docs": len(texts),
        "chars": n_chars,
        "tokens": n_tokens,
        "chars_per_token": round(n_chars / n_tokens, 4) if n_tokens else None,
        "tokens_per_word": round(n_tokens / n_words, 4) if n_words else None,
        "unk_rate": round(n_unk / n_tokens, 6) if n_tokens else None,
    }


def save_transformers_dir(tok: Tokenizer, cfg: TokenizerTrainConfig, output: Path) -> None:
    """Write a directory ``AutoTokenizer.from_pretrained`` loads with unk/bos/eos/pad set.

    The two small JSON files are written here rather than through ``PreTrainedTokenizerFast.save_pretrained``:
    importing transformers costs 1.5-6 s (more than 10 % of training a 32 MB corpus), and transformers 5 would
    write ``tokenizer_class: TokenizersBackend`` and a list-valued ``extra_special_tokens`` that transformers 4
    (still allowed by pyproject) cannot read. The keys below are the ones both majors read; the tests load the
    directory with AutoTokenizer and check that transformers' own save_pretrained of it reloads identically, and
    ``tests/modeling/test_export.py`` loads it with transformers 4.56.0 and 4.57.6 too.
    """
    tok.save(str(output / "tokenizer.json"))
    special_map = {
        "unk_token": cfg.unk_token,
        "bos_token": cfg.bos_token,
        "eos_token": cfg.eos_token,
        "pad_token": cfg.pad_token,
        "additional_special_tokens": list(cfg.extra_special_tokens),
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        # transformers' default clean-up glues " ." to "." and breaks the round trip.
        "clean_up_tokenization_spaces": False,
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (output / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------------


def train_tokenizer(cfg: TokenizerTrainConfig) -> dict[str, Any]:
    """Train on the corpus as it streams by, save the tokenizer directory, and return its statistics.

    Raises:
        InputError: no input files, a missing text column, or no non-empty document.
        TokenizerTrainError: the vocabulary size cannot hold the alphabet and the special tokens.
    """
    t_start = time.perf_counter()
    files = resolve_text_files(cfg.input, text_column=cfg.text_column)
    tok, trainer = build_tokenizer(cfg)
    split = CorpusSplit(
        iter_text_batches(files, cfg.text_column, batch_size=cfg.batch_size, max_docs=cfg.max_docs),
        heldout_fraction=cfg.heldout_fraction,
        heldout_max_docs=cfg.heldout_max_docs,
    )
    # Pull the first batch before training so an empty corpus or a too-small vocabulary stops at once.
    first = split.next_train_batch()
    if first is None:
        where = f"column {cfg.text_column!r} of " if any(detect_format(f) != "text" for f in files) else ""
        if split.heldout:
            raise InputError(
                f"all {len(split.heldout)} documents in {where}{len(files)} file(s) fell in the held-out "
                f"fraction: lower --heldout-fraction (now {cfg.heldout_fraction}) or add documents"
            )
        raise InputError(
            f"the corpus is empty: no non-empty text in {where}{len(files)} file(s) under {list(cfg.input)}. "
            "Check --input and --text-column, or that the curation run kept any rows."
        )
    needed, alphabet = min_vocab_size(cfg, tok, first)
    if cfg.vocab_size < needed:
        raise TokenizerTrainError(
            f"--vocab-size {cfg.vocab_size} is below the alphabet ({alphabet} distinct "
            f"{'bytes' if cfg.model == 'bpe' else 'characters in the first batch'}) + "
            f"{len(cfg.special_tokens)} special tokens = {needed}: raise --vocab-size to at least {needed} "
            "(real tokenizers use thousands)"
        )

    length = None
    if cfg.show_progress:
        total = count_docs(files)
        if total is not None:
            total = min(total, cfg.max_docs or total)
            length = math.ceil(total * (1 - cfg.heldout_fraction))

    def batches() -> Iterator[list[str]]:
        yield first
        yield from split

    log.info("training a %s tokenizer (vocab %d) on %d file(s)", cfg.model, cfg.vocab_size, len(files))
    t_train = time.perf_counter()
    try:
        tok.train_from_iterator(batches(), trainer=trainer, length=length)
    except Exception as err:
        if "not large enough to contain all chars" in str(err):
            raise TokenizerTrainError(
                f"--vocab-size {cfg.vocab_size} is below the corpus alphabet + {len(cfg.special_tokens)} "
                "special tokens (the corpus has more distinct characters than the first batch showed): "
                "raise --vocab-size, or keep --normalizer nfkc to fold rare variants"
            ) from err
        raise
    train_seconds = time.perf_counter() - t_train
    if tok.get_vocab_size() < cfg.vocab_size:
        log.info(
            "vocabulary reached %d of --vocab-size %d: the corpus holds too few distinct pieces for more",
            tok.get_vocab_size(), cfg.vocab_size,
        )
    elif tok.get_vocab_size() > cfg.vocab_size:
        log.warning(
            "vocabulary reached %d > --vocab-size %d: the alphabet alone needs that many; raise --vocab-size",
            tok.get_vocab_size(), cfg.vocab_size,
        )
    if cfg.add_bos_eos:
        add_bos_eos(tok, cfg)

    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    save_transformers_dir(tok, cfg, output)
    stats: dict[str, Any] = {
        "model": cfg.model,
        "vocab_size_requested": cfg.vocab_size,
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {
            name: {"token": token, "id": tok.token_to_id(token)}
            for name, token in zip(("unk_token", "bos_token", "eos_token", "pad_token"), cfg.special_tokens)
        } | {token: {"token": token, "id": tok.token_to_id(token)} for token in cfg.extra_special_tokens},
        "input_files": len(files),
        "train_docs": split.train_docs,
        "train_chars": split.train_chars,
        "train_seconds": round(train_seconds, 3),
        "total_seconds": None,
        "heldout": (
            measure_compression(tok, split.heldout, tok.token_to_id(cfg.unk_token)) if split.heldout else None
        ),
        "versions": {"tokenizers": tokenizers.__version__},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }
    stats["total_seconds"] = round(time.perf_counter() - t_start, 3)
    (output / STATS_FILE).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "saved %s: vocab %d, %d docs / %.1f MB in %.1fs, held-out chars/token %s",
        output, stats["vocab_size"], split.train_docs, split.train_chars / 1e6, train_seconds,
        (stats["heldout"] or {}).get("chars_per_token"),
    )
    return stats


# --------------------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------------------


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer directory (ours or any Hugging Face one) or a bare tokenizer.json."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    if not p.is_dir():
        raise InputError(f"--tokenizer {str(p)!r} is neither a tokenizer directory nor a tokenizer.json file")
    try:
        return AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError) as err:
        raise InputError(
            f"--tokenizer {str(p)!r} does not load with AutoTokenizer.from_pretrained ({err}); point it at a "
            "directory written by `python -m modeling.tokenizer train` or saved with save_pretrained"
        ) from err


def inspect_tokenizers(
    paths: Sequence[str],
    texts: Sequence[str] = (),
    eval_inputs: Sequence[str] | None = None,
    text_column: str = "text",
    max_docs: int = 1000,
) -> dict[str, Any]:
    """How each tokenizer splits ``texts`` and, on the same ``eval_inputs`` documents, how well it compresses."""
    eval_texts: list[str] = []
    if eval_inputs:
        files = resolve_text_files(eval_inputs, text_column=text_column)
        for batch in iter_text_batches(files, text_column, max_docs=max_docs):
            eval_texts.extend(batch)
        if not eval_texts:
            raise InputError(f"--eval {list(eval_inputs)} holds no non-empty text in column {text_column!r}")
    report: dict[str, Any] = {"eval_docs": len(eval_texts), "tokenizers": []}
    for path in paths:
        hf = load_tokenizer(path)
        entry: dict[str, Any] = {
            "path": str(path),
            "vocab_size": len(hf),
            "special_tokens": {
                name: {"token": getattr(hf, name), "id": getattr(hf, f"{name}_id")}
                for name in ("unk_token", "bos_token", "eos_token", "pad_token")
                if getattr(hf, name) is not None
            },
            "texts": [
                {"text": text, "tokens": pieces, "n_tokens": len(pieces)}
                for text, pieces in ((text, hf.tokenize(text)) for text in texts)
            ],
        }
        if eval_texts:
            entry["eval"] = measure_compression(hf.backend_tokenizer, eval_texts, hf.unk_token_id)
        report["tokenizers"].append(entry)
    return report


def format_inspect_report(report: dict[str, Any]) -> str:
    """Human-readable view of :func:`inspect_tokenizers` output: one block per text, one table for eval."""
    lines: list[str] = []
    toks = report["tokenizers"]
    for entry in toks:
        specials = ", ".join(f"{v['token']}={v['id']}" for v in entry["special_tokens"].values())
        lines.append(f"{entry['path']}: vocab {entry['vocab_size']}; special tokens {specials or '(none)'}")
    for i, sample in enumerate(toks[0]["texts"] if toks else []):
        lines.append(f"\ntext: {sample['text']!r}")
        for entry in toks:
            item = entry["texts"][i]
            lines.append(f"  {item['n_tokens']:4d} tokens  {entry['path']}: {item['tokens']}")
    if report["eval_docs"]:
        lines.append(f"\ncompression on {report['eval_docs']} held-out documents (higher chars/token is better):")
        lines.append(f"  {'chars/token':>11}  {'tokens/word':>11}  {'unk rate':>8}  tokenizer")
        for entry in toks:
            ev = entry["eval"]
            lines.append(
                f"  {ev['chars_per_token'] or 0:11.3f}  {ev['tokens_per_word'] or 0:11.3f}  "
                f"{ev['unk_rate'] or 0:8.4f}  {entry['path']}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# CLI: flags and YAML keys both come from TokenizerTrainConfig's fields
# --------------------------------------------------------------------------------------------------------


def _field_docs(cls: type) -> dict[str, str]:
    return {p.arg_name: " ".join(p.description.split()) for p in docstring_parser.parse_from_object(cls).params
            if p.description}


def _field_kind(annotation: Any) -> tuple[Any, bool]:
    """(base type, optional) for the annotations the config uses: int, str, float, bool, Literal, tuple."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return annotation, False


def build_parser() -> argparse.ArgumentParser:
    """``train`` gets one flag per config field (``vocab_size`` -> ``--vocab-size``); ``inspect`` its own."""
    parser = argparse.ArgumentParser(
        prog="python -m modeling.tokenizer", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train a tokenizer on curated shards", argument_default=argparse.SUPPRESS,
        description="Train a tokenizer. Precedence: flags > --config YAML > defaults.",
    )
    train.add_argument("--config", help="YAML file whose keys are these flags' names (vocab_size: 32000)")
    docs = _field_docs(TokenizerTrainConfig)
    hints = typing.get_type_hints(TokenizerTrainConfig)
    for f in fields(TokenizerTrainConfig):
        base, optional = _field_kind(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = "required" if f.default is MISSING else f"default: {f.default}"
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{docs.get(f.name, '')} ({default})"}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs["nargs"] = "+"
        elif typing.get_origin(base) is Literal:
            kwargs["choices"] = typing.get_args(base)
        else:
            kwargs["type"] = base
        if optional and base is not bool:
            kwargs["metavar"] = f.name.upper()
        train.add_argument(flag, **kwargs)

    insp = sub.add_parser("inspect", help="show how tokenizers split text and compare their compression")
    insp.add_argument("--tokenizer", action="append", required=True,
                      help="tokenizer directory or tokenizer.json; repeat to compare several")
    insp.add_argument("--text", action="append", default=[], help="text to split; repeatable")
    insp.add_argument("--eval", nargs="+", help="held-out shards (files, dirs, globs) to measure compression on")
    insp.add_argument("--text-column", default="text", help="text column of the --eval shards (default: text)")
    insp.add_argument("--max-docs", type=int, default=1000, help="documents read from --eval (default: 1000)")
    insp.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> TokenizerTrainConfig:
    """Merge defaults, the ``--config`` YAML and the flags (in rising precedence) into a config.

    The YAML goes through the same strict loader as every other config of the project (unknown keys,
    wrong choices and non-boolean switches are errors naming the key)."""
    config_path = getattr(args, "config", None)
    values: dict[str, Any] = {}
    try:
        if config_path:
            values = {str(k).replace("-", "_"): v for k, v in load_yaml(config_path).items()}
        values.update({k: v for k, v in vars(args).items() if k not in ("command", "config")})
        missing = [f.name for f in fields(TokenizerTrainConfig) if f.default is MISSING and f.name not in values]
        if missing:
            raise InputError(
                "missing " + ", ".join(f"--{m.replace('_', '-')}" for m in missing) + " (pass the flag or set it "
                "in the --config YAML)"
            )
        return from_dict(TokenizerTrainConfig, values, where=config_path or "flags")
    except ConfigError as err:
        raise InputError(str(err)) from err


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a usage error with a message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            stats = train_tokenizer(config_from_args(args))
            print(json.dumps({k: stats[k] for k in ("vocab_size", "train_docs", "train_seconds", "heldout")}))
        else:
            report = inspect_tokenizers(args.tokenizer, args.text, args.eval, args.text_column, args.max_docs)
            print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_inspect_report(report))
    except (InputError, TokenizerTrainError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
