"""Train domain tokenizers on curated shards and inspect how they split text.

A domain tokenizer keeps the domain's terms whole ("myocardial infarction" in a clinical corpus) where a
general one shreds them into many pieces, which costs context length and makes the terms harder to learn.

Usage: see ``python -m modeling.tokenizer --help`` (:mod:`modeling.tokenizer.cli`); every key of the YAML
config (``configs/tokenizer/``) is also a flag (``--vocab_size 8000``).

The output directory loads with ``AutoTokenizer.from_pretrained(dir)`` (special tokens set) and its
``tokenizer.json`` with ``PreTrainedTokenizerFast(tokenizer_file=...)``; ``train_stats.json`` next to it
records the vocabulary reached, the corpus seen, the time taken and the compression on held-out documents.

Round trip: the pre-tokenizer/decoder pairs are chosen so that ``decode(encode(text)) == text`` for any
normalized text (NFKC by default, as curation emits; ``--normalizer none`` for byte-exact), spaces, tabs, control
characters and unseen characters included (``pre_tokenizers.Whitespace()`` would drop the spaces):

- ``unigram`` (SentencePiece/Llama style): spaces become "▁" (Metaspace) inside the pieces, and byte fallback
  (default) spells characters no piece covers as UTF-8 byte tokens <0x00>..<0xFF>, never <unk>. With the
  default prefix space ("▁" added at the start of a text so its first word splits like any other), a text that
  itself starts with a space loses that one space, as in SentencePiece; ``--no-add-prefix-space`` round-trips
  even that. A literal "▁" decodes as a space. Text after a special token gets no prefix, so
  "<|user|>Hello" decodes as it was.
- ``bpe`` (GPT-2 style byte-level): every byte has a token, so any text round-trips and nothing is unknown.
- ``wordpiece`` (BERT style): as unigram, but tokenizers' WordPiece has no byte fallback: a word with an
  unseen character becomes <unk>.

Big corpora: ``--sample_bytes`` (default 32 MB) trains on the documents with the lowest text hashes up to
that many bytes (``sample``), the same documents whatever the file order, chosen in one cheap extra pass.

The package, one concern a module: ``config`` (what to train), ``pipeline`` (the tokenizers pipeline and the
directory transformers loads), ``sample`` (the hash-chosen sample budget), ``training`` (streaming the corpus,
held-out split, statistics), ``report`` (the compression figures and ``inspect``), ``load`` (the one tokenizer
loader every stage uses), ``cli`` (the command, on :mod:`common.cli`).
"""

from modeling.tokenizer.cli import InspectConfig, main, parse_train
from modeling.tokenizer.config import (
    CONTINUATION_PREFIX,
    SPACE_MARK,
    STATS_FILE,
    ModelType,
    NormalizerType,
    TokenizerTrainConfig,
    TokenizerTrainError,
)
from modeling.tokenizer.load import check_eos, load_tokenizer
from modeling.tokenizer.pipeline import (
    BYTE_TOKENS,
    add_bos_eos,
    add_byte_fallback,
    build_tokenizer,
    min_vocab_size,
    save_transformers_dir,
)
from modeling.tokenizer.report import format_inspect_report, inspect_tokenizers, measure_compression
from modeling.tokenizer.sample import SamplePlan, doc_hash, plan_sample
from modeling.tokenizer.training import CorpusSplit, count_docs, is_heldout, train_tokenizer

__all__ = [
    "BYTE_TOKENS", "CONTINUATION_PREFIX", "SPACE_MARK", "STATS_FILE", "CorpusSplit", "InspectConfig", "ModelType",
    "NormalizerType", "SamplePlan", "TokenizerTrainConfig", "TokenizerTrainError", "add_bos_eos", "add_byte_fallback",
    "build_tokenizer", "check_eos", "count_docs", "doc_hash", "format_inspect_report", "inspect_tokenizers",
    "is_heldout", "load_tokenizer", "main", "measure_compression", "min_vocab_size", "parse_train", "plan_sample",
    "save_transformers_dir", "train_tokenizer",
]
