"""Unicode normalization (NFKC by default) and removal of control characters.

NFKC folds compatibility forms (full-width Latin, ligatures, superscripts, non-breaking spaces) into the
characters a tokenizer should see once, not five times. Control characters other than tab and newline are
never text and confuse tokenizers and JSON tooling alike, so they go too. ``\\r\\n`` becomes ``\\n``.
Runs of more than 30 combining marks get a combining grapheme joiner after every 30 before normalization,
which otherwise costs the square of their length (see ``_MAX_NON_STARTERS``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from curation.steps.base import TextStep

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_CRLF = re.compile(r"\r\n?")

_MAX_NON_STARTERS = 30
"""Longest run of non-starters (combining marks) normalized as it is. ``unicodedata`` puts each run in canonical
order with an insertion sort, whose cost is the square of the run's length (40,000 stacked marks of "Zalgo"
text: 2.4 s; a megabyte: about 25 minutes). Longer runs get a U+034F COMBINING GRAPHEME JOINER after every 30
marks, as Unicode's Stream-Safe Text Format (UAX #15) prescribes; no text of any language has such runs."""
_CGJ = "\u034f"


def _non_starter_class() -> str:
    """Regex class of the characters that start with a non-starter once decomposed: the combining marks and
    the few letters that decompose into them (Tibetan U+0F73, half-width katakana voiced marks). All lie in
    Unicode planes 0 and 1, so the scan stops there (40 ms at import)."""
    chars = [c for c in map(chr, range(0x20000))
             if unicodedata.combining(c)
             or (unicodedata.decomposition(c) and unicodedata.combining(unicodedata.normalize("NFKD", c)[0]))]
    ranges: list[list[str]] = []
    for c in chars:
        if ranges and ord(ranges[-1][1]) == ord(c) - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in ranges)


_LONG_NON_STARTER_RUN = re.compile(f"[{_non_starter_class()}]{{{_MAX_NON_STARTERS + 1},}}")


def _stream_safe(text: str) -> str:
    """``text`` with a combining grapheme joiner after every ``_MAX_NON_STARTERS`` marks of a longer run."""
    def split(m: re.Match[str]) -> str:
        run = m.group()
        return _CGJ.join(run[i:i + _MAX_NON_STARTERS] for i in range(0, len(run), _MAX_NON_STARTERS))

    return _LONG_NON_STARTER_RUN.sub(split, text)


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
        text = unicodedata.normalize(cfg.form, _stream_safe(text))
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
