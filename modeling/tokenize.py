r"""Tokenize a curated corpus once, as a Ray Data job, into token shards every training rank memory-maps.

Usage::

    python -m modeling.tokenize --config configs/tokenize/default.yaml --input out/curated \
        --tokenizer out/tokenizer --output out/tokens
    python -m modeling.tokenize --input out/curated --tokenizer out/tokenizer --output out/tokens --heldout true
    RAY_ADDRESS=auto python -m modeling.tokenize ...        # on a cluster (or --ray_address auto)
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --data.token_shards out/tokens \
        --data.tokenizer out/tokenizer

Why a job: tokenizing in ``modeling.train``'s ``prepare_data`` is one process per node, and every node of a
cluster tokenizes the whole corpus again. Here each input file is one Ray task (stage 1: read, tokenize, bucket
each document by a hash of its id into ``num_shards`` buckets), then each output shard is one Ray task (stage 2:
its buckets from every file, sorted by id, written as :mod:`modeling.token_shards` describes). Buckets go
through files under ``OUTPUT/.tokenize/work`` (the folder must be on a filesystem every worker sees), as
curation's shuffle does. The output bytes depend on the documents, the tokenizer and ``num_shards`` only.

The output folder follows curation's rules: a folder holding anything this command did not write is refused,
never cleared; ``--overwrite`` removes only the files an earlier run of it wrote.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import Command, run_command
from common.config import ConfigError, to_dict
from common.errors import UserError
from common.files import InputError
from curation import curated_heldout_dir
from modeling.corpus import resolve_text_files
from modeling.token_shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    STATE_DIR,
    token_dtype,
    tokenizer_sha256,
)

log = logging.getLogger("modeling.tokenize")
_OWN_FILE = re.compile(r"^shard-\d{5}\.(tokens\.npy|offsets\.npy|docs\.parquet)$|^\..*\.tmp$")


@dataclass(frozen=True)
class TokenizeConfig:
    """Every key of ``configs/tokenize/*.yaml`` and every flag of ``python -m modeling.tokenize``."""

    input: tuple[str, ...] = ()
    """Curated shards: a curation output folder (its ``data/``), folders, globs or parquet/jsonl/txt files."""
    tokenizer: str = ""
    """Tokenizer folder (``python -m modeling.tokenizer train --output DIR``); its tokenizer.json is used."""
    output: str = ""
    """Folder for the token shards: new, empty, or one this command wrote (with ``overwrite``)."""
    heldout: bool = False
    """Also tokenize the inputs' held-out split (``heldout/`` of each curation output) into ``OUTPUT/heldout``."""
    num_shards: int = 8
    """Output shards per split; documents are spread over them by a hash of their id. Part of the output's
    identity: the same corpus gives the same bytes for the same number."""
    text_column: str = "text"
    """Column holding the documents."""
    id_column: str = "id"
    """Column naming each document (curated shards have ``id``); its hash decides the shard, the order in it
    and, in training, the validation split. A document without one is named ``text:<sha256 of its text>``."""
    source_column: str = "source"
    """Column whose value is kept per document, for per-source mixture weights in training."""
    batch_size: int = 1000
    """Documents per tokenizer call."""
    overwrite: bool = False
    """Replace token shards an earlier run wrote to ``output`` (only its own files are removed)."""
    ray_address: str | None = None
    """Ray cluster to attach to (``auto``); None uses ``RAY_ADDRESS`` or starts a local Ray."""
    num_cpus: int | None = None
    """CPUs of the embedded local Ray (None: all of this machine's). Ignored on a cluster."""
    progress: bool = True
    """Show Ray Data's progress bars and a line per finished file."""

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ConfigError(f"num_shards must be at least 1, got {self.num_shards}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")


COMMAND = Command(prog="python -m modeling.tokenize", description=__doc__, config=TokenizeConfig,
                  required=("input", "tokenizer", "output"))


class TokenizeOutputError(UserError):
    """The output folder cannot be written (foreign files, an earlier run without --overwrite, nesting)."""


# ------------------------------------------------------------------------------------------- the output folder
def prepare_output(cfg: TokenizeConfig, inputs: Sequence[Path]) -> Path:
    """Claim ``cfg.output``: refuse foreign content, remove only an earlier run's own files, mark it ours."""
    out = Path(cfg.output).expanduser().absolute()
    for f in inputs:
        if out in f.absolute().parents:
            raise TokenizeOutputError(f"--output {cfg.output!r} contains the input {f}: choose another folder")
    for given in cfg.input:
        p = Path(given).expanduser().absolute()
        if p.is_dir() and (out == p or p in out.parents):
            raise TokenizeOutputError(f"--output {cfg.output!r} lies inside the input {given!r}: choose a folder "
                                      "outside it (curated outputs hold only what curation wrote)")
    if out.exists() and not out.is_dir():
        raise TokenizeOutputError(f"--output {cfg.output!r} is a file: give a folder for the token shards")
    if out.is_dir() and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())
        foreign = [n for n in names if n not in (MANIFEST, STATE_DIR, *SPLITS)]
        foreign += [f"{s}/{p.name}" for s in SPLITS if (out / s).is_dir() for p in (out / s).iterdir()
                    if not _OWN_FILE.match(p.name)]
        if foreign or not (out / STATE_DIR).is_dir():
            raise TokenizeOutputError(
                f"--output {cfg.output!r} holds {(foreign or names)[:5]}, which python -m modeling.tokenize did "
                "not write; it never deletes what it did not write: choose a new or empty folder")
        if (out / MANIFEST).is_file() and not cfg.overwrite:
            raise TokenizeOutputError(f"--output {cfg.output!r} already holds token shards ({MANIFEST}): pass "
                                      "--overwrite true to replace them, or choose another folder")
        (out / MANIFEST).unlink(missing_ok=True)  # first, so an interrupted rerun never looks finished
        for s in SPLITS:
            if (out / s).is_dir():
                for p in (out / s).iterdir():
                    p.unlink()
                (out / s).rmdir()
        shutil.rmtree(out / STATE_DIR / "work", ignore_errors=True)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)  # marks the folder as this command's
    return out


# ------------------------------------------------------------------------------------------- the job
def resolve_inputs(cfg: TokenizeConfig) -> dict[str, list[Path]]:
    """The files of each split to tokenize; every problem is reported before Ray starts."""
    try:
        splits = {"data": resolve_text_files(cfg.input, cfg.text_column, "--text_column")}
        if cfg.heldout:
            dirs = [str(curated_heldout_dir(i)) for i in cfg.input]
            splits["heldout"] = resolve_text_files(dirs, cfg.text_column, "--text_column")
    except InputError as err:
        raise InputError(f"--input: {err}") from err
    return splits


def run(cfg: TokenizeConfig) -> dict[str, Any]:
    """Tokenize every split into ``cfg.output``; returns the manifest (also written there, last)."""
    from tokenizers import Tokenizer

    from common.ray_runtime import init_ray  # the project's one way to start or attach to Ray
    from modeling.tokenize_tasks import run_split

    t0 = time.time()
    tok_sha = tokenizer_sha256(cfg.tokenizer, "--tokenizer")
    vocab = Tokenizer.from_file(str(Path(cfg.tokenizer).expanduser() / "tokenizer.json")).get_vocab_size(True)
    dtype = token_dtype(vocab)
    splits = resolve_inputs(cfg)
    out = prepare_output(cfg, [f for files in splits.values() for f in files])
    init_ray(cfg.ray_address, cfg.num_cpus)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = cfg.progress
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "dtype": dtype.name, "num_shards": cfg.num_shards,
        "tokenizer": {"path": str(cfg.tokenizer), "sha256": tok_sha, "vocab_size": vocab},
        "columns": {"text": cfg.text_column, "id": cfg.id_column, "source": cfg.source_column},
        "eos_stored": False, "splits": {}}
    timing: dict[str, Any] = {}
    for split, files in splits.items():
        t_split = time.time()
        manifest["splits"][split], cpu = run_split(cfg, split, files, out, dtype.name)
        seconds = time.time() - t_split
        mb = sum(f["size"] for f in manifest["splits"][split]["inputs"]) / 1e6
        timing[split] = {"seconds": round(seconds, 3), "task_cpu_seconds": round(cpu, 3), "input_mb": round(mb, 3),
                         "text_mb": manifest["splits"][split]["chars"] / 1e6}
        log.info("%s: %d docs, %d tokens from %.1f MB in %.1f s (%.2f MB/s)", split,
                 manifest["splits"][split]["docs"], manifest["splits"][split]["tokens"], mb, seconds, mb / seconds)
    shutil.rmtree(out / STATE_DIR / "work", ignore_errors=True)
    # run facts that would break byte-identity (times, worker count) live apart from the manifest
    (out / STATE_DIR / "run.json").write_text(json.dumps(
        {"config": to_dict(cfg), "seconds": round(time.time() - t0, 3), "splits": timing,
         "cpus": ray.cluster_resources().get("CPU")}, indent=2))
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, out / MANIFEST)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 0 done, 2 with one ``error:`` line for a config, input or output folder it cannot use."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def body(cfg: TokenizeConfig, _: object) -> None:
        manifest = run(cfg)
        for split, info in manifest["splits"].items():
            print(f"{split}: {info['docs']:,} docs, {info['tokens']:,} tokens ({manifest['dtype']}) in "
                  f"{len(info['shards'])} shards")
        print(f"token shards: {cfg.output}  (manifest.json; train with --data.token_shards {cfg.output})")

    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, body)


__all__ = ["COMMAND", "TokenizeConfig", "TokenizeOutputError", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
