"""Load every model or tokenizer directory under a folder with whatever transformers is importable, and report
token ids, special tokens, ``model_max_length`` and logits as JSON.

Imported by ``test_export.py`` (the test environment's transformers 5), and run as a script by the same test in
a subprocess whose ``PYTHONPATH`` puts transformers 4.x first; so it imports nothing of this repository::

    PYTHONPATH=/tmp/transformers-4.57.6 python tests/modeling/load_forms.py "some text" DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def read_form(d: Path, text: str) -> dict[str, Any]:
    """AutoTokenizer on ``d``; for a model directory also AutoModelForCausalLM, for an adapter PEFT."""
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok(text)["input_ids"]
    row: dict[str, Any] = {
        "tokenizer_class": type(tok).__name__, "ids": ids, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
        "specials": tok.all_special_tokens,
        "model_max_length": tok.model_max_length if tok.model_max_length < 10**9 else None,
    }
    if (d / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(d)
    elif (d / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(d)
    else:
        return row
    with torch.no_grad():
        row["logits"] = model.eval()(torch.tensor([ids])).logits[0].tolist()
    return row


def read_forms(root: Path, text: str) -> dict[str, Any]:
    """``read_form`` of every directory under ``root``, with the transformers version that read them."""
    return {"version": transformers.__version__, "file": transformers.__file__,
            "forms": {d.name: read_form(d, text) for d in sorted(root.iterdir())}}


if __name__ == "__main__":
    print(json.dumps(read_forms(Path(sys.argv[2]), sys.argv[1])))
