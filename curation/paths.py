"""Resolve user-given paths, globs and directories into a sorted list of files.

Shared by the curation readers and the modeling readers (tokenizer, data module), so a user's
``--input data/*.parquet`` means the same thing everywhere and fails the same way: early, naming the
pattern and what was there instead. Pure Python, no Ray import.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

#: File endings each format reader understands (compressed variants included).
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz"),
    "csv": (".csv", ".csv.gz", ".tsv", ".tsv.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".txt.gz", ".md", ".text"),
}


class InputError(ValueError):
    """A user-given input cannot be used. The message says which input, what was found and what to do."""


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """Return the reader format for ``path`` from its ending, or None when no reader knows it."""
    name = str(path).lower()
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _is_hidden(path: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.parts if part not in (".", ".."))


def _list_dir(directory: Path, formats: Iterable[str] | None) -> list[Path]:
    wanted = set(formats) if formats is not None else set(FORMAT_SUFFIXES)
    files = []
    for p in directory.rglob("*"):
        rel = p.relative_to(directory)
        if p.is_file() and not _is_hidden(rel) and detect_format(p) in wanted:
            files.append(p)
    return files


def resolve_paths(
    patterns: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    formats: Iterable[str] | None = None,
) -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted, de-duplicated file list.

    Directories keep only files with a known ending (``formats`` narrows that further) and skip hidden
    or ``_``-prefixed entries (``_SUCCESS``, ``.tmp`` files of a writer that crashed). Explicit files are
    kept whatever their ending, so the caller decides what to do with an unknown one.

    Raises:
        InputError: a path does not exist, a glob matches nothing, or a directory holds no readable file.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not patterns:
        raise InputError("no input given: pass at least one file, directory or glob (e.g. --input data/*.jsonl)")
    out: set[Path] = set()
    for raw in patterns:
        pattern = os.path.expanduser(str(raw))
        if glob.has_magic(pattern):
            matches = [Path(m) for m in glob.glob(pattern, recursive=True)]
            files = [m for m in matches if m.is_file()]
            for d in (m for m in matches if m.is_dir()):
                files.extend(_list_dir(d, formats))
            if not files:
                parent = Path(pattern.split("*")[0] or ".").parent
                seen = sorted(p.name for p in parent.iterdir())[:20] if parent.is_dir() else []
                raise InputError(
                    f"input glob {raw!r} matched no file. "
                    + (f"{parent}/ holds: {', '.join(seen) or '(nothing)'}" if parent.is_dir()
                       else f"its folder {str(parent)!r} does not exist")
                )
            out.update(files)
            continue
        path = Path(pattern)
        if path.is_file():
            out.add(path)
        elif path.is_dir():
            files = _list_dir(path, formats)
            if not files:
                seen = sorted(p.name for p in path.iterdir())[:20]
                known = ", ".join(s for f in (formats or FORMAT_SUFFIXES) for s in FORMAT_SUFFIXES[f])
                raise InputError(
                    f"input directory {str(path)!r} holds no readable file (looked for {known}); "
                    f"it holds: {', '.join(seen) or '(nothing)'}"
                )
            out.update(files)
        else:
            parent = path.parent if str(path.parent) else Path(".")
            hint = ""
            if parent.is_dir():
                hint = f"; {parent!s}/ holds: {', '.join(sorted(p.name for p in parent.iterdir())[:20]) or '(nothing)'}"
            raise InputError(f"input path {str(path)!r} does not exist{hint}")
    return sorted(out)
