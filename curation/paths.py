"""Curation's input listing: the inputs of a run below one root folder, and what the walk passed over.

The format detection and path resolution every stage shares live in :mod:`common.files` (re-exported here:
``from curation.paths import InputError, resolve_paths`` keeps working). ``list_inputs`` (the curation reader)
also returns the *input root*, the common folder of the inputs, so that a file can be named by its path below
the root whatever the working directory, and lists the files it found but cannot read, so that nothing in an
input folder is passed over without a trace.

Folders are walked following symlinks (to files and to folders), each real folder once, so a symlink loop
ends; ``list_inputs`` also reads each real file once. What a walk passes over is listed with the reason:
hidden or ``_``-prefixed names, a nested curation output, a second path to a file or folder already taken,
a broken symlink.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.files import (
    BROKEN_LINK,
    FORMAT_SUFFIXES,
    HIDDEN_NAME,
    SAME_FILE,
    SAME_FOLDER,
    FileWalk,
    InputError,
    detect_format,
    is_hidden_path,
    known_endings,
    missing_path_error,
    names_a_local_path,
    no_match_error,
    resolve_paths,
    unreadable_dir_error,
)

__all__ = [  # the shared names, re-exported for the imports that name them here
    "BROKEN_LINK", "CURATION_MANIFEST", "CURATION_OUTPUT", "FORMAT_SUFFIXES", "HIDDEN_NAME", "SAME_FILE",
    "SAME_FOLDER", "InputError", "InputListing", "detect_format", "file_ending", "is_curation_output",
    "list_inputs", "names_a_local_path", "resolve_paths",
]

CURATION_MANIFEST = ".curation/manifest.json"
"""Path, inside a folder, of the file that marks the folder as a curation output (``layout.MANIFEST``). An input
folder skips the curation outputs inside it: a previous run's report and shards are not raw data."""

CURATION_OUTPUT = f"a curation output (holds {CURATION_MANIFEST}); not read as input"
"""Reason in ``InputListing.skipped`` for a nested curation output; the other reasons besides the file types no
reader knows are :mod:`common.files`' ``HIDDEN_NAME``, ``BROKEN_LINK``, ``SAME_FILE`` and ``SAME_FOLDER``."""


def is_curation_output(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is the output folder of a curation run (it holds ``CURATION_MANIFEST``)."""
    return os.path.isfile(os.path.join(folder, CURATION_MANIFEST))


def _output_reason(folder: Path) -> str | None:
    """Why an input folder passes over ``folder``: a nested curation output; None to walk it."""
    return CURATION_OUTPUT if is_curation_output(folder) else None


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


def _glob_input(walk: FileWalk, raw: object, pattern: str, formats: set[str] | None) -> tuple[Path, list[Path]]:
    """(root, files to read) of one glob; the other files it matched go to ``walk.others`` and ``walk.passed``."""
    base, parts = _split_glob(pattern)
    if not base.is_dir():
        raise no_match_error(raw, base)
    root = base.resolve()
    found: list[Path] = []
    n_files, n_others = len(walk.files), len(walk.others)
    for path in walk.glob(root, parts):
        rel = path.relative_to(root)
        if path.is_file() and detect_format(path) in walk.wanted:
            found.append(path)  # whatever its name: the glob asked for it
        elif is_hidden_path(rel):
            walk.pass_over(path, HIDDEN_NAME)
        elif path.is_file():
            walk.others.append(path)
        elif path.is_dir():
            if path != root and is_curation_output(path):
                walk.pass_over(path, CURATION_OUTPUT)
            else:
                walk.folder(path)
        elif path.is_symlink():
            walk.pass_over(path, BROKEN_LINK)
    found += walk.files[n_files:]
    if not found:
        unread = walk.others[n_others:]
        if unread:
            names = ", ".join(sorted(p.name for p in unread)[:20])
            raise InputError(f"input glob {str(raw)!r} matched no file a reader knows, only: {names}. "
                             f"Readable endings: {known_endings(formats)}.")
        raise no_match_error(raw, base)
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
    walk = FileWalk(formats if formats is not None else set(FORMAT_SUFFIXES), skip_folder=_output_reason)
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
                raise unreadable_dir_error(path, formats)
            roots.append(root)
        else:
            raise missing_path_error(path)
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
