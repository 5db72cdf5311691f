"""Training and validation sets out of token shards (``--data.token_shards``): no tokenizing, no copying.

The shards are memory-mapped (:func:`modeling.token_shards.open_shards`); each rank reads the small per-document
tables (offsets, ids, sources), decides each document's side with :mod:`modeling.splits`' rule on its id, the
rule the text path applies (so both paths hold out the same documents of a curated corpus), and packs each side
with :class:`modeling.packing.PackedStream`, the one packing. Every rank computes the same sets from the same
files, so nothing needs to be broadcast, on one node or many.

Mixture weights (``--data.mixture {source: weight}``) resample the *training* documents of each source: a
weight of 2.5 puts every document in twice and half of them (chosen by a hash of id and seed) a third time; 0.5
keeps half; 0 drops the source; sources not named keep weight 1. Validation keeps the corpus' natural mix, so
its loss stays comparable between mixtures. With weights, the training documents are ordered by a hash of
(id, copy, seed), which spreads a document's copies over the stream instead of packing them side by side.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modeling.packing import PackedStream
from modeling.splits import validation_score
from modeling.token_blocks import TokenBlocks
from modeling.token_shards import Shard, check_tokenizer, open_shards, read_manifest

_MIX_PERSON = b"lm-mixture-v1"


@dataclass
class ShardSets:
    """The packed sets and what they hold, for the log line, the checkpoints' run identity and config.yaml."""

    train: TokenBlocks
    val: TokenBlocks
    summary: dict[str, Any]


def _score(text: str) -> float:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, person=_MIX_PERSON).digest()
    return int.from_bytes(digest, "big") / 2**64


def copies(doc_id: str, weight: float, seed: int) -> int:
    """How many times a training document of a source weighted ``weight`` is packed: ``floor(weight)``, plus one
    for the share ``weight - floor(weight)`` of documents whose hash falls under it (deterministic per id)."""
    whole = math.floor(weight)
    return whole + (1 if _score(f"{seed}\x00extra\x00{doc_id}") < weight - whole else 0)


def check_mixture(mixture: dict[str, float] | None, sources: set[str], error: type[Exception]) -> None:
    """Weights must be numbers >= 0 naming sources the shards have (a typo would silently weigh nothing)."""
    for source, weight in (mixture or {}).items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0 or math.isinf(weight):
            raise error(f"--data.mixture: weight of {source!r} must be a number >= 0, got {weight!r}")
        if source not in sources:
            raise error(f"--data.mixture names source {source!r}, but the token shards hold {sorted(sources)}: "
                        "use those names (the curated `source` column)")


def open_shard_sets(folder: str, tokenizer: Any, tokenizer_path: str, block_size: int, val_fraction: float,
                    seed: int, mixture: dict[str, float] | None, error: type[Exception]) -> ShardSets:
    """Split the shards' documents by the hash of their id, weight the training side, pack both sides."""
    manifest = read_manifest(folder)
    check_tokenizer(manifest, tokenizer_path, folder)
    shards = open_shards(folder, "data")
    sides: dict[str, list[tuple[int, int]]] = {"train": [], "val": []}
    lowest: tuple[float, int, int] | None = None
    for s, shard in enumerate(shards):
        for d, doc_id in enumerate(shard.ids):
            score = validation_score(doc_id, seed)
            if lowest is None or score < lowest[0]:
                lowest = (score, s, d)
            sides["val" if score < val_fraction else "train"].append((s, d))
    docs = len(sides["train"]) + len(sides["val"])
    if docs < 2:
        raise error(f"--data.token_shards {folder!r} holds {docs} document(s): too few to train on one and "
                    "validate on another")
    if not sides["val"]:  # as the text path: the lowest-scoring document, a choice made by the ids alone
        assert lowest is not None
        sides["val"] = [(lowest[1], lowest[2])]
        sides["train"].remove((lowest[1], lowest[2]))
    if not sides["train"]:
        raise error(f"all {docs} documents fell on the validation side (--data.val_fraction {val_fraction}): "
                    "lower it or add documents")
    check_mixture(mixture, {str(src) for shard in shards for src in shard.sources}, error)
    train = _weighted(sides["train"], shards, mixture, seed) if mixture else sides["train"]
    if not train:
        raise error(f"--data.mixture {mixture} gives every training document weight 0: raise a weight")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    dtype = np.dtype(manifest["dtype"])
    arrays = [shard.tokens for shard in shards]
    streams = {side: PackedStream(arrays, _segments(refs, shards), eos, pad, block_size, dtype)
               for side, refs in (("train", train), ("val", sides["val"]))}
    # the training set's identity for resume checks: the shards and the weights that resample them
    identity = hashlib.sha256(f"{manifest_digest(manifest)}{sorted((mixture or {}).items())}".encode()).hexdigest()
    summary = {"token_shards": str(Path(folder)), "manifest_sha256": manifest_digest(manifest), "sha256": identity,
               "docs": docs, "tokens": manifest["splits"]["data"]["tokens"],
               "mixture": dict(mixture or {}), "sources": _source_table(sides["train"], train, shards),
               **{side: {"docs": len(sides[side]), "packed_docs": streams[side].docs,
                         "tokens": streams[side].tokens, "blocks": len(streams[side])} for side in streams}}
    sets = {side: TokenBlocks(st, np.arange(len(st)), st.last_block_tokens) for side, st in streams.items()}
    return ShardSets(sets["train"], sets["val"], summary)


def open_shard_test_set(folder: str, tokenizer: Any, tokenizer_path: str, block_size: int) -> TokenBlocks:
    """The shards' ``heldout`` split (``python -m modeling.tokenize --heldout true``), every document once."""
    manifest = read_manifest(folder)
    check_tokenizer(manifest, tokenizer_path, folder)
    shards = open_shards(folder, "heldout")
    refs = [(s, d) for s, shard in enumerate(shards) for d in range(len(shard.ids))]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    stream = PackedStream([sh.tokens for sh in shards], _segments(refs, shards), eos, pad, block_size,
                          np.dtype(manifest["dtype"]))
    return TokenBlocks(stream, np.arange(len(stream)), stream.last_block_tokens)


def describe(sets: ShardSets, folder: str, block_size: int) -> str:
    """The data summary line training logs: documents per side, blocks, and the training mix by source."""
    info = sets.summary
    mix = ", ".join(f"{k} {v['packed_share']:.1%}" for k, v in info["sources"].items())
    return (f"data: {info['docs']:,} docs from token shards {folder} -> {info['train']['docs']:,} train docs "
            f"({info['train']['packed_docs']:,} packed) in {len(sets.train)} blocks / {info['val']['docs']:,} val "
            f"docs in {len(sets.val)} blocks of {block_size}; training tokens by source: {mix}")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The shards' identity: a hash of the manifest, which holds every shard's token sha256 and the tokenizer's."""
    import json

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _weighted(refs: list[tuple[int, int]], shards: list[Shard], mixture: dict[str, float],
              seed: int) -> list[tuple[int, int]]:
    keyed = []
    for s, d in refs:
        doc_id = shards[s].ids[d]
        n = copies(doc_id, float(mixture.get(str(shards[s].sources[d]), 1.0)), seed)
        keyed.extend((_score(f"{seed}\x00order\x00{k}\x00{doc_id}"), s, d) for k in range(n))
    keyed.sort()
    return [(s, d) for _, s, d in keyed]


def _segments(refs: list[tuple[int, int]], shards: list[Shard]) -> np.ndarray:
    """(shard, start, stop) of each referenced document, vectorised per shard (millions of documents)."""
    pairs = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(pairs), 3), dtype=np.int64)
    out[:, 0] = pairs[:, 0]
    for s in np.unique(pairs[:, 0]):
        rows = pairs[:, 0] == s
        offsets = np.asarray(shards[int(s)].offsets)
        out[rows, 1], out[rows, 2] = offsets[pairs[rows, 1]], offsets[pairs[rows, 1] + 1]
    return out


def _source_table(natural: list[tuple[int, int]], packed: list[tuple[int, int]],
                  shards: list[Shard]) -> dict[str, dict[str, Any]]:
    """Per source: training documents and tokens before and after weighting, and the packed token share."""
    table: dict[str, dict[str, Any]] = {}
    for key, refs in (("docs", natural), ("packed_docs", packed)):
        for s, d in refs:
            row = table.setdefault(str(shards[s].sources[d]), {"docs": 0, "tokens": 0, "packed_docs": 0,
                                                                "packed_tokens": 0})
            row[key] += 1
            row["tokens" if key == "docs" else "packed_tokens"] += int(shards[s].offsets[d + 1] - shards[s].offsets[d])
    total = sum(r["packed_tokens"] for r in table.values()) or 1
    for row in table.values():
        row["packed_share"] = round(row["packed_tokens"] / total, 4)
    return dict(sorted(table.items()))
