"""Readers and writers. Reading is planned on the driver and executed by Ray tasks.

Planning (``plan_reads``) resolves paths, checks up front that every file has the text column (so a typo
fails in a second, naming the file and the columns it has, not an hour into a run), and cuts large
line-oriented files into byte ranges so one 50 GB jsonl file still spreads over the cluster.

Executing (``read_task``) turns one planned piece into Arrow tables. Every input row becomes an output row
or a row marked with a ``drop_reason``: malformed JSON, invalid UTF-8, null, non-string or empty text are
counted, never raised and never lost. Each row gets a deterministic ``id`` (the input's own ``id`` column if
it has one, else ``<source>:<offset>``) so dedup can keep "the smallest id" whatever the cluster looks like.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import columns
from curation.paths import InputError, detect_format, resolve_paths

HF_PREFIX = "hf://"

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # 10 MB documents in one CSV cell are real


@dataclass(frozen=True)
class ReaderConfig:
    text_mode: Literal["file", "line"] = "file"
    """Plain-text files: one document per file, or one per non-empty line."""
    split_bytes: int = 64 * 2**20
    """Uncompressed jsonl / line-mode text files larger than this are read as several parallel pieces."""
    batch_rows: int = 8192
    """Rows per Arrow table a read task yields (bounds a worker's memory on huge files)."""
    id_column: str = columns.ID
    """Input column used as the row id when present; otherwise ids are ``<source>:<offset>``."""
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


@dataclass(frozen=True)
class ReadTask:
    """One piece of input: a file (or byte range / row range of one), or a shard of an HF dataset."""

    path: str
    fmt: str
    start: int = 0
    end: int = -1
    size: int = 0
    """Bytes this piece covers (for sizing output shards); 0 when unknown (HF)."""


# ---------------------------------------------------------------------------------------------- planning


def _columns_of(path: Path, fmt: str) -> list[str] | None:
    """Column names of a file, or None when they cannot be known without reading everything."""
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    if fmt == "csv":
        with _open_text(path) as fh:
            header = next(csv.reader(fh, delimiter=_delimiter(path)), None)
        return header or []
    if fmt == "jsonl":
        with _open_binary(path) as fh:
            for raw in fh:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue  # a malformed first line is counted later, not fatal here
                return list(row) if isinstance(row, dict) else None
        return []
    return None


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


def plan_reads(inputs: Sequence[str], text_column: str, cfg: ReaderConfig = ReaderConfig()) -> list[ReadTask]:
    """Turn user inputs into read tasks, validating everything that can be validated without reading."""
    tasks: list[ReadTask] = []
    file_inputs = [i for i in inputs if not str(i).startswith(HF_PREFIX)]
    for name in (str(i)[len(HF_PREFIX):] for i in inputs if str(i).startswith(HF_PREFIX)):
        tasks.extend(_plan_hf(name, text_column, cfg))
    if not file_inputs:
        if not tasks:
            raise InputError("no input given: pass --input PATH_OR_GLOB (or hf://DATASET)")
        return tasks
    for path in resolve_paths(file_inputs):
        fmt = detect_format(path)
        if fmt is None:
            raise InputError(
                f"{path}: unknown file type; readable endings are .jsonl/.json[.gz], .csv/.tsv[.gz], .parquet, "
                f".txt[.gz]/.md. Rename the file or point --input at the right files."
            )
        cols = _columns_of(path, fmt)
        if cols is not None and text_column not in cols:
            raise InputError(
                f"{path}: no text column {text_column!r}; its columns are {cols}. "
                f"Pass --text-column NAME (or text_column: in the config)."
            )
        size = path.stat().st_size
        if fmt == "parquet":
            meta = pq.ParquetFile(path).metadata
            offset = 0
            for rg in range(meta.num_row_groups):
                n = meta.row_group(rg).num_rows
                tasks.append(ReadTask(str(path), fmt, rg, offset, meta.row_group(rg).total_byte_size))
                offset += n
        elif (fmt == "jsonl" or (fmt == "text" and cfg.text_mode == "line")) and not str(path).endswith(".gz"):
            for start in range(0, max(size, 1), cfg.split_bytes):
                tasks.append(ReadTask(str(path), fmt, start, min(start + cfg.split_bytes, size), min(cfg.split_bytes, size - start)))
        else:
            tasks.append(ReadTask(str(path), fmt, 0, -1, size))
    return tasks


def _plan_hf(name: str, text_column: str, cfg: ReaderConfig) -> list[ReadTask]:
    ds = _hf_load(name, cfg)
    cols = list(ds.column_names or []) if getattr(ds, "column_names", None) is not None else None
    if cols is not None and text_column not in cols:
        raise InputError(f"hf://{name}: no text column {text_column!r}; its columns are {cols}. Pass --text-column NAME.")
    if cfg.hf_streaming:
        return [ReadTask(f"{HF_PREFIX}{name}", "hf-stream", i, ds.num_shards) for i in range(max(1, ds.num_shards))]
    n = ds.num_rows
    step = max(1, min(n, cfg.batch_rows * 8))
    return [ReadTask(f"{HF_PREFIX}{name}", "hf", s, min(s + step, n)) for s in range(0, max(n, 1), step)]


# ---------------------------------------------------------------------------------------------- reading


def _open_binary(path: Path | str) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _open_text(path: Path | str) -> io.TextIOBase:
    # surrogateescape keeps undecodable bytes visible as lone surrogates, so rows can be flagged, not lost
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors="surrogateescape", newline="")


def _delimiter(path: Path | str) -> str:
    return "\t" if ".tsv" in str(path).lower() else ","


def _has_surrogates(text: str) -> bool:
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


class _RowBuffer:
    """Accumulates rows of one read task and turns them into Arrow tables of bounded size."""

    def __init__(self, source: str, text_column: str, cfg: ReaderConfig) -> None:
        self.source, self.text_column, self.cfg = source, text_column, cfg
        self.rows: list[dict[str, Any]] = []

    def add(self, offset: int, record: dict[str, Any] | None, reason: str | None = None) -> Iterator[pa.Table]:
        row: dict[str, Any] = dict(record) if record else {}
        text, why = classify_text(row.get(self.text_column)) if reason is None else (None, reason)
        row[self.text_column] = text
        own_id = row.get(self.cfg.id_column)
        row[columns.ID] = str(own_id) if own_id is not None else f"{self.source}:{offset:012d}"
        row.setdefault(columns.SOURCE, self.source)
        row[columns.DROP_REASON] = why
        self.rows.append(row)
        if len(self.rows) >= self.cfg.batch_rows:
            yield self.flush()

    def flush(self) -> pa.Table:
        rows, self.rows = self.rows, []
        return rows_to_table(rows, self.text_column)


def _sanitize(value: Any) -> Any:
    """Values Arrow cannot hold as UTF-8 (lone surrogates in side columns) become replacement characters."""
    if isinstance(value, str) and _has_surrogates(value):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def rows_to_table(rows: list[dict[str, Any]], text_column: str) -> pa.Table:
    """Build a table from row dicts; side columns whose values Arrow cannot unify are kept as JSON strings."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    arrays, fields = [], []
    for name in names:
        values = [_sanitize(r.get(name)) for r in rows]
        if name == text_column:
            arr = pa.array(values, type=pa.large_string())
        elif name in (columns.ID, columns.SOURCE, columns.DROP_REASON):
            arr = pa.array(values, type=pa.string())
        else:
            try:
                arr = pa.array(values)
                if pa.types.is_null(arr.type):
                    arr = arr.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                arr = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values],
                               type=pa.string())
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _line_range(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every line that starts in [start, end); ``end < 0`` means to the end (gzip too)."""
    with _open_binary(path) as fh:
        pos = 0
        if start > 0:
            fh.seek(start - 1)
            pos = start - 1 + len(fh.readline())  # skip the line that straddles the boundary
        while end < 0 or pos < end:
            line = fh.readline()
            if not line:
                return
            yield pos, line
            pos += len(line)


def read_task(task: ReadTask, text_column: str, cfg: ReaderConfig = ReaderConfig()) -> Iterator[pa.Table]:
    """Execute one read task; yields tables with the input columns plus ``id``, ``source``, ``drop_reason``."""
    buf = _RowBuffer(task.path, text_column, cfg)
    if task.fmt == "jsonl":
        for offset, raw in _line_range(task.path, task.start, task.end):
            if not raw.strip():
                continue  # blank lines are layout, not rows
            try:
                record = json.loads(raw.decode("utf-8", "surrogateescape"))
            except ValueError:
                yield from buf.add(offset, None, "malformed_json")
                continue
            if not isinstance(record, dict):
                yield from buf.add(offset, None, "malformed_json")
                continue
            yield from buf.add(offset, record)
    elif task.fmt == "text":
        if cfg.text_mode == "file":
            with _open_text(task.path) as fh:
                yield from buf.add(0, {text_column: fh.read()})
        else:
            for offset, raw in _line_range(task.path, task.start, task.end):
                line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if line.strip():
                    yield from buf.add(offset, {text_column: line})
    elif task.fmt == "csv":
        with _open_text(task.path) as fh:
            reader = csv.reader(fh, delimiter=_delimiter(task.path))
            header = next(reader, [])
            for row_no, cells in enumerate(reader, start=1):
                if not cells:
                    continue
                if len(cells) != len(header):
                    yield from buf.add(row_no, None, "malformed_csv")
                    continue
                yield from buf.add(row_no, dict(zip(header, cells)))
    elif task.fmt == "parquet":
        table = pq.ParquetFile(task.path).read_row_group(task.start)
        yield from _table_rows(table, task.end, buf)
    elif task.fmt == "hf":
        import datasets  # noqa: F401  (imported by _hf_load)

        name = task.path[len(HF_PREFIX):]
        ds = _hf_load(name, cfg, split=f"{cfg.hf_split}[{task.start}:{task.end}]", streaming=False)
        yield from _table_rows(ds.data.table, task.start, buf)
    elif task.fmt == "hf-stream":
        name = task.path[len(HF_PREFIX):]
        ds = _hf_load(name, cfg, streaming=True).shard(num_shards=max(1, task.end), index=task.start)
        for i, record in enumerate(ds):
            yield from buf.add(i, dict(record))
        buf.source = f"{task.path}#shard{task.start}"
    else:  # pragma: no cover - plan_reads only creates the formats above
        raise ValueError(f"unknown read format {task.fmt!r}")
    if buf.rows:
        yield buf.flush()


def _table_rows(table: pa.Table, first_offset: int, buf: _RowBuffer) -> Iterator[pa.Table]:
    for offset, record in enumerate(table.to_pylist(), start=first_offset):
        yield from buf.add(offset, record)


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


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a complete-looking file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def output_table(table: pa.Table, text_column: str) -> pa.Table:
    """The curated columns in a fixed order (id, text, source, the input's other columns by name, then the
    columns steps add), internal columns removed. Blocks reach a shard in any order, and the union of their
    schemas with them, so a fixed order is what makes the written bytes independent of the cluster."""
    added = (columns.LANG, columns.LANG_SCORE, columns.PII_COUNTS)
    first = [c for c in (columns.ID, text_column, columns.SOURCE) if c in table.column_names]
    rest = sorted(c for c in table.column_names
                  if c not in first and c not in added and c not in columns.INTERNAL)
    return table.select(first + rest + [c for c in added if c in table.column_names])


def is_dropped(table: pa.Table) -> pa.ChunkedArray:
    return pc.is_valid(table.column(columns.DROP_REASON))
