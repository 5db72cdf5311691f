"""What an export directory says (the model's context, the training block size) and that every directory this
project writes loads with transformers 4.x as well as 5.x, which pyproject's ``transformers>=4.56`` allows.

The 4.x check installs the oldest allowed release and the last 4.x next to the test environment (``pip install
--target``, cached in pytest's cache) and loads each form in a subprocess that imports that transformers."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling.evaluate import EvaluateConfig, evaluate
from modeling.evaluation.perplexity import choose_block_size
from modeling.export import (
    TRAINING_FILE,
    HFExportCallback,
    ModelLoadError,
    export_hf,
    load_checkpoint,
    make_portable,
    merge_lora,
    trained_block_size,
)
from modeling.module import CausalLMModule, LoraConfig, ScratchModelConfig
from modeling.tokenizer import main as tokenizer_main
from tests.modeling.load_forms import read_forms

#: The transformers 4.x releases the exports are loaded with: the oldest pyproject allows and the last 4.x.
TRANSFORMERS_4 = ("4.56.0", "4.57.6")
#: What those releases require besides what the test environment already has (their metadata:
#: ``huggingface-hub<1.0,>=0.34.0``, ``tokenizers<=0.23.0,>=0.22.0``; transformers 5 needs newer ones).
TRANSFORMERS_4_DEPS = ("huggingface_hub>=0.34,<1.0", "tokenizers>=0.22,<=0.23.0")
TEXT = "<|user|>the patient was given aspirin after the myocardial infarction"


def scratch_module(vocab_size: int, arch: str = "gpt2", **scratch) -> CausalLMModule:
    module = CausalLMModule(
        scratch=ScratchModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2,
                                   max_position_embeddings=64, **scratch),
        vocab_size=vocab_size,
    )
    module.configure_model()
    return module


def write_as_training_does(module: CausalLMModule, tokenizer, out: Path, block_size: int) -> Path:
    """The end-of-fit export path (HFExportCallback) with just the trainer parts it reads."""
    trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tokenizer, block_size=block_size))
    HFExportCallback()._write(trainer, module, out)
    return out


def lora_module(base: Path, vocab_size: int) -> CausalLMModule:
    """LoRA on ``base`` with non-zero B matrices (a fresh adapter is the identity and would hide a loader that
    forgot to apply it)."""
    module = CausalLMModule(pretrained=str(base), lora=LoraConfig(r=4), vocab_size=vocab_size)
    module.configure_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return module


# ---------------------------------------------------------------------------------- model_max_length, block size
def test_export_says_the_models_context_and_records_the_training_block_size(tmp_path, tokenizer_dir, shards_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    before = tok.model_max_length
    module = scratch_module(len(tok))  # 64 positions
    out = write_as_training_does(module, tok, tmp_path / "hf", block_size=32)

    assert tok.model_max_length == before  # the data module's tokenizer is not changed by the export
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.model_max_length == 64 == module.model.config.n_positions
    assert json.loads((out / TRAINING_FILE).read_text()) == {"block_size": 32, "document_mask": False}
    assert trained_block_size(out) == 32

    model = AutoModelForCausalLM.from_pretrained(out)
    assert choose_block_size(None, model, saved, str(out)) == (32, "the export's training.json")
    assert choose_block_size(16, model, saved, str(out)) == (16, "--block-size")
    result = evaluate(EvaluateConfig(model=str(out), data=(str(shards_dir),), max_docs=20, device="cpu",
                                     output=str(tmp_path / "metrics.json")))
    lm = result["details"]["language_modeling"]
    assert (lm["block_size"], lm["block_size_from"]) == (32, "the export's training.json")

    # without the record (an export written before training.json), the tokenizer's model_max_length is next
    (out / TRAINING_FILE).unlink()
    assert choose_block_size(None, model, saved, str(out)) == (64, "the tokenizer's model_max_length")


def test_reexport_without_block_size_drops_a_stale_block_size(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    module = scratch_module(len(tok))
    out = export_hf(module, tok, tmp_path / "hf", block_size=32)
    assert trained_block_size(out) == 32
    export_hf(module, tok, out)
    assert json.loads((out / TRAINING_FILE).read_text()) == {"document_mask": False}  # no stale block size
    assert trained_block_size(out) is None


def test_adapter_and_merged_exports_say_the_base_context_and_keep_the_block_size(tmp_path, tokenizer_dir,
                                                                                 gpt2_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    adapter = write_as_training_does(lora_module(gpt2_dir, len(tok)), tok, tmp_path / "adapter", block_size=24)
    assert (adapter / "adapter_config.json").exists()
    assert AutoTokenizer.from_pretrained(adapter).model_max_length == 64  # the base GPT-2's n_positions
    assert trained_block_size(adapter) == 24
    merged = merge_lora(adapter, tmp_path / "merged")
    assert AutoTokenizer.from_pretrained(merged).model_max_length == 64
    assert trained_block_size(merged) == 24


def test_a_broken_training_record_is_a_clear_error(tmp_path):
    (tmp_path / TRAINING_FILE).write_text("[32]")
    with pytest.raises(ModelLoadError, match=r"training.json is not a JSON object with a block_size"):
        trained_block_size(tmp_path)
    (tmp_path / TRAINING_FILE).write_text('{"block_size": "32"}')
    assert trained_block_size(tmp_path) is None


# ----------------------------------------------------------------------------------------------- checkpoints
class RunsCode:
    """Unpickling this calls a function: what a weights-only reader must refuse."""

    def __reduce__(self):
        return (os.getpid, ())


def test_checkpoints_that_name_the_model_configs_old_module_still_load(tmp_path, monkeypatch):
    """The model configs moved from modeling.module to modeling.model_config; checkpoints written before that
    pickled them under the old name, which the one checkpoint reader (weights-only) still accepts."""
    import zipfile

    scratch, lora = ScratchModelConfig(hidden_size=32), LoraConfig(r=4)
    with monkeypatch.context() as patch:
        for cls in (ScratchModelConfig, LoraConfig):
            patch.setattr(cls, "__module__", "modeling.module")  # pickled as before the move
        torch.save({"hyper_parameters": {"scratch": scratch, "lora": lora}}, tmp_path / "old.ckpt")
    with zipfile.ZipFile(tmp_path / "old.ckpt") as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"modeling.module\nScratchModelConfig" in pickled
    assert load_checkpoint(tmp_path / "old.ckpt")["hyper_parameters"] == {"scratch": scratch, "lora": lora}


def test_evaluation_reads_the_checkpoints_block_size_weights_only(tmp_path, hf_model):
    model, tok = hf_model
    torch.save({"datamodule_hyper_parameters": {"block_size": 24}}, tmp_path / "ok.ckpt")
    assert choose_block_size(None, model, tok, str(tmp_path / "ok.ckpt")) == (24, "the checkpoint's data.block_size")
    torch.save({"datamodule_hyper_parameters": {"block_size": 24, "x": RunsCode()}}, tmp_path / "code.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="getpid"):
        choose_block_size(None, model, tok, str(tmp_path / "code.ckpt"))


# ------------------------------------------------------------------------------------------- portable files
def test_make_portable_rewrites_what_transformers_4_cannot_read(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "TokenizersBackend", "extra_special_tokens": ["<|user|>", "<a>"],
        "additional_special_tokens": ["<a>"], "model_max_length": 10**30, "eos_token": "</s>",
    }))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0,
                            "partial_rotary_factor": 0.5},
    }))
    make_portable(tmp_path, model_max_length=64)
    tok = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok == {"tokenizer_class": "PreTrainedTokenizerFast", "additional_special_tokens": ["<a>", "<|user|>"],
                   "model_max_length": 64, "eos_token": "</s>"}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["rope_theta"], cfg["partial_rotary_factor"]) == (500.0, 0.5)
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert cfg["rope_parameters"]["rope_theta"] == 500.0  # what transformers 5 reads is unchanged


def test_make_portable_leaves_what_both_read_alone(tmp_path):
    tok_in = {"tokenizer_class": "GPT2Tokenizer", "extra_special_tokens": {"image_token": "<img>"}}
    cfg_in = {"model_type": "x", "rope_theta": 1.0, "rope_parameters": {"rope_type": "default", "rope_theta": 2.0}}
    nested = {"model_type": "gemma3_text", "rope_parameters": {"full_attention": {"rope_theta": 1e6},
                                                                  "sliding_attention": {"rope_theta": 1e4}}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_in))
    (tmp_path / "config.json").write_text(json.dumps(cfg_in))
    make_portable(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == tok_in  # named extras: a dict in 4.x too
    assert json.loads((tmp_path / "config.json").read_text()) == cfg_in  # an explicit top-level value is kept
    (tmp_path / "config.json").write_text(json.dumps(nested))
    make_portable(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == nested  # per-layer-type RoPE: no 4.x spelling
    make_portable(tmp_path / "nothing-here")  # a directory without the files is left alone


# ------------------------------------------------------------------------- loading with transformers 4.x for real
@pytest.fixture(scope="module")
def exports(tmp_path_factory, shards_dir) -> tuple[Path, dict[str, Any]]:
    """Every kind of directory the project writes, each in its own folder, and what transformers 5 reads."""
    forms = tmp_path_factory.mktemp("forms")
    for model in ("bpe", "unigram"):  # python -m modeling.tokenizer train
        assert tokenizer_main(["train", "--input", str(shards_dir), "--output", str(forms / f"tokenizer-{model}"),
                               "--model", model, "--vocab-size", "600", "--no-show-progress",
                               "--extra-special-tokens", "<|user|>", "<|bot|>"]) == 0
    tok = AutoTokenizer.from_pretrained(forms / "tokenizer-bpe")
    gpt2 = write_as_training_does(scratch_module(len(tok)), tok, forms / "full-gpt2", block_size=32)
    write_as_training_does(scratch_module(len(tok), arch="llama", rope_theta=500.0), tok, forms / "full-llama",
                           block_size=32)  # not RoPE's default base: 4.x must read it, not fall back to 10000
    adapter = write_as_training_does(lora_module(gpt2, len(tok)), tok, forms / "lora-adapter", block_size=32)
    merge_lora(adapter, forms / "merged-lora")
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(gpt2)
    return forms, read_forms(forms, TEXT)


def install_transformers(version: str, request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """``transformers==version`` and the releases of its dependencies it needs, in a folder of their own.

    Kept in pytest's cache between runs (a fresh clone, as in CI, installs once: about 15 MB from PyPI)."""
    cache = getattr(request.config, "cache", None)
    target = cache.mkdir(f"transformers-{version}") if cache else tmp_path_factory.mktemp(f"transformers-{version}")
    done = target / "installed.txt"
    if not done.exists():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--upgrade", "--target", str(target), f"transformers=={version}", *TRANSFORMERS_4_DEPS]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
        done.write_text(version + "\n")
    return target


@pytest.mark.slow
@pytest.mark.parametrize("version", TRANSFORMERS_4)
def test_every_export_loads_with_transformers_4(version, exports, request, tmp_path_factory):
    forms, expected = exports
    assert expected["version"].startswith("5.")
    site = install_transformers(version, request, tmp_path_factory)
    env = {**os.environ, "PYTHONPATH": str(site)}  # this transformers first; torch and peft from the environment
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("load_forms.py")), TEXT, str(forms)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == version and got["file"].startswith(str(site))
    assert set(got["forms"]) == set(expected["forms"]) == {
        "tokenizer-bpe", "tokenizer-unigram", "full-gpt2", "full-llama", "lora-adapter", "merged-lora"}
    for name, want in expected["forms"].items():
        have = got["forms"][name]
        assert have["tokenizer_class"] == "PreTrainedTokenizerFast", name
        for key in ("ids", "eos", "pad", "specials", "model_max_length"):
            assert have[key] == want[key], f"{name}: {key} differs under transformers {version}"
        assert ("logits" in have) == ("logits" in want), name
        if "logits" in want:
            torch.testing.assert_close(torch.tensor(have["logits"]), torch.tensor(want["logits"]),
                                       msg=lambda m, name=name: f"{name} under transformers {version}: {m}")
    assert expected["forms"]["full-gpt2"]["model_max_length"] == 64  # the model's context, not the block size 32
    assert "<|user|>" in expected["forms"]["tokenizer-bpe"]["specials"]
