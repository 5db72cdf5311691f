"""TextDataModule: the token cache, packing, the split (by document: see test_data_split.py), exact resume of the data position, input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

from modeling.data import DataConfigError, ResumableSampler, TextDataModule
from modeling.module import IGNORE_INDEX
from tests.modeling.conftest import make_docs, write_shards


def _dm(tokenizer_dir: Path, shards: Path, tmp_path: Path, **kw) -> TextDataModule:
    args = {"tokenizer": str(tokenizer_dir), "path": str(shards), "block_size": 16, "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.1}
    args.update(kw)
    return TextDataModule(**args)


def test_blocks_are_documents_joined_by_eos_and_last_block_is_masked(tokenizer_dir, tmp_path):
    docs = make_docs(7, seed=3)
    shards = write_shards(tmp_path / "shards", docs, n_shards=1)
    dm = _dm(tokenizer_dir, shards, tmp_path, val_fraction=0.3)
    dm.setup("fit")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    encoded = [[*tok(d, add_special_tokens=False)["input_ids"], tok.eos_token_id] for d in docs]
    packed = 0
    # each side packs its own documents, in corpus order, joined by eos and cut every 16 tokens
    for ds in (dm.train_set, dm.val_set):
        blocks = ds.blocks
        real = blocks.reshape(-1)[: (len(blocks) - 1) * 16 + ds.last_block_len].tolist()
        mine = [ids for ids in encoded if _is_run_of(ids, real)]
        expected = [t for ids in mine for t in ids]
        assert blocks.shape == (-(-len(expected) // 16), 16)
        assert real == expected
        packed += len(mine)
        # the final, partial block: its padding (at the end, invisible to causal attention) is not scored
        last = len(blocks) - 1
        item = ds[int(np.where(ds.indices == last)[0][0])]
        n_real = len(expected) - last * 16
        assert (item["labels"][n_real:] == IGNORE_INDEX).all() and (item["labels"][:n_real] >= 0).all()
        assert item["input_ids"][:n_real].tolist() == expected[last * 16:]
    assert packed == len(docs)
    full = dm.train_set[int(np.where(dm.train_set.indices != len(dm.train_set.blocks) - 1)[0][0])]
    assert torch.equal(full["labels"], full["input_ids"])  # every other block: all tokens scored


def _is_run_of(ids: list[int], stream: list[int]) -> bool:
    """Whether ``ids`` (one document and its eos) occurs in ``stream`` right after an eos or at its start."""
    n = len(ids)
    return any(stream[i:i + n] == ids and (i == 0 or stream[i - 1] == ids[-1]) for i in range(len(stream) - n + 1))


def test_cache_is_reused_and_keyed_by_block_size(tokenizer_dir, shards_dir, tmp_path, monkeypatch):
    first = _dm(tokenizer_dir, shards_dir, tmp_path).build_cache()
    calls = []
    dm = _dm(tokenizer_dir, shards_dir, tmp_path)
    monkeypatch.setattr(dm, "_iter_documents", lambda: calls.append(1) or iter(()))
    assert dm.build_cache() == first and calls == []  # a restart (or another rank) does not tokenize again
    other = _dm(tokenizer_dir, shards_dir, tmp_path, block_size=32).build_cache()
    assert other != first and (other / "train.npy").exists() and (other / "val.npy").exists()


def test_split_is_deterministic_disjoint_and_complete(tokenizer_dir, shards_dir, tmp_path):
    # by document now (tests/modeling/test_data_split.py checks the documents); here: the sets are stable
    a, b = _dm(tokenizer_dir, shards_dir, tmp_path), _dm(tokenizer_dir, shards_dir, tmp_path)
    a.setup("fit")
    b.setup("fit")
    assert np.array_equal(a.val_set.blocks, b.val_set.blocks)
    assert np.array_equal(a.train_set.blocks, b.train_set.blocks)
    c = _dm(tokenizer_dir, shards_dir, tmp_path, seed=1)
    c.setup("fit")
    assert not np.array_equal(c.val_set.blocks, a.val_set.blocks)


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 1)])
def test_resumable_sampler_continues_the_same_order(world, rank):
    data = list(range(50))
    full = ResumableSampler(data, num_replicas=world, rank=rank, seed=7)
    full.set_epoch(3)
    resumed = ResumableSampler(data, num_replicas=world, rank=rank, seed=7)
    resumed.resume_at(epoch=3, samples_done=8)
    resumed.set_epoch(2)
    assert len(list(resumed)) == len(list(full))  # another epoch is not skipped
    resumed.set_epoch(3)
    assert list(resumed) == list(full)[8:]
    assert list(resumed) == list(full)  # the skip applies once


def test_empty_corpus_is_a_clear_error(tokenizer_dir, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    pq.write_table(pa.table({"text": ["", None]}, schema=pa.schema([("text", pa.string())])),
                   root / "part-0.parquet")
    with pytest.raises(DataConfigError, match="no documents with text in column 'text'"):
        _dm(tokenizer_dir, root, tmp_path).setup("fit")


def test_too_little_data_for_a_validation_document(tokenizer_dir, tmp_path):
    shards = write_shards(tmp_path / "one", ["one short doc."], n_shards=1)
    with pytest.raises(DataConfigError, match="too little to hold out a validation document"):
        _dm(tokenizer_dir, shards, tmp_path, block_size=64).setup("fit")


def test_missing_tokenizer_and_wrong_column_name_the_fix(tokenizer_dir, shards_dir, tmp_path):
    with pytest.raises(DataConfigError, match=r"no such directory.*modeling.tokenizer train"):
        _dm(tmp_path / "no-tokenizer", shards_dir, tmp_path)
    with pytest.raises(DataConfigError, match=r"no column 'body'.*text_column"):
        _dm(tokenizer_dir, shards_dir, tmp_path, text_column="body").setup("fit")
    with pytest.raises(DataConfigError, match=r"data\.path"):
        _dm(tokenizer_dir, tmp_path / "nowhere", tmp_path).setup("fit")


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_dataset_gives_the_same_blocks_as_the_shards(tokenizer_dir, tmp_path, streaming, monkeypatch):
    import datasets

    from modeling.data import HFDatasetConfig

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # stay inside tmp

    docs = make_docs(30, seed=5)
    shards = write_shards(tmp_path / "shards", docs, n_shards=1)
    from_files = _dm(tokenizer_dir, shards, tmp_path)
    from_files.setup("fit")
    hf = HFDatasetConfig(name="parquet", data_files=str(shards / "part-00000.parquet"), streaming=streaming)
    from_hf = TextDataModule(tokenizer=str(tokenizer_dir), hf_dataset=hf, block_size=16, batch_size=4,
                             cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    from_hf.setup("fit")
    assert from_hf.cache_key() != from_files.cache_key()
    assert np.array_equal(np.asarray(from_hf.train_set.blocks), np.asarray(from_files.train_set.blocks))


def test_hf_dataset_cache_key_covers_its_local_data_files(tokenizer_dir, tmp_path, monkeypatch):
    import json

    import datasets

    from modeling.data import HFDatasetConfig

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    shards = write_shards(tmp_path / "shards", make_docs(20, seed=1), n_shards=1)
    hf = HFDatasetConfig(name="parquet", data_files=str(shards / "*.parquet"))

    def build() -> tuple[str, dict]:
        dm = TextDataModule(tokenizer=str(tokenizer_dir), hf_dataset=hf, block_size=16,
                            cache_dir=str(tmp_path / "cache"))
        cache = dm.build_cache()
        return dm.cache_key(), json.loads((cache / "meta.json").read_text())

    key, meta = build()
    assert meta["docs"] == 20
    assert build()[0] == key  # unchanged files: the same key, the cache is reused
    write_shards(shards, make_docs(35, seed=2), n_shards=1)  # the parquet file is rewritten in place
    new_key, new_meta = build()
    assert new_key != key and new_meta["docs"] == 35  # a new cache from the new file, not the old blocks
    # a local dataset folder as the name, with data_files relative to it, is covered the same way
    in_folder = HFDatasetConfig(name=str(shards), data_files="part-00000.parquet")
    dm = TextDataModule(tokenizer=str(tokenizer_dir), hf_dataset=in_folder, cache_dir=str(tmp_path / "cache"))
    before = dm.cache_key()
    write_shards(shards, make_docs(5, seed=3), n_shards=1)
    assert dm.cache_key() != before
