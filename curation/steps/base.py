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
from collections.abc import Callable, Iterator, Sequence
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


class Texts:
    """A batch's text column as Python strings, with its drop reasons and the columns steps add: what a run of
    steps hands from one to the next, so that the text crosses between Arrow and Python once per batch instead
    of twice per step (each crossing decodes or encodes every byte; on the benchmark corpus that was a tenth of
    stage 1). :meth:`Step.apply` works on it; :meth:`Step.__call__` wraps the same method for one Arrow batch.

    A row is *live* while its reason is None; steps touch the live rows whose text is a string (:meth:`rows`)."""

    def __init__(self, batch: pa.Table, text_column: str) -> None:
        self.text_column = text_column
        self.values: list[Any] = batch.column(text_column).to_pylist()
        has_reasons = columns.DROP_REASON in batch.column_names
        self.reasons: list[str | None] = (batch.column(columns.DROP_REASON).to_pylist() if has_reasons
                                          else [None] * batch.num_rows)
        self.added: dict[str, pa.Array] = {}
        self.text_changed = False
        self.reasons_changed = False

    def rows(self) -> Iterator[tuple[int, str]]:
        """(index, text) of every live row whose text is a string."""
        for i, (text, why) in enumerate(zip(self.values, self.reasons)):
            if why is None and isinstance(text, str):
                yield i, text

    def live_chars(self) -> tuple[int, int]:
        """(live rows, characters of their text): the same as counting in Arrow (``utf8_length`` counts code
        points, as ``len`` does; null text counts no characters)."""
        live = sum(why is None for why in self.reasons)
        return live, sum(len(text) for _, text in self.rows())

    def transform(self, fn: Callable[[str], str]) -> None:
        """Apply ``fn`` to the text of every live row whose text is a string."""
        self.values = [fn(t) if why is None and isinstance(t, str) else t
                       for t, why in zip(self.values, self.reasons)]
        self.text_changed = True

    def mark(self, reasons: Sequence[str | None]) -> None:
        """Record ``reasons`` (None = keep) for rows not dropped yet. An earlier reason always wins."""
        self.reasons = [old if old is not None else new for old, new in zip(self.reasons, reasons)]
        self.reasons_changed = True

    def mark_texts(self, reason: Callable[[str], str | None]) -> None:
        """Mark every live row whose text ``reason`` gives a drop reason for; None keeps the row."""
        self.mark([reason(t) if why is None and isinstance(t, str) else None
                   for t, why in zip(self.values, self.reasons)])

    def add_column(self, name: str, values: pa.Array | Sequence[object], type: pa.DataType | None = None) -> None:
        """Set (replace or append) column ``name`` when the texts go back into their batch."""
        self.added[name] = values if isinstance(values, pa.Array) else pa.array(values, type=type)

    def into(self, batch: pa.Table) -> pa.Table:
        """``batch`` with what the steps changed: the text column, the drop reasons, the added columns."""
        if self.text_changed:
            batch = set_column(batch, self.text_column, pa.array(self.values, type=pa.large_string()))
        for name, values in self.added.items():
            batch = set_column(batch, name, values)
        if self.reasons_changed:  # after the added columns: where a step alone would have put it
            batch = set_column(batch, columns.DROP_REASON, pa.array(self.reasons, type=pa.string()))
        return batch


def map_text(batch: pa.Table, text_column: str, fn: Callable[[str], str]) -> pa.Table:
    """Apply ``fn`` to the text of every live row whose text is a string; keep the rest as they are."""
    texts = Texts(batch, text_column)
    texts.transform(fn)
    return texts.into(batch)


def mark_texts(batch: pa.Table, text_column: str, reason: Callable[[str], str | None]) -> pa.Table:
    """Mark every live row whose text ``reason`` gives a drop reason for; None keeps the row."""
    texts = Texts(batch, text_column)
    texts.mark_texts(reason)
    return texts.into(batch)


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

    def apply(self, texts: Texts) -> None:
        """Do the step's work on the texts of a batch (the pipeline hands one :class:`Texts` from step to step).
        Steps that need more of the batch than its text override ``__call__`` instead."""
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = Texts(batch, self.text_column)
        self.apply(texts)
        return texts.into(batch)


def runs_on_texts(step: object) -> bool:
    """Whether ``step`` works on :class:`Texts`: a :class:`Step` that implements ``apply`` and keeps the
    ``__call__`` that wraps it. Other batch callables, and steps that override ``__call__`` to do more than
    ``apply``, get the Arrow batch."""
    return (isinstance(step, Step) and type(step).apply is not Step.apply
            and type(step).__call__ is Step.__call__)


class TextStep(Step):
    """Base of the steps that rewrite text: subclasses override ``transform`` only.

    The batch plumbing (live rows only, nulls kept, one Arrow column in and out) lives here once.
    """

    def transform(self, text: str) -> str:
        """Rewrite one text."""
        raise NotImplementedError

    def apply(self, texts: Texts) -> None:
        texts.transform(self.transform)


class FilterStep(Step):
    """Base of the steps that drop rows by their text: subclasses override ``reason`` only.

    Rows are marked with the reason, never removed here: the pipeline counts every reason, then removes them.
    Rows dropped before and null text are left alone.
    """

    def reason(self, text: str) -> str | None:
        """Why ``text`` is dropped (a short ``snake_case`` reason that the report counts), or None to keep it."""
        raise NotImplementedError

    def apply(self, texts: Texts) -> None:
        texts.mark_texts(self.reason)
