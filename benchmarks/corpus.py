"""Build the real-text curation benchmark corpus from Debian documentation packages.

Usage (from the repository root):

    python benchmarks/corpus.py                      # full corpus -> data/bench/corpus/  (~150k+ docs, ~400+ MB)
    python benchmarks/corpus.py --docs 5000          # small corpus -> data/bench/corpus-5000/ for quick runs
    python benchmarks/corpus.py --docs 5000 --out /tmp/c --seed 1

Why this corpus: the seed tutorial cleans text with ``re.sub(r'<.*?>', '', t)`` and filters languages with
langdetect. To measure speed *and* cleaning quality on text anyone can rebuild offline, we take documentation
that Debian ships as files: the raw HTML of the Python, Django, SciPy, PostgreSQL, Sphinx, GnuCash docs and the
Debian Administrator's Handbook (26 languages), plus translated manual pages (de, fr, es, pl, ru, ja, zh, it,
pt-br, nl, uk). The HTML is kept raw (head, ``<script>``/``<style>`` bodies, comments, entities, tags that span
lines), because removing it is what the pipelines are measured on. On top we inject URLs, PII (emails, US and
international phones, "Dr. Smith"-style names, IPs, card numbers, IBANs) and duplicates (exact, case-folded and
whitespace variants).

Only ``apt-get download`` and ``dpkg-deb -x`` fetch anything (``apt-get update`` must have run once). Everything
is deterministic for a given ``--seed`` and set of package versions; ``_manifest.json`` records the versions,
the ``.deb`` checksums and the shard checksums, so two people can tell whether they built the same corpus.

Output, under ``--out``:
    part-00000.jsonl ...   one JSON object per line: ``id``, ``text``, ``source`` (package/path[#chunk])
    _manifest.json         counts (docs, bytes, by source language, duplicates, injections), versions, checksums
    _injected.jsonl        per doc id, the PII / URL strings injected into it, so a benchmark can check whether
                           a pipeline's output still holds them
The ``_`` prefix keeps these two out of directory readers (``curation.paths`` skips ``_``-prefixed files).
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "data" / "bench"

HTML_PACKAGES = (
    "python3.11-doc",
    "python-django-doc",
    "python-scipy-doc",
    "postgresql-doc-15",
    "sphinx-doc",
    "debian-handbook",
    "gnucash-docs",
)
"""Debian packages whose ``*.html`` files become documents (raw HTML, chunked)."""

MAN_PACKAGES = (
    "manpages-de", "manpages-de-dev",
    "manpages-fr", "manpages-fr-dev",
    "manpages-es", "manpages-es-dev",
    "manpages-pl", "manpages-pl-dev",
    "manpages-ru", "manpages-ru-dev",
    "manpages-ja", "manpages-ja-dev",
    "manpages-zh",
    "manpages-it", "manpages-pt-br", "manpages-nl", "manpages-uk",
)  # fmt: skip
"""Translated manual pages; their roff source is rendered to plain text and chunked by section."""

# ---------------------------------------------------------------------------------------------- languages


def source_language(source: str) -> str:
    """Language of a document as its package says (ISO 639-1; ``zh`` for both Chinese variants).

    This is ground truth by provenance, good enough to count non-English survivors of a language filter. It is
    not perfect: translations of the Debian handbook and the GnuCash docs leave some paragraphs in English.
    """
    pkg, _, rest = source.partition("/")
    if pkg.startswith("manpages-"):
        loc = rest.split("/", 1)[0]  # de, pt_BR, zh_CN ...
        return loc.split("_")[0].lower()
    if pkg == "debian-handbook":
        m = re.match(r"html/([a-z]{2})-[A-Z]{2}/", rest)
        return m.group(1) if m else "en"
    if pkg == "gnucash-docs":
        m = re.match(r"gnucash-(?:guide|help)-([a-zA-Z]+)", rest)
        lang = m.group(1).lower() if m else "en"
        return "en" if lang in ("c", "en") else lang
    return "en"


# ---------------------------------------------------------------------------------------------- fetching


def fetch_packages(packages: list[str], deb_dir: Path, root: Path) -> dict[str, dict[str, str]]:
    """Download (once) and unpack (once) each package; return ``{pkg: {version, deb, sha256}}``.

    ``apt-get download`` needs only the package lists (``apt-get update``), not root; unpacking with
    ``dpkg-deb -x`` into our own folder never touches the system.
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    info: dict[str, dict[str, str]] = {}
    for pkg in packages:
        debs = sorted(deb_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            print(f"  apt-get download {pkg}", file=sys.stderr)
            proc = subprocess.run(
                ["apt-get", "download", pkg], cwd=deb_dir, capture_output=True, text=True, check=False
            )
            debs = sorted(deb_dir.glob(f"{pkg}_*.deb"))
            if proc.returncode != 0 or not debs:
                raise SystemExit(
                    f"apt-get download {pkg} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                    "Run `apt-get update` once, or drop the package with --skip-package."
                )
        deb = debs[-1]
        target = root / pkg
        if not (target / ".unpacked").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
            (target / ".unpacked").write_text(deb.name)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        info[pkg] = {"version": version, "deb": deb.name, "sha256": _sha256_file(deb)}
    return info


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SourceFile:
    """One file to turn into documents. ``source`` is ``<package>/<path below the doc or man root>``."""

    path: Path
    source: str
    kind: str  # "html" or "man"


def list_source_files(root: Path, packages: list[str]) -> list[SourceFile]:
    """All HTML files of the HTML packages and all man pages of the man packages, in a stable order."""
    files: list[SourceFile] = []
    for pkg in packages:
        base = root / pkg / "usr" / "share"
        if pkg in MAN_PACKAGES:
            man_root = base / "man"
            for p in sorted(man_root.rglob("*.gz")):
                files.append(SourceFile(p, f"{pkg}/{p.relative_to(man_root).as_posix()[:-3]}", "man"))
        else:
            doc_root = base / "doc" / pkg
            if pkg == "python3.11-doc":
                doc_root = base / "doc" / "python3.11"
            for p in sorted(doc_root.rglob("*.html")):
                if p.is_file() and not p.is_symlink():
                    files.append(SourceFile(p, f"{pkg}/{p.relative_to(doc_root).as_posix()}", "html"))
    return files


# ---------------------------------------------------------------------------------------------- chunking

# Cut HTML only where a block element starts, so chunks look like what a crawler or a splitter hands over: raw
# markup, tags left open, but no cut in the middle of a tag, a <script>/<style> body or a comment.
_BLOCK_START = re.compile(r"<(?:section|div|p|h[1-6]|dl|dt|pre|table|ul|ol|blockquote|tr)\b", re.I)
_PROTECTED = re.compile(r"<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->", re.I | re.S)


class SizeSampler:
    """Draws chunk target sizes (characters) from a clipped log-normal, so document lengths vary like web text."""

    def __init__(self, rng: random.Random, median: int, sigma: float = 0.8, lo: int = 300, hi: int = 20_000):
        self.rng, self.median, self.sigma, self.lo, self.hi = rng, median, sigma, lo, hi

    def __call__(self) -> int:
        return int(min(self.hi, max(self.lo, self.rng.lognormvariate(0.0, self.sigma) * self.median)))


def _cut(text: str, points: list[int], sizes: SizeSampler, min_tail: int = 200) -> list[str]:
    """Greedy cut at the first allowed point past each sampled size; a tiny tail joins the chunk before it."""
    chunks: list[str] = []
    start = 0
    while start < len(text):
        i = bisect.bisect_left(points, start + sizes())
        end = points[i] if i < len(points) else len(text)
        if len(text) - end < min_tail:
            end = len(text)
        chunks.append(text[start:end])
        start = end
    return chunks


def chunk_html(text: str, sizes: SizeSampler) -> list[str]:
    """Split one raw HTML page into chunks at block-element starts outside script, style and comments."""
    protected = [(m.start(), m.end()) for m in _PROTECTED.finditer(text)]
    starts = [s for s, _ in protected]
    points = []
    for m in _BLOCK_START.finditer(text):
        pos = m.start()
        j = bisect.bisect_right(starts, pos) - 1
        if j >= 0 and protected[j][0] < pos < protected[j][1]:
            continue
        points.append(pos)
    return _cut(text, points, sizes)


def chunk_text(text: str, sizes: SizeSampler) -> list[str]:
    """Split plain text at paragraph breaks (blank lines)."""
    points = [m.end() for m in re.finditer(r"\n\s*\n", text)]
    return [c.strip("\n") for c in _cut(text, points, sizes) if c.strip()]


# ---------------------------------------------------------------------------------------------- roff -> text

_ROFF_NAMED = {
    "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "bu": "•",
    "co": "©", "rg": "®", "tm": "™", "mi": "−", "pl": "+", "mu": "×", "di": "÷", "de": "°", "hy": "-",
    "ga": "`", "ti": "~", "ha": "^", "rs": "\\", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "sc": "§",
    "ba": "|", "or": "|", "lh": "☜", "rh": "☞", "->": "→", "<-": "←", "<=": "≤", ">=": "≥", "!=": "≠",
    "==": "≡", "ss": "ß", ":a": "ä", ":o": "ö", ":u": "ü", ":A": "Ä", ":O": "Ö", ":U": "Ü",
}  # fmt: skip
_ROFF_ESCAPE = re.compile(
    r"\\(?:"
    r"f(?:\[[^\]]*\]|\(..|.)"  # font changes \fB \f(CW \f[BI]
    r"|s[-+]?(?:\d+|\(\d\d|\[\d+\])"  # size changes
    r"|\*(?:\[[^\]]*\]|\(..|.)"  # strings
    r"|\((..)"  # \(xx named characters
    r"|\[([^\]]*)\]"  # \[xx] named characters
    r"|[hvwkoxXlLbDnNSRZ]'[^']*'"  # motions and other quoted-argument escapes
    r"|n(?:\[[^\]]*\]|\(..|.)"  # number registers
    r"|(.)"  # one-character escapes
    r")"
)
_ROFF_SINGLE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "|": "", "^": "", "&": "",
                "%": "", "c": "", ",": "", "/": "", "'": "'", "`": "`", ".": ".", "t": "\t", ":": "", "}": "",
                "{": "", "!": "", "p": ""}  # fmt: skip
_QUOTED_ARGS = re.compile(r'"([^"]*)"|(\S+)')


def _roff_inline(line: str) -> str:
    def sub(m: re.Match[str]) -> str:
        named = m.group(1) or m.group(2)
        if named is not None:
            return _ROFF_NAMED.get(named, "")
        single = m.group(3)
        if single is not None:
            return _ROFF_SINGLE.get(single, "")
        return ""

    return _ROFF_ESCAPE.sub(sub, line)


def roff_to_text(src: str) -> str:
    """Render man-page roff to readable plain text, simply: what ``man`` would show, minus layout.

    Why not groff: rendering ~10k pages with ``man -l`` costs minutes of CPU on a shared 2-core machine and the
    benchmark measures the pipelines, not the renderer. Macros become paragraph breaks and headings; font and
    character escapes become plain characters; tbl rows keep their cells separated by spaces.
    """
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(" ".join(para) if not nofill else "\n".join(para))
            para.clear()

    nofill = False
    for raw in src.splitlines():
        line = raw.split('\\"', 1)[0].rstrip()  # \" starts a comment, also mid-line
        if line in ("", ".", "'") and raw.strip() not in ("",):
            continue
        if line.startswith((".", "'")) and len(line) > 1:
            name, _, args = line[1:].lstrip().partition(" ")
            argv = [a or b for a, b in _QUOTED_ARGS.findall(args)]
            text = _roff_inline(" ".join(argv))
            if name == "TH":
                flush()
                out.append(f"{argv[0] if argv else ''}({argv[1] if len(argv) > 1 else ''})")
            elif name in ("SH", "SS"):
                flush()
                out.append(text.upper() if name == "SH" else text)
            elif name in ("PP", "LP", "P", "sp", "br", "TP", "HP", "RS", "RE", "TS", "TE", "in", "ti"):
                flush()
            elif name in ("IP",):
                flush()
                if argv and argv[0] not in ("", "\\(bu", "*"):
                    para.append(_roff_inline(argv[0]))
            elif name in ("nf", "EX"):
                flush()
                nofill = True
            elif name in ("fi", "EE"):
                flush()
                nofill = False
            elif name in ("BR", "RB", "IR", "RI", "IB", "BI"):  # alternating fonts: arguments touch
                para.append(_roff_inline("".join(argv)))
            elif name in ("B", "I", "SM", "SB", "UR", "MT", "OP") and argv:
                para.append(text)
            # every other request (ft, ad, na, hy, ne, ta, de, ds, so, ...) carries layout, not text
            continue
        text = _roff_inline(line)
        if "\t" in text:
            text = re.sub(r"\t+", "  ", text)
        if nofill:
            para.append(text)
        elif text.strip():
            para.append(text.strip())
        else:
            flush()
    flush()
    return "\n\n".join(p for p in out if p.strip())


# ---------------------------------------------------------------------------------------------- injection

_FIRST = ["Anna", "John", "Maria", "Wei", "Olga", "Pierre", "Yuki", "Carlos", "Fatima", "Piotr", "Emily",
          "Ahmed", "Sofia", "Lars", "Mei", "Jürgen"]  # fmt: skip
_LAST = ["Smith", "Müller", "Garcia", "Kowalski", "Ivanova", "Tanaka", "Nguyen", "Dubois", "Rossi", "Jensen",
         "Okafor", "Hernández", "Johansson", "Brennan", "Petrov", "Whitfield"]  # fmt: skip
_TITLES = ["Dr.", "Mr.", "Ms.", "Mrs.", "Prof.", "Dr", "Mr", "Mrs"]
_DOMAINS = ["example.com", "example.org", "mail.example.net", "uni-example.de", "example.co.uk"]
_URL_PATHS = ["docs/index.html", "wiki/Main_Page", "a/b/c?id=42&lang=en", "download/v2.1.0/", "search?q=ray+data",
              "issues/1234#comment-5", "~user/notes.txt"]  # fmt: skip
_URL_TEMPLATES = [
    "See {u} for details.",
    "More at {u}.",
    "(mirror: {u})",
    "Source: {u}, retrieved 2021-03-04.",
    "Download it from {u}",
]
_PII_TEMPLATES = [
    ("Contact {name} at {email} or {phone}.", ("name", "email", "phone")),
    ("Please send questions to {email}.", ("email",)),
    ("Call {phone} between 9 and 17 h.", ("phone",)),
    ("Reviewed by {name} on 2019-07-14 (version 3.11.2).", ("name",)),
    ("{name} wrote: my number is {phone}, mail me at {email}", ("name", "phone", "email")),
    ("Server 10.{a}.{b}.{c} was reported by {name}.", ("name", "ipv4")),
    ("Card {card}, IBAN {iban}.", ("card", "iban")),
    ("Order #{order} shipped; ISBN 978-3-16-148410-0; price $1,299.00.", ()),
]


_KEEP = ("2019-07-14", "3.11.2", "978-3-16-148410-0", "$1,299.00")
"""Look-alikes in the PII lines that a redactor must leave alone (recorded with kind ``keep``)."""


def _luhn_card(rng: random.Random) -> str:
    """A 16-digit Visa-like test number with a valid Luhn check digit, grouped in fours."""
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 == 0 else d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randrange(201, 989), rng.randrange(200, 999), rng.randrange(0, 10_000)
    return rng.choice([
        f"{a}-{b}-{c:04d}", f"({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
        f"+44 20 7946 {c:04d}", f"+49 30 {b}{c:04d}", f"+33 1 {b % 100:02d} {c // 100:02d} {c % 100:02d} 45",
        f"+81 3-{c:04d}-{b}{a % 10}",
    ])  # fmt: skip


def make_pii(rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    """One sentence with PII and the values in it (``kind``, ``value``) for later checks.

    Kinds: ``name`` (the name words without the title), ``email``, ``phone``, ``card``, ``iban``, ``ipv4``, and
    ``keep`` for dates, versions, ISBNs, prices and order numbers that must survive redaction.
    """
    template, kinds = rng.choice(_PII_TEMPLATES)
    n_words = rng.choice([1, 1, 1, 2, 3])
    words = [*rng.sample(_FIRST, n_words - 1), rng.choice(_LAST)]
    title = rng.choice(_TITLES)
    fullname = " ".join(words)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    vals = {
        "name": f"{title} {fullname}",
        "email": f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}".replace("ü", "ue").replace("á", "a"),
        "phone": _phone(rng),
        "card": _luhn_card(rng),
        "iban": "DE89 3704 0044 0532 0130 00",
        "a": str(rng.randrange(256)), "b": str(rng.randrange(256)), "c": str(rng.randrange(1, 255)),
        "order": str(rng.randrange(100_000, 999_999)),
    }  # fmt: skip
    sentence = template.format(**vals)
    found = [{"kind": "keep", "value": v} for v in _KEEP if v in sentence]
    if "{order}" in template:
        found.append({"kind": "keep", "value": f"#{vals['order']}"})
    for kind in kinds:
        if kind == "name":
            found.append({"kind": "name", "value": fullname})  # what must disappear: the name, not the title
        elif kind == "ipv4":
            found.append({"kind": "ipv4", "value": f"10.{vals['a']}.{vals['b']}.{vals['c']}"})
        else:
            found.append({"kind": kind, "value": vals[kind]})
    return sentence, found


def make_url(rng: random.Random) -> tuple[str, str]:
    """One sentence holding a URL (http, https or bare www) and the URL itself."""
    scheme = rng.choice(["https://", "http://", "https://www.", "www."])
    url = f"{scheme}{rng.choice(['python', 'debian', 'example', 'ray', 'kernel'])}.{rng.choice(['org', 'com', 'io'])}/{rng.choice(_URL_PATHS)}"
    return rng.choice(_URL_TEMPLATES).format(u=url), url


def inject(text: str, kind: str, sentence: str, rng: random.Random) -> str:
    """Put ``sentence`` at a random line boundary; in HTML after a closing ``>`` so it lands in visible text."""
    if kind == "html":
        spots = [m.end() for m in re.finditer(r">\n", text)]
        snippet = f"<p>{sentence}</p>\n"
    else:
        spots = [m.end() for m in re.finditer(r"\n", text)]
        snippet = f"{sentence}\n"
    pos = rng.choice(spots) if spots else len(text)
    if not spots and kind != "html":
        snippet = "\n" + snippet
    return text[:pos] + snippet + text[pos:]


def duplicate_variant(text: str, rng: random.Random) -> tuple[str, str]:
    """A duplicate of ``text``: exact most of the time, else a case or whitespace variant. Returns (kind, text)."""
    r = rng.random()
    if r < 0.7:
        return "exact", text
    if r < 0.8:
        return "lowercase", text.lower()
    if r < 0.85:
        return "uppercase", text.upper()
    ws = text.replace("\n", "\r\n") if rng.random() < 0.3 else re.sub(r" ", "  ", text, count=5)
    return "whitespace", "  " + ws + " \n"


# ---------------------------------------------------------------------------------------------- assembly


@dataclass
class Doc:
    """A document under construction."""

    text: str
    source: str
    kind: str
    injected: list[dict[str, str]] = field(default_factory=list)


def iter_docs(files: list[SourceFile], sizes: SizeSampler) -> Iterator[Doc]:
    """Documents of each file in order: HTML chunks of raw markup, or man-page text chunks."""
    for f in files:
        raw = f.path.read_bytes()
        if f.kind == "man":
            text = roff_to_text(gzip.decompress(raw).decode("utf-8", errors="replace"))
            chunks = chunk_text(text, sizes)
        else:
            chunks = chunk_html(raw.decode("utf-8", errors="replace"), sizes)
        for i, chunk in enumerate(chunks):
            if chunk.strip():
                yield Doc(chunk, f"{f.source}#{i}", f.kind)


def build(args: argparse.Namespace) -> dict[str, object]:
    """Fetch, chunk, inject, duplicate, shuffle, write; return the manifest."""
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    packages = [p for p in (*HTML_PACKAGES, *MAN_PACKAGES) if p not in set(args.skip_package)]
    versions = fetch_packages(packages, BENCH_DIR / "debs", BENCH_DIR / "pkgs")
    files = list_source_files(BENCH_DIR / "pkgs", packages)
    print(f"{len(files)} source files from {len(packages)} packages ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)

    n_base_wanted = None
    if args.docs:
        # A small corpus: a seeded sample of files, so every package and language shows up.
        rng.shuffle(files)
        n_base_wanted = args.docs - round(args.docs * args.dup_rate)
    sizes = SizeSampler(random.Random(args.seed + 1), median=args.median_chars)
    docs: list[Doc] = []
    for doc in iter_docs(files, sizes):
        docs.append(doc)
        if n_base_wanted is not None and len(docs) >= n_base_wanted:
            break
    print(f"{len(docs)} base documents ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)

    inj = random.Random(args.seed + 2)
    for doc in docs:
        if inj.random() < args.url_rate:
            sentence, url = make_url(inj)
            doc.text = inject(doc.text, doc.kind, sentence, inj)
            doc.injected.append({"kind": "url", "value": url})
        if inj.random() < args.pii_rate:
            sentence, values = make_pii(inj)
            doc.text = inject(doc.text, doc.kind, sentence, inj)
            doc.injected.extend(values)

    n_dup = round(len(docs) * args.dup_rate / (1 - args.dup_rate))
    dup_rng = random.Random(args.seed + 3)
    dup_kinds: Counter[str] = Counter()
    originals = dup_rng.choices(range(len(docs)), k=n_dup)
    for j in originals:
        kind, text = duplicate_variant(docs[j].text, dup_rng)
        dup_kinds[kind] += 1
        docs.append(Doc(text, docs[j].source, docs[j].kind, list(docs[j].injected)))
    random.Random(args.seed + 4).shuffle(docs)

    out = Path(args.out)
    if out.exists():
        for old in [*out.glob("part-*.jsonl"), out / "_manifest.json", out / "_injected.jsonl"]:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, object]] = []
    n_bytes = 0
    by_lang: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    injected_counts: Counter[str] = Counter()
    distinct = set()
    with (out / "_injected.jsonl").open("w", encoding="utf-8") as inj_f:
        for s in range(0, len(docs), args.shard_docs):
            path = out / f"part-{s // args.shard_docs:05d}.jsonl"
            h = hashlib.sha256()
            with path.open("w", encoding="utf-8") as f:
                for i in range(s, min(s + args.shard_docs, len(docs))):
                    d = docs[i]
                    doc_id = f"doc-{i:07d}"
                    line = json.dumps({"id": doc_id, "text": d.text, "source": d.source}, ensure_ascii=False) + "\n"
                    f.write(line)
                    data = line.encode("utf-8")
                    h.update(data)
                    n_bytes += len(d.text.encode("utf-8"))
                    by_lang[source_language(d.source)] += 1
                    by_pkg[d.source.split("/", 1)[0]] += 1
                    distinct.add(hashlib.blake2b(d.text.encode("utf-8"), digest_size=16).digest())
                    if d.injected:
                        injected_counts.update(v["kind"] for v in d.injected)
                        inj_f.write(json.dumps({"id": doc_id, "injected": d.injected}, ensure_ascii=False) + "\n")
            shards.append({"file": path.name, "docs": min(args.shard_docs, len(docs) - s), "sha256": h.hexdigest()})

    manifest: dict[str, object] = {
        "docs": len(docs),
        "text_bytes": n_bytes,
        "text_mb": round(n_bytes / 1e6, 1),
        "distinct_texts": len(distinct),
        "exact_duplicate_rows": len(docs) - len(distinct),
        "injected_duplicates": dict(dup_kinds, total=n_dup),
        "injected_values": dict(injected_counts),
        "docs_by_source_language": dict(by_lang.most_common()),
        "docs_by_package": dict(by_pkg.most_common()),
        "args": {k: v for k, v in vars(args).items()},
        "packages": versions,
        "shards": shards,
        "build_seconds": round(time.perf_counter() - t0, 1),
        "note": "html entries are raw markup chunks; man entries are roff rendered to text by roff_to_text()",
    }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults build the full benchmark corpus."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (default data/bench/corpus, or data/bench/corpus-N with --docs N)")
    p.add_argument("--docs", type=int, default=0,
                   help="build a small corpus of exactly N documents from a seeded sample of the files "
                        "(default 0: every file, the full benchmark corpus)")
    p.add_argument("--seed", type=int, default=0, help="seed for chunk sizes, sampling, injections and order")
    p.add_argument("--median-chars", type=int, default=1800,
                   help="median target length of a chunk in characters (log-normal, clipped to 300..20000)")
    p.add_argument("--dup-rate", type=float, default=0.12,
                   help="fraction of the output documents that are injected duplicates (exact, case or whitespace "
                        "variants of another document)")
    p.add_argument("--url-rate", type=float, default=0.10, help="fraction of documents given an injected URL")
    p.add_argument("--pii-rate", type=float, default=0.08, help="fraction of documents given an injected PII line")
    p.add_argument("--shard-docs", type=int, default=10_000, help="documents per jsonl shard")
    p.add_argument("--skip-package", action="append", default=[], metavar="PKG",
                   help="leave a Debian package out (repeatable), e.g. when the archive no longer has it")
    args = p.parse_args(argv)
    if not 0 <= args.dup_rate < 0.5:
        p.error("--dup-rate must be in [0, 0.5)")
    if args.out is None:
        args.out = str(BENCH_DIR / (f"corpus-{args.docs}" if args.docs else "corpus"))
    return args  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Build the corpus and print its manifest's headline numbers."""
    args = parse_args(argv)
    m = build(args)
    print(json.dumps({k: m[k] for k in ("docs", "text_mb", "exact_duplicate_rows", "injected_duplicates",
                                        "docs_by_source_language", "build_seconds")}, ensure_ascii=False))
    print(f"wrote {args.out}/part-*.jsonl, _manifest.json, _injected.jsonl")


if __name__ == "__main__":
    main()
