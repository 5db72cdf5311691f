"""Unicode normalization (NFKC by default) and removal of control characters.

NFKC folds compatibility forms (full-width Latin, ligatures, superscripts, non-breaking spaces) into the
characters a tokenizer should see once, not five times. Control characters other than tab and newline are
never text and confuse tokenizers and JSON tooling alike, so they go too. ``\\r\\n`` becomes ``\\n``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from curation.steps.base import TextStep

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_CRLF = re.compile(r"\r\n?")


@dataclass(frozen=True)
class NormalizeConfig:
    form: Literal["NFKC", "NFC", "NFKD", "NFD", "none"] = "NFKC"
    """Unicode normalization form; ``none`` leaves code points as they are."""
    strip_control: bool = True
    """Remove C0/C1 control characters (tab and newline excepted), zero-width spaces and BOMs."""

    def __post_init__(self) -> None:
        if self.form not in ("NFKC", "NFC", "NFKD", "NFD", "none"):
            raise ValueError(f"normalize.form must be one of NFKC, NFC, NFKD, NFD, none; got {self.form!r}")


def normalize_text(text: str, cfg: NormalizeConfig = NormalizeConfig()) -> str:
    """Normalize one text. Already-normalized ASCII-heavy text costs one C-level check."""
    if cfg.strip_control:
        if "\r" in text:
            text = _CRLF.sub("\n", text)
        text = _CONTROL.sub("", text)
    if cfg.form != "none" and not unicodedata.is_normalized(cfg.form, text):
        text = unicodedata.normalize(cfg.form, text)
    return text


class UnicodeNormalizer(TextStep):
    """Batch step: normalize the text column of live rows."""

    name = "normalize"
    cfg: NormalizeConfig

    @classmethod
    def default_config(cls) -> NormalizeConfig:
        return NormalizeConfig()

    def transform(self, text: str) -> str:
        return normalize_text(text, self.cfg)
