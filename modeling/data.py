"""LightningDataModule: curated shards (or a Hugging Face dataset) -> token cache on disk -> packed blocks.

Tokenizing is the slow part of data loading and its result never changes for a given corpus, tokenizer, block
size and split, so ``prepare_data`` (one process per node) does it once into ``cache_dir/<key>/`` and every
later run, restart and DDP rank memory-maps the result::

    cache_dir/<key>/train.npy   (n_blocks, block_size) uint16/uint32 token ids of the training documents
    cache_dir/<key>/val.npy     the same for the validation documents, packed apart
    cache_dir/<key>/meta.json   what went in (files, tokenizer, block size, split) and what came out, per set

**The split is by document** (:mod:`modeling.splits`): a stable hash of each document's id (``data.id_column``;
its text where there is none), salted by ``data.seed``, puts about ``data.val_fraction`` of the documents on
the validation side; the two sides are packed separately, so no document lends tokens to both, and the split
does not depend on file order or sharding. ``test`` scores a third set, held-out documents that neither side
read (``data.test_path``, by default ``heldout/`` beside a curation output's ``data/``), cached the same way
as ``test.npy`` under its own key; with none, ``test`` stops and says how to give some.

A key hashes the input files (path, size, mtime; for ``data.hf_dataset`` the local ``data_files`` or dataset
folder, and the name/config/revision), the tokenizer files, the block size, the columns and the split
(``val_fraction``, ``seed``) plus :data:`CACHE_VERSION`: change any of them and a new cache is built; delete
the folder to force a rebuild.

The blocks are :class:`modeling.packing.BlockPacker`'s (documents tokenized without special tokens, eos after
each, cut every ``block_size`` tokens), the packing ``modeling.evaluate`` scores too; the DataLoaders read them
through ``modeling.token_blocks``.

**Token shards** (``data.token_shards``, written by ``python -m modeling.tokenize`` as a Ray Data job) replace
all of this for large corpora: nothing is tokenized or cached, every rank memory-maps the shards and splits and
packs them by the same rules (:mod:`modeling.shard_data`); ``data.mixture`` weighs their sources.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from common.errors import UserError
from common.files import InputError
from modeling.block_cache import BlockWriter, build_once
from modeling.corpus import iter_keyed_documents, iter_text_batches, resolve_text_files
from modeling.heldout import resolve_test_files
from modeling.hf_source import check_hf_dataset, iter_hf_documents, load_hf_dataset, local_dataset_files
from modeling.shard_data import describe, open_shard_sets, open_shard_test_set
from modeling.splits import pack_split
from modeling.token_blocks import ResumableSampler, TokenBlocks
from modeling.token_shards import check_tokenizer, read_manifest
from modeling.tokenizer.load import load_tokenizer

#: Bump when the cache layout or the meaning of its blocks changes, so old caches are rebuilt instead of misread.
#: 2: train/validation split by document (train.npy, val.npy) instead of by block of one blocks.npy.
CACHE_VERSION = 2

#: How the split is made, recorded in the cache key, its meta.json and every checkpoint's run identity.
SPLIT_METHOD = "by document"


class DataConfigError(UserError):
    """The data options or inputs cannot be used. The message names the option (as the ``--data.*`` flag of
    ``python -m modeling.train``; the same key under ``data:`` in a config) or file to fix."""


@dataclass(frozen=True)
class HFDatasetConfig:
    """A Hugging Face dataset to train on instead of local shards."""

    name: str
    """Dataset name on the hub, a local dataset folder, or a builder (``parquet``, ``json``, ``text``) used
    with ``data_files`` (``load_dataset``'s first argument)."""
    data_files: str | list[str] | None = None
    """Files for a builder name, e.g. ``name: parquet`` + ``data_files: data/*.parquet``."""
    config: str | None = None
    """Dataset configuration, e.g. ``20220301.en`` for Wikipedia."""
    split: str = "train"
    """Split to read; the validation documents are carved out of it by ``data.val_fraction``."""
    streaming: bool = False
    """Stream rows instead of downloading the whole dataset first (use with ``data.max_docs``)."""
    revision: str | None = None
    """Dataset revision (git tag/commit); part of the cache key."""


class TextDataModule(LightningDataModule):
    """Tokenize once, hold out validation documents by a hash of their id, pack each side into ``block_size``
    blocks separated by eos; ``test`` reads held-out documents, never the validation ones."""

    def __init__(
        self,
        tokenizer: str,
        path: str | list[str] | None = None,
        hf_dataset: HFDatasetConfig | None = None,
        text_column: str = "text",
        block_size: int = 512,
        batch_size: int = 8,
        val_fraction: float = 0.05,
        seed: int = 0,
        max_docs: int | None = None,
        cache_dir: str = "out/token-cache",
        num_workers: int = 0,
        tokenize_batch_size: int = 1000,
        id_column: str | None = "id",
        test_path: str | list[str] | None = None,
        token_shards: str | None = None,
        mixture: dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            tokenizer: Tokenizer directory (``python -m modeling.tokenizer train --output DIR``) or hub name.
            path: Curated shards: a directory, glob or list of parquet/jsonl/txt files.
            hf_dataset: A Hugging Face dataset instead of ``path``.
            text_column: Column holding the documents.
            block_size: Tokens per training example; must not exceed the model's positions.
            batch_size: Blocks per batch per device.
            val_fraction: Share of documents held out for validation, chosen by a hash of each document's id
                (at least one document); changing it rebuilds the token cache.
            seed: Salt of the validation split's hash and seed of the per-epoch shuffle.
            max_docs: Read at most this many documents (a quick run, or a bound on a streamed dataset).
            cache_dir: Where tokenized corpora are kept, one folder per (data, tokenizer, block size, split).
            num_workers: DataLoader worker processes (blocks come from a memory map: 0-2 is plenty).
            tokenize_batch_size: Documents per tokenizer call while building the cache.
            id_column: Column naming each document, whose hash decides its side of the split (curated shards
                have ``id``); documents without it are keyed by their text. Null: always by text.
            test_path: Held-out documents for ``test`` (a folder, glob or files, read like ``path``): documents
                neither training nor validation read. Default: ``heldout/`` of the curation output that ``path``
                names, if it has one; without either, ``test`` stops rather than score the validation split.
                With ``token_shards``: their ``heldout`` split, unless this is given.
            token_shards: Token shards of ``python -m modeling.tokenize`` instead of ``path``: memory-mapped by
                every rank, nothing tokenized; made with the same tokenizer as ``tokenizer`` (checked).
            mixture: Token shards only: training weight per source (``{web: 0.5, clinical: 2.0}``; others 1),
                applied per document by a hash of its id; validation keeps the natural mix.
        """
        super().__init__()
        self.save_hyperparameters()
        if sum(x is not None for x in (path, hf_dataset, token_shards)) != 1:
            raise DataConfigError("give exactly one of --data.path (curated shards), --data.hf_dataset (a Hugging "
                                  "Face dataset) and --data.token_shards (python -m modeling.tokenize); got "
                                  f"path={path!r}, hf_dataset={hf_dataset!r}, token_shards={token_shards!r} (to replace a "
                                  "config's path, add --data.path null)")
        if mixture and token_shards is None:
            raise DataConfigError("--data.mixture weighs the sources of --data.token_shards; tokenize the corpus "
                                  "with python -m modeling.tokenize and train with --data.token_shards DIR")
        if path is not None and not (path.strip() if isinstance(path, str) else path):
            raise DataConfigError("--data.path is empty: give the curated shards (a folder, glob or list of files)")
        _check_numbers(block_size, batch_size, val_fraction, max_docs, num_workers, tokenize_batch_size)
        if Path(cache_dir).expanduser().exists() and not Path(cache_dir).expanduser().is_dir():
            raise DataConfigError(f"--data.cache_dir {cache_dir!r} is a file, not a folder: point it at a folder "
                                  "for the token caches (it is created if missing)")
        self.tokenizer_path = tokenizer
        self.tokenizer = load_tokenizer(tokenizer, "--data.tokenizer", error=DataConfigError)
        self.path = path
        self.hf_dataset = hf_dataset
        self.text_column = text_column
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.max_docs = max_docs
        self.cache_dir = Path(cache_dir)
        self.num_workers = num_workers
        self.tokenize_batch_size = tokenize_batch_size
        self.id_column = id_column
        self.test_path = test_path
        self.token_shards = token_shards
        self.mixture = dict(mixture) if mixture else None
        self.shard_summary: dict[str, Any] | None = None
        self.train_set: TokenBlocks | None = None
        self.val_set: TokenBlocks | None = None
        self.test_set: TokenBlocks | None = None
        self._sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None
        # Inputs that cannot be read fail here, before a trainer starts or the tokenizing begins.
        if path is not None:
            self._files()
        elif token_shards is not None:
            check_tokenizer(read_manifest(token_shards), tokenizer, token_shards)
        else:
            check_hf_dataset(hf_dataset, DataConfigError)
        if test_path is not None:
            self._test_files()

    @property
    def vocab_size(self) -> int:
        """Token ids the model must embed: the tokenizer's base vocabulary plus added tokens."""
        return len(self.tokenizer)

    @property
    def eos_token_id(self) -> int:
        """The eos the packer puts after every document (``model.document_mask`` finds the documents by it)."""
        return self.tokenizer.eos_token_id

    # ------------------------------------------------------------------------------- Lightning
    def prepare_data(self) -> None:
        """Build the token cache unless it exists (for ``test``, the held-out set's only: training's is not
        needed). Lightning runs this on one process per node."""
        if self._testing():
            if not self._shard_test():
                self.build_test_cache()
        elif self.token_shards is None:
            self.build_cache()

    def setup(self, stage: str | None = None) -> None:
        if stage == "test":
            if self.test_set is None and self._shard_test():
                self.test_set = open_shard_test_set(self.token_shards, self.tokenizer, self.tokenizer_path,
                                                    self.block_size)
                rank_zero_info(f"data: test on the heldout split of {self.token_shards} ({len(self.test_set)} blocks)")
            if self.test_set is None:
                cache = self.build_test_cache()
                meta = json.loads((cache / "meta.json").read_text())
                self.test_set = _open_set(cache, "test", meta)
                rank_zero_info(f"data: test on {meta['test']['docs']:,} held-out docs, {meta['test']['tokens']:,} "
                               f"tokens -> {len(self.test_set)} blocks (cache {cache})")
            return
        if self.train_set is not None:
            return
        if self.token_shards is not None:
            sets = open_shard_sets(self.token_shards, self.tokenizer, self.tokenizer_path, self.block_size,
                                   self.val_fraction, self.seed, self.mixture, DataConfigError)
            self.train_set, self.val_set, self.shard_summary = sets.train, sets.val, sets.summary
            rank_zero_info(describe(sets, self.token_shards, self.block_size))
            return
        cache = self.build_cache()  # no-op when prepare_data already built it (always, under Lightning)
        meta = json.loads((cache / "meta.json").read_text())
        self.train_set, self.val_set = _open_set(cache, "train", meta), _open_set(cache, "val", meta)
        rank_zero_info(f"data: {meta['docs']:,} docs, {meta['tokens']:,} tokens -> {meta['train']['docs']:,} train "
                       f"docs in {len(self.train_set)} blocks / {meta['val']['docs']:,} val docs in "
                       f"{len(self.val_set)} blocks of {self.block_size} (cache {cache})")

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer_attached() else (1, 0)
        self._sampler = ResumableSampler(self.train_set, num_replicas=world, rank=rank, seed=self.seed)
        if self._resume is not None:
            epoch, batches = self._resume
            self._sampler.resume_at(epoch, batches * self.batch_size)
            self._resume = None
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self._sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        """The held-out documents: the validation split chose the checkpoint (and stopped training), so scoring
        it again would report a number the selection has already flattered."""
        assert self.test_set is not None, "call setup('test') first"
        return DataLoader(self.test_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def state_dict(self) -> dict[str, Any]:
        """Data position saved in every checkpoint: epoch and batches this rank has consumed in it."""
        if not self._trainer_attached():
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.fit_loop.epoch_progress.current.processed, "batches": progress.processed,
                "batch_size": self.batch_size, "world_size": self.trainer.world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict["batch_size"] != self.batch_size or state_dict["world_size"] != self._world_size():
            rank_zero_info("data: batch size or device count changed since the checkpoint; the resumed epoch "
                           "restarts from its first batch instead of the exact position")
            return
        self._resume = (state_dict["epoch"], state_dict["batches"])
        # Lightning warns that a mid-epoch resume with a plain DataLoader is inexact; our sampler makes it exact.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def fingerprint(self) -> dict[str, Any]:
        """What the training data is, for checkpoints to record (``modeling.runs``): the token streams' hash and
        size (so moving or touching the corpus changes nothing, editing it does), the split and the tokenizer."""
        if self.token_shards is not None:
            if self.shard_summary is None:
                self.setup("fit")
            info = self.shard_summary or {}
            return {"tokens_sha256": info["sha256"], "docs": info["docs"], "tokens": info["tokens"],
                    "source": f"--data.token_shards {self.token_shards!r}", "block_size": self.block_size,
                    "split": SPLIT_METHOD, "val_fraction": self.val_fraction, "seed": self.seed,
                    "tokenizer": self.tokenizer_path, "tokenizer_sha256": _tokenizer_fingerprint(self.tokenizer),
                    "mixture": info["mixture"], "train_sources": info["sources"]}
        meta = json.loads((self.build_cache() / "meta.json").read_text())
        return {"tokens_sha256": meta["tokens_sha256"], "docs": meta["docs"], "tokens": meta["tokens"],
                "source": self._describe(), "block_size": self.block_size, "split": SPLIT_METHOD,
                "val_fraction": self.val_fraction, "seed": self.seed, "tokenizer": self.tokenizer_path,
                "tokenizer_sha256": _tokenizer_fingerprint(self.tokenizer)}

    # ------------------------------------------------------------------------------- the caches
    def cache_key(self) -> str:
        """Hash of everything that determines the train and validation blocks."""
        return _key({"version": CACHE_VERSION, "source": self._source_fingerprint(), "block_size": self.block_size,
                     "tokenizer": _tokenizer_fingerprint(self.tokenizer), "text_column": self.text_column,
                     "max_docs": self.max_docs, "split": self._split_spec()})

    def test_cache_key(self) -> str:
        """Hash of everything that determines the test blocks (the held-out files, tokenizer, block size)."""
        return _key({"version": CACHE_VERSION, "set": "test", "source": _files_fingerprint(self._test_files()),
                     "block_size": self.block_size, "tokenizer": _tokenizer_fingerprint(self.tokenizer),
                     "text_column": self.text_column})

    def build_cache(self) -> Path:
        """Tokenize the training corpus into ``cache_dir/<key>`` (``train.npy``, ``val.npy``) unless already
        there; returns that folder."""
        return self._build(self.cache_key(), self._write_train_val)

    def build_test_cache(self) -> Path:
        """Tokenize the held-out documents into ``cache_dir/<test key>/test.npy`` unless already there."""
        return self._build(self.test_cache_key(), self._write_test)

    def _build(self, key: str, write: Callable[[Path, np.dtype], dict[str, Any]]) -> Path:
        dtype = np.dtype(np.uint16 if self.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)
        head = {"version": CACHE_VERSION, "block_size": self.block_size, "dtype": dtype.name,
                "tokenizer": self.tokenizer_path}
        return build_once(self.cache_dir / key, lambda folder: {**head, **write(folder, dtype)})

    def _write_train_val(self, folder: Path, dtype: np.dtype) -> dict[str, Any]:
        parts, lowest = self._pack_split(folder, dtype, forced=None)
        docs = parts["train"]["docs"] + parts["val"]["docs"]
        if docs == 0:
            raise DataConfigError(f"no documents with text in column {self.text_column!r} of {self._describe()}: "
                                  f"check {'--data.path' if self.path is not None else '--data.hf_dataset'}, "
                                  "--data.text_column and --data.max_docs")
        if docs == 1:
            raise DataConfigError(f"{self._describe()} holds 1 document: too little to hold out a validation "
                                  "document and train on another. Add documents (or raise --data.max_docs).")
        if parts["val"]["docs"] == 0:
            # no document's hash fell under val_fraction (a small corpus): the lowest one is the validation set,
            # a choice that depends on the documents' keys only, not on their order
            rank_zero_info(f"data: no document drew a validation score under --data.val_fraction "
                           f"{self.val_fraction}; holding out the lowest-scoring one")
            parts, _ = self._pack_split(folder, dtype, forced=lowest)
        if parts["train"]["docs"] == 0:
            raise DataConfigError(f"all {docs} documents of {self._describe()} fell on the validation side "
                                  f"(--data.val_fraction {self.val_fraction}): lower it or add documents")
        combined = hashlib.sha256((parts["train"]["tokens_sha256"] + parts["val"]["tokens_sha256"]).encode())
        return {"docs": docs, "tokens": parts["train"]["tokens"] + parts["val"]["tokens"],
                "blocks": parts["train"]["blocks"] + parts["val"]["blocks"], "split": self._split_spec(),
                "train": parts["train"], "val": parts["val"], "source": self._source_fingerprint(),
                "tokens_sha256": combined.hexdigest()}

    def _write_test(self, folder: Path, dtype: np.dtype) -> dict[str, Any]:
        files = self._test_files()
        writer = BlockWriter(folder, "test", self.tokenizer, self.block_size, dtype)
        for texts in iter_text_batches(files, self.text_column, self.tokenize_batch_size):
            writer.add(texts)
        part = writer.close()
        if part["docs"] == 0:
            raise DataConfigError(f"the held-out files {[str(f) for f in files[:3]]} hold no documents with text "
                                  f"in column {self.text_column!r}: check --data.test_path and --data.text_column")
        return {"docs": part["docs"], "tokens": part["tokens"], "test": part, "source": _files_fingerprint(files)}

    # ---------------------------------------------------------------------------------- helpers
    def _pack_split(self, folder: Path, dtype: np.dtype,
                    forced: str | None) -> tuple[dict[str, dict[str, Any]], str | None]:
        writers = {side: BlockWriter(folder, side, self.tokenizer, self.block_size, dtype) for side in ("train", "val")}
        return pack_split(self._iter_documents(), writers, self.val_fraction, self.seed, forced)

    def _split_spec(self) -> dict[str, Any]:
        return {"method": SPLIT_METHOD, "val_fraction": self.val_fraction, "seed": self.seed,
                "id_column": self.id_column}

    def _iter_documents(self) -> Iterator[list[tuple[str, str]]]:
        """(key, text) batches of the training corpus; the key (id, or the text) decides the split."""
        if self.path is not None:
            yield from iter_keyed_documents(self._files(), self.text_column, self.id_column,
                                            self.tokenize_batch_size, self.max_docs)
            return
        assert self.hf_dataset is not None
        ds = load_hf_dataset(self.hf_dataset, self.text_column, DataConfigError)
        yield from iter_hf_documents(ds, self.text_column, self.id_column, self.tokenize_batch_size, self.max_docs)

    def _files(self) -> list[Path]:
        assert self.path is not None
        try:
            return resolve_text_files(self.path, self.text_column, column_option="--data.text_column")
        except InputError as err:
            raise DataConfigError(f"--data.path: {err}") from err

    def _test_files(self) -> list[Path]:
        """The held-out files ``test`` reads: ``data.test_path``, else the curation output's ``heldout/``."""
        return resolve_test_files(self.test_path, self.path, self._files() if self.path is not None else [],
                                  self.text_column, DataConfigError)

    def _source_fingerprint(self) -> Any:
        if self.path is not None:
            return _files_fingerprint(self._files())
        assert self.hf_dataset is not None
        # name/config/revision/split identify a hub dataset; local files are covered by their path, size and mtime
        return {**asdict(self.hf_dataset), "local_files": local_dataset_files(self.hf_dataset)}

    def _describe(self) -> str:
        return f"--data.path {self.path!r}" if self.path is not None else f"--data.hf_dataset {self.hf_dataset}"

    def _shard_test(self) -> bool:
        """``test`` reads the token shards' heldout split (no --data.test_path given)."""
        return self.token_shards is not None and self.test_path is None

    def _trainer_attached(self) -> bool:
        return self.trainer is not None

    def _testing(self) -> bool:
        return self._trainer_attached() and self.trainer.state.fn == TrainerFn.TESTING

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer_attached() else 1


def _open_set(cache: Path, name: str, meta: dict[str, Any]) -> TokenBlocks:
    blocks = np.load(cache / f"{name}.npy", mmap_mode="r")
    return TokenBlocks(blocks, np.arange(len(blocks)), meta[name]["last_block_tokens"])


def _files_fingerprint(files: list[Path]) -> list[list[Any]]:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _check_numbers(block_size: int, batch_size: int, val_fraction: float, max_docs: int | None, num_workers: int,
                   tokenize_batch_size: int) -> None:
    if block_size < 2:
        raise DataConfigError(f"--data.block_size must be at least 2, got {block_size}")
    if batch_size < 1:
        raise DataConfigError(f"--data.batch_size must be at least 1 (blocks per batch per device), got {batch_size}")
    if not 0.0 < val_fraction < 1.0:
        raise DataConfigError(f"--data.val_fraction must be in (0, 1), got {val_fraction}")
    if max_docs is not None and max_docs < 1:
        raise DataConfigError(f"--data.max_docs must be at least 1 (or null to read every document), got {max_docs}")
    if num_workers < 0:
        raise DataConfigError(f"--data.num_workers must be 0 (load in the main process) or more, got {num_workers}")
    if tokenize_batch_size < 1:
        raise DataConfigError(f"--data.tokenize_batch_size must be at least 1, got {tokenize_batch_size}")


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the vocabulary, merges/pieces, normalizer and special tokens: what decides the token ids."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)]).encode())
    return h.hexdigest()
