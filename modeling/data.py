"""LightningDataModule: curated shards (or a Hugging Face dataset) -> token cache on disk -> packed blocks.

Tokenizing is the slow part of data loading and its result never changes for a given corpus, tokenizer and
block size, so ``prepare_data`` (one process per node) does it once into ``cache_dir/<key>/`` and every later
run, restart and DDP rank memory-maps the result::

    cache_dir/<key>/blocks.npy   (n_blocks, block_size) uint16/uint32 token ids, documents joined by eos
    cache_dir/<key>/meta.json    what went in (files, tokenizer, block size) and what came out (docs, tokens)

The key hashes the input files (path, size, mtime; for ``data.hf_dataset`` the local ``data_files`` or dataset
folder, and the name/config/revision), the tokenizer files and the block size: change any of them
and a new cache is built; delete the folder to force a rebuild.

The blocks are :class:`modeling.packing.PackedBlocks`' (documents tokenized without special tokens, eos after
each, cut every ``block_size`` tokens), the packing ``modeling.evaluate`` scores too; the DataLoaders read them
through ``modeling.token_blocks``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from common.errors import UserError
from common.files import InputError, names_a_local_path
from modeling.corpus import iter_text_batches, resolve_text_files
from modeling.packing import PackedBlocks
from modeling.token_blocks import ResumableSampler, TokenBlocks
from modeling.tokenizer.load import load_tokenizer

#: Bump when the cache layout changes, so old caches are rebuilt instead of misread.
CACHE_VERSION = 1


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
    """Split to read; the validation split is carved out of it by ``data.val_fraction``."""
    streaming: bool = False
    """Stream rows instead of downloading the whole dataset first (use with ``data.max_docs``)."""
    revision: str | None = None
    """Dataset revision (git tag/commit); part of the cache key."""


class TextDataModule(LightningDataModule):
    """Tokenize once, pack documents into ``block_size`` blocks separated by eos, split train/val by seed."""

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
    ) -> None:
        """
        Args:
            tokenizer: Tokenizer directory (``python -m modeling.tokenizer train --output DIR``) or hub name.
            path: Curated shards: a directory, glob or list of parquet/jsonl/txt files.
            hf_dataset: A Hugging Face dataset instead of ``path``.
            text_column: Column holding the documents.
            block_size: Tokens per training example; must not exceed the model's positions.
            batch_size: Blocks per batch per device.
            val_fraction: Share of blocks held out for validation (at least one block).
            seed: Seed of the train/val split and of the per-epoch shuffle.
            max_docs: Read at most this many documents (a quick run, or a bound on a streamed dataset).
            cache_dir: Where tokenized corpora are kept, one folder per (data, tokenizer, block size).
            num_workers: DataLoader worker processes (blocks come from a memory map: 0-2 is plenty).
            tokenize_batch_size: Documents per tokenizer call while building the cache.
        """
        super().__init__()
        self.save_hyperparameters()
        if (path is None) == (hf_dataset is None):
            raise DataConfigError("give exactly one of --data.path (curated shards) and --data.hf_dataset "
                                  f"(a Hugging Face dataset); got path={path!r}, hf_dataset={hf_dataset!r}")
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
        self.train_set: TokenBlocks | None = None
        self.val_set: TokenBlocks | None = None
        self._sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None
        # Inputs that cannot be read fail here, before a trainer starts or the tokenizing begins.
        if path is not None:
            self._files()
        else:
            _check_hf_dataset(hf_dataset)

    @property
    def vocab_size(self) -> int:
        """Token ids the model must embed: the tokenizer's base vocabulary plus added tokens."""
        return len(self.tokenizer)

    # ------------------------------------------------------------------------------- Lightning
    def prepare_data(self) -> None:
        """Build the token cache unless it exists. Lightning runs this on one process per node."""
        self.build_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cache = self.build_cache()  # no-op when prepare_data already built it (always, under Lightning)
        meta = json.loads((cache / "meta.json").read_text())
        blocks = np.load(cache / "blocks.npy", mmap_mode="r")
        n = len(blocks)
        if n < 2:
            raise DataConfigError(
                f"the corpus makes only {meta['tokens']} tokens, {n} block of --data.block_size {self.block_size}: "
                "too little to hold out a validation block. Add data or lower --data.block_size."
            )
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = min(n - 1, max(1, round(n * self.val_fraction)))
        last_len = meta["last_block_tokens"]
        self.val_set = TokenBlocks(blocks, np.sort(order[:n_val]), last_len)
        self.train_set = TokenBlocks(blocks, order[n_val:], last_len)
        rank_zero_info(f"data: {meta['docs']:,} docs, {meta['tokens']:,} tokens -> {len(self.train_set)} train / "
                       f"{len(self.val_set)} val blocks of {self.block_size} (cache {cache})")

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
        return self.val_dataloader()

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
        """What the training data is, for checkpoints to record (``modeling.runs``): the token stream's hash and
        size (so moving or touching the corpus changes nothing, editing it does), the split and the tokenizer."""
        cache = self.build_cache()
        meta = json.loads((cache / "meta.json").read_text())
        if "tokens_sha256" not in meta:  # a cache built before the hash was recorded: hash it once, keep it
            blocks = np.load(cache / "blocks.npy", mmap_mode="r").reshape(-1)
            digest = hashlib.sha256()
            for start in range(0, meta["tokens"], 1 << 24):
                digest.update(np.ascontiguousarray(blocks[start:min(meta["tokens"], start + (1 << 24))]).tobytes())
            meta["tokens_sha256"] = digest.hexdigest()
            tmp = cache / f".meta-{os.getpid()}.json"
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, cache / "meta.json")
        return {"tokens_sha256": meta["tokens_sha256"], "docs": meta["docs"], "tokens": meta["tokens"],
                "source": self._describe(), "block_size": self.block_size, "val_fraction": self.val_fraction,
                "seed": self.seed, "tokenizer": self.tokenizer_path,
                "tokenizer_sha256": _tokenizer_fingerprint(self.tokenizer)}

    # ------------------------------------------------------------------------------- the cache
    def cache_key(self) -> str:
        """Hash of everything that determines the token blocks."""
        h = hashlib.sha256()
        parts = {"version": CACHE_VERSION, "source": self._source_fingerprint(), "block_size": self.block_size,
                 "tokenizer": _tokenizer_fingerprint(self.tokenizer), "text_column": self.text_column,
                 "max_docs": self.max_docs}
        h.update(json.dumps(parts, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def build_cache(self) -> Path:
        """Tokenize and pack into ``cache_dir/<key>`` unless already there; returns that folder."""
        final = self.cache_dir / self.cache_key()
        if (final / "meta.json").exists():
            return final
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dtype = np.uint16 if self.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=self.cache_dir))
        try:
            packed = PackedBlocks(self._iter_texts(), self.tokenizer, self.block_size)
            digest = hashlib.sha256()  # of the token stream: the data's identity, recorded in every checkpoint
            with open(tmp / "tokens.bin", "wb") as out:
                for block in packed:  # written back to back, the blocks are the token stream
                    flat = np.asarray(block, dtype=dtype)
                    flat.tofile(out)
                    digest.update(flat.tobytes())
            docs, tokens = packed.docs, packed.tokens
            if docs == 0:
                raise DataConfigError(f"no documents with text in column {self.text_column!r} of {self._describe()}: "
                                      f"check {'--data.path' if self.path is not None else '--data.hf_dataset'}, "
                                      "--data.text_column and --data.max_docs")
            stream = np.memmap(tmp / "tokens.bin", dtype=dtype, mode="r", shape=(tokens,))
            n_blocks = -(-tokens // self.block_size)
            pad = self.tokenizer.pad_token_id
            pad = pad if pad is not None else self.tokenizer.eos_token_id
            blocks = np.lib.format.open_memmap(tmp / "blocks.npy", mode="w+", dtype=dtype,
                                               shape=(n_blocks, self.block_size))
            blocks.reshape(-1)[:tokens] = stream
            blocks.reshape(-1)[tokens:] = pad
            blocks.flush()
            del blocks, stream
            (tmp / "tokens.bin").unlink()
            last = tokens - (n_blocks - 1) * self.block_size
            meta = {"version": CACHE_VERSION, "docs": docs, "tokens": tokens, "blocks": n_blocks,
                    "block_size": self.block_size, "last_block_tokens": last, "dtype": np.dtype(dtype).name,
                    "source": self._source_fingerprint(), "tokenizer": self.tokenizer_path,
                    "tokens_sha256": digest.hexdigest()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            try:
                os.replace(tmp, final)  # atomic: a crashed build never leaves a half cache under the key
            except OSError:
                if not (final / "meta.json").exists():  # another node finished first on a shared disk: fine
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        rank_zero_info(f"data: tokenized {docs:,} docs into {tokens:,} tokens -> {final}")
        return final

    # ---------------------------------------------------------------------------------- helpers
    def _iter_texts(self) -> Iterator[list[str]]:
        if self.path is not None:
            files = self._files()
            yield from iter_text_batches(files, self.text_column, self.tokenize_batch_size, self.max_docs)
            return
        ds = self._load_hf_dataset()
        batch: list[str] = []
        for i, row in enumerate(ds):
            if self.max_docs is not None and i >= self.max_docs:
                break
            text = row.get(self.text_column)
            if isinstance(text, str) and text:
                batch.append(text)
            if len(batch) >= self.tokenize_batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _files(self) -> list[Path]:
        assert self.path is not None
        try:
            return resolve_text_files(self.path, self.text_column, column_option="--data.text_column")
        except InputError as err:
            raise DataConfigError(f"--data.path: {err}") from err

    def _load_hf_dataset(self) -> Any:
        import datasets

        cfg = self.hf_dataset
        assert cfg is not None
        try:
            ds = datasets.load_dataset(cfg.name, cfg.config, data_files=cfg.data_files, split=cfg.split,
                                       streaming=cfg.streaming, revision=cfg.revision)
        except (FileNotFoundError, ConnectionError, ValueError) as err:  # not found, offline, no such config/split
            raise DataConfigError(
                f"--data.hf_dataset: cannot load {cfg.name!r} (config={cfg.config!r}, split={cfg.split!r}, "
                f"data_files={cfg.data_files!r}): {err}. Check --data.hf_dataset.name and its data_files, config "
                "and split; a hub dataset needs network access or the datasets cache"
            ) from err
        if ds.column_names is not None and self.text_column not in ds.column_names:
            raise DataConfigError(f"--data.hf_dataset {cfg.name!r} has no column {self.text_column!r}; it has "
                                  f"{ds.column_names}. Set --data.text_column.")
        return ds

    def _source_fingerprint(self) -> Any:
        if self.path is not None:
            return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in self._files()]
        assert self.hf_dataset is not None
        # name/config/revision/split identify a hub dataset; local files are covered by their path, size and mtime
        return {**asdict(self.hf_dataset), "local_files": _local_dataset_files(self.hf_dataset)}

    def _describe(self) -> str:
        return f"--data.path {self.path!r}" if self.path is not None else f"--data.hf_dataset {self.hf_dataset}"

    def _trainer_attached(self) -> bool:
        return self.trainer is not None

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer_attached() else 1


def _local_dataset_files(cfg: HFDatasetConfig) -> list[list[Any]]:
    """(path, size, mtime) of each local file behind ``data.hf_dataset``: the matches of ``data_files`` (relative
    to ``name`` when that is a local folder, as ``load_dataset`` reads them), or every file of a local dataset
    folder. Empty for a hub dataset, whose name/config/revision identify it."""
    base = Path(cfg.name).expanduser()
    base_dir = base if base.is_dir() else None
    patterns = [cfg.data_files] if isinstance(cfg.data_files, str) else list(cfg.data_files or [])
    if not patterns and base_dir is not None:
        patterns = ["**/*"]
    found: set[Path] = set()
    for pattern in patterns:
        where = Path(pattern).expanduser()
        if not where.is_absolute() and base_dir is not None:
            where = base_dir / where
        found.update(Path(m).resolve() for m in glob.glob(str(where), recursive=True) if Path(m).is_file())
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(found)]


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


def _check_hf_dataset(cfg: HFDatasetConfig | None) -> None:
    """Local parts of ``--data.hf_dataset`` that do not exist fail before ``load_dataset`` is tried."""
    assert cfg is not None
    name = Path(cfg.name).expanduser()
    if not name.exists() and names_a_local_path(cfg.name):
        raise DataConfigError(f"--data.hf_dataset.name {cfg.name!r}: no such folder. Give a local dataset folder, "
                              "a hub dataset name, or a builder (parquet, json, text) with --data.hf_dataset.data_files")
    if cfg.data_files is None or not (name.is_dir() or _is_packaged_builder(cfg.name)):
        return  # a hub dataset's data_files are paths inside its repository, not local ones
    patterns = [cfg.data_files] if isinstance(cfg.data_files, str) else list(cfg.data_files)
    local = [p for p in patterns if "://" not in p]
    if local and not _local_dataset_files(cfg):
        where = f" (relative to {cfg.name!r})" if name.is_dir() else ""
        raise DataConfigError(f"--data.hf_dataset.data_files {cfg.data_files!r} matches no file{where}: check the "
                              "paths or globs")


def _is_packaged_builder(name: str) -> bool:
    """Whether ``name`` is one of the datasets library's file builders (``parquet``, ``json``, ``csv``, ``text``...)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return name in _PACKAGED_DATASETS_MODULES


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
