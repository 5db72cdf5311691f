"""The token shard format that ``python -m modeling.tokenize`` writes and training memory-maps.

A token shard folder::

    OUT/manifest.json                      written last: format version, tokenizer and corpus fingerprints,
                                           the shards of each split with their counts and sha256
    OUT/data/shard-NNNNN.tokens.npy        one flat token stream, uint16 when the vocabulary fits, else uint32;
                                           documents back to back, tokenized without special tokens, no eos
    OUT/data/shard-NNNNN.offsets.npy       int64, n_docs + 1: document d is tokens[offsets[d]:offsets[d + 1]]
    OUT/data/shard-NNNNN.docs.parquet      id and source of each document, in stream order
    OUT/heldout/...                        the same for a curation output's held-out split, when asked for
    OUT/.tokenize/                         the tool's own bookkeeping (its presence marks the folder as ours)

The eos between documents is not stored: packing adds it (:mod:`modeling.packing`), so a shard decodes back to
its documents exactly and the same shards serve any block size. Plain ``.npy`` so that ``np.load(...,
mmap_mode="r")`` opens a shard of any size without reading it, and any tool can inspect one.

A document lands in shard ``hash(id) % num_shards`` and a shard's documents are sorted by id, so the bytes
depend on the documents and ``num_shards`` only: not on the input files' number or order, nor on how many
workers ran.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from common.errors import UserError

#: Bump when the layout or the meaning of the arrays changes; readers refuse other versions.
FORMAT_VERSION = 1
FORMAT_NAME = "token-shards"
MANIFEST = "manifest.json"
STATE_DIR = ".tokenize"
SPLITS = ("data", "heldout")
#: blake2b personalisation of the shard hash: independent of the validation split's and curation's hashes.
_SHARD_PERSON = b"tok-shard-v1"


class TokenShardsError(UserError):
    """Token shards that cannot be used (missing, unfinished, another format version or tokenizer)."""


def shard_of(doc_id: str, num_shards: int) -> int:
    """Which shard holds the document ``doc_id``: a stable hash, so the partition is independent of input order."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8, person=_SHARD_PERSON).digest()
    return int.from_bytes(digest, "big") % num_shards


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (half the disk and page cache), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_sha256(tokenizer_dir: str | Path, option: str) -> str:
    """sha256 of ``tokenizer.json``: the token ids' identity, compared between the shards and training."""
    path = Path(tokenizer_dir).expanduser() / "tokenizer.json"
    if not path.is_file():
        raise TokenShardsError(f"{option} {tokenizer_dir!r}: no tokenizer.json there; token shards need a local "
                               "tokenizer folder (python -m modeling.tokenizer train --output DIR)")
    return file_sha256(path)


@dataclass
class Shard:
    """One memory-mapped shard: its token stream, document offsets, ids and sources."""

    tokens: np.ndarray
    offsets: np.ndarray
    ids: list[str]
    sources: list[str | None]

    def document(self, d: int) -> np.ndarray:
        return self.tokens[self.offsets[d]:self.offsets[d + 1]]


def read_manifest(folder: str | Path, option: str = "--data.token_shards") -> dict[str, Any]:
    """The manifest of a finished token shard folder; refuses an unfinished one or another format version."""
    root = Path(folder).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        hint = (" (its run did not finish: rerun python -m modeling.tokenize with --overwrite)"
                if (root / STATE_DIR).is_dir() else "")
        raise TokenShardsError(f"{option} {folder!r}: no {MANIFEST}, so not a finished token shard folder{hint}; "
                               "write one with python -m modeling.tokenize --input CURATED --tokenizer TOK --output DIR")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise TokenShardsError(f"{option} {folder!r}: format {manifest.get('format')!r} version "
                               f"{manifest.get('version')!r}, this code reads {FORMAT_NAME!r} version "
                               f"{FORMAT_VERSION}: tokenize the corpus again with this version")
    return manifest


def open_shards(folder: str | Path, split: str = "data", option: str = "--data.token_shards") -> list[Shard]:
    """Memory-map every shard of ``split``; nothing but offsets, ids and sources is read into memory."""
    root = Path(folder).expanduser()
    manifest = read_manifest(root, option)
    if split not in manifest["splits"]:
        raise TokenShardsError(f"{option} {folder!r} has no {split!r} split (it has {sorted(manifest['splits'])}); "
                               "tokenize with --heldout true for the held-out split")
    shards = []
    for entry in manifest["splits"][split]["shards"]:
        stem = root / split / entry["name"]
        docs = pq.read_table(f"{stem}.docs.parquet")
        shards.append(Shard(np.load(f"{stem}.tokens.npy", mmap_mode="r"), np.load(f"{stem}.offsets.npy"),
                            docs.column("id").to_pylist(), docs.column("source").to_pylist()))
    return shards


def check_tokenizer(manifest: dict[str, Any], tokenizer_dir: str, folder: str | Path) -> None:
    """Refuse shards tokenized with another tokenizer than training's: their ids would mean other tokens."""
    mine = tokenizer_sha256(tokenizer_dir, "--data.tokenizer")
    theirs = manifest["tokenizer"]["sha256"]
    if mine != theirs:
        raise TokenShardsError(
            f"--data.token_shards {str(folder)!r} was tokenized with {manifest['tokenizer']['path']!r} (tokenizer.json "
            f"sha256 {theirs[:12]}), but --data.tokenizer {tokenizer_dir!r} has sha256 {mine[:12]}: train with the "
            "tokenizer the shards were made with, or tokenize again with this one")
