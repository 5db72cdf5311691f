"""Training a tokenizer on curated shards as they stream by: held-out documents set aside, the sample chosen,
statistics written."""

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
from modeling.tokenizer.pipeline import (
    BYTE_TOKENS,
    add_bos_eos,
    add_byte_fallback,
    build_tokenizer,
    min_vocab_size,
    save_transformers_dir,
)
from modeling.tokenizer.report import measure_compression
from modeling.tokenizer.sample import (
    HASH_END,
    ProgressLog,
    SamplePlan,
    doc_hash,
    heldout_cut,
    plan_sample,
    text_bytes_upper_bound,
)

log = logging.getLogger("modeling.tokenizer")


def is_heldout(text: str, fraction: float) -> bool:
    """Deterministic, order-independent choice: hash the text and keep the lowest ``fraction`` of hashes."""
    return fraction > 0 and doc_hash(text) < heldout_cut(fraction)


@dataclass
class CorpusSplit:
    """Streams training batches out of text batches, setting aside held-out documents and counting.

    Without ``sample_below`` every document that is not held out is trained on (held-out ones past
    ``heldout_max_docs`` too). With it, only documents with ``heldout cut <= hash < sample_below`` are: the
    held-out hash range is never trained on, so the sample stays disjoint from it whatever the cap.
    """

    batches: Iterator[list[str]]
    heldout_fraction: float
    heldout_max_docs: int
    sample_below: int | None = None
    progress: ProgressLog = field(default_factory=lambda: ProgressLog("reading the training documents", -1))
    train_docs: int = 0
    train_chars: int = 0
    train_bytes: int = 0
    read_docs: int = 0
    heldout: list[str] = field(default_factory=list)

    def next_train_batch(self) -> list[str] | None:
        """The next non-empty batch of training documents, or None at the end of the corpus."""
        cut = heldout_cut(self.heldout_fraction)
        for batch in self.batches:
            self.read_docs += len(batch)
            train, nbytes, read_bytes = [], 0, 0
            for text in batch:
                data = text.encode("utf-8", "surrogatepass")
                read_bytes += len(data)
                h = xxhash.xxh64_intdigest(data)  # == doc_hash(text), without encoding twice
                if h < cut and len(self.heldout) < self.heldout_max_docs:
                    self.heldout.append(text)
                elif self.sample_below is None or cut <= h < self.sample_below:
                    train.append(text)
                    nbytes += len(data)
            self.progress.add(len(batch), read_bytes,
                              f"; training on {self.train_docs + len(train)} docs, "
                              f"{(self.train_bytes + nbytes) / 1e6:.1f} MB")
            if train:
                self.train_docs += len(train)
                self.train_chars += sum(map(len, train))
                self.train_bytes += nbytes
                return train
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
    plan = choose_sample(cfg, files)
    split = CorpusSplit(
        iter_text_batches(files, cfg.text_column, batch_size=cfg.batch_size, max_docs=cfg.max_docs),
        heldout_fraction=cfg.heldout_fraction,
        heldout_max_docs=cfg.heldout_max_docs,
        sample_below=plan.threshold if plan is not None else None,
        progress=ProgressLog("reading the training documents", cfg.progress_seconds),
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
            f"{len(cfg.special_tokens)} special tokens"
            f"{f' + {len(BYTE_TOKENS)} byte-fallback tokens' if cfg.uses_byte_fallback else ''} = {needed}: "
            f"raise --vocab-size to at least {needed} (real tokenizers use thousands)"
        )

    length = None
    if cfg.show_progress and plan is not None and plan.expected_docs is not None:
        length = plan.expected_docs
    elif cfg.show_progress:
        total = count_docs(files)
        if total is not None:
            total = min(total, cfg.max_docs or total)
            length = math.ceil(total * (1 - cfg.heldout_fraction))

    def batches() -> Iterator[list[str]]:
        yield first
        yield from split
        split.progress.log(f"; training on {split.train_docs} docs, {split.train_bytes / 1e6:.1f} MB")
        log.info("corpus read; the %s trainer now builds the vocabulary from what it counted (for unigram the "
                 "longest phase: EM and pruning, no further log lines until it ends)", cfg.model)

    log.info("training a %s tokenizer (vocab %d) on %d file(s)", cfg.model, cfg.vocab_size, len(files))
    t_train = time.perf_counter()
    try:
        tok.train_from_iterator(batches(), trainer=trainer, length=length)
    except Exception as err:
        if "not large enough to contain all chars" in str(err):
            raise TokenizerTrainError(
                f"--vocab-size {cfg.vocab_size} is below the corpus alphabet + {len(cfg.special_tokens)} "
                f"special tokens{f' + {len(BYTE_TOKENS)} byte-fallback tokens' if cfg.uses_byte_fallback else ''} "
                "(the corpus has more distinct characters than the first batch showed): "
                "raise --vocab-size, or keep --normalizer nfkc to fold rare variants"
            ) from err
        raise
    train_seconds = time.perf_counter() - t_train
    log.info("corpus read and vocabulary built in %.1f s", train_seconds)
    if cfg.uses_byte_fallback:
        add_byte_fallback(tok, cfg)
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
        "train_bytes": split.train_bytes,
        "byte_fallback": cfg.uses_byte_fallback or cfg.model == "bpe",
        "sample": sample_stats(cfg, plan, split),
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
        output, stats["vocab_size"], split.train_docs, split.train_bytes / 1e6, train_seconds,
        (stats["heldout"] or {}).get("chars_per_token"),
    )
    return stats



def choose_sample(cfg: TokenizerTrainConfig, files: Sequence[Path]) -> SamplePlan | None:
    """The sample plan for ``--sample-bytes``: None when off; no sizing pass when the files cannot exceed it."""
    if cfg.sample_bytes is None:
        return None
    bound = text_bytes_upper_bound(files, cfg.text_column)
    if bound <= cfg.sample_bytes:
        log.info("sample: the corpus (at most %.1f MB of text) fits --sample-bytes %d; training on all of it",
                 bound / 1e6, cfg.sample_bytes)
        return SamplePlan(budget_bytes=cfg.sample_bytes)
    log.info("sample: sizing the corpus to choose %.1f MB of documents by hash (--sample-bytes)", cfg.sample_bytes / 1e6)
    plan = plan_sample(
        iter_text_batches(files, cfg.text_column, batch_size=cfg.batch_size, max_docs=cfg.max_docs),
        cfg.sample_bytes, cfg.heldout_fraction, cfg.progress_seconds,
    )
    log.info("sample: %s docs / %.1f MB of %d docs / %.1f MB (%.2f %% of the hash space)", plan.expected_docs,
             (plan.expected_bytes or 0) / 1e6, plan.corpus_docs, (plan.corpus_bytes or 0) / 1e6, 100 * plan.fraction)
    return plan


def sample_stats(cfg: TokenizerTrainConfig, plan: SamplePlan | None, split: CorpusSplit) -> dict[str, Any]:
    """What was sampled, for train_stats.json: the budget, the threshold, and what it selected of how much."""
    if plan is None:
        return {"budget_bytes": None, "sampled": False}
    return {
        "budget_bytes": cfg.sample_bytes,
        "sampled": plan.threshold < HASH_END,
        "hash_threshold": plan.threshold,
        "hash_fraction": round(plan.fraction, 6),
        "docs": split.train_docs,
        "bytes": split.train_bytes,
        "corpus_docs": plan.corpus_docs if plan.corpus_docs is not None else split.read_docs,
        "corpus_bytes": plan.corpus_bytes if plan.corpus_bytes is not None else split.progress.bytes,
        "sizing_pass": plan.corpus_docs is not None,
        "sizing_seconds": plan.sizing_seconds,
    }
