"""Which documents a tokenizer trains on: a byte budget filled by the lowest hashes of the text.

Why a hash and not "the first N documents": the first documents of a corpus are one source, one language, one
crawl date; the lowest hashes are a uniform sample of all of it. And the choice is a property of each document,
not of where it sits, so the same documents are chosen whatever the file order or sharding, and when more data
is added a document leaves the sample only because new documents with lower hashes took its place (nothing
outside the old sample ever enters it). The held-out documents for the compression figures are the very lowest
hashes (below ``heldout_fraction * 2**64``); the sample starts where they end, so the two never overlap.

Choosing the threshold costs one cheap pass over the corpus (read, hash, count bytes: no training) and constant
memory: the bytes are summed into 2**20 hash buckets, and the threshold is the end of the last bucket that keeps
the sample within the budget. On a 1 TB corpus a bucket holds about 1 MB, so the sample falls short of the
budget by at most that much. The pass is skipped when the files cannot hold more text than the budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import xxhash

from common.files import detect_format

log = logging.getLogger("modeling.tokenizer")

#: One past the largest 64-bit hash: a threshold that keeps every document.
HASH_END = 2**64
#: log2 of the number of hash buckets the sizing pass sums bytes into (8 MB of counters).
BUCKET_BITS = 20


def doc_hash(text: str) -> int:
    """The 64-bit hash every sampling decision is made on (xxh64 of the UTF-8 text; lone surrogates kept)."""
    return xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass"))


def heldout_cut(fraction: float) -> int:
    """Documents whose hash is below this are held out for the compression figures."""
    return int(fraction * HASH_END) if fraction > 0 else 0


def text_bytes_upper_bound(files: Sequence[Path], text_column: str) -> float:
    """At least as many bytes as the text in ``files`` holds, without reading it (inf when unknowable).

    Parquet footers record each column's uncompressed size (the text plus 4-byte offsets); a plain .jsonl or
    .txt file is no smaller than its text. Gzipped jsonl would need decompressing: unknown.
    """
    total = 0.0
    for path in files:
        fmt = detect_format(path)
        if fmt == "parquet":
            meta = pq.ParquetFile(path).metadata
            names = [meta.schema.column(i).name for i in range(meta.num_columns)]
            if text_column not in names:
                return float("inf")  # the reader will say what is wrong with the file
            col = names.index(text_column)
            total += sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))
        elif path.name.endswith(".gz"):
            return float("inf")
        else:
            total += path.stat().st_size
    return total


@dataclass
class SamplePlan:
    """The outcome of the sizing pass: the hash threshold and what it selects, for train_stats.json."""

    budget_bytes: int
    threshold: int = HASH_END
    """Documents with ``heldout_cut <= hash < threshold`` are trained on."""
    corpus_docs: int | None = None
    """Non-empty documents read by the sizing pass, held-out ones included (None: the pass was skipped, the
    files cannot hold more text than the budget)."""
    corpus_bytes: int | None = None
    expected_docs: int | None = None
    """Documents the threshold selects (the training pass counts them again)."""
    expected_bytes: int | None = None
    sizing_seconds: float = 0.0
    """Time the sizing pass took (0: skipped)."""

    @property
    def fraction(self) -> float:
        """Share of the hash space the sample covers (1.0: no sampling)."""
        return self.threshold / HASH_END


class ProgressLog:
    """A log line every ``every`` seconds while a long pass reads documents: documents, MB, MB/s."""

    def __init__(self, what: str, every: float = 15.0) -> None:
        self.what, self.every = what, every
        self.docs = self.bytes = 0
        self.start = self.last = time.perf_counter()

    def add(self, docs: int, nbytes: int, extra: str = "") -> None:
        """Count a batch; log when ``every`` seconds have passed since the last line."""
        self.docs += docs
        self.bytes += nbytes
        now = time.perf_counter()
        if self.every >= 0 and now - self.last >= self.every:
            self.last = now
            self.log(extra)

    def log(self, extra: str = "") -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        log.info("%s: %d docs, %.1f MB read in %.0f s (%.1f MB/s)%s", self.what, self.docs, self.bytes / 1e6,
                 elapsed, self.bytes / 1e6 / elapsed, extra)


def plan_sample(batches: Iterable[list[str]], budget_bytes: int, heldout_fraction: float,
                progress_every: float = 15.0) -> SamplePlan:
    """Read the corpus once, hashing and sizing each document, and pick the threshold that fills the budget.

    Documents in the held-out hash range are not counted: they are never trained on. The sample is the
    largest prefix of whole hash buckets (from the held-out cut up) whose bytes fit the budget; if even the
    first non-empty bucket does not fit (a budget smaller than a few documents), that bucket is taken anyway
    and a warning says so, rather than training on nothing.
    """
    cut = heldout_cut(heldout_fraction)
    shift = 64 - BUCKET_BITS
    hist = np.zeros(1 << BUCKET_BITS, dtype=np.int64)
    counts = np.zeros(1 << BUCKET_BITS, dtype=np.int64)
    progress = ProgressLog("sizing the corpus for the sample", progress_every)
    for batch in batches:
        buckets, sizes, read = [], [], 0
        for text in batch:
            data = text.encode("utf-8", "surrogatepass")
            read += len(data)
            h = xxhash.xxh64_intdigest(data)
            if h >= cut:
                buckets.append(h >> shift)
                sizes.append(len(data))
        np.add.at(hist, np.asarray(buckets, dtype=np.int64), np.asarray(sizes, dtype=np.int64))
        np.add.at(counts, np.asarray(buckets, dtype=np.int64), 1)
        progress.add(len(batch), read)
    progress.log()
    plan = SamplePlan(budget_bytes=budget_bytes, corpus_docs=progress.docs, corpus_bytes=progress.bytes,
                      sizing_seconds=round(time.perf_counter() - progress.start, 3))
    cum = np.cumsum(hist)
    if cum[-1] <= budget_bytes:  # everything outside the held-out range fits
        plan.expected_docs, plan.expected_bytes = int(counts.sum()), int(cum[-1])
        return plan
    last = int(np.searchsorted(cum, budget_bytes, side="right"))  # buckets [0, last) fit the budget
    if last == 0 or cum[last - 1] == 0:
        last = int(np.flatnonzero(hist)[0]) + 1
        log.warning("--sample-bytes %d is smaller than the first hash bucket (%d bytes): training on that bucket; "
                    "raise --sample-bytes", budget_bytes, int(hist[last - 1]))
    plan.threshold = last << shift
    plan.expected_docs, plan.expected_bytes = int(counts[:last].sum()), int(cum[last - 1])
    return plan
