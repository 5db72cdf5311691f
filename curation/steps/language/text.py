"""What the detector sees: a bounded sample of a cleaned one-line copy of the text, and the CJK script rule.

Pure functions on strings; no model.
"""

from __future__ import annotations

import re

# ASCII-only character classes on purpose: Chinese and Japanese have no spaces, so ``\S+`` next to a URL or
# an address would swallow the surrounding sentence.
_MARKUP = re.compile(
    r"<[^<>]{0,300}>"                                        # tags, also ones that span lines
    r"|&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,9});"  # entities
    r"|(?:https?://|www\.)[\x21-\x7e]+"                      # URLs
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # e-mail addresses
)
_ASCII_NON_LETTERS = bytes(b for b in range(128) if not chr(b).isalpha())
_CJK_RANGES = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"  # Han
    "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"                        # Hiragana, Katakana (+ half-width)
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"                        # Hangul
)
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_NON_CJK_WORD = re.compile(rf"[^\W\d_{_CJK_RANGES}]+")
_CJK_ANY = re.compile(f"[{_CJK_RANGES}]")

_KANA_SHARE_JA = 0.1
"""Kana among the CJK characters from which text is Japanese: Japanese prose has 30-60 %, Chinese none."""
_HANGUL_SHARE_KO = 0.3
"""Hangul among the CJK characters from which text is Korean (Korean may quote Hanja, never the reverse)."""
_MIN_CJK = 3
"""Fewer CJK characters than this never trigger the script rule (a quoted name in English text)."""


def sample_text(text: str, sample_chars: int) -> str:
    """At most ``sample_chars`` characters of ``text``: all of it, or its head, middle and tail.

    Three windows rather than a prefix because long documents often open with boilerplate (a licence, a
    navigation bar) in another language than their body.
    """
    if len(text) <= sample_chars:
        return text
    part = sample_chars // 3
    mid = (len(text) - part) // 2
    return " ".join((text[:part], text[mid:mid + part], text[-part:]))


def clean_for_detection(text: str) -> str:
    """Single-line copy of ``text`` without markup, entities, URLs or e-mail addresses. Only the detector
    sees it; the row's text is never changed. fastText reads one line: a newline ends its input.

    The markup regex only runs when one of its trigger characters is present: on clean text it would
    cost more than the fastText prediction itself.
    """
    if "<" in text or "&" in text or "@" in text or "://" in text or "www." in text:
        text = _MARKUP.sub(" ", text)
    return " ".join(text.split())


def count_letters(text: str) -> int:
    """Letters in ``text`` (any script; digits, punctuation, symbols and emoji are not letters)."""
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_NON_LETTERS))
    return sum(map(str.isalpha, text))


def script_language(text: str, cjk_share: float) -> tuple[str, float] | None:
    """Decide CJK-dominated text by its script, or return None to let the model decide.

    Models trained on clean monolingual text read ``pip install numpy`` and ``-m`` in technical Chinese as
    Catalan, Indonesian or English (langdetect gets 5 % of the benchmark's technical zh/ja paragraphs
    right); the script is unambiguous. Kana -> ja (Japanese prose is 30-60 % kana, Chinese has none),
    Hangul -> ko, Han only -> zh. The last one is not left to the model: fastText's lite model calls short
    Han-only Chinese (``將返回``, ``参见 和 选项。``) Japanese, while Japanese sentences without any kana are
    rare (headings, lists of kanji compounds). The score is the share of CJK characters consistent with the
    decision (1.0 for ordinary text).
    """
    han = len(_HAN.findall(text))
    kana = len(_KANA.findall(text))
    hangul = len(_HANGUL.findall(text))
    cjk = han + kana + hangul
    if cjk < _MIN_CJK:
        return None
    words = len(_NON_CJK_WORD.findall(text))
    if cjk < cjk_share * (cjk + words):
        return None
    if kana >= _KANA_SHARE_JA * cjk and kana >= hangul:
        return "ja", (kana + han) / cjk
    if hangul >= _HANGUL_SHARE_KO * cjk:
        return "ko", (hangul + han) / cjk
    if kana == 0 and hangul == 0:
        return "zh", 1.0
    return None




_LATIN_LETTER = re.compile(r"[^\W\d_\u0250-\U0010ffff]")
"""A letter of the Latin blocks (ASCII, Latin-1, Latin Extended-A/B: up to U+024F)."""
_OTHER_LETTER = re.compile(r"[^\W\d_\x00-\u024f]")
"""A letter of any other script (IPA and beyond: Greek, Cyrillic, Arabic, CJK, ...)."""
MIXED_SCRIPT_SHARE = 0.1
"""Share of the letters the lesser of Latin and other scripts must reach for :func:`mixed_scripts`."""


def mixed_scripts(text: str, share: float = MIXED_SCRIPT_SHARE) -> bool:
    """Whether Latin letters and letters of other scripts each make at least ``share`` of the letters of
    ``text``: a Japanese page quoting commands, a Russian one with code. ASCII text costs one check."""
    if text.isascii():
        return False
    other = len(_OTHER_LETTER.findall(text))
    if not other:
        return False
    latin = len(_LATIN_LETTER.findall(text))
    return min(latin, other) >= share * (latin + other)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds any Han, Kana or Hangul character (one C-level check for ASCII text)."""
    return not text.isascii() and _CJK_ANY.search(text) is not None
