"""Training a tokenizer on curated shards as they stream by: held-out documents set aside, statistics written."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import tokenizers
import xxhash

from common.files import InputError, detect_format
from modeling.corpus import iter_text_batches, resolve_text_files
from modeling.tokenizer.config import STATS_FILE, TokenizerTrainConfig, TokenizerTrainError
from modeling.tokenizer.pipeline import add_bos_eos, build_tokenizer, min_vocab_size, save_transformers_dir
from modeling.tokenizer.report import measure_compression

log = logging.getLogger("modeling.tokenizer")


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

