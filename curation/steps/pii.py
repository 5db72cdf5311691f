"""PII redaction: replace emails, phone numbers, titled names, IPs, card numbers, SSNs and IBANs with typed
placeholders (``[EMAIL]``, ``[PHONE]``, ...) and count what was replaced.

Three layers, as every step: :func:`redact` (pure text), :class:`PiiConfig` (frozen, the YAML keys) and
:class:`PiiRedactor` (Arrow batch in, Arrow batch out, live rows only).

Why not the textbook three regexes: ``[\\w.-]+@[\\w.-]+`` eats trailing dots and matches ``a@b``; a bare
``\\d{3}[-.]?\\d{3}[-.]?\\d{4}`` misses every international number and hits order numbers and timestamps;
``Dr\\.\\s+\\w+`` redacts "Dr. who" and misses "Dr Smith". Here each kind has a precise candidate pattern
and then a *check* that the candidate really is one: the phone library's metadata for phones, ``ipaddress``
for IPs, Luhn for cards, SSA ranges for SSNs and ISO 13616 mod-97 for IBANs. Look-alikes (versions, dates,
ISBNs, hex addresses, prices, order numbers) fail those checks or the context rules documented per detector.

Speed: this runs on every document of the corpus, so no detector crawls through plain prose. Emails are found
from their literal "@", names from the title words, IPs behind literal-led gates (``.d.d.``, ``:h:``); phones,
cards, SSNs and IBANs all need a run of 7+ digits, so one scan finds such runs and those detectors only look
at short windows around them. The pure-Python phone matcher (about 0.1 ms per window) is the dearest part and
only sees runs of ``min_digits_for_phone`` digits or more. Patterns start with a literal or a character class,
never with ``\\b`` or a look-behind, which would make ``re`` attempt a match at every character.

Cost is linear in the document's length, however dense its PII: each detector scans once, the digit runs
left for the phone matcher are compared with the spans found so far in one sorted sweep, and no matcher
window grows past ``_PHONE_WINDOW``. ``benchmarks/doc_scaling.py`` times it on documents up to 50 MB;
tests/curation/test_pii_scaling.py counts the work.

Overlaps are resolved deterministically: leftmost span first, then the longest, then the kind listed first in
:data:`KINDS`; each accepted span becomes exactly one placeholder.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
import pyarrow as pa
from phonenumbers import PhoneNumberFormat

from curation import columns
from curation.steps import base

KINDS: tuple[str, ...] = ("email", "phone", "name", "ip", "credit_card", "ssn", "iban")
"""Every kind this step knows, in tie-break order (see module docstring)."""
_ORDER = {k: i for i, k in enumerate(KINDS)}

Span = tuple[int, int, str]
"""``(start, end, kind)`` of one detected piece of PII, ``text[start:end]``."""


@dataclass(frozen=True)
class PiiConfig:
    """Options of the ``pii`` step (YAML key ``steps.pii``)."""

    kinds: tuple[str, ...] = KINDS
    """Kinds to redact, any of: email, phone, name, ip, credit_card, ssn, iban. The ``pii_counts`` column
    gets one field per kind listed here, in this order."""

    phone_regions: tuple[str, ...] = ("US",)
    """ISO 3166 regions whose *national* formats count as phone numbers (``555-123-4567`` is US-only).
    Numbers written with ``+CC`` are found whatever the region."""

    min_digits_for_phone: int = 7
    """The phone matcher only looks at runs of at least this many digits (separators allowed). It is the
    costly detector (pure Python), so this gate decides most of the step's speed. 7 keeps local numbers
    (``555-1234``); raise it to 10 for US-only corpora where only full numbers matter."""

    phone_require_valid: bool = False
    """False: also redact numbers that are *possible* but not assigned (fictional ``555-123-4567``, typos),
    provided they are grouped exactly like the library formats them. True: only numbers the library's
    metadata knows to be valid (fewer false positives on digit-heavy text, more leaks)."""

    keep_special_ips: bool = True
    """Leave loopback, unspecified, reserved and multicast addresses (``127.0.0.1``, ``0.0.0.0``, ``::1``,
    ``255.255.255.0``) alone: they identify nobody and are everywhere in technical text."""

    placeholder: str = "[{KIND}]"
    """Replacement text; ``{KIND}`` is the upper-case kind (``EMAIL``), ``{kind}`` the lower-case one."""

    def __post_init__(self) -> None:
        # YAML hands over lists; tuples keep the frozen config hashable and comparable.
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "phone_regions", tuple(r.upper() for r in self.phone_regions))
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"pii.kinds: unknown kind(s) {unknown}; valid kinds are {list(KINDS)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"pii.kinds: duplicate kinds in {list(self.kinds)}")
        bad_regions = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad_regions:
            raise ValueError(f"pii.phone_regions: unknown region(s) {bad_regions}; use ISO 3166 alpha-2 "
                             "codes such as US, GB, DE, IN")
        if self.min_digits_for_phone < 3:
            raise ValueError(f"pii.min_digits_for_phone must be >= 3, got {self.min_digits_for_phone}")
        try:
            self.placeholder.format(KIND="EMAIL", kind="email")
        except (KeyError, IndexError, ValueError) as e:
            msg = f"pii.placeholder {self.placeholder!r} may only use {{KIND}} and {{kind}}: {e!r}"
            raise ValueError(msg) from e

    def render(self, kind: str) -> str:
        """The placeholder text for ``kind``."""
        return self.placeholder.format(KIND=kind.upper(), kind=kind)


# --------------------------------------------------------------------------------------------- email
# Local part: word chars (Unicode letters too), dots, plus and the usual extras, not starting with a dot.
# Domain: dot-separated labels of letters/digits/hyphens (Unicode letters for IDN), a TLD of 2+ letters; so a
# sentence-final dot is never part of the address and ``a@b`` or ``@handle`` is not an email.
# The scan is anchored on the literal "@" (``re`` then jumps from one "@" to the next in C); the local part is
# found backwards from there. One pattern starting with the local part's character class would try a match at
# nearly every character: 100x slower on prose.
_EMAIL_DOMAIN = re.compile(r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w-])")
_EMAIL_LOCAL = re.compile(r"[\w+%-][\w.'+%-]*\Z")
_LOCAL_MAX = 64
"""RFC 5321 limit on the local part; also how far back from the "@" the local part is looked for."""


def _find_emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL_DOMAIN.finditer(text):
        local = _EMAIL_LOCAL.search(text, max(0, m.start() - _LOCAL_MAX), m.start())
        if local:
            yield local.start(), m.end(), "email"


# --------------------------------------------------------------------------------------------- names
# Python's ``re`` has no \p{Lu}; build the upper-case class once from the BMP so "Dr. Müller" and
# "Dr. Łukasz Nowak" work as well as "Dr. Smith".
_UPPER = "".join(re.escape(c) for c in map(chr, range(0x10000)) if c.isupper() and c.isalpha())
# A name word is capitalised and not glued to digits ("IT39..." starts an IBAN, not a name).
_WORD = rf"[{_UPPER}][^\W\d_]*(?:['’-][{_UPPER}][^\W\d_]*)*(?![^\W_])"
_INITIAL = rf"[{_UPPER}]\.(?![^\W_])"
_PARTICLES = ("van", "von", "de", "da", "di", "del", "della", "der", "den", "du", "la", "le", "bin", "ibn",
              "al", "ter", "ten", "dos", "das")
"""Lower-case name particles, kept inside a name when a capitalised word follows ("Dr. Ludwig van
Beethoven")."""
_PARTICLE = "(?:" + "|".join(_PARTICLES) + r")[ \t]+"
# One or more titles (``Prof. Dr.``), with the period or at least a space; then one to three capitalised name
# words (initials allowed before the last word, particles before any), on the same line. Case-sensitive on
# purpose: "dr. who" and the "dr.smith" of an email address are not names.
# The pattern starts with the title alternation itself, no \b and no repeat group around it: ``re`` then
# jumps from one candidate first letter to the next in C. With a leading \b or ``(?:title)+`` it tries a match
# at every character (6x slower on prose). The word boundary before the title is checked in Python.
_TITLE = r"(?:Mrs|Mr|Ms|Mx|Dr|Prof)(?:\.[ \t]*|[ \t]+)"
_NAME = re.compile(
    rf"{_TITLE}(?:{_TITLE})*"
    rf"(?P<name>(?:{_PARTICLE}){{0,2}}(?:(?:{_INITIAL}|{_WORD})[ \t]+(?:{_PARTICLE}){{0,2}}){{0,2}}{_WORD})"
)
_NAME_STOP = frozenset({
    "The", "A", "An", "And", "Or", "But", "Nor", "So", "Yet", "In", "On", "At", "To", "Of", "For", "By",
    "With", "From", "About", "As", "Into", "Than", "Then", "If", "When", "While", "Is", "Was", "Are",
    "Were", "Be", "Been", "Has", "Had", "Have", "Would", "Can", "Could", "Should", "Might", "Must", "Do",
    "Did", "Does", "He", "She", "It", "They", "We", "I", "You", "His", "Her", "Its", "Their", "Our", "My",
    "Your", "This", "That", "These", "Those", "Who", "Whom", "Which", "What", "Monday", "Tuesday",
    "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March", "July",
    "September", "October", "November", "December", "Today", "Tomorrow", "PhD", "MSc", "BSc", "MPhil",
    "DPhil", "Esq", "Yesterday"
})
"""Capitalised words that end a name when they follow it ("Dr. Smith On Monday" -> "Dr. Smith")."""
_TOKEN = re.compile(r"\S+")
_STREET_BEFORE = re.compile(
    r"(?:\b(?:at|on|in|to|from|near|off|along|via|of)|(?<!\S)[0-9]+[A-Za-z]?)[ \t]+[A-Z][a-z]+[ \t]+\Z"
)
"""A capitalised word after a house number or a place preposition, right before "Dr", makes it the street
suffix ("742 Evergreen Dr", "turn at Oak Dr."); "Contact Dr. Smith", "the Director Dr. Smith" stay names."""


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _find_names(text: str) -> Iterator[Span]:
    for m in _NAME.finditer(text):
        if m.start() and _is_word_char(text[m.start() - 1]):
            continue  # "HDr. X", "GMr ..."
        if text.startswith("Dr", m.start()) and _STREET_BEFORE.search(text, max(0, m.start() - 40), m.start()):
            continue  # "742 Evergreen Dr. Springfield": Drive, not Doctor
        tokens = list(_TOKEN.finditer(m.group("name")))
        if tokens[0].group() in _NAME_STOP:
            continue  # "Dr. The ..." is not a name
        kept = tokens[:1]
        for tok in tokens[1:]:
            word = tok.group()
            if word in _NAME_STOP or (len(word) > 1 and word.isupper()):
                break  # "Dr. Smith On Monday", "Dr. Smith MD", "Mr. Nowak IBAN ..."
            kept.append(tok)
        while kept and kept[-1].group() in _PARTICLES:
            kept.pop()
        if kept and kept[-1].group() not in _PARTICLES:
            yield m.start(), m.start("name") + kept[-1].end(), "name"


# --------------------------------------------------------------------------------------------- IPs
# The look-behind sits after the first digit so the pattern starts with a character class, which lets
# ``re`` skip ahead to the next digit in C instead of trying the look-behind at every position (3-4x faster).
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}(?!\w|\.[0-9])")
# Two or more colons among hex groups, optionally an IPv4 tail and a zone id; ``ipaddress`` decides.
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[\w.]+)?(?![\w:]|\.[0-9])"
)
_VERSION_CUES = frozenset({
    "version", "versions", "ver", "v", "release", "build", "rev", "revision", "firmware", "fw", "patch",
    "update", "upgrade", "section", "chapter", "clause", "figure", "fig", "table", "step", "item", "rule",
    "article", "paragraph", "para", "oid"
})
"""A dotted quad with one of these among the two words before it (``version 1.2.3.4``, ``upgrade to
1.2.3.4``, ``section 1.2.3.4``) is a version or section number, not an address. Dotted quads glued to letters
(``v1.2.3.4``) or inside longer dotted runs (``1.2.3.4.5``, SNMP OIDs) never match the candidate pattern."""
_WORDS = re.compile(r"[^\W\d_]+")
_CLAUSE_END = re.compile(r"[.!?;](?:\s|$)|\n")
"""Sentence or line end: a version cue before it ("... in the next section.\nServer 10.1.2.3") does not count."""


def _is_special_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:192.0.2.1 is as personal as 192.0.2.1 (::ffff:0:0/96 is "reserved")
    return ip.is_loopback or ip.is_unspecified or ip.is_reserved or ip.is_multicast


_IPV4_GATE = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.")
"""Starts with a literal, so it costs ~1 µs per KB; the full pattern only runs on text that passes it."""
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_IPV6_MAX = 39
"""Longest textual IPv6 address (eight groups of four hex digits and seven colons)."""


def _find_ipv4(text: str, keep_special: bool) -> Iterator[Span]:
    if _IPV4_GATE.search(text) is None:
        return
    for m in _IPV4.finditer(text):
        try:
            ip = ipaddress.IPv4Address(m.group())
        except ipaddress.AddressValueError:
            continue  # 999.1.2.3, leading zeros: not an address
        if keep_special and _is_special_ip(ip):
            continue
        window = text[max(0, m.start() - 24):m.start()]
        window = _CLAUSE_END.split(window)[-1]  # the cue must be in the same sentence and line
        before = _WORDS.findall(window)[-2:]
        if any(w.lower() in _VERSION_CUES for w in before):
            continue  # "version 1.2.3.4", "upgrade to 1.2.3.4"
        yield m.start(), m.end(), "ip"


def _find_ipv6(text: str, keep_special: bool) -> Iterator[Span]:
    # The candidate pattern starts with a look-behind, so it is never scanned over the text: each hit of the
    # literal-led gate (":h:" or "::") is walked back to where an address would start and matched there.
    if ":" not in text:
        return
    done = 0
    for g in _IPV6_GATE.finditer(text):
        if g.start() < done:
            continue
        start = g.start()
        while start > 0 and text[start - 1] in _HEX_COLON and g.start() - start < _IPV6_MAX:
            start -= 1
        m = _IPV6.match(text, start)
        if m is None:
            continue
        done = m.end()
        cand, end = m.group(), m.end()
        if cand.endswith(":") and not cand.endswith("::"):
            cand, end = cand[:-1], end - 1  # "at 2001:db8::1: ..." - the colon is punctuation
        try:
            ip6 = ipaddress.IPv6Address(cand)
        except ipaddress.AddressValueError:
            continue  # 10:30:45, MAC addresses, C++ a::b
        if keep_special and _is_special_ip(ip6):
            continue  # also covers slices like x[1::2], which land in the reserved ::/8
        yield m.start(), end, "ip"


# --------------------------------------------------------------------------------------------- cards
# 13-19 digits, optionally grouped with one kind of separator. Not glued to words, '+', '#', '$', '.', ',' or
# '-' (so phone numbers with +CC, order numbers, prices and ISBN fragments are not candidates).
_CARD = re.compile(r"[0-9](?<![\w+#$€£.,/-][0-9])(?:[ -]?[0-9]){12,18}(?![\w-]|[.,/][0-9])")
_SEP = re.compile(r"[ -]")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_NOT_CARD_CUE = re.compile(
    r"(?i:\b(?:checksum|hash|digest|isbn|issn|ean|upc|gtin|imei|tracking|serial|sku)\b"
    r"[ \t]*(?:no\.?|number|#)?[ \t]*[:#]?[ \t]*)$"
)
"""Luhn-valid digit strings that follow these words are identifiers of things (IMEIs are Luhn-checked too)."""


def _find_cards(text: str, pos: int = 0, endpos: int | None = None) -> Iterator[Span]:
    for m in _CARD.finditer(text, pos, len(text) if endpos is None else endpos):
        raw = m.group()
        # Issuer prefixes start with 2-6 (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay 6);
        # this also rules out ISBN-13s (978/979...) that happen to pass Luhn.
        if raw[0] not in "23456":
            continue
        seps = set(_SEP.findall(raw))
        if len(seps) > 1:
            continue  # "4111-1111 1111-1111" is not how anyone writes a card
        groups = _SEP.split(raw)
        if len(groups) > 1 and not (all(4 <= len(g) <= 6 for g in groups[:-1]) and len(groups[-1]) >= 3):
            continue  # cards group as 4-4-4-4(-3), 4-6-5, 4-6-4; "4 1 1 1..." is a list of numbers
        if luhn_ok("".join(groups)) and not _NOT_CARD_CUE.search(text, max(0, m.start() - 24), m.start()):
            yield m.start(), m.end(), "credit_card"


# --------------------------------------------------------------------------------------------- SSNs
_SSN_DASHED = re.compile(r"([0-9](?<![\w-][0-9])[0-9]{2})-([0-9]{2})-([0-9]{4})(?![\w-]|[.,][0-9])")
# Undashed forms (123 45 6789, 123456789) only right after an SSN cue: bare 9-digit numbers are mostly
# order, account and tracking numbers.
_SSN_CUED = re.compile(
    r"(?:\bSSN|\bSS#|\b[Ss]ocial [Ss]ecurity(?: [Nn]umber| [Nn]o\.?| #)?)[\s:#.]{0,4}"
    r"(?:(?:is|was|number|no\.?)[\s:#.]{1,4}){0,2}"  # "my SSN is 123 45 6789", "SSN number: 123456789"
    r"(?P<ssn>([0-9]{3})( ?)([0-9]{2})\3([0-9]{4}))(?![\w-]|[.,][0-9])"
)


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssns(text: str, pos: int = 0, endpos: int | None = None) -> Iterator[Span]:
    endpos = len(text) if endpos is None else endpos
    for m in _SSN_DASHED.finditer(text, pos, endpos):
        if ssn_ok(*m.groups()):
            yield m.start(), m.end(), "ssn"
    for m in _SSN_CUED.finditer(text, pos, endpos):
        if ssn_ok(m.group(2), m.group(4), m.group(5)):
            yield m.start("ssn"), m.end("ssn"), "ssn"


# --------------------------------------------------------------------------------------------- IBANs
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
"""IBAN length per country, from the SWIFT IBAN registry. It also tells where a candidate ends when the
text goes on with more upper-case letters or digits."""
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")


_LETTER_VALUES = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})


def iban_ok(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers (A=10), mod 97 must be 1."""
    return int((compact[4:] + compact[:4]).translate(_LETTER_VALUES)) % 97 == 1


def _find_ibans(text: str, pos: int = 0, endpos: int | None = None) -> Iterator[Span]:
    for m in _IBAN.finditer(text, pos, len(text) if endpos is None else endpos):
        raw = m.group()
        want = _IBAN_LENGTHS.get(raw[:2])
        if want is None:
            continue
        # Walk the raw text until ``want`` IBAN characters are consumed; spaces do not count.
        n = end = 0
        while end < len(raw) and n < want:
            n += raw[end] != " "
            end += 1
        if n != want or (end < len(raw) and raw[end] != " "):
            continue  # too short, or the country length ends inside a group
        if iban_ok(raw[:end].replace(" ", "")):
            yield m.start(), m.start() + end, "iban"


# --------------------------------------------------------------------------------------------- phones
_FORMATS = (PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL)
_LENIENCY = phonenumbers.Leniency.POSSIBLE
_DIGITS = re.compile(r"\d+")
_ID_CUE = re.compile(
    r"(?i:\b(?:order|invoice|account|acct|ref|reference|ticket|tracking|isbn|issn|sku|serial|transaction|"
    r"confirmation|case|id|build|version|release|revision|rev|issue|bug|page|pid|uid)\b\.?"
    r"(?:[ \t]*(?:no\.?|nr\.?|num\.?|number|#))?[ \t]*[:#]?[ \t]*)$"
)
"""Words that make the digits after them an identifier, not a phone number."""
_PHONE_PAD = 16
"""Context kept on each side of a digit run when it is handed to the phone matcher: enough for ``+``, ``(``,
``tel:`` before and ``ext. 1234`` after."""
_PHONE_WINDOW = 2048
"""Most characters handed to one phone matcher. Windows of runs closer than twice ``_PHONE_PAD`` merge, so a
list of numbers (a CSV column, a contact dump) makes one window as long as the list; the matcher gives up
after 65535 rejected candidates (every number after that leaked) and copies the rest of its text for each
candidate that looks like a time stamp (the square of the window's length)."""
_PHONE_CUT = re.compile(r"[\n\r!\"$%&'*<>?@\\^_`{|}bcdfghjklmpqruvwyzBCDFGHJKLMPQRUVWYZ]")
"""Characters no candidate of the phone matcher can hold (it reads digits, brackets, separators and the
extension words "ext", "x", "int", "anexo", "доб", case-insensitively): a window cut in front of one gives the
matcher the same candidates in two pieces as in one. tests/curation/test_pii_scaling.py checks this against
the matcher's pattern."""
_PHONE_OVERLAP = 64
"""Where a long window has no such character (digits, separators and commas only), the next piece starts this
many characters before the cut, so a number across the cut is whole in one of the two pieces."""


def _grouped_like_library(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    """True when the digit groups of ``raw`` are those of the library's national or international format.

    This is what tells ``(415) 555-2671`` from ``2024.01.15 12`` (a valid Washington DC number by metadata)
    or ``3 141 592 653``.
    """
    groups = _DIGITS.findall(raw)
    for fmt in _FORMATS:
        want = _DIGITS.findall(phonenumbers.format_number(number, fmt))
        if groups == want or groups == want[1:]:
            return True
    return False


def _phone_ok(raw: str, number: phonenumbers.PhoneNumber, require_valid: bool) -> bool:
    """Whether a candidate of the matcher (leniency POSSIBLE) is a phone number worth redacting.

    * ``+CC`` numbers: valid per the metadata (people group them every which way) or grouped like the
      library;
    * a bare digit run (``2125550199``): only if valid, since most bare runs are ids and timestamps;
    * a grouped national number: grouped exactly like the library formats it, valid or not, which keeps the
      fictional ``555-123-4567`` and drops ``2024.01.15 12`` and ``3 141 592 653``.
    """
    if require_valid and not phonenumbers.is_valid_number(number):
        return False
    if raw.lstrip().startswith("+"):
        return phonenumbers.is_valid_number(number) or _grouped_like_library(raw, number)
    if len(_DIGITS.findall(raw)) == 1:
        return phonenumbers.is_valid_number(number)
    return _grouped_like_library(raw, number)


def _windows(text: str, runs: list[re.Match[str]], before: int, after: int) -> list[list[int]]:
    """``[start, end)`` windows of ``text`` around ``runs``, widened by ``before``/``after``, merged."""
    windows: list[list[int]] = []
    for m in runs:
        s, e = max(0, m.start() - before), min(len(text), m.end() + after)
        if windows and s <= windows[-1][1]:
            windows[-1][1] = e
        else:
            windows.append([s, e])
    return windows


def _phone_windows(text: str, runs: list[re.Match[str]]) -> Iterator[tuple[int, int]]:
    """``[start, end)`` pieces of text for the phone matcher: ``runs`` widened by ``_PHONE_PAD``, merged where
    they touch, and cut where longer than ``_PHONE_WINDOW`` (see there and at ``_PHONE_CUT``)."""
    for ws, we in _windows(text, runs, _PHONE_PAD, _PHONE_PAD):
        while we - ws > _PHONE_WINDOW:
            cut = _PHONE_CUT.search(text, ws + _PHONE_WINDOW // 2, ws + _PHONE_WINDOW)
            if cut is not None:
                yield ws, cut.start()
                ws = cut.start()
            else:
                yield ws, ws + _PHONE_WINDOW
                ws += _PHONE_WINDOW - _PHONE_OVERLAP
        yield ws, we


def _find_phones(text: str, runs: list[re.Match[str]], regions: tuple[str, ...],
                 require_valid: bool) -> Iterator[Span]:
    """Phone numbers near ``runs`` (digit runs long enough to be one); the matcher never scans plain prose."""
    for ws, we in _phone_windows(text, runs):
        window = text[ws:we]
        for region in regions:
            # POSSIBLE, not the default VALID: VALID drops every number whose area code is unassigned (the
            # baseline regex's 555-123-4567) and still accepts "2024.01.15 12"; _phone_ok filters instead.
            for pm in phonenumbers.PhoneNumberMatcher(window, region, leniency=_LENIENCY):
                start = ws + pm.start
                before = text[max(0, start - 2):start]
                if "#" in before or any(c in before for c in "$€£¥"):
                    continue  # "Order #2125550199", "$12345678.90": identifiers and amounts
                if _ID_CUE.search(text, max(0, start - 32), start):
                    continue  # "Order No. 2125550199", "invoice 2125550199"
                if _phone_ok(pm.raw_string, pm.number, require_valid):
                    yield start, ws + pm.end, "phone"


# --------------------------------------------------------------------------------------------- redact
_LONG_RUN = 7
"""Cards (13+ digits), SSNs (9), IBANs (their bank part is a long digit run) and phones all hold a run of at
least this many digits, separators allowed; one scan for such runs gates all four detectors."""
_RUN_BEFORE = 40
"""Window start before a long digit run: an SSN cue ("Social Security Number: ") or an IBAN's country code,
check digits and letter bank code ("GB82 WEST ") come first."""
_RUN_AFTER = 48
"""Window end after a long digit run: the rest of an IBAN whose account part has letters (at most 34
characters plus spaces)."""
_SEP_KINDS = frozenset({"phone", "credit_card", "ssn", "iban"})
_HAS_DIGIT = re.compile(r"\d")
_NON_DIGIT = re.compile(r"\D")


@lru_cache(maxsize=32)
def _run_gate(min_digits: int) -> re.Pattern[str]:
    """Runs of ``min_digits`` or more digits, with up to three separator characters between digits."""
    return re.compile(rf"\d(?:[ \t().\-/]{{0,3}}\d){{{min_digits - 1},}}")


def find_pii(text: str, cfg: PiiConfig = PiiConfig()) -> list[Span]:
    """Non-overlapping PII spans of ``text``, sorted by start (leftmost, then longest, then :data:`KINDS`
    order wins an overlap)."""
    kinds = cfg.kinds
    spans: list[Span] = []
    if "email" in kinds and "@" in text:
        spans.extend(_find_emails(text))
    if "name" in kinds:
        spans.extend(_find_names(text))
    if "ip" in kinds:
        spans.extend(_find_ipv6(text, cfg.keep_special_ips))  # "dead:beef::cafe" has no digit at all
    if _HAS_DIGIT.search(text) is not None:  # everything below needs one; many paragraphs have none
        if "ip" in kinds:
            spans.extend(_find_ipv4(text, cfg.keep_special_ips))
        if not _SEP_KINDS.isdisjoint(kinds):
            _find_in_runs(text, cfg, spans)
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s[0], s[0] - s[1], _ORDER[s[2]]))
    out: list[Span] = []
    for span in spans:
        if not out or span[0] >= out[-1][1]:
            out.append(span)
    return out


def _outside_spans(runs: list[re.Match[str]], spans: list[Span]) -> list[re.Match[str]]:
    """The ``runs`` (in text order) that no span of ``spans`` (any order) covers entirely.

    One sweep over the spans sorted by start: a run is covered when the furthest end among the spans that
    start at or before it reaches its end. Checking each run against every span instead costs the square of
    the matches: 19 s for a 2 MB contact dump.
    """
    if not spans:
        return runs
    starts = sorted((s, e) for s, e, _ in spans)
    out: list[re.Match[str]] = []
    i, reach = 0, -1
    for m in runs:
        while i < len(starts) and starts[i][0] <= m.start():
            reach = max(reach, starts[i][1])
            i += 1
        if reach < m.end():
            out.append(m)
    return out


def _find_in_runs(text: str, cfg: PiiConfig, spans: list[Span]) -> None:
    """Phones, cards, SSNs and IBANs: only where the text has a long enough digit run."""
    n_phone = cfg.min_digits_for_phone
    runs = list(_run_gate(min(_LONG_RUN, n_phone)).finditer(text))
    if not runs:
        return
    counts = [len(_NON_DIGIT.sub("", m.group())) for m in runs]
    kinds = cfg.kinds
    long_runs = [m for m, c in zip(runs, counts) if c >= _LONG_RUN]
    # Scan only windows around the long runs: the candidate patterns try a match at every digit, and
    # digit-heavy documents (tables, code, logs) would otherwise pay that over their whole length.
    for ws, we in _windows(text, long_runs, _RUN_BEFORE, _RUN_AFTER):
        if "credit_card" in kinds:
            spans.extend(_find_cards(text, ws, we))
        if "ssn" in kinds:
            spans.extend(_find_ssns(text, ws, we))
        if "iban" in kinds:
            spans.extend(_find_ibans(text, ws, we))
    if "phone" in kinds:
        # Runs already inside a checked span (card, SSN, IBAN, IP, email) cannot start a phone number that
        # would win the overlap, and the matcher is the dearest detector: skip them.
        phone_runs = _outside_spans([m for m, c in zip(runs, counts) if c >= n_phone], spans)
        if phone_runs:
            spans.extend(_find_phones(text, phone_runs, cfg.phone_regions, cfg.phone_require_valid))


def redact(text: str, cfg: PiiConfig = PiiConfig()) -> tuple[str, Counter[str]]:
    """Replace every PII span of ``text`` with its placeholder; return the new text and counts per kind.

    >>> redact("Contact Dr. Smith at dr.smith@example.com or 555-123-4567.")[0]
    'Contact [NAME] at [EMAIL] or [PHONE].'
    """
    spans = find_pii(text, cfg)
    counts: Counter[str] = Counter()
    if not spans:
        return text, counts
    parts: list[str] = []
    pos = 0
    for start, end, kind in spans:
        parts.append(text[pos:start])
        parts.append(cfg.render(kind))
        counts[kind] += 1
        pos = end
    parts.append(text[pos:])
    return "".join(parts), counts


class PiiRedactor(base.Step):
    """Batch step: redact the text column of live rows and write per-kind counts to ``pii_counts``.

    ``pii_counts`` is a ``struct<kind: int32, ...>`` with one field per enabled kind, so parquet and JSON
    writers both store it as a plain record; rows that are dropped or have null text get zeros.
    """

    cfg: PiiConfig

    def __init__(self, cfg: PiiConfig | None = None, text_column: str = "text") -> None:
        super().__init__(cfg, text_column)
        self.counts_type = pa.struct([(k, pa.int32()) for k in self.cfg.kinds])

    def apply(self, texts: base.Texts) -> None:
        counts: dict[str, list[int]] = {k: [0] * len(texts.values) for k in self.cfg.kinds}
        out = list(texts.values)
        for i, text in texts.rows():
            out[i], found = redact(text, self.cfg)
            for kind, n in found.items():
                counts[kind][i] = n
        texts.values, texts.text_changed = out, True
        struct = pa.StructArray.from_arrays([pa.array(counts[k], type=pa.int32()) for k in self.cfg.kinds],
                                            fields=list(self.counts_type))
        texts.add_column(columns.PII_COUNTS, struct)
