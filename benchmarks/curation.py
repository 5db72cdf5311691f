"""Benchmark: our curation pipeline against the seed tutorial's recipe, on the same real-text corpus.

Usage (from the repository root):

    python benchmarks/corpus.py                      # once: builds data/bench/corpus (~150k docs, ~430 MB)
    python benchmarks/curation.py                    # both pipelines on it, prints docs/s, ratio and quality
    python benchmarks/curation.py --write-md docs/_sections/bench-curation.md

    # quick check on a small corpus:
    python benchmarks/corpus.py --docs 5000
    python benchmarks/curation.py --corpus data/bench/corpus-5000 --work out/bench-5000

    # the seed needs tens of minutes on the full corpus; keep its result and rerun only ours:
    python benchmarks/curation.py --only seed
    python benchmarks/curation.py --reuse-seed
    python benchmarks/curation.py --only none        # re-measure quality of the existing outputs only

    # keys-only dedup figures alone (shuffled bytes per input byte, dedup stage seconds), on a small corpus:
    python benchmarks/curation.py --corpus data/bench/corpus-5000 --work out/bench-5000 --only ours

Each pipeline runs in a fresh subprocess and is timed wall clock end to end, interpreter and Ray start-up
included, because that is what a user waits for. docs/s is input documents over that time. Alongside, the CPU
seconds of the whole process tree are sampled (psutil), which is the fairer figure on a shared machine, and the
load average before and after is recorded so a reader can tell how busy the machine was.

Pipelines:
    seed  python benchmarks/seed_recipe.py --input CORPUS --output WORK/seed
    ours  python -m curation run --input CORPUS --output WORK/ours --languages en   (+ --ours-arg ...)

Quality is measured on both outputs, per document joined on ``id`` with the input corpus and with what
``benchmarks/corpus.py`` injected (``_injected.jsonl``):
    html_tag / html_entity                   real markup left: a tag found verbatim in the input doc, an entity
                                             that was not escaped text there (markup the docs *show*, escaped
                                             as &lt;input&gt;, is correct text once unescaped)
    tag_like / entity_like / html_comment    any tag- or entity-looking text, and comment delimiters
    html_comment_left                        a whole <!-- ... --> comment found verbatim in the input doc
    script_style_body                        the body of a <script>/<style> the input doc had still in the output
    url / injected_url                       any URL left; the injected URL still there
    raw_email                                anything email-shaped left
    injected_<kind>_leaked                   injected PII value (email, phone, name, card, iban, ipv4) still there
    keep_lost                                dates, versions, ISBNs, prices, order numbers wrongly redacted
    non_en_source                            output docs whose package language is not English
    non_latin_script                         output docs whose letters are >= 20 % CJK, Cyrillic, Greek, Arabic, ...
    exact_dup_rows / folded_dup_rows         duplicate rows left (exact; after case and whitespace folding)
    has_newline                              docs that kept any line break (paragraph structure for an LM)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html.entities
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import source_language  # benchmarks/ is not a package: import by path

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------- running


@dataclass
class RunResult:
    """What one pipeline run cost."""

    name: str
    command: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    rows_in: int
    docs_per_s: float
    log: str
    corpus_fingerprint: str
    started_utc: str = ""


class TreeSampler(threading.Thread):
    """Samples CPU time and memory of a process and all its descendants (Ray's workers included).

    ``getrusage(RUSAGE_CHILDREN)`` misses processes their parent never waits for (Ray daemons), so we poll:
    the CPU figure is the sum over every pid ever seen of its last cumulative CPU time; processes that live
    shorter than the poll interval are missed, so it is a slight underestimate.
    """

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = 0
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue  # ended between listing and reading: its last sample already counted
            self.peak_rss = max(self.peak_rss, rss)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def corpus_fingerprint(corpus: Path) -> str:
    """Short hash of the manifest's shard checksums: equal fingerprints mean the same corpus bytes."""
    manifest = json.loads((corpus / "_manifest.json").read_text())
    return hashlib.sha256("".join(s["sha256"] for s in manifest["shards"]).encode()).hexdigest()[:16]


def run_pipeline(name: str, command: list[str], out_dir: Path, log: Path, rows_in: int, fingerprint: str,
                 timeout: float) -> RunResult:
    """Run ``command`` in a fresh process with a clean output folder; time it and sample its CPU."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    print(f"[{name}] {' '.join(command)}  (log: {log})", file=sys.stderr)
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with log.open("w") as log_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, stdout=log_f, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
            print(f"[{name}] killed after --timeout {timeout:.0f}s", file=sys.stderr)
        wall = time.perf_counter() - t0
        sampler.stop()
    result = RunResult(
        name=name, command=command, returncode=returncode, wall_s=round(wall, 2),
        cpu_s=round(sum(sampler.cpu.values()), 1), peak_rss_mb=round(sampler.peak_rss / 2**20),
        load_before=tuple(round(x, 2) for x in load_before), load_after=tuple(round(x, 2) for x in os.getloadavg()),
        rows_in=rows_in, docs_per_s=round(rows_in / wall, 1), log=str(log), corpus_fingerprint=fingerprint,
        started_utc=started,
    )  # fmt: skip
    status = "ok" if returncode == 0 else f"FAILED (exit {returncode}), see {log}"
    print(f"[{name}] {status}: {result.wall_s:.1f}s wall, {result.docs_per_s:.1f} docs/s, "
          f"{result.cpu_s:.0f} CPU-s", file=sys.stderr)  # fmt: skip
    return result


# ---------------------------------------------------------------------------------------------- quality

_TAG = re.compile(r"</?[a-zA-Z][\w:-]*(?:\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{1,31}|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});")
_COMMENT = re.compile(r"<!--|-->")
_WHOLE_COMMENT = re.compile(r"<!--.*?-->", re.S)
_URL = re.compile(r"https?://|\bwww\.[\w-]+\.\w", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}")
_BODIES = re.compile(r"<(script|style)\b[^>]*>(.*?)</\1\s*>", re.I | re.S)
_WS = re.compile(r"\s+")


def _fold_ws(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _body_snippets(html: str) -> list[str]:
    """Up to three 30-char, whitespace-folded snippets from the middle of the doc's script/style bodies."""
    snippets = []
    for m in _BODIES.finditer(html):
        body = _fold_ws(unicodedata.normalize("NFKC", m.group(2)))
        if len(body) >= 30:
            mid = len(body) // 2
            snippets.append(body[max(0, mid - 15) : mid + 15])
        if len(snippets) == 3:
            break
    return snippets


def _non_latin_share(text: str) -> float:
    letters = [c for c in text[:4000] if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if ord(c) > 0x024F) / len(letters)


def read_output(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of the parquet files a pipeline wrote, by ``id`` (``text``, ``source`` where present)."""
    import pyarrow.parquet as pq

    files = sorted(p for p in out_dir.rglob("*.parquet") if not any(x.startswith((".", "_")) for x in p.parts))
    rows: dict[str, dict[str, Any]] = {}
    for f in files:
        table = pq.read_table(f)
        cols = [c for c in ("id", "text", "source") if c in table.column_names]
        for i, row in enumerate(table.select(cols).to_pylist()):
            rows[str(row.get("id", f"{f.name}:{i}"))] = row
    return rows


def _output_only_checks(rows: dict[str, dict[str, Any]], c: Counter[str]) -> dict[str, Any]:
    """Checks that need only the output text: markup-like text, URLs, emails, languages, duplicates."""
    exact: Counter[bytes] = Counter()
    folded: Counter[bytes] = Counter()
    langs: Counter[str] = Counter()
    chars = 0
    for row in rows.values():
        text = row["text"] or ""
        flat = _fold_ws(text)
        c["docs"] += 1
        chars += len(text)
        exact[hashlib.blake2b(text.encode(), digest_size=16).digest()] += 1
        folded[hashlib.blake2b(flat.casefold().encode(), digest_size=16).digest()] += 1
        c["tag_like"] += bool(_TAG.search(text))
        c["entity_like"] += bool(_ENTITY.search(text))
        c["html_comment"] += bool(_COMMENT.search(text))
        c["url"] += bool(_URL.search(text))
        c["raw_email"] += bool(_EMAIL.search(text))
        c["has_newline"] += "\n" in text
        c["short_lt_20_chars"] += len(flat) < 20
        c["non_latin_script"] += _non_latin_share(text) >= 0.2
        lang = source_language(row["source"]) if row.get("source") else "unknown"
        langs[lang] += 1
        c["non_en_source"] += lang != "en"
    c["exact_dup_rows"] = sum(n - 1 for n in exact.values())
    c["folded_dup_rows"] = sum(n - 1 for n in folded.values())
    return {"mean_chars": round(chars / max(c["docs"], 1)), "docs_by_source_language": dict(langs.most_common(12))}


def _is_entity(found: str) -> bool:
    """Whether an ``_ENTITY`` match is one a browser decodes: numeric, or a name HTML defines. ``&new;`` and
    ``&old;`` in C code (``newp = &new;``) are code, not leftover markup."""
    return found[1] == "#" or found[1:] in html.entities.html5


def _input_checks(text_out: str, text_in: str, injected: list[dict[str, str]], c: Counter[str]) -> None:
    """Checks of one output doc against its input doc: markup that was real markup, bodies, injections."""
    flat = _fold_ws(text_out)
    flat_in = None
    tags = _TAG.findall(text_out)
    if tags:
        # Real markup left over appears verbatim in the input; markup the page *showed* as text (escaped there as
        # &lt;input ...&gt;, e.g. in Django's forms docs) does not, and keeping it is correct.
        flat_in = _fold_ws(unicodedata.normalize("NFKC", text_in))
        c["html_tag"] += any(_fold_ws(t) in flat_in for t in tags)
    comments = _WHOLE_COMMENT.findall(text_out)[:20]
    if comments:
        # a comment the page showed (escaped there as &lt;!-- ... --&gt;) is correct text; one verbatim in the
        # input is markup the cleaning left
        c["html_comment_left"] += any(cm in text_in for cm in comments)
    entities = {e for e in _ENTITY.findall(text_out)[:20] if _is_entity(e)}
    if entities:
        # An entity the input only had escaped (&amp;amp;) is correct text after unescaping.
        c["html_entity"] += any(text_in.count(e) > text_in.count("&amp;" + e[1:]) for e in entities)
    if "<script" in text_in or "<style" in text_in:
        bodies = _body_snippets(text_in)
        if bodies:
            c["had_script_style_body"] += 1
            c["script_style_body"] += any(b in flat for b in bodies)
    for v in injected:
        value, kind = _fold_ws(v["value"]), v["kind"]
        if kind == "keep":
            c["keep_total"] += 1
            c["keep_lost"] += value not in flat
        elif kind == "url":
            c["injected_url_total"] += 1
            c["injected_url"] += value in flat
        elif kind == "name":  # "Dr. Anna Maria Berg" -> "[NAME] Maria Berg" still leaks the surname
            c["injected_name_total"] += 1
            c["injected_name_leaked"] += value.split(" ")[-1] in flat
        else:
            c[f"injected_{kind}_total"] += 1
            c[f"injected_{kind}_leaked"] += value in flat


def measure_quality(corpus: Path, outputs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Leftover counts for each pipeline's output (keys explained in the module docstring).

    One streaming pass over the input corpus serves every output: each output doc is compared with its input
    doc (joined on ``id``) and with what ``corpus.py`` injected into it.
    """
    rows = {name: read_output(path) for name, path in outputs.items()}
    counters = {name: Counter[str]() for name in outputs}
    extra = {name: _output_only_checks(rows[name], counters[name]) for name in outputs}
    injected: dict[str, list[dict[str, str]]] = {}
    if (corpus / "_injected.jsonl").exists():
        with (corpus / "_injected.jsonl").open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                injected[rec["id"]] = rec["injected"]
    for shard in sorted(corpus.glob("part-*.jsonl")):
        with shard.open(encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                for name in outputs:
                    out_row = rows[name].get(doc["id"])
                    if out_row is not None:
                        _input_checks(out_row["text"] or "", doc["text"], injected.get(doc["id"], []),
                                      counters[name])  # fmt: skip
    return {name: {**dict(sorted(counters[name].items())), **extra[name]} for name in outputs}


# ---------------------------------------------------------------------------------------------- reporting

QUALITY_ROWS = [
    ("docs", "documents out", None),
    ("html_tag", "docs with leftover markup (a tag found verbatim in the input)", "docs"),
    ("tag_like", "docs with any `<tag>`-like text (incl. markup shown as text)", "docs"),
    ("html_entity", "docs with a leftover entity (`&amp;` `&#8217;` ...)", "docs"),
    ("html_comment_left", "docs with an HTML comment left (a `<!-- ... -->` found verbatim in the input)", "docs"),
    ("html_comment", "docs with `<!--` or `-->` (incl. comments and `-->` arrows shown as text)", "docs"),
    ("script_style_body", "script/style body text left", "had_script_style_body"),
    ("url", "docs with a URL (`http(s)://` or `www.`)", "docs"),
    ("injected_url", "injected URLs left", "injected_url_total"),
    ("raw_email", "docs with an email address", "docs"),
    ("injected_email_leaked", "injected emails left", "injected_email_total"),
    ("injected_phone_leaked", "injected phone numbers left", "injected_phone_total"),
    ("injected_name_leaked", "injected names (after a title) left", "injected_name_total"),
    ("injected_card_leaked", "injected card numbers left", "injected_card_total"),
    ("injected_iban_leaked", "injected IBANs left", "injected_iban_total"),
    ("injected_ipv4_leaked", "injected IPv4 addresses left", "injected_ipv4_total"),
    ("keep_lost", "dates/versions/ISBNs/prices wrongly redacted", "keep_total"),
    ("non_en_source", "docs from non-English packages", "docs"),
    ("non_latin_script", "docs >= 20 % non-Latin letters", "docs"),
    ("exact_dup_rows", "exact duplicate rows left", "docs"),
    ("folded_dup_rows", "duplicates left after case/space folding", "docs"),
    ("has_newline", "docs that kept line breaks", "docs"),
    ("short_lt_20_chars", "docs shorter than 20 chars", "docs"),
    ("mean_chars", "mean characters per doc", None),
]


def _cell(q: dict[str, Any] | None, key: str, denom: str | None) -> str:
    if q is None:
        return "n/a"
    n = q.get(key, 0)
    if denom is None:
        return f"{n:,}"
    d = q.get(denom, 0)
    return f"{n:,} / {d:,} ({100 * n / d:.1f} %)" if d else f"{n:,}"


def render_markdown(results: dict[str, Any]) -> str:
    """The results as the Markdown section docs/benchmarks.md merges in."""
    seed, ours = results["runs"].get("seed"), results["runs"].get("ours")
    m = results["corpus"]
    lines = [
        "## Curation throughput and output quality: ours vs the seed recipe",
        "",
        f"Measured {results['date']} (each run's start below) on {results['machine']}.",
        f"Corpus: `{results['corpus_path']}` built by `python benchmarks/corpus.py"
        f"{' --docs ' + str(m['args']['docs']) if m['args'].get('docs') else ''}` "
        f"(seed {m['args']['seed']}, fingerprint `{results['fingerprint']}`): {m['docs']:,} documents, "
        f"{m['text_mb']} MB of text, {m['exact_duplicate_rows']:,} exact duplicate rows, "
        f"{sum(v for k, v in m['docs_by_source_language'].items() if k != 'en'):,} docs from non-English "
        "packages (raw HTML of the Python, Django, SciPy, PostgreSQL, Sphinx, GnuCash docs and the Debian handbook "
        "in 26 languages; translated man pages rendered to text; injected URLs, PII and duplicates).",
        "",
        "Reproduce (Debian/Ubuntu with the project's venv; `apt-get update` once, the corpus script fetches the "
        "`.deb` files itself):",
        "",
        "```",
        "python benchmarks/corpus.py" + (f" --docs {m['args']['docs']}" if m["args"].get("docs") else ""),
        results["reproduce"],
        "```",
        "",
        f"(This table was printed by `{results['command']}`.)",
        "",
    ]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += [
        "| pipeline | started | wall s (start-up incl.) | docs/s | CPU s (process tree) | peak RSS MB | 1-min load avg before -> after | rows out |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, r in (("seed recipe", seed), ("ours (`python -m curation run`)", ours)):
        if r is None:
            lines.append(f"| {name} | not run | | | | | | |")
            continue
        q = results["quality"].get("seed" if r is seed else "ours")
        rows_out = f"{q['docs']:,}" if q else "n/a"
        failed = "" if r["returncode"] == 0 else f" (FAILED, exit {r['returncode']})"
        lines.append(
            f"| {name}{failed} | {r.get('started_utc') or 'n/a'} | {r['wall_s']:.1f} | {r['docs_per_s']:.1f} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} | {rows_out} |"
        )
    if seed and ours and seed["returncode"] == 0 and ours["returncode"] == 0:
        ratio = ours["docs_per_s"] / seed["docs_per_s"]
        cpu_ratio = seed["cpu_s"] / ours["cpu_s"] if ours["cpu_s"] else float("nan")
        lines += ["", f"**Ratio ours/seed: {ratio:.1f}x docs/s wall clock** (target >= 10x); "
                      f"{cpu_ratio:.1f}x less CPU time."]  # fmt: skip
    if ours and ours.get("all_wall_s"):
        lines += ["", f"Ours ran {len(ours['all_wall_s'])} times, one after the other (each a first run: a fresh "
                      f"process and an empty output folder); wall s: {', '.join(f'{w:.1f}' for w in ours['all_wall_s'])}; "
                      f"CPU s: {', '.join(f'{c:.0f}' for c in ours['all_cpu_s'])}. The table shows the median run."]
    lines += dedup_lines(results.get("dedup"))
    lines += step_lines(results.get("steps"))
    lines += ["", "Output quality (count / denominator):", "", "| measure | seed recipe | ours |", "|---|---:|---:|"]
    for key, label, denom in QUALITY_ROWS:
        lines.append(
            f"| {label} | {_cell(results['quality'].get('seed'), key, denom)} | "
            f"{_cell(results['quality'].get('ours'), key, denom)} |"
        )
    lines += [
        "",
        "Notes: the machine is shared, so the wall-clock figures carry the load shown; the CPU seconds are less "
        "sensitive to it. Non-English counts go by package language: the handbook and GnuCash translations keep "
        "some English paragraphs, so a correct filter still keeps a few of those. `injected_*` rows count the "
        "exact injected string; a name counts as leaked when its surname is still there.",
        "",
    ]
    return "\n".join(lines)


def dedup_figures(out_dir: Path) -> dict[str, Any] | None:
    """The keys-only dedup figures of our run, from its report.json: what crossed the shuffle (keys and
    decisions, Arrow bytes) per input byte, and the dedup stage's seconds. None without a finished report."""
    path = out_dir / "report.json"
    if not path.is_file():
        return None
    shuffle = json.loads(path.read_text()).get("shuffle")
    if not shuffle:
        return None
    keys = ("key_rows", "key_bytes", "decision_rows", "decision_bytes", "bytes", "input_bytes",
            "bytes_per_input_byte", "key_partitions", "dedup_seconds", "dedup_task_seconds")
    return {k: shuffle.get(k) for k in keys}


def dedup_lines(d: dict[str, Any] | None) -> list[str]:
    """Markdown lines for the keys-only dedup figures (none when the run has none)."""
    if not d or d.get("bytes_per_input_byte") is None:
        return []
    return ["", f"Keys-only dedup (ours): **{d['bytes_per_input_byte']:.2%} of the input bytes crossed the shuffle** "
                f"(target < 5%): {d['key_rows']:,} key rows ({d['key_bytes'] / 2**20:.1f} MiB Arrow) and "
                f"{d['decision_rows']:,} decisions ({d['decision_bytes'] / 2**20:.2f} MiB) for "
                f"{d['input_bytes'] / 2**20:.0f} MiB of input; documents never cross it. Dedup stage "
                f"{d['dedup_seconds']:.1f} s wall ({d['dedup_task_seconds']:.1f} s in its {d['key_partitions']} "
                "key-partition tasks)."]


def step_figures(out_dir: Path) -> dict[str, Any] | None:
    """Our run's per-step figures and its wall-clock phases, from its report.json (None without one)."""
    path = out_dir / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {"steps": report.get("steps", {}), "wall": report.get("timings", {}).get("wall_seconds", {})}


def step_lines(d: dict[str, Any] | None) -> list[str]:
    """Markdown table of where our run's time went: each step's rows and text in, the seconds its batch function
    took summed over the tasks (the workers' wall clock inside the step), per document; then the run's phases."""
    if not d or not d.get("steps"):
        return []
    lines = ["", "Where ours spends its time (its report.json: seconds inside each step's batch function, summed "
                 "over the tasks that ran it in parallel):", "",
             "| step | docs in | M chars in | docs out | s | µs / doc |", "|---|---:|---:|---:|---:|---:|"]
    for name, st in d["steps"].items():
        if name == "read":
            continue
        lines.append(f"| {name} | {st['rows_in']:,} | {st['chars_in'] / 1e6:.0f} | {st['rows_out']:,} | "
                     f"{st['seconds']:.1f} | {1e6 * st['seconds'] / max(st['rows_in'], 1):.0f} |")
    total = sum(st["seconds"] for n, st in d["steps"].items() if n != "read")
    lines.append(f"| **all steps** | | | | {total:.1f} | |")
    wall = d.get("wall") or {}
    if wall:
        lines += ["", f"Run phases (driver wall clock): Ray start {wall.get('ray_start', 0):.1f} s, stages and report "
                      f"{wall.get('pipeline', 0):.1f} s, {wall.get('total', 0):.1f} s in all from the start of the run "
                      "(interpreter start-up and exit are in the table's wall time)."]
    return lines


def machine_line() -> str:
    """Cores, memory, GPU presence: the context a throughput figure needs."""
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "GPU" if shutil.which("nvidia-smi") else "no GPU"
    return f"{os.cpu_count()} cores / {mem_gb:.0f} GiB / {gpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    """Run the pipelines asked for, measure their outputs, print and save the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="data/bench/corpus", help="folder built by benchmarks/corpus.py")
    p.add_argument("--work", default="out/bench", help="folder for both outputs, logs and results.json")
    p.add_argument("--only", choices=("seed", "ours", "both", "none"), default="both",
                   help="which pipeline(s) to run; the other's last figures on the same corpus stay in the table "
                        "(none: only re-measure the existing outputs)")
    p.add_argument("--reuse-seed", action="store_true",
                   help="reuse WORK/seed's last timing if it ran on the same corpus (the seed takes tens of minutes)")
    p.add_argument("--ours-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `python -m curation run` (repeatable), e.g. --ours-arg=--config=x.yaml")
    p.add_argument("--ours-repeat", type=int, default=1, metavar="N",
                   help="run ours N times (each a first run: fresh process, empty output) and show the median by "
                        "wall clock; its 30-odd seconds move with the machine's minute-to-minute speed, the seed's "
                        "five minutes average over it")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before a pipeline run is killed")
    p.add_argument("--write-md", metavar="FILE", help="also write the results as a Markdown section to FILE")
    p.add_argument("--note", default="", help="free text for the Markdown section (e.g. how busy the machine was)")
    args = p.parse_args(argv)  # fmt: skip

    corpus = (REPO / args.corpus).resolve() if not Path(args.corpus).is_absolute() else Path(args.corpus)
    if not (corpus / "_manifest.json").exists():
        p.error(f"--corpus {args.corpus}: no _manifest.json; build it first: python benchmarks/corpus.py")
    manifest = json.loads((corpus / "_manifest.json").read_text())
    fingerprint = corpus_fingerprint(corpus)
    work = (REPO / args.work) if not Path(args.work).is_absolute() else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows_in = manifest["docs"]
    py = sys.executable
    commands = {
        "seed": [py, "benchmarks/seed_recipe.py", "--input", str(corpus), "--output", str(work / "seed")],
        "ours": [py, "-m", "curation", "run", "--input", str(corpus), "--output", str(work / "ours"),
                 "--languages", "en", *args.ours_arg],
    }  # fmt: skip
    previous = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    runs: dict[str, Any] = {}
    for name in ("seed", "ours"):
        wanted = args.only in (name, "both")
        old = previous.get("runs", {}).get(name)
        same_corpus = old is not None and old.get("corpus_fingerprint") == fingerprint
        if name == "seed" and args.reuse_seed and same_corpus and old["returncode"] == 0:
            print(f"[seed] reusing the run from {previous.get('date')}: {old['docs_per_s']} docs/s", file=sys.stderr)
            runs[name] = old
            continue
        if not wanted:
            if same_corpus:
                runs[name] = old  # keep the other pipeline's last figures in the table
            continue
        if name == "ours" and not (REPO / "curation" / "__main__.py").exists():
            print("[ours] curation/__main__.py does not exist yet: skipped", file=sys.stderr)
            continue
        repeats = args.ours_repeat if name == "ours" else 1
        tries = [asdict(run_pipeline(name, commands[name], work / name, work / f"{name}.log", rows_in,
                                     fingerprint, args.timeout)) for _ in range(max(1, repeats))]  # fmt: skip
        runs[name] = sorted(tries, key=lambda r: (r["returncode"] != 0, r["wall_s"]))[(len(tries) - 1) // 2]
        if len(tries) > 1:
            runs[name]["all_wall_s"] = [r["wall_s"] for r in tries]
            runs[name]["all_cpu_s"] = [r["cpu_s"] for r in tries]

    print("measuring output quality ...", file=sys.stderr)
    outputs = {name: work / name for name, r in runs.items() if r["returncode"] == 0 and (work / name).exists()}
    quality = measure_quality(corpus, outputs)

    shown = list(argv if argv is not None else sys.argv[1:])
    for i, a in enumerate(shown):  # the note goes into the text on its own; keep the command line short
        if a.startswith("--note"):
            del shown[i : i + (1 if "=" in a else 2)]
            break
    argv_shown = " ".join(["python", "benchmarks/curation.py", *shown])
    results = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_line(),
        "command": argv_shown,
        "reproduce": " ".join(["python benchmarks/curation.py",
                               *([f"--corpus {args.corpus}"] if args.corpus != "data/bench/corpus" else []),
                               *([f"--work {args.work}"] if args.work != "out/bench" else []),
                               *(f"--ours-arg={a}" for a in args.ours_arg)]),
        "corpus_path": os.path.relpath(corpus, REPO),
        "fingerprint": fingerprint,
        "note": args.note or previous.get("note", ""),
        "corpus": {k: manifest[k] for k in ("docs", "text_mb", "exact_duplicate_rows", "docs_by_source_language",
                                            "injected_duplicates", "args")},
        "runs": runs,
        "quality": quality,
        "dedup": dedup_figures(work / "ours") if "ours" in outputs else None,
        "steps": step_figures(work / "ours") if "ours" in outputs else None,
    }  # fmt: skip
    if "seed" in runs and "ours" in runs and runs["seed"]["docs_per_s"]:
        results["ratio_docs_per_s"] = round(runs["ours"]["docs_per_s"] / runs["seed"]["docs_per_s"], 2)
    (work / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    md = render_markdown(results)
    print(md)
    if args.write_md:
        Path(args.write_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write_md).write_text(md)
        print(f"wrote {args.write_md}", file=sys.stderr)
    failed = [n for n, r in runs.items() if r["returncode"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
