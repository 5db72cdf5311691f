"""The text steps on huge and pathological documents: the work they do stays linear in the document's size.

Nothing here is timed (benchmarks/doc_scaling.py times them). Where the work happens in C (the HTML parser,
``unicodedata``, ``str.count``) the tests check what bounds it: how deep the parser's input nests, how long
a run of combining marks ``unicodedata`` has to sort, how many characters are counted.
"""


from __future__ import annotations

import pytest

from curation.steps import urls
from curation.steps.urls import remove_urls


# ----------------------------------------------------------------------------------------------- urls
class CountingStr(str):
    """A string that adds up the characters its ``count`` method scans."""

    scanned = 0

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        lo = 0 if start is None else start
        hi = len(self) if end is None else end
        CountingStr.scanned += max(0, hi - lo)
        return super().count(sub, start, end)


@pytest.mark.parametrize("tail", [")", ")]}", ").,"])
def test_url_trailing_brackets_are_counted_once(tail: str) -> None:
    url = CountingStr("https://example.org/wiki/Foo_(bar" + tail * 5000)
    CountingStr.scanned = 0
    end = urls._url_end(url)
    assert url[:end] == "https://example.org/wiki/Foo_(bar)"
    assert CountingStr.scanned <= 2 * len(tail) * len(url)  # once per kind of bracket, not once per bracket


def test_url_with_a_huge_bracket_tail() -> None:
    text = "see https://example.org/(a" + ")" * 200_000 + ". Next"
    assert remove_urls(text) == "see " + ")" * 199_999 + ". Next"
