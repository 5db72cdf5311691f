"""Readers and writers. Reading is planned on the driver and executed by Ray tasks.

Planning (``plan_reads``) lists the input files below one *input root*, checks up front that every file has
the text column (so a typo fails in a second, naming the file and the columns it has, not an hour into a
run), and cuts large line-oriented files into byte ranges so one 50 GB jsonl file still spreads over the
cluster. What it does not read is listed, not passed over: files of unknown type in an input folder
(``skipped``), files without records (``empty``), input columns renamed because the pipeline uses their
names (``renamed``).

Executing (``read_task``) turns one planned piece into Arrow tables. Every record of the input becomes
exactly one row, kept or marked with a drop reason: malformed JSON or CSV, invalid UTF-8, null, non-string,
empty or oversized text are counted, never raised and never lost, and a truncated or corrupt file keeps the
rows before the damage plus one ``corrupt_file`` row. An I/O error (a file that vanished or lost its
permissions) is not corruption: it raises ``FileReadError``, naming the file. The reader counts the records
it parses in a ``ReadAccount``, apart from the rows it builds, so that the pipeline can check that none went
missing.

Each row gets a deterministic ``id``: the input's own ``id`` column (``ReaderConfig.id_column``) if it has
one, else ``<source>:<offset>``, where ``source`` is the file's path below the input root, so the same data
gives the same ids from any working directory. Dedup keeps "the smallest id" of duplicates whatever the
cluster looks like; ids compare as strings, so ``"10"`` sorts before ``"9"``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import columns
from curation.layout import atomic_write
from curation.paths import FORMAT_SUFFIXES, InputError, detect_format, file_ending, list_inputs
from curation.records import (
    READ_ERRORS,
    FileReadError,
    Record,
    csv_records,
    describe_error,
    inspect_file,
    is_corruption,
    json_records,
    jsonl_records,
    parquet_records,
    read_failure,
    text_file_record,
    text_line_records,
)
from curation.schema import json_string

HF_PREFIX = "hf://"
log = logging.getLogger("curation.io")


@dataclass(frozen=True)
class ReaderConfig:
    text_mode: Literal["file", "line"] = "file"
    """Plain-text files: one document per file, or one per non-empty line."""
    split_bytes: int = 64 * 2**20
    """Uncompressed jsonl / line-mode text files larger than this are read as several parallel pieces."""
    batch_rows: int = 8192
    """Rows per Arrow table a read task yields (bounds a worker's memory on huge files)."""
    id_column: str = columns.ID
    """Input column used as the row id when present (strings as they are, ints in decimal, other values as
    JSON: ``true``, ``{"a": 1}``); otherwise ids are
    ``<source>:<offset>``. When this is not ``id``, an input column named ``id`` is kept as ``input_id``."""
    max_doc_chars: int | None = 32 * 2**20
    """Texts longer than this many characters become rows dropped as ``oversized`` (their text is not kept).
    A 50 MB document of prose is possible, but one document that large usually is a dump (a log, a table, a
    whole site) that stalls the steps after it. Raise it, or set null to keep every document. CSV records and
    JSON array elements longer than 4x this (at least 64 Mi characters) are read as broken, not as text."""
    hf_config: str | None = None
    """Hugging Face dataset configuration name (for ``hf://NAME`` inputs)."""
    hf_split: str = "train"
    """Hugging Face split."""
    hf_streaming: bool = False
    """Stream the Hugging Face dataset instead of downloading it first (``datasets`` streaming mode)."""
    hf_data_files: tuple[str, ...] = ()
    """Optional ``data_files`` for ``load_dataset`` (e.g. to read a local folder of json files)."""

    def __post_init__(self) -> None:
        if self.text_mode not in ("file", "line"):
            raise ValueError(f"reader.text_mode must be 'file' or 'line', got {self.text_mode!r}")
        if self.split_bytes < 1024 or self.batch_rows < 1:
            raise ValueError("reader.split_bytes must be >= 1024 and reader.batch_rows >= 1")
        if self.max_doc_chars is not None and self.max_doc_chars < 1:
            raise ValueError(f"reader.max_doc_chars must be >= 1 or null (no limit), got {self.max_doc_chars}")

    @property
    def record_limit(self) -> int:
        """Characters after which one CSV record or JSON array element counts as broken (bounds memory)."""
        return max(64 * 2**20, 4 * (self.max_doc_chars or 2**28))


@dataclass(frozen=True)
class ReadTask:
    """One piece of input: a file (or byte range / row group of one), or a shard of an HF dataset."""

    path: str
    """Where to read: an absolute file path, or ``hf://NAME``."""
    fmt: str
    """Reader: ``jsonl``, ``json`` (one array or object per file), ``csv``, ``parquet``, ``text``, ``hf``, ``hf-stream``."""
    start: int = 0
    """Byte offset (jsonl, line-mode text), row group (parquet, -1: the whole file), first row (hf), shard (hf-stream)."""
    end: int = -1
    """End byte offset (-1: the end), first row of the row group (parquet), end row (hf), shard count (hf-stream)."""
    size: int = 0
    """Bytes this piece covers (for sizing output shards); 0 when unknown (HF)."""
    source: str = ""
    """The file's path below the input root, POSIX-style (``hf://NAME`` for datasets): the ``source`` column and
    the first part of generated ids, the same from any working directory. Empty: ``path`` is used."""


@dataclass
class ReadPlan:
    """Everything ``plan_reads`` found: the tasks to run and the files it will not read, with why.

    Iterating over a plan (or ``len``) goes over its tasks.
    """

    tasks: list[ReadTask] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """``{"path": <below root>, "reason": "unknown file type .html"}`` for files in input folders (or matched by
    globs) that no reader reads."""
    empty: list[str] = field(default_factory=list)
    """Files without records (no bytes, only whitespace, a CSV header alone, ``[]``, 0 parquet rows), below
    root. They get no task."""
    root: str = ""
    """The input root: absolute common folder of the file inputs ('' with only ``hf://`` inputs)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Input columns seen at planning that will be renamed (``{"lang": "input_lang"}``), see ``rename_columns``.
    Columns that only some records carry are renamed all the same, without appearing here."""

    def __iter__(self) -> Iterator[ReadTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass
class ReadAccount:
    """What one ``read_task`` call parsed, counted apart from the rows it built.

    ``records`` must equal the number of rows the task yields (every record becomes one row, kept or marked
    with a drop reason); a difference is a reader bug. ``corrupt`` names the file and the error when the file
    ended in a truncated or corrupt stretch (its last row is then the ``corrupt_file`` marker).
    """

    source: str
    records: int = 0
    corrupt: str | None = None
    stringified: set[str] = field(default_factory=set)
    """Columns whose values within one batch had types Arrow cannot unify (``3`` and ``"x"``), so they were
    written as strings (``schema.json_string``: strings as they are, other values as JSON)."""


# ---------------------------------------------------------------------------------------------- columns


def rename_columns(names: Sequence[str], text_column: str, reserved: frozenset[str] = frozenset(),
                   id_column: str = columns.ID) -> dict[str, str]:
    """``{old: new}`` for the input columns that must not keep their name, deterministic for a set of names.

    A column whose name is in ``reserved`` (``RunConfig.reserved_columns``: the internal columns and those the
    run's steps add) or starts with ``columns.INTERNAL_PREFIX`` is renamed ``input_<name>``, or
    ``input_<name>_2``, ``_3``... when that is taken. So is ``id`` when ``id_column`` names another column. The
    text column, the id column and ``source`` keep their names: the input's own id is the row id, its source
    is the ``source`` column (as strings).
    """
    keep = {text_column, id_column, columns.SOURCE}

    def clashes(name: str) -> bool:
        return name not in keep and (name in reserved or name.startswith(columns.INTERNAL_PREFIX)
                                     or name == columns.ID)

    taken = set(names)
    out: dict[str, str] = {}
    for name in sorted(n for n in taken if clashes(n)):
        new, k = columns.RENAMED_PREFIX + name, 2
        while new in taken or clashes(new):
            new, k = f"{columns.RENAMED_PREFIX}{name}_{k}", k + 1
        taken.add(new)
        out[name] = new
    return out


def _check_text_column(text_column: str, reserved: frozenset[str]) -> None:
    if (text_column in reserved or text_column.startswith(columns.INTERNAL_PREFIX)
            or text_column in (columns.ID, columns.SOURCE)):
        raise InputError(
            f"the text column cannot be called {text_column!r}: the pipeline uses that name for its own column. "
            f"Rename the column in the input, then pass --text-column NEW_NAME."
        )


# ---------------------------------------------------------------------------------------------- planning


def _hf_load(name: str, cfg: ReaderConfig, split: str | None = None, streaming: bool | None = None) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise ImportError("Reading Hugging Face datasets needs `pip install datasets`") from e
    kwargs: dict[str, Any] = {"split": split or cfg.hf_split,
                              "streaming": cfg.hf_streaming if streaming is None else streaming}
    if cfg.hf_data_files:
        kwargs["data_files"] = list(cfg.hf_data_files)
    try:
        return datasets.load_dataset(name, cfg.hf_config, **kwargs)
    except Exception as e:
        raise InputError(
            f"could not load Hugging Face dataset {name!r} (config={cfg.hf_config!r}, split={kwargs['split']!r}): "
            f"{type(e).__name__}: {e}"
        ) from e


def plan_reads(inputs: Sequence[str], text_column: str, cfg: ReaderConfig = ReaderConfig(),
               reserved: frozenset[str] = frozenset()) -> ReadPlan:
    """Turn user inputs into read tasks, validating everything that can be validated without reading.

    ``reserved`` are the column names the run needs for itself (``RunConfig.reserved_columns``); input columns
    of those names are renamed (see ``rename_columns``), and ``read_task`` must get the same set.

    Raises:
        InputError: no input; a path that does not exist, a glob or folder without a readable file; an
            explicitly named file of unknown type; a file without the text column; a text column name the
            pipeline needs; a file that cannot be read (no permission); a UTF-16 or UTF-32 text file. Empty
            and corrupt files are not errors: they are listed or read as marked rows.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise InputError("no input given: pass --input PATH_OR_GLOB (or hf://DATASET)")
    _check_text_column(text_column, reserved)
    plan = ReadPlan()
    for name in (i[len(HF_PREFIX):] for i in inputs if i.startswith(HF_PREFIX)):
        plan.tasks.extend(_plan_hf(name, text_column, cfg, reserved, plan.renamed))
    file_inputs = [i for i in inputs if not i.startswith(HF_PREFIX)]
    if file_inputs:
        listing = list_inputs(file_inputs)
        plan.root, plan.skipped = str(listing.root), listing.skipped
        for path in listing.files:
            _plan_file(plan, path, listing.relative(path), text_column, cfg, reserved)
        if listing.skipped:
            log.info("skipping %s (listed in report.json)", listing.summary())
    if plan.empty:
        log.info("%d input file%s without records: %s", len(plan.empty), "s" * (len(plan.empty) != 1),
                 ", ".join(plan.empty[:10]) + (", ..." if len(plan.empty) > 10 else ""))
    if plan.renamed:
        log.warning("input columns renamed because the pipeline uses their names: %s",
                    ", ".join(f"{old} -> {new}" for old, new in sorted(plan.renamed.items())))
    return plan


def _plan_file(plan: ReadPlan, path: Path, source: str, text_column: str, cfg: ReaderConfig,
               reserved: frozenset[str]) -> None:
    fmt = detect_format(path)
    if fmt is None:
        known = ", ".join(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
        raise InputError(
            f"{path}: unknown file type {file_ending(path)}; readable endings are {known}. "
            f"Rename the file or point --input at the right files."
        )
    try:
        info = inspect_file(path, fmt, cfg.record_limit)
        size = path.stat().st_size
    except OSError as error:  # an I/O error (FileReadError included), before any work: a user error
        cause = error.__cause__ if isinstance(error, FileReadError) and error.__cause__ else error
        raise InputError(str(read_failure(cause, path, hint="make it readable or take it out of the input"))) from error
    if info.encoding is not None:
        raise _wide_encoding_error(path, info.encoding)
    if info.empty:
        plan.empty.append(source)
        return
    if info.corrupt:
        log.warning("%s: %s; it will be read as far as it goes and marked corrupt_file", source, info.corrupt)
        plan.tasks.append(ReadTask(str(path), info.fmt, -1 if fmt == "parquet" else 0, -1, size, source))
        return
    if info.columns is not None:
        if text_column not in info.columns:
            raise InputError(
                f"{path}: no text column {text_column!r}; its columns are {info.columns}. "
                f"Pass --text-column NAME (or text_column: in the config)."
            )
        for old, new in rename_columns(info.columns, text_column, reserved, cfg.id_column).items():
            plan.renamed.setdefault(old, new)
    if info.fmt == "parquet":
        for rg, (first_row, nbytes) in enumerate(info.row_groups):
            plan.tasks.append(ReadTask(str(path), "parquet", rg, first_row, nbytes, source))
    elif (info.fmt == "jsonl" or (info.fmt == "text" and cfg.text_mode == "line")) and not str(path).endswith(".gz"):
        for start in range(0, size, cfg.split_bytes):
            plan.tasks.append(ReadTask(str(path), info.fmt, start, min(start + cfg.split_bytes, size),
                                       min(cfg.split_bytes, size - start), source))
    else:
        plan.tasks.append(ReadTask(str(path), info.fmt, 0, -1, size, source))


def _wide_encoding_error(path: Path, encoding: str) -> InputError:
    q, tmp = shlex.quote(str(path)), shlex.quote(f"{path}.utf8")
    convert = f"iconv -f {encoding} -t UTF-8 {q} > {tmp}"
    if str(path).endswith(".gz"):
        convert = f"gunzip -c {q} | iconv -f {encoding} -t UTF-8 | gzip > {tmp}"
    return InputError(f"{path}: is {encoding} (it starts with a {encoding} byte-order mark); convert it to UTF-8, "
                      f"e.g. `{convert} && mv {tmp} {q}`")


def _plan_hf(name: str, text_column: str, cfg: ReaderConfig, reserved: frozenset[str],
             renamed: dict[str, str]) -> list[ReadTask]:
    ds = _hf_load(name, cfg)
    source = f"{HF_PREFIX}{name}"
    cols = list(ds.column_names or []) if getattr(ds, "column_names", None) is not None else None
    if cols is not None:
        if text_column not in cols:
            raise InputError(f"{source}: no text column {text_column!r}; its columns are {cols}. "
                             f"Pass --text-column NAME.")
        for old, new in rename_columns(cols, text_column, reserved, cfg.id_column).items():
            renamed.setdefault(old, new)
    if cfg.hf_streaming:
        return [ReadTask(source, "hf-stream", i, ds.num_shards, source=source) for i in range(max(1, ds.num_shards))]
    n = ds.num_rows
    step = max(1, min(n, cfg.batch_rows * 8))
    return [ReadTask(source, "hf", s, min(s + step, n), source=source) for s in range(0, max(n, 1), step)]


# ---------------------------------------------------------------------------------------------- reading


def _has_surrogates(text: str) -> bool:
    """Whether ``text`` holds lone surrogates (undecodable bytes under ``surrogateescape``, or ``\\udc80``
    escapes in JSON), which UTF-8 cannot hold. ``str.isascii`` answers in constant time for the ASCII texts
    (CPython keeps the flag), so only the others pay for a trial encode."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def classify_text(value: object) -> tuple[str | None, str | None]:
    """(text, drop_reason) for a raw text cell: null, non-string, invalid UTF-8 and blank text are reasons."""
    if value is None:
        return None, "null_text"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid_utf8"
    if not isinstance(value, str):
        return None, "non_string_text"
    if _has_surrogates(value):
        return None, "invalid_utf8"
    if not value.strip():
        return None, "empty_text"
    return value, None


class _ColumnRenamer:
    """Applies ``rename_columns`` to records, once per distinct set of keys."""

    def __init__(self, text_column: str, cfg: ReaderConfig, reserved: frozenset[str]) -> None:
        self.args = (text_column, reserved, cfg.id_column)
        self.cache: dict[tuple[str, ...], dict[str, str]] = {}

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record under the names it may keep. Without a rename this is ``record`` itself, not a copy:
        every parser hands over a dict of its own making (``json.loads``, ``to_pylist``, ``dict(zip(...))``),
        used once, which ``_RowBuffer.add`` then completes in place; copying each row cost time for nothing."""
        keys = tuple(record)
        mapping = self.cache.get(keys)
        if mapping is None:
            if len(self.cache) > 1024:
                self.cache.clear()
            mapping = self.cache[keys] = rename_columns(keys, *self.args)
        return {mapping.get(k, k): v for k, v in record.items()} if mapping else record


def id_string(value: object) -> str:
    """The row id for an input's own id value: a string as it is, an int in decimal, anything else (``true``,
    ``1.5``, ``{"a": 1}``) as JSON with sorted keys, so equal values give equal ids whatever Python prints."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class _RowBuffer:
    """Accumulates rows of one read task and turns them into Arrow tables of bounded size.

    Texts are classified as ``classify_text`` does, with one thing put off to ``flush``: whether a non-ASCII
    text holds lone surrogates (``invalid_utf8``). ``classify_text`` finds out with a trial ``str.encode`` of the
    whole text, and building the Arrow column encodes it again; here the column is built first and only when
    Arrow refuses it (it cannot encode surrogates) are the texts checked one by one. The result is the same:
    a text with surrogates is never blank (a surrogate is not whitespace), so ``empty_text`` can be decided
    before, and nothing else in a row depends on the text (unless the id column is the text column: then the
    check is not put off, as the id of an ``invalid_utf8`` row is made up from its offset).
    """

    def __init__(self, source: str, id_prefix: str, text_column: str, cfg: ReaderConfig,
                 reserved: frozenset[str], stringified: set[str] | None = None) -> None:
        self.source, self.id_prefix, self.text_column, self.cfg = source, id_prefix, text_column, cfg
        self.stringified = stringified
        self.rename = _ColumnRenamer(text_column, cfg, reserved)
        self.rows: list[dict[str, Any]] = []
        self.defer = cfg.id_column != text_column
        """Whether the surrogate check of kept texts waits for ``flush``."""

    def text_of(self, value: object) -> tuple[str | None, str | None]:
        limit = self.cfg.max_doc_chars
        if limit is not None and isinstance(value, (str, bytes)) and len(value) > limit:
            return None, "oversized"  # before classify_text, which encodes the whole text
        if self.defer and type(value) is str:
            return (value, None) if value.strip() else (None, "empty_text")  # surrogates: see flush
        return classify_text(value)

    def add(self, offset: int, record: dict[str, Any] | None, reason: str | None = None,
            row_id: str | None = None) -> Iterator[pa.Table]:
        row = self.rename(record) if record else {}
        text, why = self.text_of(row.get(self.text_column)) if reason is None else (None, reason)
        row[self.text_column] = text
        if row_id is None:
            own_id = row.get(self.cfg.id_column)
            row_id = id_string(own_id) if own_id is not None else f"{self.id_prefix}:{offset:012d}"
        row[columns.ID] = row_id
        if columns.SOURCE in row:
            own_source = row[columns.SOURCE]
            row[columns.SOURCE] = None if own_source is None else str(own_source)
        else:
            row[columns.SOURCE] = self.source
        row[columns.DROP_REASON] = why
        self.rows.append(row)
        if len(self.rows) >= self.cfg.batch_rows:
            yield self.flush()

    def flush(self) -> pa.Table:
        rows, self.rows = self.rows, []
        built: dict[str, pa.Array] = {}
        if self.defer:
            name = self.text_column
            try:
                built[name] = pa.array([r[name] for r in rows], type=pa.large_string())
            except Exception:  # lone surrogates (UnicodeEncodeError): those rows are invalid_utf8
                for r in rows:
                    text = r[name]
                    if text is not None and _has_surrogates(text):
                        r[name], r[columns.DROP_REASON] = None, "invalid_utf8"
        return _rows_to_table(rows, self.text_column, self.stringified, built)


def _sanitize(value: Any) -> Any:
    """Values Arrow cannot hold as UTF-8 (lone surrogates in side columns, also inside nested objects and lists,
    keys included): each surrogate becomes ``?``. Before nested values were covered, one such value in a
    record stopped the whole run with a ``UnicodeEncodeError``."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8") if _has_surrogates(value) else value
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    return value


_ARROW_REFUSALS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)
"""What ``pa.array`` raises for values it cannot put in one column (``3`` and ``"x"``, an int past 64 bits)."""


def _column_slow(name: str, values: list[Any], text_column: str, stringified: set[str] | None) -> pa.Array:
    """One column of ``rows_to_table`` the careful way: every string checked for lone surrogates (each becomes
    ``?``), then the values unified, a side column that does not unify turned into strings."""
    values = [_sanitize(v) for v in values]
    if name == text_column:
        return pa.array(values, type=pa.large_string())
    if name in (columns.ID, columns.SOURCE, columns.DROP_REASON):
        return pa.array(values, type=pa.string())
    try:
        arr = pa.array(values)
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
    except _ARROW_REFUSALS:
        arr = pa.array([_sanitize(json_string(v)) for v in values], type=pa.string())
        if stringified is not None:
            stringified.add(name)
    return arr


def _column(name: str, values: list[Any], text_column: str, stringified: set[str] | None) -> pa.Array:
    """One column of ``rows_to_table``: ``pa.array`` on the values as they are, and ``_column_slow`` only when
    Arrow refuses them.

    Why this gives the same column as ``_column_slow`` always would: sanitizing changes nothing but top-level
    strings with lone surrogates, and Arrow cannot encode those (``UnicodeEncodeError``, whatever type it
    infers or is given). So when ``pa.array`` takes the values as they are, none had surrogates and sanitizing
    would have been the identity; when it refuses them for any reason, the careful way runs from the start, with
    the result (or the error) it has always had. Sanitizing first cost a trial ``str.encode`` of every value of
    every column, the whole text included (already checked by then), before ``pa.array`` encoded each value
    again; with the text check that ``_RowBuffer`` now puts off, that was about a fifth of ``read_task``'s CPU
    time on a corpus jsonl file (``benchmarks/curation_read.py``).
    """
    try:
        if name == text_column:
            return pa.array(values, type=pa.large_string())
        if name in (columns.ID, columns.SOURCE, columns.DROP_REASON):
            return pa.array(values, type=pa.string())
        arr = pa.array(values)
    except Exception:  # any refusal: the careful way decides, as it always did
        return _column_slow(name, values, text_column, stringified)
    return arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr


def rows_to_table(rows: list[dict[str, Any]], text_column: str, stringified: set[str] | None = None) -> pa.Table:
    """Build a table from row dicts. A side column whose values Arrow cannot unify becomes strings the way
    ``schema.conform`` does it across files (``schema.json_string``: strings as they are, other values as
    JSON), and its name is added to ``stringified``. Each lone surrogate in a top-level string becomes ``?``
    (``read_task``'s text column has none: such texts are dropped as ``invalid_utf8``). Columns come in the
    order their names first appear in the rows."""
    return _rows_to_table(rows, text_column, stringified, {})


def _rows_to_table(rows: list[dict[str, Any]], text_column: str, stringified: set[str] | None,
                   built: dict[str, pa.Array]) -> pa.Table:
    """``rows_to_table``, taking the columns in ``built`` as they are (the text column ``_RowBuffer.flush``
    built to find lone surrogates)."""
    names = dict.fromkeys(chain.from_iterable(rows))  # iterating a dict gives its keys, in order
    arrays, fields = [], []
    for name in names:
        arr = built.get(name)
        if arr is None:
            arr = _column(name, [r.get(name) for r in rows], text_column, stringified)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _file_records(task: ReadTask, text_column: str, cfg: ReaderConfig, account: ReadAccount) -> Iterator[Record]:
    if task.fmt == "jsonl":
        return jsonl_records(task.path, task.start, task.end, account)
    if task.fmt == "json":
        return json_records(task.path, account, cfg.record_limit)
    if task.fmt == "csv":
        return csv_records(task.path, account, cfg.record_limit)
    if task.fmt == "parquet":
        return parquet_records(task.path, task.start, task.end, account)
    if task.fmt == "text" and cfg.text_mode == "file":
        return text_file_record(task.path, text_column, cfg.max_doc_chars, account)
    if task.fmt == "text":
        return text_line_records(task.path, text_column, task.start, task.end, account)
    raise ValueError(f"unknown read format {task.fmt!r}")  # plan_reads only creates the formats above


def _hf_records(task: ReadTask, cfg: ReaderConfig, account: ReadAccount) -> Iterator[Record]:
    name = task.path[len(HF_PREFIX):]
    if task.fmt == "hf":
        ds = _hf_load(name, cfg, split=f"{cfg.hf_split}[{task.start}:{task.end}]", streaming=False)
        records = enumerate(ds.data.table.to_pylist(), start=task.start)
    else:
        ds = _hf_load(name, cfg, streaming=True).shard(num_shards=max(1, task.end), index=task.start)
        records = enumerate(ds)
    for offset, record in records:
        account.records += 1
        yield offset, dict(record), None


def read_task(task: ReadTask, text_column: str, cfg: ReaderConfig = ReaderConfig(),
              reserved: frozenset[str] = frozenset(), account: ReadAccount | None = None) -> Iterator[pa.Table]:
    """Execute one read task; yields tables with the input columns plus ``id``, ``source`` and the drop reason.

    ``reserved`` must be the set given to ``plan_reads``. ``account`` (optional) receives the number of records
    parsed, which equals the rows yielded, and a message when the file is corrupt. A corrupt or truncated file
    does not raise: the rows before the damage are kept, then one row ``<source>:corrupt`` marked
    ``corrupt_file``. A file that cannot be read (gone, no permission, a failing disk) is no damage to its
    content: ``FileReadError`` naming the file, so that the task fails and ``--resume`` redoes it. Row ids are
    the input's own id (``id_string``) or ``<source>:<offset>``; the smallest id wins in dedup, comparing
    strings (``"10"`` sorts before ``"9"``). Columns stringified within a batch go to ``account.stringified``.
    """
    source = task.source or task.path
    if account is None:
        account = ReadAccount(source)
    id_prefix = f"{source}#shard{task.start}" if task.fmt == "hf-stream" else source
    buf = _RowBuffer(source, id_prefix, text_column, cfg, reserved, account.stringified)
    if task.fmt in ("hf", "hf-stream"):
        for offset, record, reason in _hf_records(task, cfg, account):
            yield from buf.add(offset, record, reason)
    else:
        records = _file_records(task, text_column, cfg, account)
        while True:
            try:
                offset, record, reason = next(records)
            except StopIteration:
                break
            except READ_ERRORS as error:
                if not is_corruption(error, task.path):
                    raise read_failure(error, task.path, f" after {account.records} records") from error
                account.corrupt = f"{source}: {describe_error(error, task.path)} after {account.records} records"
                log.warning("%s; the rows before it are kept, the file is marked corrupt_file", account.corrupt)
                account.records += 1
                suffix = "corrupt" if task.start <= 0 else f"{task.start:012d}:corrupt"
                yield from buf.add(0, None, "corrupt_file", row_id=f"{source}:{suffix}")
                break
            yield from buf.add(offset, record, reason)
    if buf.rows:
        yield buf.flush()


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WriterConfig:
    format: Literal["parquet", "jsonl"] = "parquet"
    """Output format of the curated shards."""
    compression: str = "zstd"
    """Parquet compression codec (zstd, snappy, gzip, none)."""
    shard_mb: int = 128
    """Target size of an output shard; the shard count is derived from the input size, never from the cluster,
    so the same input always gives the same files."""
    num_shards: int | None = None
    """Fixed number of output shards (overrides ``shard_mb``)."""
    write_dropped: bool = False
    """Also write ``dropped/part-*.parquet`` with the id and drop_reason of every removed row."""

    def __post_init__(self) -> None:
        if self.format not in ("parquet", "jsonl"):
            raise ValueError(f"writer.format must be 'parquet' or 'jsonl', got {self.format!r}")
        if self.shard_mb < 1 or (self.num_shards is not None and self.num_shards < 1):
            raise ValueError("writer.shard_mb and writer.num_shards must be >= 1")


def shard_count(input_bytes: int, cfg: WriterConfig) -> int:
    if cfg.num_shards is not None:
        return cfg.num_shards
    return max(1, -(-input_bytes // (cfg.shard_mb * 2**20)))


def write_table(table: pa.Table, path: str | os.PathLike[str], cfg: WriterConfig) -> None:
    """Write one shard atomically in the configured format."""
    if cfg.format == "parquet":
        codec = None if cfg.compression == "none" else cfg.compression
        atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=codec))
    else:
        def write_jsonl(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str))
                    fh.write("\n")

        atomic_write(path, write_jsonl)


def shard_name(shard: int, cfg: WriterConfig) -> str:
    return f"part-{shard:05d}.{'parquet' if cfg.format == 'parquet' else 'jsonl'}"


def output_table(table: pa.Table, text_column: str, added: Sequence[str] = ()) -> pa.Table:
    """The curated columns in a fixed order (id, text, source, the input's other columns by name, then
    ``added``, the columns steps add, in step order), internal columns removed. Blocks reach a shard in any
    order, and the union of their schemas with them, so a fixed order is what makes the written bytes
    independent of the cluster."""
    first = [c for c in (columns.ID, text_column, columns.SOURCE) if c in table.column_names]
    rest = sorted(c for c in table.column_names
                  if c not in first and c not in added and c not in columns.INTERNAL)
    return table.select(first + rest + [c for c in added if c in table.column_names])


def is_dropped(table: pa.Table) -> pa.ChunkedArray:
    return pc.is_valid(table.column(columns.DROP_REASON))
