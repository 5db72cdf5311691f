"""Train domain tokenizers on curated shards and inspect how they split text.

Usage::

    python -m modeling.tokenizer train --config configs/tokenizer/unigram-32k.yaml --input data/curated \\
        --output out/tokenizer-unigram-32k
    python -m modeling.tokenizer train --input 'data/curated/*.parquet' --output out/tokenizer-bpe --model bpe \\
        --vocab_size 32000 --max_docs 1000000
    python -m modeling.tokenizer train --config configs/tokenizer/demo.yaml --print_config
    python -m modeling.tokenizer inspect --tokenizer out/tok-clinical --tokenizer out/tok-general \\
        --eval data/heldout --text "myocardial infarction"

``train`` takes every key of its YAML config as a flag (:class:`TokenizerTrainConfig`), ``inspect`` those of
:class:`InspectConfig`; without a subcommand the command is ``train``. The output directory loads with
``AutoTokenizer.from_pretrained(dir)``; more in the package notes (``modeling/tokenizer/__init__.py``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from common.cli import CliError, Command, parse, run_command
from common.errors import run_main
from modeling.tokenizer.config import TokenizerTrainConfig, TokenizerTrainError
from modeling.tokenizer.report import format_inspect_report, inspect_tokenizers
from modeling.tokenizer.training import train_tokenizer


@dataclass(frozen=True)
class InspectConfig:
    """What ``python -m modeling.tokenizer inspect`` compares."""

    tokenizer: tuple[str, ...]
    """Tokenizer directories or tokenizer.json files; several to compare them side by side."""
    text: tuple[str, ...] = ()
    """Texts to show split into pieces."""
    eval: tuple[str, ...] = ()
    """Held-out shards (files, directories, globs) to measure compression on (chars and bytes per token)."""
    text_column: str = "text"
    """Text column of the ``eval`` shards."""
    max_docs: int = 1000
    """Documents read from ``eval``."""
    json: bool = False
    """Print the report as JSON instead of a table."""

    def __post_init__(self) -> None:
        if not self.tokenizer:
            raise ValueError("no tokenizer to inspect: pass --tokenizer DIR (repeat it to compare several)")
        if self.max_docs < 1:
            raise ValueError(f"max_docs is {self.max_docs}: pass --max_docs >= 1")


TRAIN = Command(prog="python -m modeling.tokenizer train", description=__doc__, config=TokenizerTrainConfig)
INSPECT = Command(prog="python -m modeling.tokenizer inspect", description=__doc__, config=InspectConfig)
SUBCOMMANDS = {"train": TRAIN, "inspect": INSPECT}


def split_subcommand(argv: Sequence[str] | None) -> tuple[Command, list[str]]:
    """(the subcommand's :class:`Command`, its arguments); a first argument that is a flag means ``train``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        if args[0] not in SUBCOMMANDS:
            raise CliError(f"unknown command {args[0]!r}: use `python -m modeling.tokenizer train` or `inspect`")
        return SUBCOMMANDS[args[0]], args[1:]
    return TRAIN, args


def parse_train(argv: Sequence[str]) -> TokenizerTrainConfig:
    """The training config of ``train``'s arguments (``--config`` YAML files, then flags); tests use it."""
    return parse(TRAIN, argv).config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a usage error with a message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def train(cfg: TokenizerTrainConfig, _: object) -> None:
        stats = train_tokenizer(cfg)
        print(json.dumps({k: stats[k] for k in ("vocab_size", "train_docs", "train_seconds", "heldout")}))

    def inspect(cfg: InspectConfig, _: object) -> None:
        report = inspect_tokenizers(cfg.tokenizer, cfg.text, cfg.eval or None, cfg.text_column, cfg.max_docs)
        print(json.dumps(report, indent=2, ensure_ascii=False) if cfg.json else format_inspect_report(report))

    def run() -> int:
        command, args = split_subcommand(argv)
        # a tokenizer that cannot be trained, and the tokenizers library's own ValueErrors, are usage errors too
        return run_command(command, args, train if command is TRAIN else inspect,
                           also=(TokenizerTrainError, ValueError))

    return run_main(run)
