"""What every step shares: applying a text function to the live rows of an Arrow batch, and marking drops.

Two small base classes cover most steps: :class:`TextStep` (rewrite each text: override ``transform``) and
:class:`FilterStep` (judge each text: override ``reason``). A step is registered in
:mod:`curation.steps.registry`, which gives it its name, its config section and the stage it runs in.

A batch is a ``pyarrow.Table``. Rows already marked with a ``drop_reason`` are left alone by later steps
(they are counted and removed at the end, never silently lost), and so are rows whose text is null.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import columns


def live_mask(batch: pa.Table) -> list[bool]:
    """True for rows no earlier step has dropped."""
    if columns.DROP_REASON not in batch.column_names:
        return [True] * batch.num_rows
    return pc.is_null(batch.column(columns.DROP_REASON)).to_pylist()


def set_column(batch: pa.Table, name: str, values: pa.Array | pa.ChunkedArray | Sequence[object],
               type: pa.DataType | None = None) -> pa.Table:
    """Replace ``name`` if present, else append it."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type)
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        return batch.set_column(idx, name, arr)
    return batch.append_column(name, arr)


def map_text(batch: pa.Table, text_column: str, fn: Callable[[str], str]) -> pa.Table:
    """Apply ``fn`` to the text of every live row whose text is a string; keep the rest as they are."""
    texts = batch.column(text_column).to_pylist()
    live = live_mask(batch)
    out = [fn(t) if ok and isinstance(t, str) else t for t, ok in zip(texts, live)]
    return set_column(batch, text_column, pa.array(out, type=pa.large_string()))


def mark_texts(batch: pa.Table, text_column: str, reason: Callable[[str], str | None]) -> pa.Table:
    """Mark every live row whose text ``reason`` gives a drop reason for; None keeps the row."""
    texts = batch.column(text_column).to_pylist()
    reasons = [reason(t) if ok and isinstance(t, str) else None for t, ok in zip(texts, live_mask(batch))]
    return mark_dropped(batch, reasons)


def mark_dropped(batch: pa.Table, reasons: Sequence[str | None]) -> pa.Table:
    """Record ``reasons`` (None = keep) for rows not dropped yet. An earlier reason always wins."""
    if columns.DROP_REASON in batch.column_names:
        old = batch.column(columns.DROP_REASON).to_pylist()
        reasons = [o if o is not None else r for o, r in zip(old, reasons)]
    return set_column(batch, columns.DROP_REASON, pa.array(list(reasons), type=pa.string()))


class Step:
    """Base of the step classes: the step's options and the text column, the batch in, the batch out.

    ``cfg`` is annotated with the step's config class in each subclass (``cfg: HtmlConfig``); a step made
    without options gets that class's defaults.
    """

    cfg: Any

    def __init__(self, cfg: Any = None, text_column: str = "text") -> None:
        self.cfg = cfg if cfg is not None else self.default_config()
        self.text_column = text_column

    @classmethod
    def default_config(cls) -> Any:
        """The step's config with every default: an instance of the class its ``cfg`` annotation names."""
        config_type = typing.get_type_hints(cls).get("cfg")
        return config_type() if dataclasses.is_dataclass(config_type) else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class TextStep(Step):
    """Base of the steps that rewrite text: subclasses override ``transform`` only.

    The batch plumbing (live rows only, nulls kept, one Arrow column in and out) lives here once.
    """

    def transform(self, text: str) -> str:
        """Rewrite one text."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_text(batch, self.text_column, self.transform)


class FilterStep(Step):
    """Base of the steps that drop rows by their text: subclasses override ``reason`` only.

    Rows are marked with the reason, never removed here: the pipeline counts every reason, then removes them.
    Rows dropped before and null text are left alone.
    """

    def reason(self, text: str) -> str | None:
        """Why ``text`` is dropped (a short ``snake_case`` reason that the report counts), or None to keep it."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        return mark_texts(batch, self.text_column, self.reason)
