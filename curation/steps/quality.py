"""Simple document bounds: characters and words. Rows outside them are marked, not removed."""

from __future__ import annotations

from dataclasses import dataclass

from curation.steps.base import FilterStep

DROP_REASONS = ("too_short", "too_long", "too_few_words", "too_many_words")
"""What :func:`quality_reason` returns for a text outside the bounds."""


@dataclass(frozen=True)
class QualityConfig:
    min_chars: int = 1
    """Fewer characters than this -> dropped as ``too_short``."""
    max_chars: int | None = None
    """More characters than this -> dropped as ``too_long`` (None: no upper bound)."""
    min_words: int = 3
    """Fewer whitespace-separated words -> ``too_few_words``. Texts of one or two words teach a model nothing.
    Whitespace words undercount Chinese/Japanese text; set 0 or 1 for CJK corpora."""
    max_words: int | None = None
    """More words -> ``too_many_words`` (None: no upper bound)."""

    def __post_init__(self) -> None:
        for lo, hi, name in ((self.min_chars, self.max_chars, "chars"), (self.min_words, self.max_words, "words")):
            if lo < 0 or (hi is not None and hi < lo):
                raise ValueError(f"quality: need 0 <= min_{name} <= max_{name}; got {lo} and {hi}")


def quality_reason(text: str, cfg: QualityConfig = QualityConfig()) -> str | None:
    """The reason ``text`` fails the bounds, or None when it passes."""
    n = len(text)
    if n < cfg.min_chars:
        return "too_short"
    if cfg.max_chars is not None and n > cfg.max_chars:
        return "too_long"
    if cfg.min_words or cfg.max_words is not None:
        # maxsplit stops counting once the bound is proven (more than max_words, or at least min_words): a
        # 50 MB document costs no list of all its words
        limit = cfg.max_words if cfg.max_words is not None else cfg.min_words
        words = len(text.split(maxsplit=limit))
        if words < cfg.min_words:
            return "too_few_words"
        if cfg.max_words is not None and words > cfg.max_words:
            return "too_many_words"
    return None


class QualityFilter(FilterStep):
    """Batch step: mark live rows that fail the bounds."""

    cfg: QualityConfig

    def reason(self, text: str) -> str | None:
        return quality_reason(text, self.cfg)
