"""How long a sample the language filter needs: cost and what gets through, on the cleaned benchmark corpus.

Usage (from the repository root; the first command once, ~1 minute):

    python -m curation run --input data/bench/corpus --output out/bench/cleaned \\
        --steps normalize,html,urls,whitespace,quality --overwrite true
    python benchmarks/language_sample.py --cleaned out/bench/cleaned

Every row that passed the cleaning steps (143,438 of the corpus's 150,719; no dedup) is decided by the real
filter (``curation.steps.language.filter_text``, keep English) under each setting below. Ground truth is the
curation benchmark's own (``benchmarks/curation.py``): a row's package language (``source_language``) and its
share of non-Latin letters (``_non_latin_share >= 0.2``). Reported per setting: rows kept, kept rows from
non-English packages, kept rows that are >= 20 % non-Latin letters, characters handed to fastText (the cost that
does not depend on the machine's load) and the CPU seconds of the decisions (``time.process_time``).

Settings: ``600`` (one 600-character sample: the default before 2026-11-30), ``300`` (one 300-character sample),
``300 + verify 600`` (the default since: a keep on text that mixes Latin and other scripts is decided again on
600 characters, ``LanguageConfig.verify_chars``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE.parent)]

SETTINGS = {"600": {"sample_chars": 600, "verify_chars": 0}, "300": {"sample_chars": 300, "verify_chars": 0},
            "300 + verify 600": {"sample_chars": 300, "verify_chars": 600}}


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_curation", HERE / "curation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_curation"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class CountingDetector:
    """The real detector, counting the characters it is handed."""

    def __init__(self, inner) -> None:
        self.inner, self.chars = inner, 0

    def predict(self, text: str) -> tuple[str, float]:
        self.chars += len(text)
        return self.inner.predict(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cleaned", type=Path, default=Path("out/bench/cleaned"), help="output of the cleaning run")
    args = p.parse_args(argv)
    from curation.steps.language import LanguageConfig, filter_text, get_detector

    files = sorted(args.cleaned.glob("data/*.parquet")) + sorted(args.cleaned.glob("heldout/*.parquet"))
    if not files:
        raise SystemExit(f"no parquet under {args.cleaned}/data: run the cleaning command in this script's docstring")
    bench = _bench_module()
    texts, non_en, non_latin = [], [], []
    for f in files:
        t = pq.read_table(f, columns=["text", "source"])
        for text, source in zip(t.column("text").to_pylist(), t.column("source").to_pylist()):
            texts.append(text or "")
            non_en.append((bench.source_language(source) if source else "unknown") != "en")
            non_latin.append(bench._non_latin_share(text or "") >= 0.2)
    print(f"{len(texts):,} cleaned rows from {args.cleaned}")
    print("| setting | kept | from non-English packages | >= 20 % non-Latin letters | characters to fastText | CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, settings in SETTINGS.items():
        cfg = LanguageConfig(languages=("en",), **settings)
        detector = CountingDetector(get_detector("fasttext"))
        t0 = time.process_time()
        kept = [filter_text(text, cfg, detector)[1] is None for text in texts]
        cpu = time.process_time() - t0
        print(f"| {name} | {sum(kept):,} | {sum(k and n for k, n in zip(kept, non_en)):,} | "
              f"{sum(k and n for k, n in zip(kept, non_latin)):,} | {detector.chars:,} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
