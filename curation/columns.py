"""Names of the columns the pipeline adds. The one place they are spelled out.

The text column itself is the user's (``--text-column``, default ``text``); every other input column passes
through untouched.
"""

from collections.abc import Iterable

ID = "id"
"""Stable row id, a string: the input's own ``id`` column if it has one, else ``<source>:<offset>``. Dedup keeps
the smallest id comparing strings (``"10"`` sorts before ``"9"``)."""
SOURCE = "source"
"""Input file the row came from, as its path below the input root (``hf://NAME`` for datasets), the same from
any working directory; an input's own ``source`` column is kept instead, its values as strings."""
DROP_REASON = "_cur_drop_reason"
"""Internal: null for kept rows; a short reason (``empty_text``, ``duplicate``, ``language``, ...) for dropped
ones. Written out as ``drop_reason`` in ``dropped/``; internal under a prefixed name so that a user's own
``drop_reason`` column passes through untouched."""
LANG = "lang"
"""ISO 639-1 code the language step detected (``und`` when undetermined)."""
LANG_SCORE = "lang_score"
"""Confidence of ``lang`` in [0, 1]."""
PII_COUNTS = "pii_counts"
"""Struct of per-type redaction counts for the row (``email``, ``phone``, ...)."""
DEDUP_KEY = "_cur_dedup_key"
"""Internal: 128-bit hash of the dedup key, as 16 bytes; never written out."""

SHARD = "_cur_shard"
"""Internal: key partition of the row, derived from the dedup key hash (or the id when dedup is off): which
dedup task decides its text (see :mod:`curation.keys`). Not where the row is written."""
DUP_COUNT = "_cur_dup_count"
"""Internal: on the row a duplicate group keeps, how many copies were removed."""
DUP_DECISION = "_cur_dup_decision"
"""Internal: the run-wide dedup decision for a row whose text other read tasks hold too (:mod:`curation.keys`):
copies removed on the winner, -1 on a loser, null where the shard's own rows decide."""
STATS = "_cur_stats"
"""Internal: JSON per-batch step statistics, carried on one extra row per batch (see ``pipeline``)."""
STATS_ROW = "_cur_stats_row"
"""The ``drop_reason`` value of those statistics rows; they are never data and never counted as rows."""

INTERNAL = (DROP_REASON, DEDUP_KEY, SHARD, DUP_COUNT, DUP_DECISION, STATS)
"""Columns the writer removes from the curated output (dropped rows are reported, not written)."""
INTERNAL_PREFIX = "_cur_"
"""Every internal column starts with this; the reader renames input columns that do (see ``reserved``)."""
RENAMED_PREFIX = "input_"
"""An input column whose name the pipeline needs is kept as ``input_<name>`` (``input_lang``)."""


def reserved(step_columns: Iterable[str] = ()) -> frozenset[str]:
    """Column names an input may not bring: the internal ones and ``step_columns``, those the run's steps add
    (each step's ``columns`` in :mod:`curation.steps.registry`; ``RunConfig.reserved_columns`` has them)."""
    return frozenset(INTERNAL).union(step_columns)
