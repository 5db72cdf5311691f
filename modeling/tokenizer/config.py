"""What ``python -m modeling.tokenizer train`` is asked to build: the training config and its checks."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

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
    sample_bytes: int | None = 32_000_000
    """Train on at most this many bytes of UTF-8 text, chosen by a hash of each document (the same documents
    whatever the file order or sharding; see ``modeling/tokenizer/sample.py``). Unigram's time and memory grow
    with the text it trains on: on the curated benchmark corpus (documentation: identifiers, URLs, code) about
    15 CPU-s and 50 MB of memory per MB of text; on cleaner prose about 4x less (84 MB: 169 s, 1.07 GB on 2
    cores). The default 32 MB keeps a 32k Unigram within several minutes and about 2 GB on 2 cores whatever the
    corpus size, at little cost in held-out compression (docs/benchmarks.md). A corpus larger than this costs
    one extra read to choose the sample. null (or 0) trains on everything."""
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
    byte_fallback: bool | None = None
    """unigram: spell characters the vocabulary lacks as UTF-8 byte tokens <0x00>..<0xFF> (256 of the
    vocab_size, as in Llama/SentencePiece) instead of <unk>, so every text round-trips and nothing is unknown.
    None means yes for unigram; false restores <unk> for unseen characters. bpe is byte-level anyway (always
    exact); wordpiece cannot (tokenizers' WordPiece has no byte fallback), so true is refused for it."""
    unk_token: str = "<unk>"
    """Token for text the vocabulary cannot express (never produced by bpe, nor by unigram with byte fallback)."""
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
    progress_seconds: float = 15.0
    """Log a progress line (documents and MB read, sample, phase) at most this often while reading the corpus;
    a negative value logs only the phase changes."""

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
        if self.sample_bytes is not None and self.sample_bytes < 0:
            raise ValueError(f"sample_bytes is {self.sample_bytes}: pass --sample-bytes > 0, or null to train on all")
        if self.sample_bytes == 0:
            object.__setattr__(self, "sample_bytes", None)
        if self.byte_fallback and self.model == "wordpiece":
            raise ValueError(
                "byte_fallback is true but model is wordpiece: tokenizers' WordPiece has no byte fallback; use "
                "--model unigram (byte fallback on by default) or --model bpe (byte-level), or drop --byte-fallback"
            )
        if self.byte_fallback is False and self.model == "bpe":
            raise ValueError(
                "byte_fallback is false but model is bpe: byte-level BPE has a token for every byte by construction; "
                "drop --no-byte-fallback, or use --model unigram --no-byte-fallback for <unk> on unseen characters"
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
    def uses_byte_fallback(self) -> bool:
        """unigram with byte fallback (its default): 256 byte tokens in the vocabulary, never <unk>."""
        return self.model == "unigram" and self.byte_fallback is not False

    @property
    def prefix_space(self) -> bool:
        """``add_prefix_space`` with the model's default filled in."""
        return self.add_prefix_space if self.add_prefix_space is not None else self.model != "bpe"

