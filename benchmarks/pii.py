"""PII redaction quality and speed: our ``curation.steps.pii`` against the seed tutorial's three regexes.

Usage (from the repository root):

    python benchmarks/pii.py                                      # print the report
    python benchmarks/pii.py --out docs/_sections/bench-pii.md    # also write it there
    python benchmarks/pii.py --docs 2000 --repeats 1              # quicker, noisier speed figures

Quality: a labelled evaluation set of synthetic but realistic sentences (``build_eval_set``), each with the
exact character spans of its PII (emails, US and international phones, titled names, IPv4/IPv6, card numbers,
SSNs, IBANs) and a share of look-alikes that must stay (versions, dates, ISBNs, hex addresses, prices, order
numbers, times, MAC addresses, "Dr. who"). Scoring is per kind and per span:

* recall: a gold span counts as found when one predicted span *of the same kind* covers all of it (a partial
  redaction such as "[NAME] Jones" for "Dr. Tom Jones" leaks, so it is a miss);
* precision: a predicted span is right when it overlaps a gold span of its kind; anything else (a redacted
  ISBN, an email placeholder over an IPv6 address) is a false positive.

The seed's regexes run exactly as in the tutorial (sequential ``re.sub``); to know *where* they matched, the
benchmark re-runs them with ``#`` fillers of the same length instead of placeholders (``#`` behaves like the
``[`` of a placeholder for all three patterns) and checks that the spans rebuild the seed's real output.

Speed: documents per second of each redactor on one core over a realistic mix: paragraphs of real English
technical prose (the docstrings of the Python standard library installed here: numbers, versions, code,
no PII), with PII sentences from the evaluation set injected into ``--pii-share`` of them. Best of
``--repeats`` interleaved runs, because the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curation.steps.pii import KINDS, PiiConfig, find_pii, luhn_ok, redact

Span = tuple[int, int, str]


# --------------------------------------------------------------------------------------------- the seed
def redact_pii(text):
    text = re.sub(r'[\w\.-]+@[\w\.-]+', '[EMAIL]', text)
    text = re.sub(r'\b\d{3}[-.]?\d{3}[-.]?\d{4}\b', '[PHONE]', text)
    text = re.sub(r'Mr\.\s+\w+|Ms\.\s+\w+|Dr\.\s+\w+', '[NAME]', text)
    return text
# ^ Seed tutorial section 9, verbatim (also what benchmarks/seed_recipe.py runs).


_SEED_STEPS = (
    (re.compile(r'[\w\.-]+@[\w\.-]+'), "email"),
    (re.compile(r'\b\d{3}[-.]?\d{3}[-.]?\d{4}\b'), "phone"),
    (re.compile(r'Mr\.\s+\w+|Ms\.\s+\w+|Dr\.\s+\w+'), "name"),
)


def seed_spans(text: str) -> list[Span]:
    """Where the seed's sequential substitutions land, in the coordinates of the original text."""
    spans: list[Span] = []
    work = text
    for pattern, kind in _SEED_STEPS:
        found = [(m.start(), m.end(), kind) for m in pattern.finditer(work)]
        for s, e, _ in found:
            work = work[:s] + "#" * (e - s) + work[e:]
        spans.extend(found)
    spans.sort()
    rebuilt, pos = [], 0
    for s, e, kind in spans:
        rebuilt += [text[pos:s], f"[{kind.upper()}]"]
        pos = e
    rebuilt.append(text[pos:])
    if "".join(rebuilt) != redact_pii(text):
        raise AssertionError(f"seed span tracking diverged on {text!r}")
    return spans


# --------------------------------------------------------------------------------------------- eval set
_FIRST = ["James", "Maria", "Wei", "Aisha", "José", "Ingrid", "Olu", "Priya", "Łukasz", "Chloé", "Hiroshi",
          "Fatima", "Liam", "Sofia", "Mateo", "Anna", "Noah", "Zoë"]
_LAST = ["Smith", "García", "Chen", "Okafor", "Müller", "Nowak", "Patel", "O'Brien", "Tanaka", "Dubois",
         "Johansson", "Rossi", "Kim", "Ivanova", "Smith-Jones", "Nguyen", "Haddad", "Kowalski"]
_TITLES = ["Dr.", "Dr", "Mr.", "Mr", "Mrs.", "Mrs", "Ms.", "Ms", "Prof.", "Prof"]
_DOMAINS = ["example.com", "mail.example.org", "dept.uni-example.edu", "example.co.uk", "corp.example.de",
            "example.io"]
_REGIONS = ["US", "GB", "DE", "FR", "IN", "JP", "BR", "AU", "ES", "IT", "NL", "MX", "ZA", "SE", "CA"]
_US_AREAS = [201, 202, 212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713, 718, 805, 917, 972]
_IBAN_SPECS = {"DE": "n18", "FR": "n23", "ES": "n20", "IT": "a1n22", "NL": "a4n10", "GB": "a4n14",
               "BE": "n12", "AT": "n16", "CH": "n17", "PL": "n24"}
_CARD_PREFIXES = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16),
                  ("36", 14), ("4", 19)]

# Templates: {x} slots are PII filled per kind; look-alike sentences are plain strings (no PII at all).
_TEMPLATES: dict[str, list[str]] = {
    "email": ["Please write to {x} before Friday.", "Contact: {x}", "CC {x}, thanks!",
              "Questions? Mail {x}.", "Reply-To: <{x}>", "My address is {x} (work)."],
    "phone": ["Call me at {x} after 5pm.", "Tel.: {x}", "Support line {x}, open 24/7.",
              "Reach the office on {x}.", "Mobile {x} / fax none", "Our number is {x}."],
    "name": ["I spoke with {x} yesterday.", "{x} will chair the session.", "Signed, {x}",
             "Ask {x} about the results.", "The letter from {x} arrived.", "Thanks to {x}, we finished."],
    "ip": ["The request came from {x} at noon.", "Blocked host {x} after 3 attempts.",
           "client={x} status=403",
           "Ping {x} to check the link.", "Server address: {x}", "Login from {x} was flagged."],
    "credit_card": ["Card number {x}, exp 04/27.", "Charged to {x} today.", "Use card {x} for the deposit.",
                    "Payment: {x}"],
    "ssn": ["SSN {x} on file.", "Her social security number is {x}.", "Employee SSN: {x}",
            "Verify {x} with HR."],
    "iban": ["Transfer to IBAN {x} please.", "IBAN: {x}", "Account {x} (EUR).", "Pay into {x} by Monday."],
}
LOOKALIKES: list[str] = [
    "Upgrade to version 1.2.3.4 before the deadline.", "Tested on release 10.0.19.41 and build 2.4.1.0.",
    "See section 1.2.3.4 for details.", "The OID 1.3.6.1.4.1.2021 identifies the MIB.",
    "Released on 2024-01-15 and patched on 01/15/2024.", "The meeting is on 15.01.2024 at 10:30.",
    "Logged at 2024-01-15T10:30:45.123456Z by the job.", "ISBN 978-0-306-40615-7 is a classic.",
    "Cite ISBN 0-306-40615-2 or 9780306406157.", "Segfault at address 0x7ffd5e8c in libc.",
    "The pointer 0x00007ffd5e8c1234 was freed twice.", "It costs $1,234.56 plus tax.",
    "Revenue grew to $12,345,678.90 last year.", "Order #123456789 has shipped.",
    "Order No. 2125550199 was cancelled.", "Invoice 4111111111111112 is overdue.",
    "Tracking number 1Z999AA10123456784.", "Dr. who? Nobody knows.", "dr. smith wrote lowercase notes.",
    "MAC 00:1A:2B:3C:4D:5E is on VLAN 12.", "Use std::vector and a[1::2] in the code.",
    "Bind to 0.0.0.0 or 127.0.0.1 on port 8080.", "Netmask 255.255.255.0, gateway on ::1.",
    "Population: 8 336 817 people in 2023.", "Pi is 3.14159265358979.", "Call extension 4412 internally.",
    "The ratio was 3:4:5 in the triangle.", "Unix time 1700000000 is in November 2023.",
    "Part 12-34-5678 fits model 900-12-3456.", "Serial 000-12-3456 is a test value.",
    "Coordinates 40.7128, -74.0060 mark the city.", "Error code 0x80070005 means access denied.",
    "The year range 1999-2004 and 2005-2010.", "Phone numbers look like ddd-ddd-dddd.",
    "SHA 3f786850e387550fdab836ed7e6dc881de23001b matches.", "UUID 123e4567-e89b-12d3-a456-426614174000.",
    "Mr. and Mrs. are titles.", "Prof. dr. habil. is a German title chain.",
    "Table 3.1.2.4 lists the results.", "Chapter 2.10.3.1 explains it.",
    # hard ones, where a rule-based redactor is expected to slip
    "Dr. Pepper is a soft drink.", "Turn left at Oak Dr. Springfield is the next town.",
    "Build 2125550199 passed all tests.", "Upgrade to 10.20.30.40 tonight.",
    "Checksum 4539 1488 0343 6467 matched the archive.",
]


HARD_POSITIVES: list[tuple[str, str, str]] = [
    # (sentence, PII value in it, kind): always in the set, including forms a rule-based redactor misses.
    ("Order flowers at 1-800-FLOWERS today.", "1-800-FLOWERS", "phone"),
    ("Write to john dot smith at example dot com.", "john dot smith at example dot com", "email"),
    ("Regards,\nDr.\nSmith", "Dr.\nSmith", "name"),
    ("Tel +44 (0)20 7946 0958 for London.", "+44 (0)20 7946 0958", "phone"),
    ("Our number: 415 555 2671.", "415 555 2671", "phone"),
    ("Ask Dr. Ludwig van Beethoven.", "Dr. Ludwig van Beethoven", "name"),
    ("Mail JOHN.SMITH@EXAMPLE.COM now.", "JOHN.SMITH@EXAMPLE.COM", "email"),
    ("My SSN is 123 45 6789.", "123 45 6789", "ssn"),
    ("Card on file: 4111111111111111.", "4111111111111111", "credit_card"),
    ("Connect to fe80::1ff:fe23:4567:890a%eth0 locally.", "fe80::1ff:fe23:4567:890a%eth0", "ip"),
    ("IBAN: gb82 west 1234 5698 7654 32", "gb82 west 1234 5698 7654 32", "iban"),
    ("Ring 555-0199 for the front desk.", "555-0199", "phone"),
]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _gen_phone(rng: random.Random) -> str:
    if rng.random() < 0.5:
        area, exch, line = rng.choice(_US_AREAS), rng.randrange(200, 1000), rng.randrange(10_000)
        if rng.random() < 0.15:
            exch = 555  # fictional numbers are written exactly like real ones
        return rng.choice([f"{area}-{exch}-{line:04d}", f"({area}) {exch}-{line:04d}",
                           f"{area}.{exch}.{line:04d}",
                           f"+1 {area} {exch} {line:04d}", f"1-{area}-{exch}-{line:04d}",
                           f"+1 ({area}) {exch}-{line:04d}",
                           # hard: spaces only, a glued extension, a vanity number
                           f"{area} {exch} {line:04d}", f"{area}-{exch}-{line:04d}x{line % 1000}",
                           f"1-{area}-FLOWERS"])
    while True:  # another region's example number with fresh trailing digits, in international format
        region = rng.choice(_REGIONS)
        kind = rng.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
        ex = phonenumbers.example_number_for_type(region, kind)
        nat = str(ex.national_number)
        num = phonenumbers.parse(f"+{ex.country_code}{nat[:-4]}{_digits(rng, 4)}")
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _gen_name(rng: random.Random) -> tuple[str, str]:
    """(text, gold) where the gold span is title plus name, as the placeholder replaces both."""
    words = [*rng.sample(_FIRST, rng.choice([0, 0, 1, 1, 2])), rng.choice(_LAST)]
    if rng.random() < 0.1:  # hard: lower-case particles are part of the name
        words = [rng.choice(_FIRST), rng.choice(["van", "de", "von", "da"]), rng.choice(_LAST)]
    title = rng.choice(_TITLES)
    s = f"{title} {' '.join(words)}"
    return s, s


def _gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        first = rng.choice([8, 23, 45, 62, 81, 91, 104, 142, 151, 172, 185, 192, 203, 212])
        if first == 172:
            return f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if first == 192:
            return f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    groups = [f"{rng.choice([0x2001, 0x2a00, 0x2607, 0x2a02, 0xfe80]):x}"] + \
             [f"{rng.randrange(0x10000):x}" for _ in range(7)]
    if rng.random() < 0.5:
        return ":".join(groups)
    return ":".join(groups[:3]) + "::" + groups[7]


def _gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + _digits(rng, length - len(prefix) - 1)
    check = next(d for d in "0123456789" if luhn_ok(body + d))
    num = body + check
    if length in (14, 15):  # Amex and Diners print 4-6-5 / 4-6-4
        groups = [num[:4], num[4:10], num[10:]]
    else:
        groups = [num[i:i + 4] for i in range(0, length, 4)]
    return rng.choice([" ", "-", ""]).join(groups)


def _gen_ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10_000):04d}"


def _gen_iban(rng: random.Random) -> str:
    country = rng.choice(list(_IBAN_SPECS))
    spec = _IBAN_SPECS[country]
    bban = ""
    for kind, n in re.findall(r"([an])(\d+)", spec):
        pool = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if kind == "a" else "0123456789"
        bban += "".join(rng.choice(pool) for _ in range(int(n)))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "email": lambda r: f"{r.choice(_FIRST).lower()}.{r.choice(_LAST).lower()}"
                       f"{r.choice(['', '+news', '+2024', '_x'])}@{r.choice(_DOMAINS)}",
    "phone": _gen_phone,
    "ip": _gen_ip,
    "credit_card": _gen_card,
    "ssn": _gen_ssn,
    "iban": _gen_iban,
}


@dataclass
class Example:
    text: str
    gold: list[Span] = field(default_factory=list)


def make_pii_example(rng: random.Random, kind: str) -> Example:
    """One template sentence holding one fresh PII value of ``kind``, with its gold span."""
    template = rng.choice(_TEMPLATES[kind])
    value = _gen_name(rng)[0] if kind == "name" else _GENERATORS[kind](rng)
    start = template.index("{x}")
    return Example(template.replace("{x}", value), [(start, start + len(value), kind)])


def build_eval_set(rng: random.Random, per_kind: int = 40, mixed: int = 40) -> list[Example]:
    """``per_kind`` single-PII sentences per kind, ``mixed`` two-to-three-PII sentences, every look-alike
    sentence, every :data:`HARD_POSITIVES` sentence, and look-alikes appended to a third of the PII
    sentences."""
    out: list[Example] = []
    for kind in KINDS:
        for _ in range(per_kind):
            ex = make_pii_example(rng, kind)
            if rng.random() < 0.33:
                ex.text += " " + rng.choice(LOOKALIKES)
            out.append(ex)
    for _ in range(mixed):
        text, gold = "", []
        for kind in rng.sample(KINDS, rng.choice([2, 3])):
            ex = make_pii_example(rng, kind)
            text += " " if text else ""
            gold += [(s + len(text), e + len(text), k) for s, e, k in ex.gold]
            text += ex.text
        out.append(Example(text, gold))
    out += [Example(t) for t in LOOKALIKES]
    for text, value, kind in HARD_POSITIVES:
        start = text.index(value)
        out.append(Example(text, [(start, start + len(value), kind)]))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class Score:
    """Counts per kind (``gold``, ``tp_gold``: gold spans fully covered by a same-kind prediction, ``pred``,
    ``tp_pred``: predictions overlapping a same-kind gold span) and the distinct errors, ``(kind, text)``."""

    stats: dict[str, Counter[str]]
    missed: Counter[tuple[str, str]]
    wrong: Counter[tuple[str, str]]


def score(examples: list[Example], spans_of: Callable[[str], list[Span]]) -> Score:
    res = Score({k: Counter() for k in KINDS}, Counter(), Counter())
    for ex in examples:
        pred = spans_of(ex.text)
        for gs, ge, gk in ex.gold:
            hit = any(pk == gk and ps <= gs and pe >= ge for ps, pe, pk in pred)
            res.stats[gk].update(gold=1, tp_gold=hit)
            if not hit:
                res.missed[gk, ex.text[gs:ge]] += 1
        for ps, pe, pk in pred:
            hit = any(gk == pk and ps < ge and gs < pe for gs, ge, gk in ex.gold)
            res.stats[pk].update(pred=1, tp_pred=hit)
            if not hit:
                res.wrong[pk, ex.text[ps:pe]] += 1
    return res


def _errors(errs: Counter[tuple[str, str]], limit: int = 12) -> str:
    if not errs:
        return "none"
    shown = [f"`{text!r}` ({kind}{f', x{n}' if n > 1 else ''})"
             for (kind, text), n in errs.most_common(limit)]
    more = len(errs) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _pct(num: int, den: int) -> str:
    return "—" if den == 0 else f"{100 * num / den:.1f}%"


# --------------------------------------------------------------------------------------------- speed
_STDLIB = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message",
    "enum", "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html.parser", "http.client", "http.cookiejar", "http.server", "imaplib", "inspect", "ipaddress",
    "itertools", "json", "locale", "logging", "logging.handlers", "mailbox", "mimetypes", "multiprocessing",
    "numbers", "operator", "optparse", "os", "pathlib", "pickle", "platform", "plistlib", "poplib", "pprint",
    "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil", "smtplib", "socket",
    "socketserver", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "xmlrpc.client", "zipfile",
)
"""Standard-library modules whose docstrings make the prose of the speed mix: plenty of technical English
with numbers, versions, addresses in examples and code, and (almost) no personal data."""


def stdlib_paragraphs() -> list[str]:
    """Real English technical prose: docstrings of :data:`_STDLIB`, split into paragraphs, deduplicated."""
    paras: dict[str, None] = {}
    for name in _STDLIB:
        module = importlib.import_module(name)
        members = [v for _, v in sorted(vars(module).items()) if inspect.isclass(v) or inspect.isfunction(v)]
        for obj in [module, *members]:
            for member in [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]:
                doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                if doc:
                    paras.update((p, None) for p in doc.split("\n\n") if len(p) > 120)
    return list(paras)


def build_mix(rng: random.Random, n_docs: int, pii_share: float) -> list[str]:
    """``n_docs`` documents of 2-6 prose paragraphs; ``pii_share`` of them get one fresh PII sentence (of a
    random kind) at a random paragraph boundary, so no PII string repeats from document to document."""
    paras = stdlib_paragraphs()
    docs = []
    for _ in range(n_docs):
        body = [rng.choice(paras) for _ in range(rng.randint(2, 6))]
        if rng.random() < pii_share:
            body.insert(rng.randrange(len(body) + 1), make_pii_example(rng, rng.choice(KINDS)).text)
        docs.append("\n\n".join(body))
    return docs


def docs_per_second(fn: Callable[[str], object], docs: list[str]) -> float:
    t0 = time.perf_counter()
    for d in docs:
        fn(d)
    return len(docs) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------- main
def _pr(res: Counter[str]) -> str:
    """``precision | recall`` table cells."""
    return f"{_pct(res['tp_pred'], res['pred'])} | {_pct(res['tp_gold'], res['gold'])}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="random seed of the evaluation set and the mixes")
    ap.add_argument("--per-kind", type=int, default=40, help="single-PII sentences per kind")
    ap.add_argument("--docs", type=int, default=5000, help="documents in each speed mix")
    ap.add_argument("--pii-share", type=float, default=0.1, help="share of realistic-mix documents with PII")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved speed runs; the best counts")
    ap.add_argument("--out", type=Path, help="also write the markdown report here")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    examples = build_eval_set(rng, per_kind=args.per_kind)
    cfg = PiiConfig()
    results = {"ours": score(examples, lambda t: find_pii(t, cfg)), "seed": score(examples, seed_spans)}
    totals = {name: sum(res.stats.values(), Counter()) for name, res in results.items()}
    lookalikes = [ex.text for ex in examples if not ex.gold]
    touched = {"ours": sum(1 for t in lookalikes if find_pii(t, cfg)),
               "seed": sum(1 for t in lookalikes if seed_spans(t))}

    mixes = {f"realistic ({args.pii_share:.0%} of docs with PII)": build_mix(rng, args.docs, args.pii_share),
             "PII-dense (every doc with PII)": build_mix(rng, args.docs, 1.0)}
    load = os.getloadavg()[0]
    speed: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):
        for mix, docs in mixes.items():
            for name, fn in (("seed", redact_pii), ("ours", lambda d: redact(d, cfg))):
                speed[mix, name] = max(speed.get((mix, name), 0.0), docs_per_second(fn, docs))
    load = max(load, os.getloadavg()[0])

    cmd = " ".join(["python benchmarks/pii.py", *(sys.argv[1:] if argv is None else argv)])
    gold, n_look = totals["ours"]["gold"], len(lookalikes)
    lines = [
        "### PII redaction: quality and speed",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `{cmd}` "
        f"(Python {platform.python_version()}, phonenumbers {phonenumbers.__version__}) on the shared dev "
        f"machine: 2 cores / 24 GiB / no GPU; one core used, 1-min load average up to {load:.1f} during the "
        "speed runs (other jobs shared the cores, so absolute figures are pessimistic; read the ratio).",
        "",
        f"Evaluation set: {len(examples)} sentences (seed {args.seed}), {gold} gold PII spans, {n_look} "
        "sentences with look-alikes only (versions, dates, ISBNs, hex, prices, order numbers, times, MACs, "
        "UUIDs, \"Dr. who\" ...); look-alikes are also appended to a third of the PII sentences, and "
        f"{len(HARD_POSITIVES)} hard positives (vanity and obfuscated forms, a name across a line break, "
        "lower-case IBAN) are always in. Recall: the whole gold span lies inside one predicted span of the "
        "same kind. Precision: the predicted span overlaps a gold span of its kind.",
        "",
        "| kind | gold | ours P | ours R | seed P | seed R |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {k} | {results['ours'].stats[k]['gold']} | {_pr(results['ours'].stats[k])} | "
          f"{_pr(results['seed'].stats[k])} |" for k in KINDS),
        f"| **all** | {gold} | {_pr(totals['ours'])} | {_pr(totals['seed'])} |",
        "",
        f"Look-alike-only sentences with anything redacted: ours {touched['ours']}/{n_look}, "
        f"seed {touched['seed']}/{n_look}.",
        "",
        f"Ours missed: {_errors(results['ours'].missed)}. "
        f"Ours redacted wrongly: {_errors(results['ours'].wrong)}. "
        f"Seed redacted wrongly: {_errors(results['seed'].wrong, 8)}.",
        "",
        f"Speed, documents per second on one core (best of {args.repeats}); {args.docs} documents per mix, "
        "each 2-6 paragraphs of standard-library docstrings (real technical English with numbers, versions "
        "and code), with fresh PII sentences injected:",
        "",
        "| mix | mean chars | ours docs/s | seed docs/s | ours / seed |",
        "|---|---:|---:|---:|---:|",
        *(f"| {mix} | {sum(map(len, docs)) / len(docs):,.0f} | {speed[mix, 'ours']:,.0f} | "
          f"{speed[mix, 'seed']:,.0f} | {speed[mix, 'ours'] / speed[mix, 'seed']:.2f}x |"
          for mix, docs in mixes.items()),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
