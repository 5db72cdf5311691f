"""HTML to text with a real parser (selectolax / Lexbor), keeping block structure as line breaks.

Why not the textbook ``re.sub(r'<.*?>', '', text)``: it keeps the bodies of ``<script>`` and ``<style>``
(JavaScript and CSS end up in the corpus), leaves ``&amp;`` and ``&#8217;`` as they are, misses tags that span
lines (``.`` does not match a newline) and glues ``<p>one</p><p>two</p>`` into ``onetwo``.

How: before parsing, a private-use marker character is put in front of every block-level tag (one C-level
regex pass), and ``<pre>`` blocks are fenced with two other markers. Lexbor then parses, we drop the
elements whose content is not prose, and take the text of the body in one call. Each marker becomes a line
break; inline whitespace between markers is collapsed as a browser would, while ``<pre>`` content keeps its
spaces and newlines (code formatting is worth learning). Text without anything tag-like skips the parser and
only has its entities unescaped.

Cost stays linear in the document however it is written: markers never land between table rows (where the
parser would move them), thousands of unclosed or nested elements are flattened to :data:`MAX_DEPTH`, and
text left between the rows of big tables is put in cells (see ``_MAX_STRAY``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np
from selectolax.lexbor import LexborHTMLParser

from curation.steps.base import TextStep

_BLOCK, _PRE_OPEN, _PRE_CLOSE = "\ue000", "\ue001", "\ue002"
_MARKERS = re.compile("[\ue000-\ue002]")

BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "ul",
)
"""Elements whose start and end mean a line break in the extracted text."""

DROP_TAGS = ("script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas")
"""Elements whose whole content is not prose."""

_LOOKS_LIKE_HTML = re.compile(r"<(?:[A-Za-z][A-Za-z0-9-]*[\s/>]|/[A-Za-z]|!)")
_CELLS = ("td", "th", "caption")
_TABLE_PARTS = ("table", "tbody", "thead", "tfoot", "tr", *_CELLS)


def _trie(words: list[str]) -> str:
    """A regex matching any of ``words``, factored by common prefixes (``d(?:d|i(?:alog|v)|l|t)``): ``re``
    tries the branches of a flat alternation one by one at every ``<``, the trie only those that fit, which
    halves the cost of the block-tag pass below."""
    heads: dict[str, list[str]] = {}
    for w in words:
        heads.setdefault(w[:1], []).append(w[1:])
    ends = "" in heads
    branches = [re.escape(h) + _trie(rest) for h, rest in sorted(heads.items()) if h]
    if not branches:
        return ""
    group = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
    return group + ("?" if ends else "")


def _ascii_case(pattern: str) -> str:
    """``pattern`` with each ASCII letter outside escapes as ``[xX]``: the parser matches tag names ignoring ASCII
    case only, while ``re.IGNORECASE`` also folds ``ſ`` into ``s``, ``K`` (Kelvin) into ``k`` and ``İ`` into ``i``
    (so ``<DİV>``, which is no tag, got a line break) and scans 1.3x slower."""
    out: list[str] = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            out.append(c + next(chars))
        elif c.isascii() and c.isalpha():
            out.append(f"[{c.lower()}{c.upper()}]")
        else:
            out.append(c)
    return "".join(out)


_OTHER_BLOCKS = [t for t in BLOCK_TAGS if t not in _TABLE_PARTS]
# Markers go where the parser keeps them in place: before and after blocks, but inside table cells, before a
# table and after it. Text between table parts (a marker before <tr>, <td> or </table>) is "foster-parented"
# to before the table, and Lexbor appends each such piece to one growing text node: a table of 16,000 rows
# took 1 s and 0.9 GB for 0.5 MB of HTML.
_BLOCK_TAG_RE = re.compile(_ascii_case(r"<(?=(?:{})[\s/>]|/(?:{})[\s/>])".format(
    _trie([*_OTHER_BLOCKS, "table"]), _trie([*_OTHER_BLOCKS, *_CELLS]))))
_AFTER_TAG_RE = re.compile(_ascii_case(r"<(?:{})(?=[\s/>])[^<>]*>|</table\s*>".format("|".join(_CELLS))))
_PRE_OPEN_RE = re.compile(_ascii_case(r"<pre(?=[\s>])"))
_PRE_CLOSE_RE = re.compile(_ascii_case(r"</pre\s*>"))
_PRE_SPLIT = re.compile("(\ue001[^\ue002]*\ue002?)")


@dataclass(frozen=True)
class HtmlConfig:
    drop_tags: tuple[str, ...] = DROP_TAGS
    """Elements removed together with their content."""
    keep_pre: bool = True
    """Keep spaces and newlines inside ``<pre>`` (code blocks); otherwise collapse them like prose."""


def looks_like_html(text: str) -> bool:
    """True when the text has something a parser would treat as a tag, comment or doctype."""
    return "<" in text and _LOOKS_LIKE_HTML.search(text) is not None


def _lines_from_marked(text: str, keep_pre: bool) -> str:
    """The parser's text with each marker a line break: prose pieces get their whitespace collapsed and
    stripped (``" ".join(piece.split())``: the same as ``re.sub(r"\\s+", " ", piece).strip()``, as both split
    on ``str.isspace``, at a fraction of the cost over tens of thousands of pieces), empty ones go."""
    lines: list[str] = []
    for part in _PRE_SPLIT.split(text) if _PRE_OPEN in text else (text,):
        if not part:
            continue
        if keep_pre and part[0] == _PRE_OPEN:
            body = _MARKERS.sub("", part).strip("\n")
            if body.strip():
                lines.append(body)
            continue
        lines.extend(filter(None, map(" ".join, map(str.split, _MARKERS.split(part)))))
    return "\n".join(lines)


MAX_DEPTH = 256
"""Deepest nesting of elements handed to the parser. HTML's tree builder walks the stack of open elements at
many start tags (is a ``<p>`` open in button scope? which list item does this ``<li>`` close?), so N nested
or unclosed ``<div>``s cost N²: 10,000 took 1 s, 100,000 would take 100 s. Browsers cap the depth too
(Chromium at 512). Tags nested deeper are removed before parsing (a block tag leaves its line break), except
those of the elements dropped with their content and of raw-text elements."""
_DEPTH_CHECK_FROM = 4 * MAX_DEPTH
"""Documents with fewer ``<`` than this skip the depth check: however they nest, they cost the parser at most
a million steps (a few ms), and most documents are that small."""

_VOID = ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
         "wbr", "keygen", "frame", "basefont", "bgsound", "image")
_SELF_CLOSING = ("p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup", "rb",
                 "rp", "rt", "rtc", "colgroup", "caption", "html", "head", "body")
"""Elements the parser closes by itself when the next one of their kind starts; they never pile up."""
_NOT_NESTING = frozenset(_VOID + _SELF_CLOSING)
_NESTING_TAG = re.compile(r"<(/?)(?!(?:{})[\s/>])[a-z]".format("|".join(sorted(_NOT_NESTING))))
"""Start or end tag of an element that can nest, in lower-cased text (twice as fast as ``re.IGNORECASE``)."""
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
                       "noscript", "plaintext"})
"""Elements whose content the parser reads as text, not as tags."""
_TAG = re.compile(r"<(?:(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>?|!--)")
_MAX_STRAY = 256
"""Most pieces of text left between the rows and cells of tables. The parser moves such text before its
table ("foster parenting") and appends every piece to one growing text node: 256,000 pieces took 7 s and
5 GB for 5 MB of HTML. Past this many, each piece is wrapped in a cell of its own, so it stays in place."""
_STRAY_TEXT = re.compile(r"(<(?:table|tbody|thead|tfoot|tr)(?=[\s/>])[^<>]*>|</(?:td|th|tr|caption|tbody|thead|tfoot)"
                         r"\s*>)([^<]*[^\s<][^<]*)", re.IGNORECASE)
"""Text that is not whitespace, right after a table tag that leaves the parser between rows or cells."""
_BLOCK_SET = frozenset(BLOCK_TAGS)
_FOREIGN = frozenset({"svg", "math"})


def _nesting_depth(text: str) -> int:
    """An upper bound of how deep the elements of ``text`` nest: start tags minus end tags of the elements
    that can nest, at its highest (tags in scripts and comments count too, which only overestimates)."""
    marks = np.array(_NESTING_TAG.findall(text.lower()))
    if marks.size == 0:
        return 0
    depth = np.cumsum(np.where(marks == "/", -1, 1))
    # a stray end tag closes nothing: the depth never goes below zero
    return int((depth - np.minimum(np.minimum.accumulate(depth), 0)).max())


def _flatten(text: str, keep: frozenset[str]) -> str:
    """``text`` without the tags nested deeper than :data:`MAX_DEPTH` (block tags become line breaks).

    A small tokenizer, linear in the text: it skips comments and the content of raw-text elements, and inside
    SVG and MathML takes ``<x/>`` as closed, as the parser does. Elements in ``keep`` (those dropped with
    their content, raw text) stay whatever their depth. Only documents whose :func:`_nesting_depth` is too
    high come here.
    """
    parts: list[str] = []
    pos = done = depth = foreign = 0
    while (m := _TAG.search(text, pos)) is not None:
        pos = m.end()
        if m.group(2) is None:  # a comment: skip to its end
            end = text.find("-->", pos)
            pos = len(text) if end < 0 else end + 3
            continue
        closing, name = m.group(1) == "/", m.group(2).lower()
        if name in _NOT_NESTING or (not closing and foreign and m.group(3).endswith("/")):
            continue
        if closing:
            level, depth = depth, max(0, depth - 1)
            if name in _FOREIGN and foreign:
                foreign -= 1
        else:
            depth += 1
            level = depth
            foreign += name in _FOREIGN
        if level > MAX_DEPTH and name not in keep:
            parts += (text[done:m.start()], _BLOCK if name in _BLOCK_SET else "")
            done = m.end()
        if not closing and name in _RAW_TEXT:
            end = re.compile(rf"</{name}[\s/>]", re.IGNORECASE).search(text, pos)
            pos = len(text) if end is None else end.start()
    parts.append(text[done:])
    return "".join(parts)


def strip_html(text: str, cfg: HtmlConfig = HtmlConfig()) -> str:
    """Return the visible text of an HTML document or fragment, one block per line."""
    if not looks_like_html(text):
        return html.unescape(text) if "&" in text else text
    if _BLOCK in text or _PRE_OPEN in text or _PRE_CLOSE in text:  # ~15x cheaper than the regex's scan
        text = _MARKERS.sub("", text)  # our markers must not come from the input
    if text.count("<") > _DEPTH_CHECK_FROM and _nesting_depth(text) > MAX_DEPTH:
        text = _flatten(text, frozenset(cfg.drop_tags) | _RAW_TEXT)
    table_tags = text.count("<t") + text.count("<T")  # <table>, <td>, <tr>, ... (and <title>, <tt>)
    if table_tags > _MAX_STRAY and len(_STRAY_TEXT.findall(text)) > _MAX_STRAY:
        text = _STRAY_TEXT.sub(r"\1<td>\2</td>", text)
    text = _BLOCK_TAG_RE.sub(_BLOCK + "<", text)
    if table_tags:
        text = _AFTER_TAG_RE.sub(r"\g<0>" + _BLOCK, text)
    text = _PRE_OPEN_RE.sub(_PRE_OPEN + "<pre", text)
    text = _PRE_CLOSE_RE.sub("</pre>" + _PRE_CLOSE, text)
    tree = LexborHTMLParser(text)
    if cfg.drop_tags:
        tree.strip_tags(list(cfg.drop_tags))
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return ""
    raw = root.text(deep=True, separator="", strip=False)
    return _lines_from_marked(raw, cfg.keep_pre)


class HtmlStripper(TextStep):
    """Batch step: replace HTML in the text column of live rows by its visible text."""

    cfg: HtmlConfig

    def transform(self, text: str) -> str:
        return strip_html(text, self.cfg)
