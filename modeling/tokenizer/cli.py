"""Train domain tokenizers on curated shards and inspect how they split text.

``python -m modeling.tokenizer train|inspect`` (usage in the package notes, ``modeling/tokenizer/__init__.py``). The
flags and YAML keys of ``train`` both come from TokenizerTrainConfig's fields.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from common.config import ConfigError, from_dict, load_yaml
from common.errors import run_main
from common.files import InputError
from modeling.cli_args import add_config_flags
from modeling.tokenizer.config import TokenizerTrainConfig, TokenizerTrainError
from modeling.tokenizer.report import format_inspect_report, inspect_tokenizers
from modeling.tokenizer.training import train_tokenizer


def build_parser() -> argparse.ArgumentParser:
    """``train`` gets one flag per config field (``vocab_size`` -> ``--vocab-size``); ``inspect`` its own."""
    parser = argparse.ArgumentParser(
        prog="python -m modeling.tokenizer", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train a tokenizer on curated shards", argument_default=argparse.SUPPRESS,
        description="Train a tokenizer. Precedence: flags > --config YAML > defaults.",
    )
    train.add_argument("--config", help="YAML file whose keys are these flags' names (vocab_size: 32000)")
    add_config_flags(train, TokenizerTrainConfig)

    insp = sub.add_parser("inspect", help="show how tokenizers split text and compare their compression")
    insp.add_argument("--tokenizer", action="append", required=True,
                      help="tokenizer directory or tokenizer.json; repeat to compare several")
    insp.add_argument("--text", action="append", default=[], help="text to split; repeatable")
    insp.add_argument("--eval", nargs="+", help="held-out shards (files, dirs, globs) to measure compression on")
    insp.add_argument("--text-column", default="text", help="text column of the --eval shards (default: text)")
    insp.add_argument("--max-docs", type=int, default=1000, help="documents read from --eval (default: 1000)")
    insp.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> TokenizerTrainConfig:
    """Merge defaults, the ``--config`` YAML and the flags (in rising precedence) into a config.

    The YAML goes through the same strict loader as every other config of the project (unknown keys,
    wrong choices and non-boolean switches are errors naming the key)."""
    config_path = getattr(args, "config", None)
    values: dict[str, Any] = {}
    try:
        if config_path:
            values = {str(k).replace("-", "_"): v for k, v in load_yaml(config_path).items()}
        values.update({k: v for k, v in vars(args).items() if k not in ("command", "config")})
        missing = [f.name for f in fields(TokenizerTrainConfig) if f.default is MISSING and f.name not in values]
        if missing:
            raise InputError(
                "missing " + ", ".join(f"--{m.replace('_', '-')}" for m in missing) + " (pass the flag or set it "
                "in the --config YAML)"
            )
        return from_dict(TokenizerTrainConfig, values, where=config_path or "flags")
    except ConfigError as err:
        raise InputError(str(err)) from err


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a usage error with a message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> None:
        if args.command == "train":
            stats = train_tokenizer(config_from_args(args))
            print(json.dumps({k: stats[k] for k in ("vocab_size", "train_docs", "train_seconds", "heldout")}))
        else:
            report = inspect_tokenizers(args.tokenizer, args.text, args.eval, args.text_column, args.max_docs)
            print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_inspect_report(report))

    # a tokenizer that cannot be trained, and the tokenizers library's own ValueErrors, are usage errors too
    return run_main(run, also=(TokenizerTrainError, ValueError))

