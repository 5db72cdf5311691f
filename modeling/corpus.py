"""Stream text out of curated shards (parquet / jsonl / plain text) in bounded batches.

One reader for every modeling stage (tokenizer training, the data module, evaluation), so "which files and
which column" is resolved and validated the same way everywhere. Memory is bounded by ``batch_size``
rows, never by the corpus.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq

from common.files import InputError, detect_format, resolve_paths
from curation import curated_data_dir, require_complete

#: Formats this reader can stream text out of.
TEXT_FORMATS = ("parquet", "jsonl", "text")


def open_text(path: Path, errors: str = "strict") -> io.TextIOBase:
    """Open a UTF-8 text file, gzipped or not, for reading. Shards use ``errors="replace"``: one bad byte in a
    50 GB corpus should not stop a tokenizer; a prompts file the user wrote should fail loudly."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors=errors)
    return open(path, encoding="utf-8", errors=errors)


def iter_json_lines(path: Path, error: type[Exception] = InputError,
                    errors: str = "strict") -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSON Lines file (``.gz`` too).

    For files a user hands over on purpose (prompts, references): a line that is not JSON raises ``error``
    naming ``file:line``, because silently skipping it would change what is measured."""
    with open_text(path, errors=errors) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{n}: not valid JSON ({err})") from err


def _parquet_columns(path: Path) -> list[str]:
    return list(pq.read_schema(path).names)


def _jsonl_columns(path: Path) -> list[str]:
    with open_text(path, errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                return list(row) if isinstance(row, dict) else []
    return []


#: How the tokenizer command (and the default of the functions below) names the text column option.
TEXT_COLUMN_OPTION = "--text-column (or text_column: in the config)"


def check_text_column(files: Sequence[Path], text_column: str, column_option: str = TEXT_COLUMN_OPTION) -> None:
    """Fail early, naming the file and the columns it has, when a shard lacks ``text_column``.

    ``column_option`` is how the calling command's user sets the column (``--data.text_column`` for training)."""
    for path in files:
        fmt = detect_format(path)
        if fmt == "text":
            continue
        cols = _parquet_columns(path) if fmt == "parquet" else _jsonl_columns(path)
        if cols and text_column not in cols:
            raise InputError(
                f"{path}: no column {text_column!r}; it has {cols}. Pass the right one with {column_option}."
            )


def resolve_corpus_files(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Resolve inputs to readable files. A curation output folder stands for its ``data/`` (not its reports or
    ``dropped/``), and one that its run did not finish (no ``_SUCCESS``) is refused, naming the fix."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    mapped = [str(curated_data_dir(i)) if Path(i).is_dir() else i for i in inputs]
    files = resolve_paths(mapped, formats=TEXT_FORMATS)
    for f in files:  # a glob or a file inside an unfinished output
        require_complete(f)
    return files


def resolve_text_files(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                       text_column: str = "text", column_option: str = TEXT_COLUMN_OPTION) -> list[Path]:
    """Resolve inputs to shard files that hold text, and check the column up front (see ``check_text_column``)."""
    files = resolve_corpus_files(inputs)
    unknown = [str(f) for f in files if detect_format(f) not in TEXT_FORMATS]
    if unknown:
        raise InputError(f"cannot read text from {unknown[:5]}: use .parquet, .jsonl[.gz] or .txt files")
    check_text_column(files, text_column, column_option)
    return files


def iter_text_batches(
    files: Sequence[Path],
    text_column: str = "text",
    batch_size: int = 1000,
    max_docs: int | None = None,
) -> Iterator[list[str]]:
    """Yield lists of at most ``batch_size`` non-empty strings, in file order, up to ``max_docs`` documents.

    Nulls and non-strings are skipped (curated shards have none; raw files might). Plain-text files yield
    one document per file, since that is how a user hands over a corpus of ``.txt`` documents.
    """
    for texts, _ in iter_document_batches(files, text_column, (), batch_size, max_docs):
        yield texts


def iter_document_batches(
    files: Sequence[Path],
    text_column: str = "text",
    columns: Sequence[str] = (),
    batch_size: int = 1000,
    max_docs: int | None = None,
) -> Iterator[tuple[list[str], dict[str, list[object]]]]:
    """:func:`iter_text_batches`' documents with the values of ``columns`` on the same rows (per-source
    evaluation reads ``source`` beside ``text``): ``(texts, {column: values})``, the lists aligned.

    A file or row without one of ``columns`` gives None there (plain-text files have no columns)."""
    remaining = max_docs if max_docs is not None else float("inf")
    batch: list[str] = []
    extra: dict[str, list[object]] = {c: [] for c in columns}

    def flush() -> tuple[list[str], dict[str, list[object]]]:
        nonlocal batch, extra
        out = (batch, extra)
        batch, extra = [], {c: [] for c in columns}
        return out

    def take(texts: Sequence[object], values: dict[str, Sequence[object]]) -> Iterator[tuple[list[str], dict]]:
        nonlocal remaining
        for i, t in enumerate(texts):
            if remaining <= 0:
                return
            if isinstance(t, str) and t:
                batch.append(t)
                for c in columns:
                    extra[c].append(values[c][i])
                remaining -= 1
                if len(batch) >= batch_size:
                    yield flush()

    for path in files:
        if remaining <= 0:
            break
        fmt = detect_format(path)
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            present = [c for c in columns if c in pf.schema_arrow.names and c != text_column]
            for rb in pf.iter_batches(batch_size=batch_size, columns=[text_column, *present]):
                texts = rb.column(0).to_pylist()
                values = {c: (rb.column(c).to_pylist() if c in present else
                              texts if c == text_column else [None] * len(texts)) for c in columns}
                yield from take(texts, values)
                if remaining <= 0:
                    break
        elif fmt == "jsonl":
            with open_text(path, errors="replace") as fh:
                rows: list[dict] = []
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict):
                        rows.append(row)
                    if len(rows) >= batch_size:
                        yield from take(*_columns_of_rows(rows, text_column, columns))
                        rows = []
                        if remaining <= 0:
                            break
                yield from take(*_columns_of_rows(rows, text_column, columns))
        else:
            with open_text(path, errors="replace") as fh:
                yield from take([fh.read()], {c: [None] for c in columns})
    if batch:
        yield flush()


def _columns_of_rows(rows: list[dict], text_column: str,
                     columns: Sequence[str]) -> tuple[list[object], dict[str, list[object]]]:
    return [r.get(text_column) for r in rows], {c: [r.get(c) for r in rows] for c in columns}


def iter_keyed_documents(
    files: Sequence[Path],
    text_column: str = "text",
    id_column: str | None = "id",
    batch_size: int = 1000,
    max_docs: int | None = None,
) -> Iterator[list[tuple[str, str]]]:
    """Like :func:`iter_text_batches`, but each document comes as ``(key, text)``: ``key`` is its ``id_column``
    value as a string where the file has that column and the row a value (curated shards always do), else the
    text itself. Training splits train/validation by a hash of the key, so a document keeps its side whatever
    the file order, the sharding or an edit elsewhere in the corpus."""
    columns = (id_column,) if id_column is not None and id_column != text_column else ()
    for texts, values in iter_document_batches(files, text_column, columns, batch_size, max_docs):
        keys = values[id_column] if columns else [None] * len(texts)
        yield [(text if key is None else str(key), text) for key, text in zip(keys, texts, strict=True)]
