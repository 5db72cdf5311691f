"""Shared fixtures for the modeling tests: a tiny tokenizer, tiny curated shards and tiny saved models.

Everything is built locally in temporary directories (no hub access), small enough that a training run on two
CPU cores takes seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

WORDS = ["the", "patient", "was", "given", "aspirin", "after", "the", "myocardial", "infarction", "and", "the", "contract", "says", "the", "party", "of", "the", "first", "part", "shall", "pay", "the", "second", "part", "within", "thirty", "days", "of", "the", "invoice"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    """Varied but learnable English-like documents."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        start = rng.randrange(len(WORDS))
        length = rng.randint(8, 40)
        docs.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(length)) + ".")
    return docs


def write_shards(root: Path, docs: list[str], n_shards: int = 2) -> Path:
    """Write ``docs`` as curated parquet shards (id, text, source) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        part = docs[s::n_shards]
        table = pa.table({"id": [f"{s}-{i}" for i in range(len(part))], "text": part,
                          "source": ["test"] * len(part)})
        pq.write_table(table, root / f"part-{s:05d}.parquet")
    return root


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a small, shared CI machine, two OpenMP threads that spin-wait on each other make
    tiny models 10-30x slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_tokenizer_dir(out: Path) -> Path:
    """A byte-level BPE tokenizer (vocab ~300) with unk/bos/eos/pad, saved as a transformers directory."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_docs(300, seed=1), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer_dir(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two parquet shards of 400 short documents (a few hundred blocks of 32 tokens)."""
    return write_shards(tmp_path_factory.mktemp("shards"), make_docs(400))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer GPT-2 saved with save_pretrained (stands in for a pretrained model)."""
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    out = tmp_path_factory.mktemp("gpt2")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama saved with save_pretrained, with the test tokenizer."""
    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    out = tmp_path_factory.mktemp("llama")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def forms(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, shards_dir: Path,
          gpt2_dir: Path) -> dict[str, Path]:
    """The three model forms evaluate and generate must open (built once for both test files)."""
    from tests.modeling.model_forms import build_forms

    return build_forms(tmp_path_factory.mktemp("forms"), tokenizer_dir, shards_dir, gpt2_dir)


@pytest.fixture(scope="session")
def hf_model(gpt2_dir: Path):
    """The tiny GPT-2 loaded for inference through the commands' shared loader."""
    from modeling.inference import load_model

    return load_model(gpt2_dir, device="cpu", dtype="float32")
