"""File formats and input paths, the same for every stage: which reader a file's ending asks for, whether a
name can only be a local path, and files, globs and directories resolved into a sorted list of files.

So a user's ``--input data/*.parquet`` means the same thing in curation, tokenizer training, training and
evaluation, and fails the same way: early, naming the pattern and what was there instead. Pure Python.

Folders are walked following symlinks (to files and to folders), each real folder once, so a symlink loop
ends. What a walk passes over is listed with the reason: hidden or ``_``-prefixed names, a second path to a
folder already taken, a broken symlink, and the folders its ``skip_folder`` names (curation passes over
nested curation outputs).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from common.errors import UserError

#: File endings each format reader understands (compressed variants included).
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz"),
    "csv": (".csv", ".csv.gz", ".tsv", ".tsv.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".txt.gz", ".md", ".text"),
}

HIDDEN_NAME = "hidden or _-prefixed name"
BROKEN_LINK = "broken symlink"
SAME_FILE = "same file as "
SAME_FOLDER = "same folder as "
"""Reasons a walk passes over a path (``SAME_*`` are followed by the path it repeats)."""


class InputError(UserError):
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


def is_hidden_path(path: Path) -> bool:
    return any(_hidden(part) for part in path.parts if part not in (".", ".."))


def folder_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries)
    except OSError as error:
        raise InputError(f"cannot list input folder {str(folder)!r}: {error}") from error


class FileWalk:
    """Files below input folders and glob matches, following symlinks to files and folders.

    Each real folder is entered once per input (``new_input``), so a symlink loop ends: a second path to a
    folder is passed over as ``same folder as <first path>``. Hidden or ``_``-prefixed names and the
    folders ``skip_folder`` gives a reason for (curation: nested curation outputs) are passed over whole: a
    folder is listed once, not its files. What is
    passed over goes to ``passed`` as (path, reason, the path it repeats or None), nothing silently.
    """

    def __init__(self, wanted: set[str], skip_folder: Callable[[Path], str | None] | None = None) -> None:
        self.wanted, self.skip_folder = wanted, skip_folder
        self.files: list[Path] = []
        """Files of a wanted format."""
        self.others: list[Path] = []
        """Other files (no reader, or a format not wanted)."""
        self.passed: list[tuple[Path, str, Path | None]] = []
        self.seen: dict[str, Path] = {}

    def new_input(self) -> None:
        self.seen = {}

    def pass_over(self, path: Path, reason: str, first: Path | None = None) -> None:
        self.passed.append((path, reason, first))

    def _first_visit(self, folder: Path, seen: dict[str, Path]) -> bool:
        """True the first time a real folder is reached; a second path to it is passed over."""
        real = os.path.realpath(folder)
        first = seen.get(real)
        if first is None:
            seen[real] = folder
            return True
        if first != folder:
            self.pass_over(folder, SAME_FOLDER, first)
        return False

    def folder(self, folder: Path) -> None:
        """Walk ``folder`` (entered whatever its name) and everything below it."""
        if not self._first_visit(folder, self.seen):
            return
        for name in folder_names(folder):
            self.entry(folder / name, name)

    def entry(self, path: Path, name: str) -> None:
        if path.is_dir():  # follows a symlink
            skip = self.skip_folder(path) if self.skip_folder else None
            if skip:
                self.pass_over(path, skip)
            elif _hidden(name):
                self.pass_over(path, HIDDEN_NAME)
            else:
                self.folder(path)
        elif path.is_file():
            if _hidden(name):
                self.pass_over(path, HIDDEN_NAME)
            else:
                (self.files if detect_format(path) in self.wanted else self.others).append(path)
        elif path.is_symlink():
            self.pass_over(path, BROKEN_LINK)
        elif os.path.lexists(path):
            self.pass_over(path, "not a regular file")

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
            for name in folder_names(folder):
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
        for name in folder_names(folder):
            path = folder / name
            if name.startswith(".") or not path.is_dir():
                continue
            skip = self.skip_folder(path) if self.skip_folder else None
            if skip:
                self.pass_over(path, skip)
            else:
                yield from self._folders_below(path, seen)


def list_folder(directory: Path, formats: Iterable[str] | None) -> list[Path]:
    walk = FileWalk(set(formats) if formats is not None else set(FORMAT_SUFFIXES))
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
                files.extend(list_folder(d, formats))
            if not files:
                raise no_match_error(raw, Path(pattern.split("*")[0] or ".").parent)
            out.update(files)
            continue
        path = Path(pattern)
        if path.is_file():
            out.add(path)
        elif path.is_dir():
            files = list_folder(path, formats)
            if not files:
                raise unreadable_dir_error(path, formats)
            out.update(files)
        else:
            raise missing_path_error(path)
    return sorted(out)


def _holds(folder: Path) -> str:
    return ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "(nothing)"


def no_match_error(raw: object, parent: Path) -> InputError:
    return InputError(
        f"input glob {str(raw)!r} matched no file. "
        + (f"{parent}/ holds: {_holds(parent)}" if parent.is_dir() else f"its folder {str(parent)!r} does not exist")
    )


def unreadable_dir_error(path: Path, formats: Iterable[str] | None) -> InputError:
    return InputError(f"input directory {str(path)!r} holds no readable file (looked for {known_endings(formats)}); "
                      f"it holds: {_holds(path)}")


def missing_path_error(path: Path) -> InputError:
    parent = path.parent if str(path.parent) else Path(".")
    hint = f"; {parent!s}/ holds: {_holds(parent)}" if parent.is_dir() else ""
    return InputError(f"input path {str(path)!r} does not exist{hint}")


def known_endings(formats: Iterable[str] | None) -> str:
    return ", ".join(s for f in (formats or FORMAT_SUFFIXES) for s in FORMAT_SUFFIXES[f])
