"""The held-out split: which curated documents go to ``OUTPUT/heldout/`` instead of ``OUTPUT/data/``.

Split once, at curation, so that every later stage (tokenizer, training, evaluation) agrees on what was never
trained on, and so that perplexity is no longer measured on training data.

How a document's side is chosen: a keyed 64-bit BLAKE2b hash of its split key (see :class:`SplitConfig.key`),
read as a number in [0, 1), is compared with the held-out fraction. The decision needs nothing but the document
itself, so each output shard splits its own rows: the same documents are held out for any number of CPUs,
blocks, nodes or retries, and ``--resume`` redoes a shard with the same result. Raising the fraction only moves
documents from training to held-out, never back. Python's ``hash()`` is salted per process and would not do.

The split runs in the shard stage after the ``shard`` steps (dedup, PII), on the rows that are kept: dedup has
already left one copy of each text (the smallest id), so duplicates cannot straddle the split. Keyed by the
written text (the default), identical documents share a side even when dedup did not run, or when PII redaction
made two different documents identical after dedup.

Pure functions on Arrow tables and numbers: unit tests call them without Ray.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.config import ConfigError
from curation import columns
from curation.report import ConservationError

DEDUP_STEP = "dedup"
"""The step that removes exact duplicates before the split; ``key: id`` needs it."""
SIDES = ("train", "heldout")


@dataclass(frozen=True)
class SplitConfig:
    """The held-out split. Defaults: 2% of the documents, at most about 10,000 of them.

    Why these: the demo corpus keeps about 2,000 documents, of which 2% is about 40, enough for a perplexity
    that tells a trained model from an untrained one. A real corpus of 10 million documents would hold out
    200,000 at 2%, far more than evaluation needs (perplexity on 10,000 documents is stable to a fraction of a
    percent) and data training would miss; the cap lowers the fraction for it instead."""

    heldout_fraction: float = 0.02
    """Share of the curated documents written to ``heldout/`` instead of ``data/``, in [0, 1). 0: no split,
    and no ``heldout/`` folder."""
    heldout_max_docs: int | None = 10_000
    """Hold out at most about this many documents: when the documents that survive cleaning number more than
    ``heldout_max_docs / heldout_fraction``, the fraction is lowered to fit (reported as
    ``effective_fraction``). About, because each document is still decided on its own hash; the count can
    exceed the cap by a few square roots of it. null: no cap."""
    key: Literal["text", "id"] = "text"
    """What is hashed: ``text``, the written text, so identical documents always share a side whatever steps
    ran; ``id``, the document id, so a document keeps its side when a change of the cleaning steps changes its
    text (needs the ``dedup`` step; documents that PII redaction made identical may then straddle)."""
    salt: str = "curation-heldout-v1"
    """Key of the hash: another salt draws another, independent split of the same corpus."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"split.heldout_fraction is {self.heldout_fraction}: it must be in [0, 1) "
                              f"(0.02 holds out 2%; 0 turns the split off)")
        if self.heldout_max_docs is not None and self.heldout_max_docs < 1:
            raise ConfigError(f"split.heldout_max_docs is {self.heldout_max_docs}: it must be >= 1, or null for "
                              f"no cap (to turn the split off, set split.heldout_fraction: 0)")
        if self.key not in ("text", "id"):
            raise ConfigError(f"split.key must be 'text' or 'id', got {self.key!r}")
        if not 1 <= len(self.salt.encode("utf-8")) <= 64:
            raise ConfigError(f"split.salt must be 1 to 64 bytes of UTF-8, got {len(self.salt.encode('utf-8'))}")

    @property
    def enabled(self) -> bool:
        return self.heldout_fraction > 0

    def check_steps(self, steps: Sequence[str]) -> None:
        """``key: id`` keeps duplicates on one side only because dedup left one copy of each."""
        if self.enabled and self.key == "id" and DEDUP_STEP not in steps:
            raise ConfigError(
                "split.key is 'id' but the dedup step does not run, so exact duplicates could land on both sides "
                "of the split (one copy trained on, one evaluated on). Add dedup to steps, or use split.key: text.")


def _hash_unit(key: str, salt: bytes) -> int:
    """The 64-bit keyed BLAKE2b of ``key``, as an unsigned integer."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big")


def heldout_mask(keys: Iterable[str | None], fraction: float, salt: str) -> np.ndarray:
    """True for each key whose document is held out: ``hash(key) / 2**64 < fraction``.

    Deterministic across processes and machines; equal keys always get the same answer. A null key (no text)
    is never held out."""
    limit = int(fraction * 2.0**64)  # exact: scaling by a power of two
    s = salt.encode("utf-8")
    return np.fromiter(((k is not None and _hash_unit(k, s) < limit) for k in keys), dtype=bool)


def split_keys(table: pa.Table, cfg: SplitConfig, text_column: str) -> list[str | None]:
    """The column the split hashes, as Python strings."""
    return table.column(columns.ID if cfg.key == "id" else text_column).to_pylist()


def split_table(table: pa.Table, cfg: SplitConfig, fraction: float, text_column: str) -> tuple[pa.Table, pa.Table]:
    """(training rows, held-out rows) of the kept rows of one shard, each in the input's row order."""
    if fraction <= 0 or not table.num_rows:
        return table, table.slice(0, 0)
    mask = pa.array(heldout_mask(split_keys(table, cfg, text_column), fraction, cfg.salt), type=pa.bool_())
    return table.filter(pc.invert(mask)), table.filter(mask)


def side_counts(table: pa.Table, text_column: str) -> list[int]:
    """[documents, UTF-8 bytes of their text] of one side of a shard."""
    if not table.num_rows:
        return [0, 0]
    return [table.num_rows, int(pc.sum(pc.binary_length(table.column(text_column))).as_py() or 0)]


def effective_fraction(cfg: SplitConfig, candidates: int) -> float:
    """The fraction applied: ``heldout_fraction``, lowered so that about ``heldout_max_docs`` of
    ``candidates`` documents (those alive after cleaning, an upper bound of those kept) are held out."""
    if not cfg.enabled or cfg.heldout_max_docs is None or candidates <= cfg.heldout_max_docs:
        return cfg.heldout_fraction
    return min(cfg.heldout_fraction, cfg.heldout_max_docs / candidates)


def candidate_docs(task_records: Sequence[Mapping[str, Any]], clean_steps: Sequence[str]) -> int:
    """Documents alive after the cleaning steps, summed over the read tasks' records: what the cap divides."""
    last = clean_steps[-1] if clean_steps else "read"
    return sum(int(rec["steps"].get(last, {}).get("rows_out", 0)) for rec in task_records)


def split_report(cfg: SplitConfig, fraction: float, shard_splits: Iterable[Mapping[str, Sequence[int]]],
                 rows_out: int) -> dict[str, Any]:
    """``report["split"]``: the settings, the fraction applied, and documents and text bytes on each side.

    Raises :class:`ConservationError` if the sides do not add up to the rows kept: a row lost or written twice."""
    totals = {side: [0, 0] for side in SIDES}
    for s in shard_splits:
        for side in SIDES:
            totals[side] = [a + b for a, b in zip(totals[side], s.get(side, (0, 0)))]
    docs = totals["train"][0] + totals["heldout"][0]
    if docs != rows_out:
        raise ConservationError(f"the split wrote {docs} documents (train + held-out) but {rows_out} were kept; this is "
                           f"a bug, please report it with report.json")
    return {"heldout_fraction": cfg.heldout_fraction, "heldout_max_docs": cfg.heldout_max_docs,
            "effective_fraction": fraction, "key": cfg.key, "salt": cfg.salt,
            **{side: {"docs": d, "text_bytes": b} for side, (d, b) in totals.items()}}
