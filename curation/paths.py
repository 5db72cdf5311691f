"""Resolve user-given paths, globs and directories into a sorted list of files.

Shared by the curation readers and the modeling readers (tokenizer, data module), so a user's
``--input data/*.parquet`` means the same thing everywhere and fails the same way: early, naming the
pattern and what was there instead. Pure Python, no Ray import.

``resolve_paths`` returns the files as the user spelled them (the modeling commands). ``list_inputs`` (the
curation reader) also returns the *input root*, the common folder of the inputs, so that a file can be named
by its path below the root whatever the working directory, and lists the files it found but cannot read, so
that nothing in an input folder is passed over without a trace.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
    return _scan_dir(directory, formats)[0]


def _scan_dir(directory: Path, formats: Iterable[str] | None) -> tuple[list[Path], list[Path]]:
    """(readable files, other files) below ``directory``; hidden and ``_``-prefixed entries are in neither."""
    wanted = set(formats) if formats is not None else set(FORMAT_SUFFIXES)
    files, others = [], []
    for p in directory.rglob("*"):
        rel = p.relative_to(directory)
        if p.is_file() and not _is_hidden(rel):
            (files if detect_format(p) in wanted else others).append(p)
    return files, others


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
                raise _no_match_error(raw, Path(pattern.split("*")[0] or ".").parent)
            out.update(files)
            continue
        path = Path(pattern)
        if path.is_file():
            out.add(path)
        elif path.is_dir():
            files = _list_dir(path, formats)
            if not files:
                raise _unreadable_dir_error(path, formats)
            out.update(files)
        else:
            raise _missing_path_error(path)
    return sorted(out)


def _holds(folder: Path) -> str:
    return ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "(nothing)"


def _no_match_error(raw: object, parent: Path) -> InputError:
    return InputError(
        f"input glob {str(raw)!r} matched no file. "
        + (f"{parent}/ holds: {_holds(parent)}" if parent.is_dir() else f"its folder {str(parent)!r} does not exist")
    )


def _unreadable_dir_error(path: Path, formats: Iterable[str] | None) -> InputError:
    return InputError(f"input directory {str(path)!r} holds no readable file (looked for {_known_endings(formats)}); "
                      f"it holds: {_holds(path)}")


def _missing_path_error(path: Path) -> InputError:
    parent = path.parent if str(path.parent) else Path(".")
    hint = f"; {parent!s}/ holds: {_holds(parent)}" if parent.is_dir() else ""
    return InputError(f"input path {str(path)!r} does not exist{hint}")


# ------------------------------------------------------------------------------------ inputs below a root

_COMPRESSED_ENDINGS = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".br", ".zip", ".7z")


def file_ending(path: str | os.PathLike[str]) -> str:
    """The ending that names a file's type in messages: ``.html``, ``.jsonl.bz2``, or ``(no ending)``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if not suffixes:
        return "(no ending)"
    if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED_ENDINGS:
        return "".join(suffixes[-2:])
    return suffixes[-1]


@dataclass(frozen=True)
class InputListing:
    """The files of the inputs of a run, each named by its path below one root folder."""

    root: Path
    """Common folder of the inputs (absolute, symlinks resolved). A folder input is its own root, a file's root
    is its folder, a glob's root is its part before the first wildcard."""
    files: list[Path] = field(default_factory=list)
    """Files to read: sorted, absolute, each below ``root``. Explicitly named files are here whatever their
    ending, so that the caller can refuse an unknown one by name."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """``{"path": <below root>, "reason": "unknown file type .html"}`` for every file found in an input folder
    or by a glob that no reader reads (hidden and ``_``-prefixed entries excepted)."""

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` below the root, POSIX-style: the same string whatever the working directory."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def summary(self) -> str:
        """One line on the skipped files: ``3 files no reader knows: 2 .html, 1 .jsonl.bz2``."""
        kinds = Counter(file_ending(s["path"]) for s in self.skipped)
        parts = ", ".join(f"{n} {ending}" for ending, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{len(self.skipped)} file{'s' * (len(self.skipped) != 1)} no reader knows: {parts}"


def _split_glob(pattern: str) -> tuple[Path, str]:
    """(folder before the first wildcard, the rest of the pattern): ``data/ra*/x.jsonl`` -> (data, ra*/x.jsonl)."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return (Path(*parts[:first]) if first else Path(".")), os.path.join(*parts[first:])


def _skip_reason(path: Path, formats: Iterable[str] | None) -> str:
    fmt = detect_format(path)
    if fmt is None:
        return f"unknown file type {file_ending(path)}"
    return f"{fmt} files are not read here (reading {', '.join(sorted(formats or FORMAT_SUFFIXES))})"


def list_inputs(
    patterns: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    formats: Iterable[str] | None = None,
) -> InputListing:
    """Expand files, directories (recursively) and globs into the files to read, their root and the skipped ones.

    Directories and globs keep the files with a known ending (``formats`` narrows that further) and list the
    others in ``skipped``; hidden or ``_``-prefixed entries below a directory, or matched by a glob, are neither
    read nor listed (``_SUCCESS``, ``_temporary/``, ``.tmp`` files of a writer that crashed), except files of a
    known ending that a glob matches. Explicit files are kept whatever their ending.

    Raises:
        InputError: a path does not exist, a glob matches no readable file, or a directory holds none.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not patterns:
        raise InputError("no input given: pass at least one file, directory or glob (e.g. --input data/*.jsonl)")
    formats = set(formats) if formats is not None else None
    wanted = formats if formats is not None else set(FORMAT_SUFFIXES)
    files: set[Path] = set()
    others: set[Path] = set()
    roots: list[Path] = []
    for raw in patterns:
        pattern = os.path.expanduser(str(raw))
        if glob.has_magic(pattern):
            base, rest = _split_glob(pattern)
            if not base.is_dir():
                raise _no_match_error(raw, base)
            root = base.resolve()
            found: list[Path] = []
            unread: list[Path] = []
            for match in glob.glob(rest, root_dir=root, recursive=True):
                path = Path(os.path.normpath(root / match))
                if path.is_file() and detect_format(path) in wanted:
                    found.append(path)  # whatever its name: the glob asked for it
                elif _is_hidden(Path(match)):
                    continue
                elif path.is_file():
                    unread.append(path)
                elif path.is_dir():
                    readable, other = _scan_dir(path, formats)
                    found.extend(readable)
                    unread.extend(other)
            if not found:
                if unread:
                    names = ", ".join(sorted(p.name for p in unread)[:20])
                    raise InputError(f"input glob {str(raw)!r} matched no file a reader knows, only: {names}. "
                                     f"Readable endings: {_known_endings(formats)}.")
                raise _no_match_error(raw, base)
            files.update(found)
            others.update(unread)
            roots.append(root)
            continue
        path = Path(pattern)
        if path.is_file():
            root = path.absolute().parent.resolve()
            files.add(root / path.name)
            roots.append(root)
        elif path.is_dir():
            root = path.resolve()
            readable, other = _scan_dir(root, formats)
            if not readable:
                raise _unreadable_dir_error(path, formats)
            files.update(readable)
            others.update(other)
            roots.append(root)
        else:
            raise _missing_path_error(path)
    others -= files
    root = Path(os.path.commonpath([str(r) for r in roots] + [str(f.parent) for f in files]))
    listing = InputListing(root, sorted(files))
    listing.skipped.extend({"path": listing.relative(p), "reason": _skip_reason(p, formats)} for p in sorted(others))
    return listing


def _known_endings(formats: Iterable[str] | None) -> str:
    return ", ".join(s for f in (formats or FORMAT_SUFFIXES) for s in FORMAT_SUFFIXES[f])
