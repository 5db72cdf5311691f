"""Unit tests of the cleaning steps: pure functions first, then their batch adapters (no Ray)."""

import pyarrow as pa
import pytest

from curation import columns
from curation.steps.html import HtmlConfig, HtmlStripper, looks_like_html, strip_html
from curation.steps.normalize import NormalizeConfig, UnicodeNormalizer, normalize_text
from curation.steps.quality import QualityConfig, QualityFilter, quality_reason
from curation.steps.urls import UrlConfig, remove_urls
from curation.steps.whitespace import WhitespaceConfig, normalize_whitespace

SEED_HTML_RE = r"<.*?>"


# ----------------------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("ｆｕｌｌ－ｗｉｄｔｈ", "full-width"),  # full-width Latin folds
        ("ﬁne", "fine"),  # ligature
        ("x²", "x2"),  # superscript
        ("a\u00a0b", "a b"),  # no-break space becomes a space
        ("line1\r\nline2\rline3", "line1\nline2\nline3"),
        ("nul\x00 and bell\x07 and zwsp\u200b gone\ufeff", "nul and bell and zwsp gone"),
        ("tab\tand\nnewline stay", "tab\tand\nnewline stay"),
        ("", ""),
    ],
)
def test_normalize_nfkc(raw, want):
    assert normalize_text(raw) == want


def test_normalize_forms_and_none():
    assert normalize_text("ﬁ", NormalizeConfig(form="NFC")) == "ﬁ"  # NFC keeps compatibility characters
    assert normalize_text("e\u0301", NormalizeConfig(form="NFC")) == "é"
    assert normalize_text("ﬁ\x07", NormalizeConfig(form="none", strip_control=False)) == "ﬁ\x07"
    with pytest.raises(ValueError, match="NFKC, NFC"):
        NormalizeConfig(form="nfkc")


# ----------------------------------------------------------------------------------------------- html


def test_html_drops_script_style_comments_and_unescapes():
    html = (
        "<html><head><title>T</title><style>p { color: red }</style></head><body>"
        "<!-- a comment --><p>Fish &amp; chips &#8217;n&#x27; caf&eacute;</p>"
        "<script>var tracking = function() { return 1; };</script><noscript>enable JS</noscript></body></html>"
    )
    out = strip_html(html)
    assert out == "Fish & chips ’n' café"
    import re

    seed = re.sub(SEED_HTML_RE, "", html)
    assert "function()" in seed and "color: red" in seed and "&amp;" in seed  # what the seed leaves behind


def test_html_tags_spanning_lines_and_block_boundaries():
    html = '<div class="a\n b">one</div><p\n>two <b>bold</b>\n wrapped</p><ul><li>x</li><li>y</li></ul>three<br>four'
    assert strip_html(html) == "one\ntwo bold wrapped\nx\ny\nthree\nfour"


def test_html_pre_keeps_code_layout():
    html = "<p>Run:</p><pre>def f():\n    return 1\n</pre><p>done</p>"
    assert strip_html(html) == "Run:\ndef f():\n    return 1\ndone"
    assert strip_html(html, HtmlConfig(keep_pre=False)) == "Run:\ndef f(): return 1\ndone"


def test_html_plain_text_is_left_alone_but_entities_unescaped():
    assert strip_html("if a < b and c > d then") == "if a < b and c > d then"
    assert strip_html("AT&amp;T &lt;3") == "AT&T <3"
    assert strip_html("AT&T") == "AT&T"
    assert not looks_like_html("x <5 y")
    assert looks_like_html("x <br/> y") and looks_like_html("<!DOCTYPE html>") and looks_like_html("a</p>")


def test_html_private_use_markers_in_input_do_not_leak():
    assert strip_html("<p>a\ue000b\ue001c</p>") == "abc"


def test_html_only_scripts_becomes_empty_and_fragments_work():
    assert strip_html("<script>alert(1)</script><style>x{}</style>") == ""
    assert strip_html("<b>bold</b> text") == "bold text"


def test_html_batch_adapter_skips_dropped_and_null_rows():
    batch = pa.table({
        "body": ["<p>a</p>", "<p>b</p>", None],
        columns.DROP_REASON: [None, "duplicate", None],
    })
    out = HtmlStripper(text_column="body")(batch)
    assert out.column("body").to_pylist() == ["a", "<p>b</p>", None]
    assert out.column(columns.DROP_REASON).to_pylist() == [None, "duplicate", None]


# ----------------------------------------------------------------------------------------------- urls


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("see https://x.org/a?b=1&c=2.", "see ."),
        ("(https://example.com/path)", "()"),
        ("wiki https://en.wikipedia.org/wiki/Foo_(bar) here", "wiki  here"),
        ("go to www.example.com, now", "go to , now"),
        ("HTTP://EXAMPLE.COM/X", ""),
        ("ftp://files.example.com stays", "ftp://files.example.com stays"),
        ("email me@www.example.com stays", "email me@www.example.com stays"),
        ("no urls here", "no urls here"),
    ],
)
def test_remove_urls(raw, want):
    assert remove_urls(raw) == want


def test_remove_urls_replacement_token():
    assert remove_urls("a http://x.io/b. c", UrlConfig(replacement="[URL]")) == "a [URL]. c"


# ----------------------------------------------------------------------------------------- whitespace


def test_whitespace_keeps_one_newline_between_paragraphs_by_default():
    assert normalize_whitespace("  a \t  b\n\n\n   c  \n") == "a b\nc"


def test_whitespace_max_newlines_and_flatten():
    text = "a\n\n\n\nb\nc"
    assert normalize_whitespace(text, WhitespaceConfig(max_newlines=2)) == "a\n\nb\nc"
    assert normalize_whitespace(text, WhitespaceConfig(keep_newlines=False)) == "a b c"
    assert normalize_whitespace(" \n \t ") == ""
    with pytest.raises(ValueError):
        WhitespaceConfig(max_newlines=0)


def test_whitespace_unicode_spaces():
    assert normalize_whitespace("a\u2003\u3000b") == "a b"


# -------------------------------------------------------------------------------------------- quality


def test_quality_bounds():
    cfg = QualityConfig(min_chars=5, max_chars=50, min_words=2, max_words=5)
    assert quality_reason("abc", cfg) == "too_short"
    assert quality_reason("x" * 51, cfg) == "too_long"
    assert quality_reason("oneword", cfg) == "too_few_words"
    assert quality_reason("a b c d e f", cfg) == "too_many_words"
    assert quality_reason("two words", cfg) is None


def test_quality_long_word_and_huge_document():
    cfg = QualityConfig(min_words=3)
    assert quality_reason("x" * 10_000 + " b c", cfg) is None  # no prefix heuristics: words are counted
    assert quality_reason("x" * 10_000, cfg) == "too_few_words"
    assert quality_reason("word " * 2_000_000, cfg) is None  # 10 MB: maxsplit stops early


def test_quality_config_validation():
    with pytest.raises(ValueError, match="min_chars"):
        QualityConfig(min_chars=10, max_chars=5)


def test_quality_filter_marks_without_removing_and_keeps_earlier_reasons():
    batch = pa.table({"text": ["ok text here", "no", None, "a b c"], columns.DROP_REASON: [None, None, None, "duplicate"]})
    out = QualityFilter(QualityConfig(min_words=3))(batch)
    assert out.num_rows == 4
    assert out.column(columns.DROP_REASON).to_pylist() == [None, "too_few_words", None, "duplicate"]


def test_normalizer_adapter_without_drop_column():
    out = UnicodeNormalizer()(pa.table({"text": ["ｘ", None]}))
    assert out.column("text").to_pylist() == ["x", None]


def test_html_block_tags_match_ascii_case_only_like_the_parser():
    # any ASCII case is the tag; the Unicode case folds of re.IGNORECASE (İ -> i, ſ -> s, K -> k) are not
    assert strip_html("a<DiV>b</dIv>c<BlockQuote>q</BLOCKQUOTE>") == "a\nb\nc\nq"
    assert strip_html("a<dİv>b</dİv>c") == "abc"
    assert strip_html("x<ſection>y</ſection>z<blocKquote>w</blocKquote>") == "x<ſection>yz\nw"  # not a tag
    assert strip_html("<TABLE><TR><TD>1</TD><TD>2</TD></TR></TABLE><PRE>  a\n b</PRE>") == "1\n2\n  a\n b"
