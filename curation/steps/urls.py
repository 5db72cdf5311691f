"""Remove (or replace with a token) http(s) and www URLs.

The usual ``https?://\\S+`` misses ``www.`` links and eats the punctuation after a URL (``see
https://x.org.`` loses its full stop, ``(https://x.org)`` its closing parenthesis). Here trailing sentence
punctuation stays, and a closing bracket stays unless the URL opened one itself (Wikipedia-style
``https://en.wikipedia.org/wiki/Foo_(bar)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curation.steps.base import TextStep

_URL = re.compile(r"(?:\bhttps?://|(?<![\w.@/-])www\.)[^\s<>\"'`{}|\\^]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\")]}*"
_PAIRS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class UrlConfig:
    replacement: str = ""
    """What a URL becomes: nothing (default) or a token such as ``[URL]``."""


def _url_end(url: str) -> int:
    """Length of ``url`` once trailing punctuation that belongs to the sentence is cut off.

    The brackets of each kind are counted once, not again for every character cut: a URL that ends in a
    long run of ``)`` would otherwise cost the square of its length.
    """
    end = len(url)
    brackets: dict[str, list[int]] = {}  # closing bracket -> [openers, closers] in url[:end]
    while end > 0 and url[end - 1] in _TRAILING:
        ch = url[end - 1]
        opener = _PAIRS.get(ch)
        if opener is not None:
            if ch not in brackets:
                # openers are never cut (they are not in _TRAILING), so their count stays the same
                brackets[ch] = [url.count(opener, 0, end), url.count(ch, 0, end)]
            opened, closed = brackets[ch]
            if opened >= closed:
                break  # balanced: the bracket is part of the URL
            brackets[ch][1] -= 1
        end -= 1
    return end


def remove_urls(text: str, cfg: UrlConfig = UrlConfig()) -> str:
    """Replace every URL by ``cfg.replacement``; text without ``://`` or ``www.`` is returned as is."""
    if "://" not in text and "www." not in text.lower():
        return text

    def repl(m: re.Match[str]) -> str:
        url = m.group(0)
        end = _url_end(url)
        return cfg.replacement + url[end:]

    return _URL.sub(repl, text)


class UrlRemover(TextStep):
    """Batch step: remove URLs from the text column of live rows."""

    cfg: UrlConfig

    def transform(self, text: str) -> str:
        return remove_urls(text, self.cfg)
