"""Tokenizer training at scale: seconds and peak memory with the ``--sample_bytes`` budget as the corpus grows, and
what sampling costs in held-out compression.

Two questions, each answered by fresh ``python -m modeling.tokenizer train`` processes (peak memory is the
process's own maximum resident set, from ``wait4``):

1. **Bounded cost.** At each corpus size in ``--sizes-mb`` (e.g. 100 and 1000), train with the default sample
   budget: the training time and memory should stay flat (the trainer sees the same sample), while the sizing
   pass (read + hash + count, no training) grows linearly and cheaply.
2. **Compression kept.** On one corpus (``--compare-mb``, e.g. the ~84 MB curated corpus), train once on all of it
   (``--sample_bytes null``) and once on the budget ``--compare-sample-mb``; both measure chars/token on the same
   hash-chosen held-out documents. Aim: the sample under 1 % worse.

The corpus: ``--corpus`` (files, directories or globs our reader takes: a curation output such as
``out/bench/ours/data``, or ``data/bench/corpus`` from ``benchmarks/corpus.py``), cut to the size asked for in file
order and written once as parquet under ``data/bench/tokenizer-sample/``. A size larger than the sources is made
of repeated passes over them, each document of pass k > 0 prefixed with a line ``[copy k]`` so that every copy
hashes differently: realistic for time and memory, useless for compression (the comparison refuses such a
corpus). Without ``--corpus`` the English prose corpus of ``benchmarks/tokenizer.py`` is used.

Usage (from the repository root; the full run takes ~15 minutes on 2 quiet cores):
    .venv/bin/python benchmarks/tokenizer_sample.py --corpus out/bench/ours/data --lang en --sizes-mb 100,1000 \\
        --compare-mb 84 --compare-sample-mb 32 --json out/bench-tokenizer-sample.json --write-docs
    .venv/bin/python benchmarks/tokenizer_sample.py --corpus out/bench/ours/data --sizes-mb 4,8 \\
        --sample-mb 2 --vocab-size 4000 --compare-mb 4 --compare-sample-mb 1        # a quick check of the script
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
OUT_DIR = REPO / "data" / "bench" / "tokenizer-sample"
SECTION = REPO / "docs" / "_sections" / "bench-tokenizer-sample.md"


def iter_source_texts(sources: list[str], lang: str | None = None) -> Iterator[str]:
    """Non-empty documents of ``sources`` in file order, through the reader every modeling stage uses; with
    ``lang``, only the rows of parquet shards whose ``lang`` column (a curation output's) says so."""
    from modeling.corpus import iter_text_batches, resolve_text_files

    files = resolve_text_files(sources, text_column="text")
    if lang is None:
        for batch in iter_text_batches(files, "text"):
            yield from batch
        return
    import pyarrow.parquet as pq

    for path in files:
        table = pq.read_table(path, columns=["text", "lang"])
        yield from (t for t, x in zip(table.column("text").to_pylist(), table.column("lang").to_pylist())
                    if t and x == lang)


def build(sources: list[str], megabytes: float, lang: str | None = None, shards: int = 8) -> tuple[Path, dict]:
    """``megabytes`` of UTF-8 text from ``sources`` as parquet shards (cached by size, sources and lang)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = hashlib.sha1("\0".join([*sources, lang or ""]).encode()).hexdigest()[:8] if sources else "prose"
    out = OUT_DIR / f"{key}-{megabytes:g}mb"
    if (out / "_done").exists():
        return out, json.loads((out / "_done").read_text())
    if not sources:
        from tokenizer import build_corpus  # benchmarks/tokenizer.py: English prose from the Python docs

        sources = [str(build_corpus(int(megabytes + 1)))]
    limit, size, copies = megabytes * 1e6, 0, 0
    docs: list[str] = []
    while size < limit:
        fresh = 0
        for text in iter_source_texts(sources, lang):
            text = f"[copy {copies}]\n{text}" if copies else text
            docs.append(text)
            fresh += 1
            size += len(text.encode("utf-8"))
            if size >= limit:
                break
        if not fresh:
            raise SystemExit(f"--corpus {sources} holds no text")
        copies += 1
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // shards)
    for i in range(shards):
        pq.write_table(pa.table({"text": docs[i * per : (i + 1) * per]}), out / f"part-{i:05d}.parquet")
    meta = {"docs": len(docs), "bytes": size, "copies": copies, "sources": sources, "lang": lang}
    (out / "_done").write_text(json.dumps(meta))
    return out, meta


def build_apart(sources: list[str], megabytes: float, lang: str | None) -> tuple[Path, dict]:
    """:func:`build` in a fresh process. Linux keeps a process's peak RSS across fork + exec, so a training
    process forked from a parent that held the corpus in memory would report the parent's size as its peak."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(build, (sources, megabytes, lang))


def train(corpus: Path, out: Path, vocab_size: int, sample_bytes: int | None, *extra: str) -> dict:
    """One training process (``extra`` flags appended): its wall and CPU seconds, peak memory (MB), stats."""
    cmd = [sys.executable, "-m", "modeling.tokenizer", "train", "--input", str(corpus), "--output", str(out),
           "--model", "unigram", "--vocab-size", str(vocab_size), "--no-show-progress",
           "--sample-bytes", "null" if sample_bytes is None else str(sample_bytes), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "true"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}{stdout[-1000:]}")
    stats = json.loads((out / "train_stats.json").read_text())
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_mb": round(usage.ru_maxrss / 1024), "train_s": stats["train_seconds"], "stats": stats,
            "log_tail": stderr.strip().splitlines()[-6:]}


def summary(run: dict) -> dict:
    s = run["stats"]
    return {k: run[k] for k in ("wall_s", "cpu_s", "peak_mb", "train_s")} | {
        "sample_docs": s["sample"].get("docs", s["train_docs"]), "sample_mb": round(s["train_bytes"] / 1e6, 1),
        "corpus_mb": round((s["sample"].get("corpus_bytes") or s["train_bytes"]) / 1e6, 1),
        "sizing_s": s["sample"].get("sizing_seconds", 0.0), "vocab": s["vocab_size"], "heldout_chars_per_token": s["heldout"]["chars_per_token"],
        "heldout_docs": s["heldout"]["docs"], "unk_rate": s["heldout"]["unk_rate"]}


def machine() -> str:
    import tokenizers

    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average at start "
            f"{os.getloadavg()[0]:.1f}; tokenizers {tokenizers.__version__}, Python {platform.python_version()}")


def write_docs(results: dict, command: str) -> None:
    from docs_section import section_opening

    lines = section_opening("Tokenizer training at scale: the sample budget", results["date"], command)
    lines += [f"on {results['machine']}; load average at the end {results['load_end']:.1f}. Unigram, vocab "
              f"{results['vocab_size']}; each run a fresh process; peak memory is its maximum resident set.", ""]
    lines += ["| corpus | trained on (sample) | wall | CPU | peak memory | sizing pass | reading + training "
              "| held-out chars/token |", "|---|---|---|---|---|---|---|---|"]
    for r in results["sizes"]:
        lines.append(f"| {r['corpus_mb']} MB | {r['sample_docs']:,} docs, {r['sample_mb']} MB | {r['wall_s']} s | "
                     f"{r['cpu_s']} s | {r['peak_mb']:,} MB | {r.get('sizing_s', '-')} s | {r['train_s']:.0f} s | "
                     f"{r['heldout_chars_per_token']} |")
    c = results.get("compare")
    if c:
        lines += ["", f"Compression on {c['full']['corpus_mb']} MB, vocab {results['vocab_size']}: the whole corpus "
                  f"vs a {c['sample']['sample_mb']} MB sample, on the same {c['full']['heldout_docs']} held-out docs.",
                  "", "| trained on | wall | peak memory | held-out chars/token |", "|---|---|---|---|"]
        for name in ("full", "sample"):
            r = c[name]
            lines.append(f"| {name}: {r['sample_mb']} MB | {r['wall_s']} s | {r['peak_mb']:,} MB | "
                         f"{r['heldout_chars_per_token']} |")
        raw = c.get("sample_normalizer_none")
        if raw:
            lines.append(f"| sample, `--normalizer none`: {raw['sample_mb']} MB | {raw['wall_s']} s | "
                         f"{raw['peak_mb']:,} MB | {raw['heldout_chars_per_token']} |")
        lines += ["", f"Held-out chars/token of the sample against the whole: {-c['loss_pct']:+.2f} % (target: no worse "
                  "than -1 %)"
                  + (f"; NFKC against none: {c['nfkc_gain_pct']:+.2f} % chars/token." if raw else ".")]
    lines += ["", *results.get("notes", [])]
    SECTION.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", action="append", default=[], help="source shards (repeatable); default: prose")
    p.add_argument("--lang", help="keep only rows with this lang column value (curation outputs), e.g. en")
    p.add_argument("--sizes-mb", default="100,1000", help="corpus sizes for the cost runs (comma list)")
    p.add_argument("--sample-mb", type=float, default=None, help="budget of the cost runs (default: the default)")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--compare-mb", type=float, default=84, help="corpus size for the compression comparison; 0: none")
    p.add_argument("--compare-sample-mb", type=float, default=32, help="sample budget compared with the whole")
    p.add_argument("--compare-normalizer", action="store_true",
                   help="also train the sample with --normalizer none, to show what nfkc costs or gains")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--write-docs", action="store_true", help=f"write {SECTION.relative_to(REPO)}")
    p.add_argument("--note", action="append", default=[], help="a line for the docs section (machine state etc.)")
    p.add_argument("--from-json", type=Path, help="write the docs section from an earlier --json (with its command)")
    args = p.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        results["notes"] = results.get("notes", []) + args.note
        write_docs(results, results.get("command", "(command not recorded)"))
        return
    command = ".venv/bin/python benchmarks/tokenizer_sample.py " + " ".join(sys.argv[1:])
    results: dict = {"command": command,
                     "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": machine(), "vocab_size": args.vocab_size, "sizes": [], "notes": args.note}
    from modeling.tokenizer import TokenizerTrainConfig

    default = TokenizerTrainConfig(input="x", output="o").sample_bytes
    budget = default if args.sample_mb is None else int(args.sample_mb * 1e6)
    with tempfile.TemporaryDirectory(prefix="bench-tok-sample-") as tmp:
        for mb in [float(x) for x in args.sizes_mb.split(",") if x]:
            corpus, meta = build_apart(args.corpus, mb, args.lang)
            run = train(corpus, Path(tmp) / f"size-{mb:g}", args.vocab_size, budget)
            results["sizes"].append(summary(run) | {"copies": meta["copies"]})
            print(json.dumps(results["sizes"][-1]), file=sys.stderr, flush=True)
        if args.compare_mb:
            corpus, meta = build_apart(args.corpus, args.compare_mb, args.lang)
            if meta["copies"] > 1:
                raise SystemExit(f"--compare-mb {args.compare_mb}: the sources hold less text; compression on "
                                 "repeated text means nothing, lower it or add --corpus")
            full = summary(train(corpus, Path(tmp) / "full", args.vocab_size, None))
            sample = summary(train(corpus, Path(tmp) / "sample", args.vocab_size, int(args.compare_sample_mb * 1e6)))
            loss = 100 * (1 - sample["heldout_chars_per_token"] / full["heldout_chars_per_token"])
            results["compare"] = {"full": full, "sample": sample, "loss_pct": round(loss, 2)}
            if args.compare_normalizer:  # what NFKC (the default) costs or gains against byte-exact text
                raw = summary(train(corpus, Path(tmp) / "raw", args.vocab_size, int(args.compare_sample_mb * 1e6),
                                    "--normalizer", "none"))
                results["compare"]["sample_normalizer_none"] = raw
                results["compare"]["nfkc_gain_pct"] = round(
                    100 * (sample["heldout_chars_per_token"] / raw["heldout_chars_per_token"] - 1), 2)
            print(json.dumps(results["compare"]), file=sys.stderr, flush=True)
    results["load_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write_docs:
        write_docs(results, command)


if __name__ == "__main__":
    main()
