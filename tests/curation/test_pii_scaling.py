"""PII redaction on big, PII-dense documents: every planted value redacted once, and work linear in size.

Nothing here is timed (timings belong to benchmarks/doc_scaling.py). The scaling tests count work instead:
the Python lines executed while redacting (``sys.settrace``), which a loop that checks every match against
every earlier match makes grow with the square of the document.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from re import _constants as sre_constants
from re import _parser as sre_parse

import phonenumbers
import pytest
from phonenumbers import phonenumbermatcher

from curation.steps import pii
from curation.steps.pii import find_pii, iban_ok, luhn_ok, redact

_FIRST = ("Jane", "Omar", "Li", "Ana", "Piotr", "Zoë", "Kofi", "Mia")
_LAST = ("Smith", "García", "Nowak", "Okafor", "Müller", "Tanaka", "O'Brien", "Rossi")


def _card(i: int) -> str:
    body = f"4{i:014d}"
    number = body + next(d for d in "0123456789" if luhn_ok(body + d))
    return " ".join(number[k:k + 4] for k in range(0, 16, 4))


def _iban(i: int) -> str:
    bban = f"WEST{i:014d}"
    check = 98 - int((bban + "GB00").translate(pii._LETTER_VALUES)) % 97
    iban = f"GB{check:02d}{bban}"
    assert iban_ok(iban)
    return " ".join(iban[k:k + 4] for k in range(0, len(iban), 4))


RECORD_KINDS = Counter({"name": 1, "email": 1, "phone": 2, "ip": 1, "credit_card": 1, "ssn": 1, "iban": 1})
"""What one record of :func:`record` plants."""


def record(i: int) -> tuple[str, str]:
    """One line of a contact dump with eight planted values (``i`` varies every one), and its redaction."""
    name = f"Dr. {_FIRST[i % 8]} {_LAST[i // 8 % 8]}"
    text = (f"Contact {name} <{_FIRST[i % 8].lower()}.{i}@example{i % 5}.com>, tel (415) 555-{i % 10000:04d}, "
            f"mobile +44 20 7946 {i % 1000:04d}, host 81.{i % 256}.{i // 256 % 256}.{1 + i % 250}, "
            f"card {_card(i)}, SSN {100 + i % 500:03d}-{10 + i % 89:02d}-{1000 + i % 9000:04d}, "
            f"IBAN {_iban(i)}.")
    return text, ("Contact [NAME] <[EMAIL]>, tel [PHONE], mobile [PHONE], host [IP], card [CREDIT_CARD], "
                  "SSN [SSN], IBAN [IBAN].")


PROSE = ("The committee met in 2023 and approved 4 of the 12 proposals; see section 1.2.3.4 and version "
         "2.10.3.1 (released 2024-01-15), ISBN 978-0-306-40615-7, order #123456789.")
"""A line without PII, with the look-alikes that must stay."""


def dense_lines(n: int, start: int = 0) -> tuple[list[str], list[str]]:
    """``n`` records with a prose line after every fourth; the lines and their expected redactions."""
    lines, expected = [], []
    for i in range(start, start + n):
        text, out = record(i)
        lines.append(text)
        expected.append(out)
        if i % 4 == 3:
            lines.append(PROSE)
            expected.append(PROSE)
    return lines, expected


# ------------------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("sep", ["\n", " "])
def test_every_planted_value_redacted_exactly_once(sep: str) -> None:
    lines, expected = dense_lines(300)
    out, counts = redact(sep.join(lines))
    assert out == sep.join(expected)
    assert counts == Counter({kind: n * 300 for kind, n in RECORD_KINDS.items()})


def test_document_redacts_like_its_lines() -> None:
    lines, _ = dense_lines(200)
    assert redact("\n".join(lines))[0] == "\n".join(redact(line)[0] for line in lines)


# ------------------------------------------------------------------------------------------- phone windows
def _phone_list(n: int, start: int = 0) -> str:
    """A CSV column of phone numbers behind ids: every window touches the next, so they merge into one."""
    return "\n".join(f"{i:09d},Jane Doe,415-555-{i % 10000:04d}" for i in range(start, start + n))


def test_phone_matcher_windows_stay_short(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = phonenumbers.PhoneNumberMatcher

    def matcher(text: str, *args: object, **kwargs: object) -> phonenumbers.PhoneNumberMatcher:
        seen.append(len(text))
        return real(text, *args, **kwargs)

    monkeypatch.setattr(phonenumbers, "PhoneNumberMatcher", matcher)
    text = _phone_list(2000)  # 64,000 characters of windows that touch
    out, counts = redact(text)
    assert counts["phone"] == 2000 and "555-" not in out
    assert max(seen) <= pii._PHONE_WINDOW <= 4096  # a few KB, not the 64 KB of the list
    # Without a safe character the pieces overlap and are cut anyway.
    seen.clear()
    digits_only = ", ".join(f"415-555-{i % 10000:04d}" for i in range(2000))
    assert redact(digits_only)[1]["phone"] == 2000
    assert max(seen) <= pii._PHONE_WINDOW <= 4096


def test_cut_windows_find_what_one_window_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [_phone_list(300), ", ".join(f"+44 20 7946 {i:04d}" for i in range(300)),
             "\n".join(record(i)[0] for i in range(100)), "2024-01-15 12:30 " * 300]
    cut = [find_pii(t) for t in texts]
    monkeypatch.setattr(pii, "_PHONE_WINDOW", 10**9)
    assert cut == [find_pii(t) for t in texts]


def _pattern_chars(node: sre_parse.SubPattern, flags: int) -> tuple[set[str], list[tuple[int, int]]]:
    """Every character a parsed pattern can consume (digits aside: returned as ranges), failing on anything
    open-ended such as ``.``, ``\\w`` or a negated class."""
    chars: set[str] = set()
    ranges: list[tuple[int, int]] = []
    for op, av in node:
        if op is sre_constants.LITERAL:
            chars.add(chr(av))
        elif op is sre_constants.IN:
            for iop, iav in av:
                if iop is sre_constants.LITERAL:
                    chars.add(chr(iav))
                elif iop is sre_constants.RANGE:
                    ranges.append(iav)
                elif iop is sre_constants.CATEGORY and iav is sre_constants.CATEGORY_DIGIT:
                    continue
                else:
                    raise AssertionError(f"open-ended class item {iop} {iav}")
        elif op is sre_constants.CATEGORY and av is sre_constants.CATEGORY_DIGIT:
            continue
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            c, r = _pattern_chars(av[2], flags)
            chars |= c
            ranges += r
        elif op is sre_constants.SUBPATTERN:
            c, r = _pattern_chars(av[3], flags)
            chars |= c
            ranges += r
        elif op is sre_constants.BRANCH:
            for branch in av[1]:
                c, r = _pattern_chars(branch, flags)
                chars |= c
                ranges += r
        else:
            raise AssertionError(f"unexpected pattern node {op}")
    return chars, ranges


def test_cut_characters_never_inside_a_phone_candidate() -> None:
    # The exactness of a cut rests on this: the matcher's candidate pattern cannot consume a cut character.
    pattern = phonenumbermatcher._PATTERN
    chars, ranges = _pattern_chars(sre_parse.parse(pattern.pattern, pattern.flags), pattern.flags)
    cut = {chr(c) for c in range(128) if pii._PHONE_CUT.match(chr(c))}
    assert "\n" in cut and "," not in cut and "x" not in cut
    folded = {c.lower() for c in chars} | {c.upper() for c in chars}
    assert not cut & folded
    assert all(not lo <= ord(c) <= hi for c in cut for lo, hi in ranges)


# ------------------------------------------------------------------------------------------- linear work
def python_lines(fn: Callable[[], object]) -> int:
    """Python lines executed while ``fn`` runs (in any module: ours, phonenumbers, re, ipaddress)."""
    count = 0

    def local(frame: object, event: str, arg: object) -> object:
        nonlocal count
        count += event == "line"
        return local

    def call(frame: object, event: str, arg: object) -> object:
        return local

    previous = sys.gettrace()
    sys.settrace(call)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count


def _growth(make: Callable[[int, int], str], n: int, sep: str = "\n") -> float:
    """Work on a document of two halves over the work on each half alone: 1.0 when the work is linear."""
    first, second = make(0, n), make(n, n)
    redact(first + sep + second)  # compiles and caches the patterns the phone library builds on first use
    whole = python_lines(lambda: redact(first + sep + second))
    return whole / (python_lines(lambda: redact(first)) + python_lines(lambda: redact(second)))


def test_work_doubles_with_the_document() -> None:
    # 2 x 120 records (2,000 spans): checking every digit run against every span found so far made the
    # whole cost 1.5 times its halves here, and a 4 MB contact dump 397 s instead of 1.5 s.
    assert 0.95 < _growth(lambda start, n: "\n".join(dense_lines(n, start)[0]), 120) < 1.1


def _names(start: int, n: int) -> str:
    return " ".join(f"Dr. {_FIRST[i % 8]} {_LAST[i // 8 % 8]} wrote" for i in range(start, start + n))


@pytest.mark.parametrize("make", [
    pytest.param(lambda start, n: _phone_list(n, start), id="phone-csv"),
    pytest.param(lambda start, n: ", ".join(f"415-555-{i % 10000:04d}" for i in range(start, start + n)),
                 id="phone-list"),
    pytest.param(lambda start, n: " ".join(f"a{i}@example.com 8.8.{i % 256}.{i // 256 % 256}"
                                           for i in range(start, start + n)), id="emails-and-ips"),
    pytest.param(_names, id="names"),
    pytest.param(lambda start, n: " ".join(record(i)[0] for i in range(start, start + n)), id="one-line"),
])
def test_work_doubles_on_lists(make: Callable[[int, int], str]) -> None:
    assert 0.95 < _growth(make, 150, sep=" ") < 1.1


def test_outside_spans() -> None:
    # The digit runs left for the phone matcher: those no span covers entirely.
    runs = list(re.finditer(r"\d{7,}", " ".join(f"{i:08d}" for i in range(50))))
    spans = [(m.start(), m.end(), "ssn") for m in runs[::2]]
    assert pii._outside_spans(runs, spans) == runs[1::2]
    assert pii._outside_spans(runs, []) == runs
    # A run covered by a longer span that starts earlier, and one only partly covered.
    text = "x 1234567 1234567"
    runs = list(re.finditer(r"\d{7}", text))
    assert pii._outside_spans(runs, [(0, 9, "email"), (10, 12, "ip")]) == runs[1:]
