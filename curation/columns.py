"""Names of the columns the pipeline adds. The one place they are spelled out.

The text column itself is the user's (``--text-column``, default ``text``); every other input column passes
through untouched.
"""

ID = "id"
"""Stable row id: the input's own ``id`` column if it has one, else ``<source file>:<row>``."""
SOURCE = "source"
"""Input file (or dataset name) the row came from; only added when the input has no such column."""
DROP_REASON = "drop_reason"
"""Null for kept rows; a short reason (``empty_text``, ``duplicate``, ``language``, ...) for dropped ones."""
LANG = "lang"
"""ISO 639-1 code the language step detected (``und`` when undetermined)."""
LANG_SCORE = "lang_score"
"""Confidence of ``lang`` in [0, 1]."""
PII_COUNTS = "pii_counts"
"""Struct of per-type redaction counts for the row (``email``, ``phone``, ...)."""
DEDUP_KEY = "_dedup_key"
"""Internal: 128-bit hash of the dedup key, as 16 bytes; never written out."""

SHARD = "_shard"
"""Internal: output shard of the row, derived from the dedup key hash (or the id when dedup is off)."""
DUP_COUNT = "_dup_count"
"""Internal: on the row a duplicate group keeps, how many copies were removed."""
STATS = "_stats"
"""Internal: JSON per-batch step statistics, carried on one extra row per batch (see ``pipeline``)."""
STATS_ROW = "_stats_row"
"""The ``drop_reason`` value of those statistics rows; they are never data and never counted as rows."""

INTERNAL = (DROP_REASON, DEDUP_KEY, SHARD, DUP_COUNT, STATS)
"""Columns the writer removes from the curated output (dropped rows are reported, not written)."""
