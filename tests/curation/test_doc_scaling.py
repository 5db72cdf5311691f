"""The text steps on huge and pathological documents: the work they do stays linear in the document's size.

Nothing here is timed (benchmarks/doc_scaling.py times them). Where the work happens in C (the HTML parser,
``unicodedata``, ``str.count``) the tests check what bounds it: how deep the parser's input nests, how long
a run of combining marks ``unicodedata`` has to sort, how many characters are counted.
"""

from __future__ import annotations

import unicodedata

import pytest
from selectolax.lexbor import LexborHTMLParser

from curation.dedup import dedup_key
from curation.steps import html, normalize, urls
from curation.steps.html import strip_html
from curation.steps.normalize import NormalizeConfig, normalize_text
from curation.steps.quality import QualityConfig, quality_reason
from curation.steps.urls import remove_urls
from curation.steps.whitespace import normalize_whitespace


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


# ----------------------------------------------------------------------------------------------- html
def _parser_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    def recording(text: str) -> LexborHTMLParser:
        seen.append(text)
        return LexborHTMLParser(text)

    monkeypatch.setattr(html, "LexborHTMLParser", recording)
    return seen


@pytest.mark.parametrize(("text", "depth"), [
    ("<div><p>a<p>b</div>", 1),
    ("<ul><li>a<li>b</ul><br><img src=x><hr>", 1),
    ("</div></div><div><div>x", 2),  # stray end tags close nothing
    ("<div>" * 40 + "</div>" * 40 + "<span>" * 3, 40),
    ("plain < text > only", 0),
])
def test_nesting_depth(text: str, depth: int) -> None:
    assert html._nesting_depth(text) == depth


@pytest.mark.parametrize("tag", ["div", "section", "pre", "ul", "blockquote", "b"])
def test_deep_nesting_reaches_the_parser_flattened(tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every start tag makes the tree builder walk the stack of open elements: N nested tags cost N².
    seen = _parser_inputs(monkeypatch)
    n = 3000
    out = strip_html(f"<{tag}>x" * n + f"</{tag}>" * n)
    assert html._nesting_depth(seen[0]) <= html.MAX_DEPTH
    if tag in html.BLOCK_TAGS:
        assert out.split("\n") == ["x"] * n  # removed block tags still break lines
    else:
        assert out == "x" * n  # inline, and <pre> inside <pre>, as before


def test_deep_nesting_keeps_scripts_dropped_and_text() -> None:
    doc = ("<div>" * 2000 + "<p>deep text</p><script>var x = '<div>';</script><style>p{}</style>"
           "<!-- <div><div> --><svg><path d='M0'/><g/></svg>tail" + "</div>" * 2000)
    assert strip_html(doc) == "deep text\ntail"


def test_shallow_documents_are_not_flattened(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _parser_inputs(monkeypatch)
    doc = "<div>" + "<p>para <b>bold</b> <br> text</p><ul><li>item</ul>" * 500 + "</div>"
    strip_html(doc)
    assert seen[0].count("<") == doc.count("<")


def test_svg_heavy_page_is_not_flattened() -> None:
    icons = "<svg viewBox='0 0 8 8'>" + "<path d='M0 0'/>" * 400 + "</svg>"
    doc = f"<div><pre>code\n  indented</pre>{icons}<table><tr><td>a<td>b</table></div>"
    assert html._nesting_depth(doc) > html.MAX_DEPTH  # the cheap estimate counts <path/> as open ...
    assert html._flatten(doc, frozenset(html.DROP_TAGS) | html._RAW_TEXT) == doc  # ... the tokenizer does not
    assert strip_html(doc) == "code\n  indented\na\nb"


def _foster_parented_markers(marked: str) -> int:
    """Markers the parser moves out of a table: text between table parts lands before the table."""
    tree = LexborHTMLParser(marked)
    count = 0
    for table in tree.css("table"):
        node = table.prev
        while node is not None and node.tag == "-text":
            count += node.text_content.count(html._BLOCK)
            node = node.prev
    return count


@pytest.mark.parametrize("rows", [
    "<tr><td>a</td><td>b</td></tr>",
    "<tr><td>a<td>b",
    "<thead><tr><th>a</th></tr></thead><tbody><tr><td>b</td></tr></tbody>",
])
def test_table_markers_stay_inside_cells(rows: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Text between table parts is moved before the table, and the parser appends every such piece to one
    # text node: a cost, and memory, that grew with the square of the rows.
    seen = _parser_inputs(monkeypatch)
    out = strip_html("<p>before</p><table><caption>cap</caption>" + rows * 500 + "</table>after")
    assert _foster_parented_markers(seen[0]) <= 1
    lines = out.split("\n")
    assert lines[:2] == ["before", "cap"] and lines[-1] == "after"
    assert lines[2:-1] == ["a", "b"] * 500


def test_text_between_rows_stays_in_place_in_big_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser moves such text before the table, appending each piece to one text node: with thousands
    # of pieces that cost the square of their number, in time and memory.
    seen = _parser_inputs(monkeypatch)
    out = strip_html("<table>" + "|<tr><td>a</td></tr>" * 1000 + "</table>")
    assert out.split("\n") == ["|", "a"] * 1000
    before = LexborHTMLParser(seen[0]).css_first("table").prev
    assert before is None or not before.text_content.strip(html._BLOCK)
    # A few pieces (the usual stray "&nbsp;") are left to the parser, which puts them before the table.
    assert strip_html("<table><tr><td>a</td></tr>|<tr><td>b</td></tr></table>") == "|\na\nb"


def test_nested_tables_and_cells_keep_their_lines() -> None:
    doc = "<table><tr><td>x<table><tr><td>in</td></tr></table>y</td><td>z</td></tr></table>w"
    assert strip_html(doc) == "x\nin\ny\nz\nw"


# ----------------------------------------------------------------------------------------------- others
def test_quality_word_bounds_without_a_full_split() -> None:
    cfg = QualityConfig(min_words=2, max_words=5)
    assert quality_reason("a b c d e", cfg) is None
    assert quality_reason("a b c d e f", cfg) == "too_many_words"
    assert quality_reason(" a ", cfg) == "too_few_words"
    assert quality_reason("w " * 5_000_000, QualityConfig(max_words=10)) == "too_many_words"
    assert quality_reason("x", QualityConfig(min_words=0, max_words=0)) == "too_many_words"
    assert quality_reason("  ", QualityConfig(min_chars=0, min_words=0, max_words=0)) is None


@pytest.mark.parametrize("text", [
    "a@" * 50_000, "0123456789" * 10_000, "<div>" * 20_000, "Dr " * 30_000, "\n \n" * 30_000, "x" * 200_000,
])
def test_pathological_inputs_pass_through_every_step(text: str) -> None:
    # Smoke test on the inputs benchmarks/doc_scaling.py times at 50 MB: each step returns, keeps its output
    # sane, and never grows the text.
    for step in (normalize_text, strip_html, remove_urls, normalize_whitespace):
        out = step(text)
        assert isinstance(out, str) and len(out) <= len(text)
    assert len(dedup_key(text, "normalized")) == 16
