"""Bad input to ``python -m modeling.train`` is one line on stderr, ``error: ...``, naming the flag as the user types
it (``--data.text_column``, ``--ckpt_path``, ``--trainer.accelerator``), with exit code 2, and it stops before any
data is tokenized or any step is trained. Each case below was a traceback (exit 1) or named a flag train lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from modeling.module import CausalLMModule, ModelConfigError, ScratchModelConfig
from modeling.train import run_command

REPO = Path(__file__).resolve().parents[2]


def train_args(root: Path, tokenizer: Path, shards: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    """tiny-cpu.yaml shrunk to a 32-wide model on 32-token blocks, writing only under ``root``."""
    return [
        subcommand, "--config", str(REPO / "configs/train/tiny-cpu.yaml"),
        "--data.path", str(shards), "--data.tokenizer", str(tokenizer), "--data.cache_dir", str(root / "cache"),
        "--data.block_size", "32", "--data.batch_size", "4", "--data.max_docs", "50",
        "--model.scratch.hidden_size", "32", "--model.scratch.max_position_embeddings", "32",
        "--trainer.default_root_dir", str(root / "runs"), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.max_steps", "2", *extra,
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, gpt2_dir: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """Files a user might hand over by mistake: no text column, unfinished curation output, non-checkpoints."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "no-text").mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["some words"]}), root / "no-text" / "part-0.parquet")
    unfinished = root / "curated"  # a curation output whose run never wrote _SUCCESS
    (unfinished / ".curation").mkdir(parents=True)
    (unfinished / ".curation" / "manifest.json").write_text("{}")
    (unfinished / "data").mkdir()
    pq.write_table(pa.table({"text": ["a document."]}), unfinished / "data" / "part-00000.parquet")
    (root / "not-a-tokenizer").mkdir()
    (root / "not-a-tokenizer" / "notes.txt").write_text("hello")
    (root / "garbage.ckpt").write_text("not a checkpoint")
    (root / "a-file").write_text("x")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.save(AutoModelForCausalLM.from_pretrained(gpt2_dir).state_dict(), root / "weights-only.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden_dim": 3}, "pytorch-lightning_version": "2.6.0"},
               root / "other-model.ckpt")
    # checkpoints of this trainer (as far as the checks before a run go): of another tokenizer, and of this one
    for name, vocab in (("other-tokenizer", 999), ("matching", len(AutoTokenizer.from_pretrained(tokenizer_dir)))):
        torch.save({"state_dict": {}, "hyper_parameters": {"vocab_size": vocab}, "pytorch-lightning_version": "2.6.0",
                    "datamodule_hyper_parameters": {"tokenizer": "/elsewhere/tokenizer"}}, root / f"{name}.ckpt")
    return {"root": root, "gpt2": gpt2_dir, "ckpt": root / "matching.ckpt"}


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))


#: Cases found only once the model is built, after the (here tiny) data is tokenized.
LATE = {"unknown lora target"}
Case = tuple[Callable[[dict[str, Path]], list[str]], str, str]
# id: (extra arguments given the inputs, subcommand, text the one error line must hold)
CASES: dict[str, Case] = {
    "wrong text column": (lambda p: ["--data.text_column", "body"], "fit",
                          "no column 'body'; it has ['id', 'text', 'source']. Pass the right one with "
                          "--data.text_column"),
    "shards without a text column": (lambda p: ["--data.path", str(p["root"] / "no-text"), "--ckpt_path",
                                                str(p["ckpt"])], "validate", "--data.text_column"),
    "missing data path": (lambda p: ["--data.path", str(p["root"] / "nowhere")], "fit",
                          "--data.path: input path"),
    "empty data path": (lambda p: ["--data.path", ""], "fit", "--data.path is empty"),
    "unfinished curation output": (lambda p: ["--data.path", str(p["root"] / "curated"), "--ckpt_path",
                                              str(p["ckpt"])], "test", "--data.path: "),
    "missing tokenizer": (lambda p: ["--data.tokenizer", str(p["root"] / "no-tokenizer")], "fit",
                          "--data.tokenizer '"),
    "folder that is no tokenizer": (lambda p: ["--data.tokenizer", str(p["root"] / "not-a-tokenizer")], "fit",
                                    "holds no tokenizer"),
    "missing pretrained model": (lambda p: ["--model.scratch", "null", "--model.pretrained",
                                            str(p["root"] / "no-model")], "fit", "--model.pretrained '"),
    "folder that is no model": (lambda p: ["--model.scratch", "null", "--model.pretrained",
                                           str(p["root"] / "not-a-tokenizer")], "fit", "has no config.json"),
    "missing checkpoint": (lambda p: ["--ckpt_path", str(p["root"] / "nope.ckpt")], "fit",
                           "--ckpt_path '"),
    "file that is no checkpoint": (lambda p: ["--ckpt_path", str(p["root"] / "garbage.ckpt")], "validate",
                                   "does not load as a checkpoint"),
    "folder as checkpoint": (lambda p: ["--ckpt_path", str(p["root"])], "test", "is a folder"),
    "plain state dict as checkpoint": (lambda p: ["--ckpt_path", str(p["root"] / "weights-only.ckpt")], "validate",
                                       "--model.pretrained DIR"),
    "checkpoint of another model": (lambda p: ["--ckpt_path", str(p["root"] / "other-model.ckpt")], "fit",
                                    "hyperparameters ['hidden_dim']"),
    "checkpoint of another tokenizer": (lambda p: ["--ckpt_path", str(p["root"] / "other-tokenizer.ckpt")],
                                        "validate", "tokenizer of 999 tokens ('/elsewhere/tokenizer'), but "
                                        "--data.tokenizer"),
    "block longer than the positions": (lambda p: ["--data.block_size", "64", "--ckpt_path", str(p["ckpt"])],
                                        "validate", "--data.block_size 64 is longer than the model's 32 positions"),
    "batch size 0": (lambda p: ["--data.batch_size", "0"], "fit", "--data.batch_size must be at least 1"),
    "max_docs 0": (lambda p: ["--data.max_docs", "0"], "fit", "--data.max_docs must be at least 1"),
    "negative num_workers": (lambda p: ["--data.num_workers", "-1"], "fit", "--data.num_workers"),
    "cache dir is a file": (lambda p: ["--data.cache_dir", str(p["root"] / "a-file")], "fit",
                            "--data.cache_dir"),
    "missing hf dataset folder": (lambda p: ["--data.path", "null", "--data.hf_dataset.name",
                                             str(p["root"] / "no-dataset")], "fit", "--data.hf_dataset.name"),
    "hf data_files matching nothing": (lambda p: ["--data.path", "null", "--data.hf_dataset.name", "parquet",
                                                  "--data.hf_dataset.data_files", str(p["root"] / "none/*.parquet")],
                                       "fit", "--data.hf_dataset.data_files"),
    "gpu on a machine without one": (lambda p: ["--trainer.accelerator", "gpu"], "fit",
                                     "--trainer.accelerator gpu: this machine has no"),
    "unknown accelerator": (lambda p: ["--trainer.accelerator", "tpuu"], "fit", "--trainer.accelerator 'tpuu'"),
    "unknown strategy": (lambda p: ["--trainer.strategy", "ddpp"], "fit", "--trainer.strategy 'ddpp'"),
    "0 devices": (lambda p: ["--trainer.devices", "0"], "fit", "--trainer: `Trainer(devices="),
    "accumulate 0 batches": (lambda p: ["--trainer.accumulate_grad_batches", "0"], "fit",
                             "--trainer.accumulate_grad_batches"),
    "run folder is a file": (lambda p: ["--trainer.default_root_dir", str(p["root"] / "a-file")], "fit",
                             "--trainer.default_root_dir"),
    "lora rank 0": (lambda p: ["--model.scratch", "null", "--model.pretrained", str(p["gpt2"]),
                               "--model.lora.r", "0"], "fit", "--model.lora.r must be at least 1"),
    "unknown lora target": (lambda p: ["--model.scratch", "null", "--model.pretrained", str(p["gpt2"]),
                                       "--data.tokenizer", str(p["gpt2"]), "--model.lora.target_modules", "[qkv]"],
                            "fit", "--model.lora.target_modules ['qkv']: no such module"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_flag_with_exit_2(case, inputs, tokenizer_dir, shards_dir, tmp_path,
                                                           capsys, monkeypatch):
    extra, subcommand, expected = CASES[case]
    _no_gpu(monkeypatch)  # "gpu on a machine without one" is that on every machine
    code = run_command(train_args(tmp_path, tokenizer_dir, shards_dir, *extra(inputs), subcommand=subcommand))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert errors[0] == err.strip().splitlines()[-1]  # the last word, nothing after it
    assert expected in errors[0]
    assert "--text-column" not in errors[0]  # the tokenizer's flag; train has --data.text_column
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained
    assert case in LATE or not list(tmp_path.rglob("*.npy"))  # nor tokenized


@pytest.mark.parametrize(("extra", "expected"), [
    (["--data.text_column", "body"], "Pass the right one with --data.text_column."),
    (["--ckpt_path", "missing.ckpt"], "error: --ckpt_path 'missing.ckpt': no such file"),
])
def test_the_real_command_prints_one_line_and_exits_2(tmp_path, tokenizer_dir, shards_dir, extra, expected):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "modeling.train", *train_args(tmp_path, tokenizer_dir, shards_dir,
                                                                                *extra)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0] == proc.stderr.strip().splitlines()[-1] and expected in errors[0]


def test_a_checkpoint_that_does_not_fit_the_model_names_the_tensor():
    module = CausalLMModule(scratch=ScratchModelConfig(hidden_size=16, num_layers=1, num_heads=2,
                                                       max_position_embeddings=16), vocab_size=40)
    module.configure_model()
    state = {k: torch.zeros(50, 16) if k.endswith("wte.weight") else v for k, v in module.state_dict().items()}
    with pytest.raises(ModelConfigError, match=r"wte.weight is \[50, 16\] in the checkpoint but \[40, 16\] here.*"
                                               r"--data.tokenizer"):
        module.on_load_checkpoint({"state_dict": state})


def test_a_multi_line_message_still_prints_as_one_line(capsys, monkeypatch):
    import modeling.train as train

    def fail(args):
        raise ModelConfigError("first line\n  (2) second line\n")

    monkeypatch.setattr(train, "main", fail)
    assert run_command([]) == 2
    assert capsys.readouterr().err == "error: first line (2) second line\n"
