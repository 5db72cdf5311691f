"""The layout of a curation output folder, and the rules that keep it from ever losing or destroying data.

An output folder looks like this::

    OUTPUT/
      data/part-NNNNN.parquet     the curated shards (what the tokenizer and training read)
      heldout/part-NNNNN.parquet  the held-out split (split.heldout_fraction > 0): same format and columns, never
                                  trained on, for evaluation; no document is on both sides (see curation.split)
      dropped/part-NNNNN.parquet  with writer.write_dropped: id and drop_reason of every removed row
      report.json, report.md, languages.png, lengths.png
      _SUCCESS                    the completion marker, written last (JSON: rows, shards, finish time)
      .curation/manifest.json     every folder this tool created and every file name it may write here
      .curation/run.json          what the run was planned from (config, inputs, read tasks): --resume checks it
      .curation/work/             per-read-task, per-key-partition and per-shard results of an unfinished run
                                  (removed at the end; see curation.stages)

The rules (each one a test):
- The tool deletes only files it wrote itself (the names in its manifest, or its own temporary files), and
  only folders it created, once they are empty. A user's file in ``data/`` survives ``--overwrite``.
- A folder whose ``data/``, ``heldout/`` or ``report.json`` was not written by this tool is refused, never cleared.
- Output inside an input, or an input inside the output, is refused before anything is written.
- Writability is proved before Ray starts, by writing the manifest.
- A run's last acts are the report and then ``_SUCCESS``. Starting a run into an existing output first removes
  the old marker and report, so an interrupted rerun can never pass for finished. Every consumer (tokenizer,
  training, evaluation, the one-command pipeline) refuses a curation output without ``_SUCCESS``.

Pure Python, no Ray: modeling imports :func:`require_complete`, :func:`curated_data_dir` and
:func:`curated_heldout_dir` from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from common.errors import UserError
from curation.paths import CURATION_MANIFEST, InputError

DATA_DIR = "data"
"""Curated shards: ``OUTPUT/data/part-NNNNN.<ext>`` reads as one dataset (``pq.read_table("OUTPUT/data")``)."""
HELDOUT_DIR = "heldout"
"""The held-out split: ``OUTPUT/heldout/part-NNNNN.<ext>``, the same shards, format and columns as ``data/``.
Absent when the run's ``split.heldout_fraction`` is 0."""
DROPPED_DIR = "dropped"
"""With ``writer.write_dropped``: ``OUTPUT/dropped/part-NNNNN.<ext>``, every removed id and its reason."""
STATE_DIR = ".curation"
"""The tool's own bookkeeping. Hidden, so no reader (ours or a glob) takes it for data."""
WORK_DIR = f"{STATE_DIR}/work"
"""Results of finished read tasks and shards of a run in progress: what ``--resume`` reuses."""
MANIFEST = CURATION_MANIFEST
"""``.curation/manifest.json``; spelled in :mod:`curation.paths`, whose folder listing skips such outputs."""
RUN_FILE = f"{STATE_DIR}/run.json"
LOCK = f"{STATE_DIR}/lock"
"""Held (``flock``) by the run writing the folder: a second run into it is refused while the first lives; the
kernel releases it when the holder dies, so a killed run never leaves a stale lock."""
MARKER = "_SUCCESS"
"""Completion marker. Its presence means: the conservation check passed and report.json is this run's."""
REPORT_FILES = ("report.json", "report.md", "languages.png", "lengths.png")
SHARD_DIRS = (DATA_DIR, HELDOUT_DIR, DROPPED_DIR)
"""The folders of shards this tool writes, and may leave temporaries in."""
OWN_NAMES = (*SHARD_DIRS, MARKER, *REPORT_FILES)
"""Names this tool writes at the top of an output folder; if any exists there without a manifest, the folder
holds someone else's data and is refused."""
TMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
"""Temporary names of :func:`atomic_write` (``.part-00001.parquet.<uuid4 hex>.tmp``): what a
worker killed while writing leaves behind. Only removed inside folders this tool writes."""


class OutputError(UserError):
    """The output folder cannot be used as asked. The message says why and what to do."""


class IncompleteOutputError(InputError):
    """A consumer was pointed at a curation output whose run has not finished."""


# --------------------------------------------------------------------------------------- consumers


def curation_root(path: str | os.PathLike[str]) -> Path | None:
    """The curation output folder that ``path`` is, or lies in (``OUTPUT/data/part-0.parquet``,
    ``OUTPUT/heldout``), or None."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
        if candidate.name not in (DATA_DIR, HELDOUT_DIR) and candidate != p:
            # only OUTPUT itself, OUTPUT/data, OUTPUT/heldout and files in them count: a curation output kept
            # somewhere inside a bigger tree does not capture the whole tree
            break
    return None


def require_complete(path: str | os.PathLike[str]) -> None:
    """Raise :class:`IncompleteOutputError` if ``path`` belongs to a curation output without ``_SUCCESS``, or
    lies in the tool's bookkeeping folder (``.curation/work`` holds cleaned but not deduplicated rows)."""
    p = Path(path).absolute()
    for parent in p.parents if p.name != STATE_DIR else (p, *p.parents):
        if parent.name == STATE_DIR and (parent / "manifest.json").is_file():
            raise IncompleteOutputError(
                f"{path}: this is the curation tool's bookkeeping ({parent}), not curated data; point at "
                f"{parent.parent} (or its {DATA_DIR}/ folder) instead.")
    root = curation_root(path)
    if root is None or (root / MARKER).is_file():
        return
    raise IncompleteOutputError(
        f"{path}: this curation output is not finished (no {MARKER} in {root}): its run was interrupted or is "
        f"still running, so its shards may be partial or from an older run. Finish it with `python -m curation "
        f"run ... --output {root} --resume` (same config), or point at a finished output."
    )


def curated_data_dir(path: str | os.PathLike[str]) -> Path:
    """Where the data of ``path`` lies: ``OUTPUT/data`` for a curation output folder, else ``path`` itself.

    So ``--input OUTPUT`` reads the shards only, not report.json or ``dropped/``. Raises if unfinished."""
    require_complete(path)
    p = Path(path)
    if p.is_dir() and (p / MANIFEST).is_file():
        return p / DATA_DIR
    return p


def curated_heldout_dir(path: str | os.PathLike[str]) -> Path:
    """``OUTPUT/heldout`` of a curation output folder ``path`` (or of its ``data/``): the documents that
    training never saw. Raises if unfinished, if ``path`` is no curation output, or if its run held none out."""
    require_complete(path)
    root = curation_root(path)
    if root is None:
        raise InputError(f"{path}: not a curation output folder (no {MANIFEST}), so it has no held-out split; "
                         f"point at the folder `python -m curation run --output` wrote.")
    if not (root / HELDOUT_DIR).is_dir():
        raise InputError(f"{root} has no {HELDOUT_DIR}/ folder: its curation run held nothing out "
                         f"(split.heldout_fraction was 0). Run curation again with --split.heldout_fraction 0.02.")
    return root / HELDOUT_DIR


# --------------------------------------------------------------------------------------- producer


def _input_root(spec: str) -> Path | None:
    """The file or folder an input spec reads from (a glob's folder part); None for hf:// inputs other than a
    local folder (``hf://./my_data``)."""
    if spec.startswith("hf://"):
        local = Path(os.path.expanduser(spec[len("hf://"):]))
        return local.resolve() if local.exists() else None
    spec = os.path.expanduser(spec)
    if glob.has_magic(spec):
        head = re.split(r"[*?\[]", spec, maxsplit=1)[0]
        spec = head if head.endswith(os.sep) else os.path.dirname(head)
    return Path(spec or ".").resolve()


def check_not_nested(inputs: Iterable[str], output: str | os.PathLike[str]) -> None:
    """Refuse output inside an input (a rerun would read its own shards back) and input inside the output
    (``--overwrite`` would replace what it reads)."""
    out = Path(output).expanduser().resolve()
    for spec in inputs:
        root = _input_root(str(spec))
        if root is None:
            continue
        if out == root or root in out.parents:
            raise OutputError(
                f"--output {str(output)!r} lies inside the input {str(spec)!r}: a later run would read its own "
                f"output back as input. Choose an output folder outside {str(root)!r}."
            )
        if out in root.parents:
            raise OutputError(
                f"the input {str(spec)!r} lies inside --output {str(output)!r}: the run's output would mix with "
                f"its input. Choose an output folder that does not contain the input."
            )


@dataclass
class Manifest:
    """What this tool created in an output folder: the only things it will ever remove there."""

    created_dirs: list[str] = field(default_factory=list)
    """Folders (relative to the output) that did not exist before; removed only when empty."""
    files: list[str] = field(default_factory=list)
    """Every file name (relative) the run may write: the planned shards, the reports, the marker."""

    @classmethod
    def load(cls, out: Path) -> Manifest:
        try:
            data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            return cls(created_dirs=list(data["created_dirs"]), files=list(data["files"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OutputError(f"{out / MANIFEST} is unreadable ({e}); it is the tool's record of its own files, "
                              f"so nothing in {out} is touched. Remove that folder yourself or choose another.") from e

    def save(self, out: Path) -> None:
        write_json_atomic(out / MANIFEST, {"created_dirs": sorted(set(self.created_dirs)),
                                           "files": sorted(set(self.files))})


def atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves a complete-looking file. The
    temporary name matches ``TMP_RE``, which is how a later run finds what a killed writer left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically, fsynced: readers see the old file or the whole new one."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def remove_tmp_files(out: Path, dirs: Sequence[str] = SHARD_DIRS) -> list[str]:
    """Remove this tool's temporary files (``TMP_RE``) that killed writers left in ``dirs``; returns them."""
    removed = []
    for d in dirs:
        folder = out / d
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and TMP_RE.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                removed.append(f"{d}/{p.name}")
    return removed


def _remove_tree_we_own(path: Path) -> None:
    """Remove ``.curation/work``: every file in it is ours (it lives inside our own hidden state folder)."""
    import shutil

    if path.is_dir():
        shutil.rmtree(path)


def remove_own_files(out: Path, manifest: Manifest) -> None:
    """Remove what an earlier run wrote: marker first, then reports, shards, temporaries, work, empty folders."""
    order = sorted(manifest.files, key=lambda f: (f != MARKER, f not in REPORT_FILES, f))
    for name in order:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    remove_tmp_files(out)
    _remove_tree_we_own(out / WORK_DIR)
    with contextlib.suppress(FileNotFoundError):
        (out / RUN_FILE).unlink()
    for d in sorted(manifest.created_dirs, key=lambda d: -d.count("/")):
        if d in ("", ".", STATE_DIR):
            continue
        with contextlib.suppress(OSError):  # not empty: it holds something that is not ours, so it stays
            (out / d).rmdir()


@dataclass
class OutputState:
    """The result of :func:`prepare_output`: what to do with the folder, and the lock held on it."""

    out: Path
    manifest: Manifest
    resume: bool = False
    """True when ``--resume`` continues an unfinished run whose plan matches."""
    already_complete: bool = False
    """True when ``--resume`` found a finished run of the same plan: nothing to do."""
    lock: IO[str] | None = None

    def release(self) -> None:
        """Let another run use the folder (also happens when the process ends, however it ends)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def _acquire_lock(out: Path) -> IO[str]:
    """Take the folder's lock, or refuse naming the run that holds it."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise OutputError(f"--output {str(out)!r} is being written by another curation run ({holder}); wait for "
                          f"it to finish or stop it, then run again (with --resume to finish its work)") from e
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    return fh


def prepare_output(output: str | os.PathLike[str], *, inputs: Sequence[str], overwrite: bool, resume: bool,
                   planned_files: Iterable[str], plan: dict[str, Any]) -> OutputState:
    """Check the output folder and make it ready, before Ray starts. See the module docstring for the rules.

    ``plan`` is what the run is computed from (config, input fingerprints, read tasks); ``--resume`` refuses to
    continue a run whose recorded plan differs, naming the keys that changed. ``--resume`` where there is no
    run yet starts one, so a scheduler can pass it on every attempt of a job.
    """
    if overwrite and resume:
        raise OutputError("--overwrite and --resume exclude each other: --resume finishes the run in --output, "
                          "--overwrite replaces it")
    check_not_nested(inputs, output)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output {str(out)!r} is a file; give a folder")
    has_manifest = (out / MANIFEST).is_file()
    if out.is_dir() and not has_manifest:
        foreign = [n for n in OWN_NAMES if (out / n).exists()] + (
            [STATE_DIR] if (out / STATE_DIR).exists() else [])
        if foreign:
            raise OutputError(
                f"--output {str(out)!r} already holds {', '.join(foreign)} not written by this tool (there is no "
                f"{MANIFEST}), so it is left alone, also with --overwrite. Choose a new or empty folder."
            )
    created = [] if out.exists() else ["."]
    if not (out / STATE_DIR).exists():
        created.append(STATE_DIR)
    try:
        lock = _acquire_lock(out)  # before anything is read to decide, or removed
    except OSError as e:
        raise OutputError(f"cannot write to --output {str(out)!r}: {e.strerror or e}. Choose a folder you can "
                          f"write to.") from e
    state = OutputState(out=out, manifest=Manifest(), lock=lock)
    try:
        _prepare_locked(state, overwrite=overwrite, resume=resume, planned_files=planned_files, plan=plan,
                        created=created)
    except BaseException:
        state.release()
        raise
    return state


def _prepare_locked(state: OutputState, *, overwrite: bool, resume: bool, planned_files: Iterable[str],
                    plan: dict[str, Any], created: list[str]) -> None:
    out = state.out
    if (out / MANIFEST).is_file():
        old = Manifest.load(out)
        complete = (out / MARKER).is_file()
        if resume:
            _check_same_plan(out, plan)
            state.manifest = old
            if complete:
                state.already_complete = True
                return
            state.resume = True
            state.manifest.files = sorted(set(old.files) | set(planned_files))
            state.manifest.save(out)
            return
        if not overwrite:
            what = "a finished curation run" if complete else "an unfinished curation run (no _SUCCESS)"
            hint = ("pass --overwrite to replace it, or choose another folder" if complete else
                    "pass --resume to finish it with the same config, --overwrite to start over, or choose "
                    "another folder")
            raise OutputError(f"--output {str(out)!r} already holds {what}; {hint}")
        remove_own_files(out, old)
        state.manifest.created_dirs = list(old.created_dirs)
    # a fresh run: create what is missing, remember what we created, prove the folder is writable
    try:
        for d in SHARD_DIRS:  # made when a shard is first written there, if the run writes any
            if not (out / d).exists():
                created.append(d)
        state.manifest.created_dirs = sorted(set(state.manifest.created_dirs) | set(created))
        state.manifest.files = sorted(set(planned_files) | {MARKER, *REPORT_FILES})
        state.manifest.save(out)  # the first write of data: fails here, before Ray, if the folder is full
        write_json_atomic(out / RUN_FILE, plan)
        (out / DATA_DIR).mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to --output {str(out)!r}: {e.strerror or e}. Choose a folder you can "
                          f"write to.") from e


def _check_same_plan(out: Path, plan: dict[str, Any]) -> None:
    try:
        old = read_json(out / RUN_FILE)
    except (OSError, ValueError) as e:
        raise OutputError(f"--resume: {out / RUN_FILE} is missing or unreadable ({e}); start over with "
                          f"--overwrite") from e
    changed = _diff(old, json.loads(json.dumps(plan, default=str)))
    if changed:
        raise OutputError(
            f"--resume: the run in {str(out)!r} was planned from different settings or inputs; changed: "
            f"{', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''} (an input changed when its size, "
            f"modification time or content did). Resume with the same config and inputs, or start over with "
            f"--overwrite."
        )


def _diff(a: Any, b: Any, where: str = "") -> list[str]:
    """Keys where two JSON values differ (lists compared whole): ``settings.language.languages``,
    ``inputs['logs/a.jsonl']``."""
    if (isinstance(a, dict) and b is None) or (isinstance(b, dict) and a is None):
        a, b = a or {}, b or {}  # a key only one side has: name what lies under it
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{where}[{k!r}]" if ("/" in k or "." in k) else (f"{where}.{k}" if where else k)
            out += _diff(a.get(k), b.get(k), key)
        return out
    return [] if a == b else [where or "(all)"]


def write_marker(out: Path, info: dict[str, Any]) -> None:
    """The run's last write: ``_SUCCESS`` with a few headline numbers."""
    write_json_atomic(out / MARKER, info)


def finish(out: Path) -> None:
    """After the marker: drop the work folder (its results are in the shards and report now) and temporaries."""
    remove_tmp_files(out)
    _remove_tree_we_own(out / WORK_DIR)
