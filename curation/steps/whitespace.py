"""Whitespace: collapse runs of spaces, trim lines, and keep paragraph breaks (configurable).

A plain ``re.sub(r'\\s+', ' ', text)`` flattens every document to one line. Language models learn
structure from newlines (lists, code, dialogue turns), so by default one newline survives between
paragraphs; ``keep_newlines: false`` gives that behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curation.steps.base import TextStep

_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except newline
_NEWLINES = re.compile(r" ?\n[\s]*")  # a newline with the spaces and blank lines around it
_ANY_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class WhitespaceConfig:
    keep_newlines: bool = True
    """Keep line breaks between paragraphs; false flattens the text to one line."""
    max_newlines: int = 1
    """With ``keep_newlines``: at most this many consecutive newlines (2 keeps blank lines between paragraphs)."""

    def __post_init__(self) -> None:
        if self.max_newlines < 1:
            raise ValueError(f"whitespace.max_newlines must be >= 1, got {self.max_newlines}")


def normalize_whitespace(text: str, cfg: WhitespaceConfig = WhitespaceConfig()) -> str:
    """Collapse whitespace as configured and strip both ends."""
    if not cfg.keep_newlines:
        return _ANY_WS.sub(" ", text).strip()
    text = _HSPACE.sub(" ", text)
    if cfg.max_newlines == 1:
        text = _NEWLINES.sub("\n", text)
    else:
        cap = "\n" * cfg.max_newlines
        text = _NEWLINES.sub(lambda m: cap[: max(1, min(m.group(0).count("\n"), cfg.max_newlines))], text)
    return text.strip()


class WhitespaceNormalizer(TextStep):
    """Batch step: normalize whitespace in the text column of live rows."""

    cfg: WhitespaceConfig

    def transform(self, text: str) -> str:
        return normalize_whitespace(text, self.cfg)
