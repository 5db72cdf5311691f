"""Per-source and per-language numbers: the per-document sums of :mod:`modeling.evaluation.scoring`, grouped by a
column of the documents (curated shards carry ``source`` and ``lang``).

Every target token belongs to the document it comes from, even in a block that spans documents, so a group's
tokens and bytes are exactly its documents', and the groups add up to the totals. A corpus with thousands of
sources would give an unreadable table: the largest groups by bytes are listed and the rest summed as one
``(other)`` row, which keeps the sum intact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from modeling.corpus import iter_document_batches
from modeling.evaluation.scoring import BYTES, CORRECT, NLL, TEXT_NLL, TOKENS, bits_per_byte

#: The label of documents whose row has no value in the breakdown's column.
MISSING = "(none)"
#: The row that sums the groups beyond ``max_groups``.
OTHER = "(other)"


class DocumentLabels:
    """Reads documents with the values of ``columns`` beside them and keeps, per column, a small integer code of
    each document's value (in packing order, so the packer's document index finds it): a few bytes per
    document, not a string."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.names: dict[str, list[str]] = {c: [] for c in self.columns}
        self._codes: dict[str, dict[str, int]] = {c: {} for c in self.columns}
        self._doc_codes: dict[str, list[np.ndarray]] = {c: [] for c in self.columns}

    def read(self, files: Sequence[Path], text_column: str, batch_size: int = 1000,
             max_docs: int | None = None) -> Iterator[list[str]]:
        """The documents' texts in batches, as ``iter_text_batches`` gives them; their labels are kept."""
        for texts, values in iter_document_batches(files, text_column, self.columns, batch_size, max_docs):
            for c in self.columns:
                codes = self._codes[c]
                labels = [MISSING if v is None or v == "" else str(v) for v in values[c]]
                for label in labels:
                    if label not in codes:
                        codes[label] = len(codes)
                        self.names[c].append(label)
                self._doc_codes[c].append(np.fromiter((codes[x] for x in labels), dtype=np.int32, count=len(labels)))
            yield texts

    def codes(self, column: str) -> np.ndarray:
        parts = self._doc_codes[column]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def summarize(row: np.ndarray, docs: int) -> dict[str, float | int]:
    """One row of sums (``TOKENS`` ... ``BYTES``) as the metrics a report shows."""
    tokens = int(row[TOKENS])
    return {
        "bits_per_byte": bits_per_byte(row[TEXT_NLL], row[BYTES]),
        "perplexity": math.exp(row[NLL] / tokens) if tokens else float("nan"),
        "next_token_accuracy": row[CORRECT] / tokens if tokens else float("nan"),
        "tokens": tokens,
        "bytes": int(row[BYTES]),
        "docs": docs,
    }


def breakdown(per_doc: np.ndarray, codes: np.ndarray, names: Sequence[str],
              max_groups: int = 20) -> dict[str, object]:
    """The groups of one column, largest by bytes first, at most ``max_groups`` of them plus ``(other)``.

    ``per_doc`` may have fewer rows than ``codes`` (documents read but never scored: the packer's last block of
    one token) and those documents count nowhere."""
    n = len(per_doc)
    codes = codes[:n]
    k = len(names)
    sums = np.stack([np.bincount(codes, weights=per_doc[:, j], minlength=k) for j in range(per_doc.shape[1])], 1)
    docs = np.bincount(codes, minlength=k)
    order = sorted(range(k), key=lambda g: (-sums[g, BYTES], names[g]))
    shown, rest = order[:max_groups], order[max_groups:]
    groups = [{"group": names[g], **summarize(sums[g], int(docs[g]))} for g in shown]
    if rest:
        groups.append({"group": OTHER, "groups": len(rest),
                       **summarize(sums[rest].sum(axis=0), int(docs[rest].sum()))})
    return {"groups": groups, "total_groups": k}
