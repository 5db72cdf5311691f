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

import numpy as np

from curation.steps.base import TextStep

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_CRLF = re.compile(r"\r\n?")

_MAX_NON_STARTERS = 30
"""Longest run of non-starters (combining marks) normalized as it is. ``unicodedata`` puts each run in canonical
order with an insertion sort, whose cost is the square of the run's length (40,000 stacked marks of "Zalgo"
text: 2.4 s; a megabyte: about 25 minutes). Longer runs get a U+034F COMBINING GRAPHEME JOINER after every 30
marks, as Unicode's Stream-Safe Text Format (UAX #15) prescribes; no text of any language has such runs."""
_CGJ = "\u034f"


_PLANES = 0x20000
"""Non-starters all lie in Unicode planes 0 and 1."""


def _non_starters() -> list[str]:
    """The characters that start with a non-starter once decomposed: the combining marks and the few letters
    that decompose into them (Tibetan U+0F73, half-width katakana voiced marks). 40 ms at import."""
    return [c for c in map(chr, range(_PLANES))
            if unicodedata.combining(c)
            or (unicodedata.decomposition(c) and unicodedata.combining(unicodedata.normalize("NFKD", c)[0]))]


def _class_of(chars: list[str]) -> str:
    ranges: list[list[str]] = []
    for c in chars:
        if ranges and ord(ranges[-1][1]) == ord(c) - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in ranges)


_NON_STARTER_CHARS = _non_starters()
_LONG_NON_STARTER_RUN = re.compile(f"[{_class_of(_NON_STARTER_CHARS)}]{{{_MAX_NON_STARTERS + 1},}}")
_IS_NON_STARTER = np.zeros(_PLANES + 1, dtype=bool)  # the last slot stands for every code point above
_IS_NON_STARTER[[ord(c) for c in _NON_STARTER_CHARS]] = True


def _has_long_run(text: str) -> bool:
    """Whether ``text`` has a run of more than ``_MAX_NON_STARTERS`` non-starters.

    A table lookup over the code points in numpy: about 50x faster than searching with the regex above, whose
    character class of some 300 ranges makes ``re`` crawl at ~8 MB/s; that search on every text had tripled
    the step's cost. The regex only runs on the rare texts this finds."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    marks = _IS_NON_STARTER[np.minimum(points, _PLANES)]
    if int(marks.sum()) <= _MAX_NON_STARTERS:
        return False
    edges = np.flatnonzero(np.diff(np.concatenate(([0], marks.view(np.int8), [0]))))
    return bool((edges[1::2] - edges[::2] > _MAX_NON_STARTERS).any())


def _stream_safe(text: str) -> str:
    """``text`` with a combining grapheme joiner after every ``_MAX_NON_STARTERS`` marks of a longer run."""
    if not _has_long_run(text):
        return text

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


_ASCII_CONTROL = bytes(c for c in range(0x80) if _CONTROL.match(chr(c)))
"""The characters of ``_CONTROL`` that are ASCII, for ``bytes.translate`` on ASCII text."""


def normalize_text(text: str, cfg: NormalizeConfig = NormalizeConfig()) -> str:
    """Normalize one text. Already-normalized text costs one C-level check; ASCII text skips the regex too.

    ASCII is stable under every normalization form, so ASCII text only loses its control characters, which
    ``bytes.translate`` finds ~10x faster than the regex (the same characters: ``_ASCII_CONTROL``)."""
    if text.isascii():
        if not cfg.strip_control:
            return text
        if "\r" in text:
            text = _CRLF.sub("\n", text)
        raw = text.encode("ascii")
        kept = raw.translate(None, _ASCII_CONTROL)
        return text if len(kept) == len(raw) else kept.decode("ascii")
    return normalize_text_full(text, cfg)


def normalize_text_full(text: str, cfg: NormalizeConfig = NormalizeConfig()) -> str:
    """:func:`normalize_text` without its ASCII shortcut: the definition the shortcut is tested against."""
    if cfg.strip_control:
        if "\r" in text:
            text = _CRLF.sub("\n", text)
        text = _CONTROL.sub("", text)
    if cfg.form != "none" and not unicodedata.is_normalized(cfg.form, text):
        text = unicodedata.normalize(cfg.form, _stream_safe(text))
    return text


class UnicodeNormalizer(TextStep):
    """Batch step: normalize the text column of live rows."""

    cfg: NormalizeConfig

    def transform(self, text: str) -> str:
        return normalize_text(text, self.cfg)
