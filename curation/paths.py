"""Resolve user-given paths, globs and directories into a sorted list of files.

Shared by the curation readers and the modeling readers (tokenizer, data module), so a user's
``--input data/*.parquet`` means the same thing everywhere and fails the same way: early, naming the
pattern and what was there instead. Pure Python, no Ray import.

``resolve_paths`` returns the files as the user spelled them (the modeling commands). ``list_inputs`` (the
curation reader) also returns the *input root*, the common folder of the inputs, so that a file can be named
by its path below the root whatever the working directory, and lists the files it found but cannot read, so
that nothing in an input folder is passed over without a trace.

Folders are walked following symlinks (to files and to folders), each real folder once, so a symlink loop
ends; ``list_inputs`` also reads each real file once. What a walk passes over is listed with the reason:
hidden or ``_``-prefixed names, a nested curation output, a second path to a file or folder already taken,
a broken symlink.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: File endings each format reader understands (compressed variants included).
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz"),
    "csv": (".csv", ".csv.gz", ".tsv", ".tsv.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".txt.gz", ".md", ".text"),
}


CURATION_MANIFEST = ".curation/manifest.json"
"""Path, inside a folder, of the file that marks the folder as a curation output (``layout.MANIFEST``). An input
folder skips the curation outputs inside it: a previous run's report and shards are not raw data."""

HIDDEN_NAME = "hidden or _-prefixed name"
CURATION_OUTPUT = f"a curation output (holds {CURATION_MANIFEST}); not read as input"
BROKEN_LINK = "broken symlink"
SAME_FILE = "same file as "
SAME_FOLDER = "same folder as "
"""Reasons in ``InputListing.skipped`` besides the file types no reader knows (``SAME_*`` are followed by a path)."""


class InputError(ValueError):
    """A user-given input cannot be used. The message says which input, what was found and what to do."""


def names_a_local_path(name: str) -> bool:
    """Whether ``name`` can only mean a local path, not a Hugging Face hub id (``gpt2``, ``org/name``): absolute,
    starting with ``.`` or ``~``, or with two or more ``/``. A missing one is then an error, not a hub lookup."""
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """Return the reader format for ``path`` from its ending, or None when no reader knows it."""
    name = str(path).lower()
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _is_hidden(path: Path) -> bool:
    return any(_hidden(part) for part in path.parts if part not in (".", ".."))


def is_curation_output(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is the output folder of a curation run (it holds ``CURATION_MANIFEST``)."""
    return os.path.isfile(os.path.join(folder, CURATION_MANIFEST))


def _names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries)
    except OSError as error:
        raise InputError(f"cannot list input folder {str(folder)!r}: {error}") from error


class _Walk:
    """Files below input folders and glob matches, following symlinks to files and folders.

    Each real folder is entered once per input (``new_input``), so a symlink loop ends: a second path to a
    folder is passed over as ``same folder as <first path>``. Hidden or ``_``-prefixed names and (with
    ``skip_outputs``) curation outputs are passed over whole: a folder is listed once, not its files. What is
    passed over goes to ``passed`` as (path, reason, the path it repeats or None), nothing silently.
    """

    def __init__(self, wanted: set[str], skip_outputs: bool = True) -> None:
        self.wanted, self.skip_outputs = wanted, skip_outputs
        self.files: list[Path] = []
        """Files of a wanted format."""
        self.others: list[Path] = []
        """Other files (no reader, or a format not wanted)."""
        self.passed: list[tuple[Path, str, Path | None]] = []
        self.seen: dict[str, Path] = {}

    def new_input(self) -> None:
        self.seen = {}

    def _pass(self, path: Path, reason: str, first: Path | None = None) -> None:
        self.passed.append((path, reason, first))

    def _first_visit(self, folder: Path, seen: dict[str, Path]) -> bool:
        """True the first time a real folder is reached; a second path to it is passed over."""
        real = os.path.realpath(folder)
        first = seen.get(real)
        if first is None:
            seen[real] = folder
            return True
        if first != folder:
            self._pass(folder, SAME_FOLDER, first)
        return False

    def folder(self, folder: Path) -> None:
        """Walk ``folder`` (entered whatever its name) and everything below it."""
        if not self._first_visit(folder, self.seen):
            return
        for name in _names(folder):
            self.entry(folder / name, name)

    def entry(self, path: Path, name: str) -> None:
        if path.is_dir():  # follows a symlink
            if self.skip_outputs and is_curation_output(path):
                self._pass(path, CURATION_OUTPUT)
            elif _hidden(name):
                self._pass(path, HIDDEN_NAME)
            else:
                self.folder(path)
        elif path.is_file():
            if _hidden(name):
                self._pass(path, HIDDEN_NAME)
            else:
                (self.files if detect_format(path) in self.wanted else self.others).append(path)
        elif path.is_symlink():
            self._pass(path, BROKEN_LINK)
        elif os.path.lexists(path):
            self._pass(path, "not a regular file")

    def glob(self, folder: Path, parts: Sequence[str]) -> Iterator[Path]:
        """Paths below ``folder`` that the pattern ``parts`` matches, like ``glob.glob(recursive=True)``
        (``*`` does not match a leading dot; ``**`` any folders below) except that ``**`` enters each real
        folder once, so a symlink loop ends, and a final ``**`` yields ``folder`` itself, to be walked."""
        part, rest = parts[0], parts[1:]
        if part == "**":
            if not rest:
                yield folder
                return
            for below in self._folders_below(folder, {}):
                yield from self.glob(below, rest)
        elif not glob.has_magic(part):
            path = folder / part
            if rest and path.is_dir():
                yield from self.glob(path, rest)
            elif not rest and os.path.lexists(path):
                yield path
        else:
            for name in _names(folder):
                if fnmatch.fnmatch(name, part) and (part.startswith(".") or not name.startswith(".")):
                    path = folder / name
                    if not rest:
                        yield path
                    elif path.is_dir():
                        yield from self.glob(path, rest)

    def _folders_below(self, folder: Path, seen: dict[str, Path]) -> Iterator[Path]:
        """``folder`` and every folder below it whose name has no leading dot, each real folder once."""
        if not self._first_visit(folder, seen):
            return
        yield folder
        for name in _names(folder):
            path = folder / name
            if name.startswith(".") or not path.is_dir():
                continue
            if self.skip_outputs and is_curation_output(path):
                self._pass(path, CURATION_OUTPUT)
            else:
                yield from self._folders_below(path, seen)


def _list_dir(directory: Path, formats: Iterable[str] | None) -> list[Path]:
    walk = _Walk(set(formats) if formats is not None else set(FORMAT_SUFFIXES), skip_outputs=False)
    walk.folder(directory)
    return walk.files


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
    """``{"path": <below root>, "reason": ...}`` for everything an input folder or a glob holds that is not
    read, sorted by path: a file no reader knows (``unknown file type .html``), a hidden or ``_``-prefixed
    file or folder (``HIDDEN_NAME``: ``_SUCCESS``, ``.tmp`` files of a writer that crashed), a curation output
    (``CURATION_OUTPUT``, the folder once), a second path to a file or folder already read (``same file as
    <path>``, ``same folder as <path>``: symlinks), a broken symlink."""

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` below the root, POSIX-style: the same string whatever the working directory."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def summary(self) -> str:
        """One line on the skipped entries: ``3 files no reader knows: 2 .html, 1 .jsonl.bz2; 2 hidden or
        _-prefixed names``."""
        unknown: Counter[str] = Counter()
        other: Counter[str] = Counter()
        for s in self.skipped:
            reason = s["reason"]
            if reason.startswith((SAME_FILE, SAME_FOLDER)):
                other["second paths to a file or folder already read (symlinks)"] += 1
            elif reason == HIDDEN_NAME:
                other["hidden or _-prefixed names"] += 1
            elif reason == CURATION_OUTPUT:
                other["curation outputs"] += 1
            elif reason in (BROKEN_LINK, "not a regular file"):
                other[reason] += 1
            else:
                unknown[file_ending(s["path"])] += 1
        parts = []
        if unknown:
            n = sum(unknown.values())
            kinds = ", ".join(f"{k} {ending}" for ending, k in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{n} file{'s' * (n != 1)} no reader knows: {kinds}")
        parts += [f"{k} {what}" for what, k in sorted(other.items())]
        return "; ".join(parts)


def _split_glob(pattern: str) -> tuple[Path, list[str]]:
    """(folder before the first wildcard, the parts from there): ``data/ra*/x.jsonl`` -> (data, [ra*, x.jsonl])."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return (Path(*parts[:first]) if first else Path(".")), list(parts[first:])


def _skip_reason(path: Path, formats: Iterable[str] | None) -> str:
    fmt = detect_format(path)
    if fmt is None:
        return f"unknown file type {file_ending(path)}"
    return f"{fmt} files are not read here (reading {', '.join(sorted(formats or FORMAT_SUFFIXES))})"


def _glob_input(walk: _Walk, raw: object, pattern: str, formats: set[str] | None) -> tuple[Path, list[Path]]:
    """(root, files to read) of one glob; the other files it matched go to ``walk.others`` and ``walk.passed``."""
    base, parts = _split_glob(pattern)
    if not base.is_dir():
        raise _no_match_error(raw, base)
    root = base.resolve()
    found: list[Path] = []
    n_files, n_others = len(walk.files), len(walk.others)
    for path in walk.glob(root, parts):
        rel = path.relative_to(root)
        if path.is_file() and detect_format(path) in walk.wanted:
            found.append(path)  # whatever its name: the glob asked for it
        elif _is_hidden(rel):
            walk._pass(path, HIDDEN_NAME)
        elif path.is_file():
            walk.others.append(path)
        elif path.is_dir():
            if path != root and is_curation_output(path):
                walk._pass(path, CURATION_OUTPUT)
            else:
                walk.folder(path)
        elif path.is_symlink():
            walk._pass(path, BROKEN_LINK)
    found += walk.files[n_files:]
    if not found:
        unread = walk.others[n_others:]
        if unread:
            names = ", ".join(sorted(p.name for p in unread)[:20])
            raise InputError(f"input glob {str(raw)!r} matched no file a reader knows, only: {names}. "
                             f"Readable endings: {_known_endings(formats)}.")
        raise _no_match_error(raw, base)
    return root, found


def list_inputs(
    patterns: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    formats: Iterable[str] | None = None,
) -> InputListing:
    """Expand files, directories (recursively) and globs into the files to read, their root and the skipped ones.

    Directories and globs keep the files with a known ending (``formats`` narrows that further) and list the
    others in ``skipped``, with what else they pass over (see ``InputListing.skipped``): hidden or
    ``_``-prefixed entries (except files of a known ending that a glob matches by name) and curation outputs
    below an input folder. Symlinks to files and folders are followed; each real file is read once, under its
    first path in sorted order, and a symlink loop is entered once. Explicit files are kept whatever their
    ending.

    Raises:
        InputError: a path does not exist, a glob matches no readable file, a directory holds none, or a
            directory is itself a curation output.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not patterns:
        raise InputError("no input given: pass at least one file, directory or glob (e.g. --input data/*.jsonl)")
    formats = set(formats) if formats is not None else None
    walk = _Walk(formats if formats is not None else set(FORMAT_SUFFIXES))
    files: set[Path] = set()
    roots: list[Path] = []
    for raw in patterns:
        walk.new_input()
        pattern = os.path.expanduser(str(raw))
        if glob.has_magic(pattern):
            root, found = _glob_input(walk, raw, pattern, formats)
            files.update(found)
            roots.append(root)
            continue
        path = Path(pattern)
        if path.is_file():
            root = path.absolute().parent.resolve()
            files.add(root / path.name)
            roots.append(root)
        elif path.is_dir():
            if is_curation_output(path):
                raise InputError(f"input directory {str(path)!r} is the output of a curation run (it holds "
                                 f"{CURATION_MANIFEST}); to read its curated shards, pass {str(path / 'data')!r}")
            root = path.resolve()
            n_files = len(walk.files)
            walk.folder(root)
            if len(walk.files) == n_files:
                raise _unreadable_dir_error(path, formats)
            roots.append(root)
        else:
            raise _missing_path_error(path)
    files.update(walk.files)
    first_of: dict[str, Path] = {}
    passed = list(walk.passed)
    for f in sorted(files):  # each real file once, under its first path
        first = first_of.setdefault(os.path.realpath(f), f)
        if first != f:
            passed.append((f, SAME_FILE, first))
    kept = set(first_of.values())
    root = Path(os.path.commonpath([str(r) for r in roots] + [str(f.parent) for f in kept]))
    listing = InputListing(root, sorted(kept))
    reasons: dict[Path, str] = {}
    for p in walk.others:
        reasons.setdefault(p, _skip_reason(p, formats))
    for p, reason, first in passed:
        reasons.setdefault(p, reason + (listing.relative(first) if first is not None else ""))
    listing.skipped.extend({"path": listing.relative(p), "reason": r}
                           for p, r in sorted(reasons.items()) if p not in kept)
    return listing


def _known_endings(formats: Iterable[str] | None) -> str:
    return ", ".join(s for f in (formats or FORMAT_SUFFIXES) for s in FORMAT_SUFFIXES[f])
