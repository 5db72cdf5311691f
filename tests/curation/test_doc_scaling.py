"""The text steps on huge and pathological documents: the work they do stays linear in the document's size.

Nothing here is timed (benchmarks/doc_scaling.py times them). Where the work happens in C (the HTML parser,
``unicodedata``, ``str.count``) the tests check what bounds it: how deep the parser's input nests, how long
a run of combining marks ``unicodedata`` has to sort, how many characters are counted.
"""


from __future__ import annotations

import unicodedata

import pytest

from curation.steps import normalize, urls
from curation.steps.normalize import NormalizeConfig, normalize_text
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


# ----------------------------------------------------------------------------------------------- normalize
def _longest_non_starter_run(text: str) -> int:
    longest = run = 0
    for ch in unicodedata.normalize("NFD", text):
        run = run + 1 if unicodedata.combining(ch) else 0
        longest = max(longest, run)
    return longest


def test_normalize_sorts_only_short_runs_of_combining_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    # unicodedata sorts each run of combining marks by insertion: the square of the run's length
    seen: list[str] = []
    real = unicodedata.normalize

    def recording(form: str, text: str) -> str:
        seen.append(text)
        return real(form, text)

    monkeypatch.setattr(unicodedata, "normalize", recording)
    zalgo = "Z" + "\u0316\u0301" * 5000 + "algo \u0f73" * 3 + "\u0f73" * 1000
    out = normalize_text(zalgo)
    monkeypatch.undo()
    assert seen and max(map(_longest_non_starter_run, seen)) <= 3 * normalize._MAX_NON_STARTERS
    assert out.count(normalize._CGJ) == 10_000 // 30 + 1000 // 30
    # each piece between joiners is normalized as it would be alone
    pieces = out.split(normalize._CGJ)
    assert all(unicodedata.is_normalized("NFKC", p) for p in pieces)
    assert unicodedata.normalize("NFD", out).count("\u0301") == 5000  # none lost (the first composes: Ź)


@pytest.mark.parametrize("text", [
    "e\u0301 and a\u0316\u0301 stay as NFKC makes them",
    "Vietnamese ệ ữ ặ, Hindi क़ि, Hebrew שָׁלוֹם, stacked x" + "\u0301" * 30,
    "ﬁ full-width ＡＢＣ and nbsp\u00a0here",
])
def test_normalize_unchanged_below_the_run_limit(text: str) -> None:
    assert normalize_text(text) == unicodedata.normalize("NFKC", text)
    assert normalize._CGJ not in normalize_text(text)


def test_normalize_other_forms_also_split_long_runs() -> None:
    out = normalize_text("a" + "\u0301\u0316" * 100, NormalizeConfig(form="NFD"))
    assert out.count(normalize._CGJ) == 6 and _longest_non_starter_run(out) <= 30
