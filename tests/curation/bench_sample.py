"""A deterministic few-thousand-document sample of the benchmark corpus (``benchmarks/corpus.py``), for tests
that need real text with real duplicates.

Sampled by a hash of each document's case- and space-folded text, not by position: every copy of a text (and
most of its near copies) is kept or left together, so the sample keeps the corpus's share of duplicates
(about 1 in 6 rows) where sampling every n-th line would keep almost none."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_WS = re.compile(r"\s+")


def bench_corpus() -> Path | None:
    """The benchmark corpus, if built: ``$CURATION_BENCH_CORPUS`` or ``data/bench/corpus``."""
    path = Path(os.environ.get("CURATION_BENCH_CORPUS", REPO / "data" / "bench" / "corpus"))
    return path if (path / "_manifest.json").is_file() else None


def write_sample(corpus: Path, out: Path, every: int = 50, files: int = 3) -> int:
    """Write the documents whose folded-text hash is 0 modulo ``every`` to ``files`` jsonl files in ``out``,
    round robin (so copies of a text land in different files, hence different read tasks). Returns the count."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(out / f"bench-{i}.jsonl", "w", encoding="utf-8")) for i in range(files)]
        for part in sorted(corpus.glob("part-*.jsonl")):
            with open(part, encoding="utf-8") as fh:
                for line in fh:
                    text = json.loads(line).get("text") or ""
                    folded = _WS.sub(" ", text.casefold()).strip().encode("utf-8", "surrogatepass")
                    if int.from_bytes(hashlib.blake2b(folded, digest_size=8).digest(), "big") % every == 0:
                        handles[n % files].write(line)
                        n += 1
    return n
