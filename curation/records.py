"""Record parsers, one per file format: a file in, ``(offset, record, drop_reason)`` triples out.

They know file formats and nothing else: no ids, no column names of the pipeline, no Arrow. ``curation.io``
plans the reads with ``inspect_file`` and turns the triples into rows. Every parser

- counts what it parses in ``counts.records`` right before yielding it, one count per triple, so a reader
  that loses a record is visible as a difference between the count and the rows that come out;
- yields a record it cannot parse as ``(offset, None, reason)`` instead of raising;
- strips a UTF-8 byte order mark at the very start of the file (nowhere else);
- keeps memory bounded by ``limit`` characters per record where the format lets it run away (an unclosed
  CSV quote, a JSON array element), and lets read errors (``READ_ERRORS``) propagate after the records before
  them, so that the caller can keep those and mark the file when ``is_corruption`` says the content is
  damaged (an I/O error is not damage, it fails the read).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # 10 MB documents in one CSV cell are real

BOM = "\ufeff"
BOM_BYTES = BOM.encode("utf-8")
Record = tuple[int, "dict[str, Any] | None", "str | None"]
"""(offset, record or None, drop reason or None). The offset numbers the record within its file."""

READ_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error, OSError, pa.ArrowException)
"""What reading a file may raise: damage to its content, or an I/O error; ``is_corruption`` tells which."""

_CHUNK = 1 << 20
_SPACE = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()
_PLAN_LINES = 1000
"""Planning looks at most this many jsonl lines for one that shows the columns."""


class Counts(Protocol):
    records: int


def open_binary(path: str | os.PathLike[str]) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def open_text(path: str | os.PathLike[str]) -> io.TextIOBase:
    # surrogateescape keeps undecodable bytes visible as lone surrogates, so rows can be flagged, not lost
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="surrogateescape", newline="")


def delimiter_of(path: str | os.PathLike[str]) -> str:
    return "\t" if ".tsv" in str(path).lower() else ","


def is_json_document(path: str | os.PathLike[str]) -> bool:
    """``.json`` files may hold one JSON document (an array of records, one object) rather than JSON Lines."""
    return str(path).lower().endswith((".json", ".json.gz"))


class FileReadError(OSError):
    """An input file could not be read (it vanished, lost its permissions, the disk failed): not damage to
    its content, so not a ``corrupt_file`` row. A read task that meets it fails; ``--resume`` redoes it."""


def is_corruption(error: BaseException, path: str | os.PathLike[str]) -> bool:
    """Whether ``error`` (one of ``READ_ERRORS``, met reading ``path``) is damage to the file's content.

    A truncated or corrupt gzip stream (EOFError, gzip.BadGzipFile, zlib.error) is. An OSError that carries an
    errno (missing file, permission denied, I/O error) is not, nor is any error once ``path`` is no longer a
    readable file: pyarrow reports a damaged parquet file and an unreadable one alike, as errors without errno.
    """
    if isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile)):
        return True
    if not isinstance(error, (OSError, pa.ArrowException)) or getattr(error, "errno", None) is not None:
        return False
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def read_failure(error: BaseException, path: str | os.PathLike[str], after: str = "",
                 hint: str = "make the file readable again and rerun with --resume") -> FileReadError:
    """The error to raise for an I/O error reading ``path``: it names the file and says what to do."""
    detail = " ".join(str(error).split()) or "no detail"
    return FileReadError(f"{path}: cannot read the file{after} ({type(error).__name__}: {detail}); an I/O "
                         f"error, not a corrupt file: {hint}")


def describe_error(error: BaseException, path: str | os.PathLike[str]) -> str:
    """One line on what a read error means for the file: ``truncated gzip stream (EOFError: ...)``."""
    name = str(path).lower()
    if isinstance(error, EOFError):
        what = "truncated gzip stream" if name.endswith(".gz") else "truncated file"
    elif isinstance(error, (gzip.BadGzipFile, zlib.error)):
        what = "corrupt gzip stream"
    elif name.endswith(".parquet"):
        what = "corrupt parquet file"
    else:
        what = "read error"
    detail = " ".join(str(error).split()) or "no detail"
    return f"{what} ({type(error).__name__}: {detail})"


# -------------------------------------------------------------------------------------------- JSON Lines


def line_range(path: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every line that starts in [start, end); ``end < 0`` means to the end (gzip too).

    A byte order mark is removed from the line at offset 0 (the offset stays 0).
    """
    with open_binary(path) as fh:
        pos = 0
        if start > 0:
            fh.seek(start - 1)
            pos = start - 1 + len(fh.readline())  # skip the line that straddles the boundary
        while end < 0 or pos < end:
            line = fh.readline()
            if not line:
                return
            yield pos, (line[len(BOM_BYTES):] if pos == 0 and line.startswith(BOM_BYTES) else line)
            pos += len(line)


def _parse_json(raw: bytes | str) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON (or nests deeper than Python recurses)."""
    try:
        return json.loads(raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError):
        return None


def jsonl_records(path: str, start: int, end: int, counts: Counts) -> Iterator[Record]:
    """One record per non-blank line; a line that is not a JSON object is ``malformed_json``."""
    for offset, raw in line_range(path, start, end):
        if not raw.strip():
            continue  # blank lines are layout, not records
        value = _parse_json(raw)
        counts.records += 1
        yield (offset, value, None) if isinstance(value, dict) else (offset, None, "malformed_json")


# -------------------------------------------------------------------------- JSON documents (arrays, objects)


class _JsonScanner:
    """A window on a text stream for decoding one JSON value after another without reading it all."""

    def __init__(self, fh: io.TextIOBase) -> None:
        self.fh = fh
        self.buf = fh.read(_CHUNK).removeprefix(BOM)
        self.pos = 0
        self.eof = not self.buf

    def fill(self) -> bool:
        """Read more (as much again as is unconsumed, so a long value costs linear time); False at the end."""
        if self.eof:
            return False
        chunk = self.fh.read(max(_CHUNK, len(self.buf) - self.pos))
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0
        self.eof = not chunk
        return bool(chunk)

    def peek(self) -> str:
        """The next character that is not JSON whitespace ('' at the end), consuming the whitespace."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def value(self, limit: int, closers: str) -> tuple[bool, Any]:
        """(True, value) for the value at the cursor, which must be followed by one of ``closers`` or the end;
        (False, None) when no such value starts here within ``limit`` characters."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except (ValueError, RecursionError):
                pass
            else:
                after = _SPACE.match(self.buf, end).end()
                if (after < len(self.buf) and self.buf[after] in closers) or (after == len(self.buf) and self.eof):
                    self.pos = end
                    return True, value
                # a number cut by the window ("1" of "1e5"), or garbage: more text decides
            if len(self.buf) - self.pos > limit or not self.fill():
                return False, None


def _array_values(scanner: _JsonScanner, limit: int) -> Iterator[tuple[int, Any, bool]]:
    """(index, value, ok) for the elements of the array at the cursor. A malformed element, a missing comma
    or a missing ``]`` ends the array with one ``ok=False`` item: where JSON breaks, the next element cannot be
    found again, so the rest of the file is one malformed record. So is anything after the closing ``]``."""
    scanner.pos += 1  # the "["
    index = 0
    if scanner.peek() == "]":
        scanner.pos += 1
    else:
        while True:
            scanner.peek()
            ok, value = scanner.value(limit, ",]")
            if not ok:
                yield index, None, False
                return
            yield index, value, True
            index += 1
            after = scanner.peek()
            scanner.pos += 1
            if after == "]":
                break
            if after != ",":
                yield index, None, False
                return
    if scanner.peek():
        yield index, None, False


def json_records(path: str, counts: Counts, limit: int) -> Iterator[Record]:
    """A ``.json`` file: an array of records (one record per element), one JSON object (one record, however
    many lines it spans), or else JSON Lines. Offsets are element numbers (0 for a single object)."""
    with open_text(path) as fh:
        scanner = _JsonScanner(fh)
        first = scanner.peek()
        if first == "[":
            for index, value, ok in _array_values(scanner, limit):
                counts.records += 1
                yield (index, value, None) if ok and isinstance(value, dict) else (index, None, "malformed_json")
            return
        if not first:
            return
        while len(scanner.buf) - scanner.pos <= limit and scanner.fill():
            pass
        value = _parse_json(scanner.buf[scanner.pos:]) if scanner.eof else None
    if value is None:  # not one JSON value: JSON Lines, whose bad lines become malformed rows
        yield from jsonl_records(path, 0, -1, counts)
        return
    counts.records += 1
    yield (0, value, None) if isinstance(value, dict) else (0, None, "malformed_json")


# -------------------------------------------------------------------------------------------------- CSV


class _LineFeed:
    """Physical lines for ``csv.reader`` that remember the lines of the record being parsed.

    The csv module asks for one line at a time and only as many as the current record needs, so ``lines``
    always holds exactly the current record's lines: when the record turns out broken they can be parsed
    again (``push_back``). A record longer than ``limit`` characters is cut off as if the file ended there.
    """

    def __init__(self, fh: io.TextIOBase, limit: int) -> None:
        self.fh, self.limit = fh, limit
        self.pending: deque[str] = deque()
        self.lines: list[str] = []
        self.chars = 0
        self.cut = False
        """The current record ran into the end of the file (or the limit) inside a quoted field."""
        self.started = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self.chars > self.limit:
            line = ""
        elif self.pending:
            line = self.pending.popleft()
        else:
            line = self.fh.readline()
            if not self.started:
                self.started, line = True, line.removeprefix(BOM)
        if not line:
            self.cut = bool(self.lines)
            raise StopIteration
        self.lines.append(line)
        self.chars += len(line)
        return line

    def new_record(self) -> None:
        self.lines, self.chars, self.cut = [], 0, False

    def push_back(self, lines: list[str]) -> None:
        self.pending.extendleft(reversed(lines))


def _lenient(line: str, delimiter: str) -> list[str]:
    """One physical line parsed on its own, quotes as the csv module's non-strict mode reads them."""
    return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter), [])


def unique_names(names: list[str]) -> list[str]:
    """Header names made unique (``a, a`` -> ``a, a_2``) so that no column overwrites another."""
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 2
        while new in seen:
            new, k = f"{name}_{k}", k + 1
        seen.add(new)
        out.append(new)
    return out


class CsvParser:
    """CSV/TSV records that never swallow the lines after a broken quote.

    The csv module reads an unclosed quote as a field that goes on to the next quote character, maybe the end
    of the file, merging everything in between into one record. Here a record that spans several physical
    lines is only accepted when it parses strictly and has the header's number of fields; otherwise its first
    line (where the quote opened) becomes one ``malformed_csv`` record and the following lines are parsed
    again as if that line were not there. A legitimate multi-line quoted cell is one record, as before.
    A single line that only the lenient reading can parse (``a,"b"c``) keeps its lenient value, as before.
    """

    def __init__(self, fh: io.TextIOBase, delimiter: str, limit: int) -> None:
        self.feed = _LineFeed(fh, limit)
        self.delimiter = delimiter
        self.reader = self._new_reader()
        self.header = self._read_header()
        """Column names (made unique), or None when the file holds no header."""

    def _new_reader(self) -> Any:
        return csv.reader(self.feed, delimiter=self.delimiter, strict=True)

    def _next(self) -> tuple[list[str] | None, bool] | None:
        """(cells, broken) of the next record, its lines in ``feed.lines``; None at the end of the file."""
        self.feed.new_record()
        try:
            cells = next(self.reader)
        except StopIteration:
            return None if not self.feed.lines else (None, True)
        except csv.Error:
            self.reader = self._new_reader()
            return None, True
        return cells, self.feed.cut

    def _read_header(self) -> list[str] | None:
        while (item := self._next()) is not None:
            cells, broken = item
            if broken:
                lines = self.feed.lines
                cells = _lenient(lines[0], self.delimiter)
                self.feed.push_back(lines[1:])
            if cells:
                return unique_names(cells)
        return None

    def records(self, counts: Counts) -> Iterator[Record]:
        """Records after the header; offsets number them from 1 (blank lines take a number, as before)."""
        if self.header is None:
            return
        width = len(self.header)
        number = 0
        while (item := self._next()) is not None:
            cells, broken = item
            lines = self.feed.lines
            number += 1
            if cells == [] and not broken:
                continue  # a blank line: layout, not a record
            if len(lines) > 1 and (broken or len(cells or ()) != width):
                self.feed.push_back(lines[1:])  # the quote on the first line is the broken one
                self.reader = self._new_reader()
                cells = None
            elif broken:
                cells = None if self.feed.cut else _lenient(lines[0], self.delimiter)
            counts.records += 1
            if cells is not None and len(cells) == width:
                yield number, dict(zip(self.header, cells)), None
            else:
                yield number, None, "malformed_csv"


def csv_records(path: str, counts: Counts, limit: int) -> Iterator[Record]:
    with open_text(path) as fh:
        yield from CsvParser(fh, delimiter_of(path), limit).records(counts)


# ---------------------------------------------------------------------------------------- parquet, text


def parquet_records(path: str, row_group: int, first_offset: int, counts: Counts) -> Iterator[Record]:
    """Rows of one row group (``row_group < 0``: all of them, offsets from 0), counted from the file's metadata."""
    pf = pq.ParquetFile(path)
    groups = [row_group] if row_group >= 0 else range(pf.metadata.num_row_groups)
    offset = first_offset if row_group >= 0 else 0
    for rg in groups:
        rows = pf.read_row_group(rg).to_pylist()
        counts.records += pf.metadata.row_group(rg).num_rows
        for record in rows:
            yield offset, record, None
            offset += 1


def text_file_record(path: str, text_column: str, max_chars: int | None, counts: Counts) -> Iterator[Record]:
    """The whole file as one record; one longer than ``max_chars`` is ``oversized`` and never fully read."""
    if max_chars is not None and not path.endswith(".gz") and os.path.getsize(path) > 4 * max_chars + 3:
        counts.records += 1  # more bytes than max_chars characters can take in UTF-8
        yield 0, None, "oversized"
        return
    with open_text(path) as fh:
        text = fh.read() if max_chars is None else fh.read(max_chars + 2)
    text = text.removeprefix(BOM)
    counts.records += 1
    if max_chars is not None and len(text) > max_chars:
        yield 0, None, "oversized"
    else:
        yield 0, {text_column: text}, None


def text_line_records(path: str, text_column: str, start: int, end: int, counts: Counts) -> Iterator[Record]:
    """One record per non-blank line."""
    for offset, raw in line_range(path, start, end):
        line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if line.strip():
            counts.records += 1
            yield offset, {text_column: line}, None


# -------------------------------------------------------------------------------------------- planning


@dataclass
class FileInfo:
    """What planning learns about a file from its first records, without reading it all."""

    fmt: str
    """Reader format; ``jsonl`` becomes ``json`` for a ``.json`` file that holds one array or object."""
    columns: list[str] | None = None
    """Column names (header, schema, first record), or None when they cannot be known cheaply."""
    empty: bool = False
    """No records: no bytes, only whitespace, a CSV header alone, an empty array, a parquet file of 0 rows."""
    corrupt: str | None = None
    """What went wrong when the file could not even be looked at (``describe_error``)."""
    row_groups: list[tuple[int, int]] = field(default_factory=list)
    """Parquet: (first row, bytes) of each row group."""
    encoding: str | None = None
    """``UTF-16`` or ``UTF-32`` when a text file starts with that byte order mark: not readable as UTF-8."""


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
"""Byte order marks of the encodings a text reader must not take for UTF-8 (UTF-32 first: it starts like
UTF-16 little-endian)."""


def wide_encoding(path: str | os.PathLike[str]) -> str | None:
    """``UTF-16`` or ``UTF-32`` when the (decompressed) file starts with that byte order mark, else None."""
    with open_binary(path) as fh:
        head = fh.read(4)
    return next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)


def _has_content(path: Path) -> bool:
    with open_binary(path) as fh:
        first = True
        while chunk := fh.read(_CHUNK):
            if first:
                chunk, first = chunk.removeprefix(BOM_BYTES), False
            if chunk.strip():
                return True
    return False


def _first_line(path: Path) -> bytes | None:
    """The first non-blank line (byte order mark removed), or None when there is none."""
    with open_binary(path) as fh:
        for i, raw in enumerate(fh):
            line = raw.removeprefix(BOM_BYTES) if i == 0 else raw
            if line.strip():
                return line
    return None


def _inspect_json(path: Path, limit: int) -> FileInfo:
    first = _first_line(path)
    if first is None:
        return FileInfo("jsonl", empty=True)
    if is_json_document(path) and first.lstrip().startswith(b"["):
        with open_text(path) as fh:
            scanner = _JsonScanner(fh)
            scanner.peek()
            item = next(_array_values(scanner, limit), None)
        if item is None:
            return FileInfo("json", empty=True)
        _, value, ok = item
        return FileInfo("json", list(value) if ok and isinstance(value, dict) else None)
    value = _parse_json(first)
    if is_json_document(path) and first.lstrip().startswith(b"{") and value is None:
        # not one object per line: maybe one object over many lines
        counts = _Tally()
        record = next(json_records(str(path), counts, limit), None)
        return FileInfo("json", list(record[1]) if record and record[1] is not None else None)
    if isinstance(value, dict):
        return FileInfo("jsonl", list(value))
    with open_binary(path) as fh:
        for i, raw in zip(range(_PLAN_LINES), fh):
            value = _parse_json(raw.removeprefix(BOM_BYTES) if i == 0 else raw)
            if value is not None:
                return FileInfo("jsonl", list(value) if isinstance(value, dict) else None)
    return FileInfo("jsonl")  # a malformed start is counted row by row later, not fatal here


@dataclass
class _Tally:
    records: int = 0


def inspect_file(path: Path, fmt: str, limit: int) -> FileInfo:
    """Columns, emptiness and row groups of a file; a file whose content is damaged says so in ``corrupt``.

    Raises:
        FileReadError: the file cannot be read (an I/O error, not damage).
    """
    try:
        if fmt == "parquet":
            meta = pq.read_metadata(path)
            if meta.num_rows == 0:
                return FileInfo(fmt, empty=True)
            groups, offset = [], 0
            for rg in range(meta.num_row_groups):
                groups.append((offset, meta.row_group(rg).total_byte_size))
                offset += meta.row_group(rg).num_rows
            return FileInfo(fmt, list(meta.schema.to_arrow_schema().names), row_groups=groups)
        encoding = wide_encoding(path)
        if encoding is not None:
            return FileInfo(fmt, encoding=encoding)
        if fmt == "csv":
            with open_text(path) as fh:
                parser = CsvParser(fh, delimiter_of(path), limit)
                empty = next(parser.records(_Tally()), None) is None
            return FileInfo(fmt, parser.header, empty=empty)
        if fmt == "jsonl":
            return _inspect_json(path, limit)
        return FileInfo(fmt, empty=not _has_content(path))
    except READ_ERRORS as error:
        if not is_corruption(error, path):
            raise read_failure(error, path) from error
        return FileInfo(fmt, corrupt=describe_error(error, path))
