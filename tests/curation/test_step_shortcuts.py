"""The steps' shortcuts give exactly what their full paths give, on real pages and on adversarial text.

Each shortcut (ASCII normalization, whitespace by ``str.split``, html's line assembly and its block-tag
regex) is compared function for function with the definition it replaces: :func:`normalize_text_full`,
:func:`normalize_whitespace_regex`, and the regex versions kept below. The texts are every step's real
inputs: the raw documents and what the steps before it made of them (html sees normalized text, whitespace
sees text without HTML and URLs), drawn from data/sample/ and, when it is there, a deterministic sample of a few
thousand documents of the benchmark corpus (``python benchmarks/corpus.py`` builds it; ``CURATION_BENCH_CORPUS``
points elsewhere).
"""

from __future__ import annotations

import html
import json
import os
import re
from functools import cache
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from curation.steps import html as html_step
from curation.steps.html import HtmlConfig, strip_html
from curation.steps.normalize import NormalizeConfig, normalize_text, normalize_text_full
from curation.steps.urls import remove_urls
from curation.steps.whitespace import WhitespaceConfig, normalize_whitespace, normalize_whitespace_regex

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("CURATION_BENCH_CORPUS", REPO / "data" / "bench" / "corpus"))
STRIDE, PER_PART = 20, 250
"""Every 20th document of each corpus part, 250 per part: ~4,000 documents across every source."""

WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
"""Every character ``str.isspace`` (and so ``\\s``) takes for whitespace: \\t \\n \\x0b \\x0c \\r \\x1c-\\x1f, space,
\\x85, no-break and typographic spaces, \\u2028 \\u2029 ..."""

ADVERSARIAL = [
    "", " ", "\n", "\n\n\n", " \n \n ", "\r\n\r\n", "a\r\nb\rc\n", "\t\tx\t\t", "x" * 3 + "\x00\x07\x1f\x7f" + "y",
    "only ascii, nothing to do.", "café\u00a0au lait", "ﬁne ｆｕｌｌ x²", "e\u0301" * 3, "a" + "\u0301" * 100,
    "zero\u200bwidth\ufeffbom\x85nel\u2028ls\u2029ps", WHITESPACE, f"a{WHITESPACE}b{WHITESPACE}c",
    f"line one {WHITESPACE} \n  line two\x0b\x0cthree\x1c\x1d\x1e\x1fend\n\n \t\n",
    "\x1c\x1d\x1e\x1f", "\u3000全角\u3000スペース\u3000", "a \n b \n\n c \n", "x\n\u00a0\ny", "tab\tand\nnewline",
    "<p>one</p><p>two</p>", "<P>UPPER</P><Br><DIV>d</DIV><Td>c</tD>", "<pre>  code\n    kept  </pre>after",
    "<div>\ue000marker\ue001in\ue002input</div>", "<p>a\ue000b</p>", "<p>a\ue001b</p>", "<p>a\ue002b</p><pre>x\ue002</pre>", "<table><tr><td>a<td>b</table>text <dd>x</dd><dl><dt>t</dl>",
    "<h1>h</h1><h6 class=x>h6</h6><header>hd</header><hr/><summary>s</summary><section>s</section>",
    "<detailsx>not a block</detailsx><divx>no</divx><d>no</d><table-x>no</table-x>",
    "text &amp; entities &#8217; &nbsp; without tags", "a < b and c > d", "<!-- c --><!doctype html><b>x</b>",
    "<script>var a = '<p>';</script><style>p{}</style><p>\u00a0nbsp\u2003em space\u3000</p>",
    "<ul><li>one\n\n  two</li><li>\t three \u2028 four</li></ul>", "<p>" * 2000 + "deep",
]


@cache
def _corpus_texts() -> tuple[str, ...]:
    if not CORPUS.is_dir():
        return ()
    texts: list[str] = []
    for part in sorted(p for p in CORPUS.glob("*.jsonl") if not p.name.startswith("_")):
        with part.open("rb") as f:
            taken = 0
            for i, line in enumerate(f):
                if i % STRIDE == 0:
                    texts.append(json.loads(line)["text"])
                    taken += 1
                    if taken >= PER_PART:
                        break
    return tuple(texts)


@cache
def raw_texts() -> tuple[str, ...]:
    """The sample documents (web pages, notes, log lines), the corpus sample and the adversarial cases."""
    sample = REPO / "data" / "sample"
    texts = []
    for line in (sample / "web_pages.jsonl").read_text().split("\n"):
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError):  # the messy sample has broken lines on purpose
            texts.append(line)
    texts += [p.read_text() for p in sorted((sample / "notes").glob("*.txt"))]
    texts += (sample / "customer_logs.csv").read_text().splitlines()
    return (*(t for t in texts if isinstance(t, str)), *_corpus_texts(), *ADVERSARIAL)


@cache
def stage_inputs() -> dict[str, tuple[str, ...]]:
    """What each step sees in the pipeline: the raw text and the previous steps' output."""
    raw = raw_texts()
    normalized = tuple(normalize_text_full(t) for t in raw)
    no_html = tuple(_strip_html_reference(t) for t in normalized)
    no_urls = tuple(remove_urls(t) for t in no_html)
    return {"raw": raw, "normalized": normalized, "no_html": no_html, "no_urls": no_urls}


def _mismatches(fast, full, texts) -> list[str]:
    return [t[:200] for t in texts if fast(t) != full(t)]


def test_the_sample_is_big_enough():
    assert len(raw_texts()) > 1000
    if not CORPUS.is_dir():
        pytest.skip(f"no benchmark corpus at {CORPUS}: only data/sample/ and the adversarial cases were compared")
    assert len(_corpus_texts()) >= 3000


# ------------------------------------------------------------------------------------------------ normalize


@pytest.mark.parametrize("cfg", [NormalizeConfig(), NormalizeConfig(form="NFC"), NormalizeConfig(form="none"),
                                 NormalizeConfig(strip_control=False), NormalizeConfig(form="NFKD")])
def test_normalize_ascii_shortcut_is_identical(cfg):
    texts = stage_inputs()["raw"] + tuple(chr(c) * 3 + "a\r\n" for c in range(0x80))
    assert not _mismatches(lambda t: normalize_text(t, cfg), lambda t: normalize_text_full(t, cfg), texts)


# ----------------------------------------------------------------------------------------------- whitespace


@pytest.mark.parametrize("cfg", [WhitespaceConfig(), WhitespaceConfig(keep_newlines=False),
                                 WhitespaceConfig(max_newlines=2)])
@pytest.mark.parametrize("stage", ["raw", "no_urls"])
def test_whitespace_split_path_is_identical_to_the_regexes(cfg, stage):
    fast, full = (lambda t: normalize_whitespace(t, cfg)), (lambda t: normalize_whitespace_regex(t, cfg))
    assert not _mismatches(fast, full, stage_inputs()[stage])


def test_str_split_and_backslash_s_agree_on_every_character():
    """The whitespace and html shortcuts rest on this: ``str.split()`` and ``\\s`` split on the same characters."""
    assert [c for c in map(chr, range(0x110000)) if (re.match(r"\s", c) is not None) != c.isspace()] == []


# ----------------------------------------------------------------------------------------------------- html

_FLAT_OTHER = "|".join(html_step._OTHER_BLOCKS)
_BLOCK_TAG_FLAT = re.compile(r"<(?=(?:{0}|table)[\s/>]|/(?:{0}|{1})[\s/>])".format(_FLAT_OTHER,
                                                                                   "|".join(html_step._CELLS)),
                             re.IGNORECASE)
"""The block-tag regex as a flat alternation, as it was before :func:`curation.steps.html._trie`."""
_INLINE_WS = re.compile(r"\s+")


def _lines_from_marked_regex(text: str, keep_pre: bool) -> str:
    """``_lines_from_marked`` as it was: each piece collapsed with a regex."""
    lines: list[str] = []
    for part in html_step._PRE_SPLIT.split(text):
        if not part:
            continue
        if keep_pre and part[0] == html_step._PRE_OPEN:
            body = html_step._MARKERS.sub("", part).strip("\n")
            if body.strip():
                lines.append(body)
            continue
        for piece in html_step._MARKERS.split(part):
            piece = _INLINE_WS.sub(" ", piece).strip()
            if piece:
                lines.append(piece)
    return "\n".join(lines)


def _strip_html_reference(text: str, cfg: HtmlConfig = HtmlConfig()) -> str:
    """``strip_html`` as it was before its shortcuts (markers searched by regex, the flat block-tag regex, the
    regex line assembly), on the module's unchanged helpers."""
    h = html_step
    if not h.looks_like_html(text):
        return html.unescape(text) if "&" in text else text
    text = h._MARKERS.sub("", text)
    if text.count("<") > h._DEPTH_CHECK_FROM and h._nesting_depth(text) > h.MAX_DEPTH:
        text = h._flatten(text, frozenset(cfg.drop_tags) | h._RAW_TEXT)
    table_tags = text.count("<t") + text.count("<T")
    if table_tags > h._MAX_STRAY and len(h._STRAY_TEXT.findall(text)) > h._MAX_STRAY:
        text = h._STRAY_TEXT.sub(r"\1<td>\2</td>", text)
    text = _BLOCK_TAG_FLAT.sub(h._BLOCK + "<", text)
    if table_tags:
        text = h._AFTER_TAG_RE.sub(r"\g<0>" + h._BLOCK, text)
    text = h._PRE_OPEN_RE.sub(h._PRE_OPEN + "<pre", text)
    text = h._PRE_CLOSE_RE.sub("</pre>" + h._PRE_CLOSE, text)
    tree = LexborHTMLParser(text)
    if cfg.drop_tags:
        tree.strip_tags(list(cfg.drop_tags))
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return ""
    return _lines_from_marked_regex(root.text(deep=True, separator="", strip=False), cfg.keep_pre)


def test_block_tag_trie_matches_the_flat_alternation():
    texts = stage_inputs()["normalized"]
    marked = html_step._BLOCK + "<"
    assert not _mismatches(lambda t: html_step._BLOCK_TAG_RE.sub(marked, t), lambda t: _BLOCK_TAG_FLAT.sub(marked, t),
                           texts)
    tags = [f"<{t}>" for t in (*html_step.BLOCK_TAGS, "d", "t", "h", "h7", "tab", "tables", "divs", "l", "s")]
    tags += [f"</{t[1:]}" for t in tags] + [t.upper() for t in tags]
    assert not _mismatches(lambda t: html_step._BLOCK_TAG_RE.sub(marked, t),
                           lambda t: _BLOCK_TAG_FLAT.sub(marked, t), tags)


@pytest.mark.parametrize("keep_pre", [True, False])
def test_line_assembly_matches_the_regex_version(keep_pre):
    """On the parser's real output (markers in place), as ``strip_html`` hands it over."""
    raws: list[str] = []
    original = html_step._lines_from_marked

    def capture(raw: str, keep: bool) -> str:
        raws.append(raw)
        return original(raw, keep)

    html_step._lines_from_marked = capture
    try:
        for text in stage_inputs()["normalized"]:
            strip_html(text)
    finally:
        html_step._lines_from_marked = original
    assert len(raws) > 100
    assert not _mismatches(lambda r: html_step._lines_from_marked(r, keep_pre),
                           lambda r: _lines_from_marked_regex(r, keep_pre), raws + ADVERSARIAL)


@pytest.mark.parametrize("cfg", [HtmlConfig(), HtmlConfig(keep_pre=False), HtmlConfig(drop_tags=())])
def test_strip_html_is_identical_end_to_end(cfg):
    assert not _mismatches(lambda t: strip_html(t, cfg), lambda t: _strip_html_reference(t, cfg),
                           stage_inputs()["normalized"])
