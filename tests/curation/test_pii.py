"""PII redaction: every detector on real positives and on the look-alikes it must leave alone."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import Counter

import pyarrow as pa
import pyarrow.json as paj
import pyarrow.parquet as pq
import pytest

from curation import columns
from curation.steps.pii import KINDS, PiiConfig, PiiRedactor, find_pii, iban_ok, luhn_ok, redact, ssn_ok

SEED_IN = "Contact Dr. Smith at dr.smith@example.com or 555-123-4567."
SEED_OUT = "Contact [NAME] at [EMAIL] or [PHONE]."


def only(kind: str) -> PiiConfig:
    return PiiConfig(kinds=(kind,))


DEFAULT = PiiConfig()


def redacted(text: str, cfg: PiiConfig = DEFAULT) -> str:
    return redact(text, cfg)[0]


# ------------------------------------------------------------------------------------------- the seed
def test_seed_example_exact() -> None:
    out, counts = redact(SEED_IN)
    assert out == SEED_OUT
    assert counts == Counter({"name": 1, "email": 1, "phone": 1})


def test_empty_and_plain_text_unchanged() -> None:
    assert redact("") == ("", Counter())
    prose = "The committee met in 2023 and approved 4 of the 12 proposals.\nNothing personal here."
    assert redact(prose) == (prose, Counter())


# ------------------------------------------------------------------------------------------- emails
@pytest.mark.parametrize(("text", "expected"), [
    ("mail first.last+tag@mail.sub.example.co.uk today", "mail [EMAIL] today"),
    ("end of sentence: bob@example.org.", "end of sentence: [EMAIL]."),
    ("<alice_o-brien@dept.uni-x.edu>", "<[EMAIL]>"),
    ("Unicode: józef@exämple.pl", "Unicode: [EMAIL]"),
    ("two: a@x.io,b@y.io", "two: [EMAIL],[EMAIL]"),
    ("mailto:o'neil@example.com", "mailto:[EMAIL]"),
])
def test_email_positive(text: str, expected: str) -> None:
    assert redacted(text, only("email")) == expected


@pytest.mark.parametrize("text", [
    "follow @handle on the site",
    "a@b is not an address",
    "user@localhost has no TLD",
    "the ratio 3@4.5 is odd",
])
def test_email_negative(text: str) -> None:
    assert redacted(text, only("email")) == text


# ------------------------------------------------------------------------------------------- phones
@pytest.mark.parametrize(("text", "expected"), [
    ("call (415) 555-2671 now", "call [PHONE] now"),
    ("call 212.555.0199.", "call [PHONE]."),
    ("dial 1-800-555-0199 ext. 12 please", "dial [PHONE] please"),
    ("bare 2125550199 works", "bare [PHONE] works"),
    ("UK +44 20 7946 0958, DE +49 30 901820", "UK [PHONE], DE [PHONE]"),
    ("FR +33 1 42 68 53 00 / IN +91 98765 43210", "FR [PHONE] / IN [PHONE]"),
    ("JP 電話 +81 3-1234-5678", "JP 電話 [PHONE]"),
    ("fictional 555-123-4567 numbers still look real", "fictional [PHONE] numbers still look real"),
    ("local 555-1234 too", "local [PHONE] too"),
])
def test_phone_positive(text: str, expected: str) -> None:
    assert redacted(text, only("phone")) == expected


@pytest.mark.parametrize("text", [
    "Order #123456789 shipped",
    "Order #2125550199 shipped",
    "Order No. 2125550199 and invoice 2125550199",
    "Build 2125550199 passed",
    "due 2024-01-15 or 01/15/2024",
    "at 2024.01.15 12:30 sharp",
    "ISBN 0-306-40615-2 and ISBN 978-0-306-40615-7",
    "price $12345678.90 and 12345678.90 USD",
    "pi is 3 141 592 653 digits",
    "id 1234567890 and ts 1700000000123",
    "pointer 0x7ffd5e8c",
])
def test_phone_negative(text: str) -> None:
    assert redacted(text, only("phone")) == text


def test_phone_regions_add_national_formats() -> None:
    text = "Ring 030 901820 in Berlin"
    assert redacted(text, only("phone")) == text  # not a US number
    assert redacted(text, PiiConfig(kinds=("phone",), phone_regions=("US", "DE"))) == "Ring [PHONE] in Berlin"


def test_phone_require_valid_skips_unassigned() -> None:
    cfg = PiiConfig(kinds=("phone",), phone_require_valid=True)
    assert redacted("call 555-123-4567", cfg) == "call 555-123-4567"
    assert redacted("call (415) 555-2671", cfg) == "call [PHONE]"


def test_min_digits_gate() -> None:
    text = "local 555-1234 here"
    assert redacted(text, PiiConfig(kinds=("phone",), min_digits_for_phone=10)) == text
    assert redacted(text, PiiConfig(kinds=("phone",), min_digits_for_phone=7)) == "local [PHONE] here"


# ------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(("text", "expected"), [
    ("Mr John Smith called", "[NAME] called"),
    ("Mrs. Jane Ann Doe called", "[NAME] called"),
    ("ask Ms. Lee.", "ask [NAME]."),
    ("Prof. Dr. Müller lectured", "[NAME] lectured"),
    ("Dr. Łukasz Nowak wrote", "[NAME] wrote"),
    ("Ms. O'Brien-Smith's cat", "[NAME]'s cat"),
    ("Dr. J. Tolkien wrote", "[NAME] wrote"),
    ("met Dr. Smith On Monday", "met [NAME] On Monday"),
    ("Mr. Will Smith and Mrs. May", "[NAME] and [NAME]"),
    ("Prof Ada Byron King Lovelace", "[NAME] Lovelace"),  # at most three name words
    ("Dr. Ludwig van Beethoven wrote", "[NAME] wrote"),
    ("Mx. de la Cruz? No: Mr. von Trapp sang", "[NAME]? No: [NAME] sang"),
    ("Dr. Jones MD and Dr. Lee PhD", "[NAME] MD and [NAME] PhD"),
    ("Ask Dr. Smith or ask Mary. Dr Jones knows", "Ask [NAME] or ask Mary. [NAME] knows"),
    ("the Director Dr. Smith", "the Director [NAME]"),
    ("call x58 Ask Dr Rossi", "call x58 Ask [NAME]"),
])
def test_name_positive(text: str, expected: str) -> None:
    assert redacted(text, only("name")) == expected


@pytest.mark.parametrize("text", [
    "Dr. who knows",
    "dr. smith in lower case",
    "MR. SMITH shouting",
    "the Drs. met",
    "Mrsmith is one word",
    "Dr.\nSmith across lines",
    "Dr. The end",
    "turn left at Oak Dr. Springfield is next",
    "742 Evergreen Dr Springfield",
])
def test_name_negative(text: str) -> None:
    assert redacted(text, only("name")) == text


# ------------------------------------------------------------------------------------------- IPs
@pytest.mark.parametrize(("text", "expected"), [
    ("server 192.168.1.20 is up", "server [IP] is up"),
    ("dns 8.8.8.8.", "dns [IP]."),
    ("proxy 10.0.0.1:8080", "proxy [IP]:8080"),
    ("v6 2001:db8::1 and fe80::1%eth0", "v6 [IP] and [IP]"),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", "[[IP]]:443"),
    ("at 2001:db8::1: done", "at [IP]: done"),
    ("mapped ::ffff:192.0.2.1 here", "mapped [IP] here"),
    ("doc range 192.0.2.1 and private 172.16.5.4", "doc range [IP] and private [IP]"),
])
def test_ip_positive(text: str, expected: str) -> None:
    assert redacted(text, only("ip")) == expected


@pytest.mark.parametrize("text", [
    "version 1.2.3.4 and Version: 1.2.3.4",
    "release v1.2.3.4 and see section 1.2.3.4",
    "please upgrade to 1.2.3.4 today",
    "oid 1.3.6.1.4.1 and 1.2.3.4.5",
    "not an address 999.1.2.3 or 01.02.03.04",
    "localhost 127.0.0.1, any 0.0.0.0, mask 255.255.255.0, ::1, ::ffff:127.0.0.1",
    "time 10:30:45, MAC 00:1A:2B:3C:4D:5E",
    "C++ std::vector and a[1::2]",
    "pointer 0x7ffd5e8c",
])
def test_ip_negative(text: str) -> None:
    assert redacted(text, only("ip")) == text


def test_special_ips_redacted_when_asked() -> None:
    cfg = PiiConfig(kinds=("ip",), keep_special_ips=False)
    assert redacted("bind 127.0.0.1 and ::1", cfg) == "bind [IP] and [IP]"


# ------------------------------------------------------------------------------------------- cards
@pytest.mark.parametrize(("text", "expected"), [
    ("visa 4111 1111 1111 1111 ok", "visa [CREDIT_CARD] ok"),
    ("visa 4111-1111-1111-1111.", "visa [CREDIT_CARD]."),
    ("mc 5555555555554444", "mc [CREDIT_CARD]"),
    ("amex 3782 822463 10005", "amex [CREDIT_CARD]"),
    ("19 digits 4111 1111 1111 1111 003", "19 digits [CREDIT_CARD]"),
])
def test_card_positive(text: str, expected: str) -> None:
    assert redacted(text, only("credit_card")) == expected


@pytest.mark.parametrize("text", [
    "bad luhn 4111 1111 1111 1112",
    "ISBN 978-0-306-40615-7 and 9780306406157",
    "mixed separators 4111-1111 1111-1111",
    "list 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "too short 4111 1111 111",
    "phone-like +4111111111111111",
    "price $4111111111111111.00",
    "checksum 4539 1488 0343 6467 and IMEI 490154203237518",
])
def test_card_negative(text: str) -> None:
    assert redacted(text, only("credit_card")) == text


def test_luhn() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


# ------------------------------------------------------------------------------------------- SSNs
@pytest.mark.parametrize(("text", "expected"), [
    ("ssn 123-45-6789.", "ssn [SSN]."),
    ("SSN: 123 45 6789", "SSN: [SSN]"),
    ("Social Security Number 123456789", "Social Security Number [SSN]"),
    ("my SSN is 123 45 6789.", "my SSN is [SSN]."),
])
def test_ssn_positive(text: str, expected: str) -> None:
    assert redacted(text, only("ssn")) == expected


@pytest.mark.parametrize("text", [
    "area 000-12-3456, 666-12-3456 and 912-34-5678",
    "group 123-00-4567 and serial 123-45-0000",
    "Order #123456789 and ref 123 45 6789",
    "part 123-45-67890 and 1123-45-6789",
])
def test_ssn_negative(text: str) -> None:
    assert redacted(text, only("ssn")) == text


def test_ssn_rules() -> None:
    assert ssn_ok("123", "45", "6789")
    assert not ssn_ok("900", "45", "6789")


# ------------------------------------------------------------------------------------------- IBANs
@pytest.mark.parametrize(("text", "expected"), [
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please"),
    ("pay GB82WEST12345698765432.", "pay [IBAN]."),
    ("NL91ABNA0417164300 then SEPA", "[IBAN] then SEPA"),
    ("FR14 2004 1010 0505 0001 3M02 606", "[IBAN]"),
])
def test_iban_positive(text: str, expected: str) -> None:
    assert redacted(text, only("iban")) == expected


@pytest.mark.parametrize("text", [
    "bad check DE89 3704 0044 0532 0130 01",
    "wrong length DE89 3704 0044 0532 0130",
    "unknown country ZZ89 3704 0044 0532 0130 00",
])
def test_iban_negative(text: str) -> None:
    assert redacted(text, only("iban")) == text


def test_iban_checksum() -> None:
    assert iban_ok("GB82WEST12345698765432")
    assert not iban_ok("GB83WEST12345698765432")


# ------------------------------------------------------------------------------------------- look-alikes
LOOKALIKES = (
    "Upgrade to version 1.2.3.4 before 2024-01-15 (or by 01/15/2024). "
    "ISBN 978-0-306-40615-7, pointer 0x7ffd5e8c, price $1,234.56, Order #123456789."
)


def test_lookalikes_untouched_by_every_kind() -> None:
    assert redact(LOOKALIKES) == (LOOKALIKES, Counter())


# ------------------------------------------------------------------------------------------- combined
def test_multiline_unicode_mixed() -> None:
    text = ("Grüße von Dr. Müller!\n"
            "E-Mail: müller@example.de\n"
            "Tel.: +49 30 901820\n"
            "IBAN: DE89 3704 0044 0532 0130 00\n"
            "Server: 2001:db8::42 — 日本語のテキスト")
    out, counts = redact(text)
    assert out == ("Grüße von [NAME]!\nE-Mail: [EMAIL]\nTel.: [PHONE]\nIBAN: [IBAN]\nServer: [IP] — 日本語のテキスト")
    assert counts == Counter({"name": 1, "email": 1, "phone": 1, "iban": 1, "ip": 1})


def test_name_does_not_swallow_a_following_iban() -> None:
    text = "Signed, Mr. Nowak IT60X0542811101000000123456 (EUR)."
    assert redact(text) == ("Signed, [NAME] [IBAN] (EUR).", Counter({"name": 1, "iban": 1}))


def test_overlaps_give_one_placeholder_per_span() -> None:
    # The phone library sees a number inside the IBAN's digits; the IBAN starts earlier and wins.
    text = "IBAN DE89 3704 0044 0532 0130 00"
    spans = find_pii(text)
    assert spans == [(5, len(text), "iban")]
    # Non-overlapping and sorted, whatever the mix.
    spans = find_pii("x " + SEED_IN + " 4111 1111 1111 1111 and 8.8.8.8")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_counts_per_kind() -> None:
    text = "a@x.io b@y.io Mr Smith 8.8.8.8 1.1.1.1 9.9.9.9"
    assert redact(text)[1] == Counter({"email": 2, "name": 1, "ip": 3})
    # Digit-heavy kinds with every detector on: each span is counted once, under its own kind.
    text = "ssn 123-45-6789, card 4111 1111 1111 1111, call 415-555-2671, http://192.168.1.1/admin"
    assert redact(text) == ("ssn [SSN], card [CREDIT_CARD], call [PHONE], http://[IP]/admin",
                            Counter({"ssn": 1, "credit_card": 1, "phone": 1, "ip": 1}))


def test_kinds_subset_and_placeholder_format() -> None:
    cfg = PiiConfig(kinds=("email",), placeholder="<{kind}>")
    assert redact(SEED_IN, cfg) == ("Contact Dr. Smith at <email> or 555-123-4567.", Counter({"email": 1}))


# ------------------------------------------------------------------------------------------- config
def test_unknown_kind_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown kind") as err:
        PiiConfig(kinds=("email", "passport"))
    for kind in KINDS:
        assert kind in str(err.value)


@pytest.mark.parametrize("kwargs", [
    {"phone_regions": ("XX",)},
    {"placeholder": "[{TYPE}]"},
    {"min_digits_for_phone": 2},
    {"kinds": ("email", "email")},
])
def test_bad_config_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="pii"):
        PiiConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_yaml_lists_is_hashable() -> None:
    cfg = PiiConfig(kinds=["ip", "email"], phone_regions=["us"])  # type: ignore[arg-type]
    assert cfg.kinds == ("ip", "email") and cfg.phone_regions == ("US",)
    assert hash(cfg) == hash(PiiConfig(kinds=("ip", "email")))


# ------------------------------------------------------------------------------------------- batch
def _batch() -> pa.Table:
    return pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "text": [SEED_IN, SEED_IN, None, "", "ip 8.8.8.8 and 1.1.1.1"],
        columns.DROP_REASON: [None, "duplicate", None, None, None],
        "extra": [1, 2, 3, 4, 5],
    })


def test_redactor_touches_only_live_rows() -> None:
    out = PiiRedactor(PiiConfig())(_batch())
    assert out.column("text").to_pylist() == [SEED_OUT, SEED_IN, None, "", "ip [IP] and [IP]"]
    assert out.column("extra").to_pylist() == [1, 2, 3, 4, 5]
    assert out.column(columns.DROP_REASON).to_pylist() == [None, "duplicate", None, None, None]
    counts = out.column(columns.PII_COUNTS).to_pylist()
    zero = dict.fromkeys(KINDS, 0)
    assert counts == [
        {**zero, "email": 1, "phone": 1, "name": 1},
        zero,  # dropped row: left alone
        zero,  # null text
        zero,
        {**zero, "ip": 2},
    ]
    assert out.schema.field(columns.PII_COUNTS).type == pa.struct([(k, pa.int32()) for k in KINDS])


def test_redactor_struct_follows_kinds_and_text_column() -> None:
    batch = pa.table({"body": ["mail a@x.io", "none"]})
    out = PiiRedactor(PiiConfig(kinds=("ip", "email")), text_column="body")(batch)
    assert out.column("body").to_pylist() == ["mail [EMAIL]", "none"]
    assert out.schema.field(columns.PII_COUNTS).type == pa.struct([("ip", pa.int32()), ("email", pa.int32())])
    assert out.column(columns.PII_COUNTS).to_pylist() == [{"ip": 0, "email": 1}, {"ip": 0, "email": 0}]


def test_redactor_empty_batch_and_rerun_replaces_column() -> None:
    step = PiiRedactor(PiiConfig())
    empty = step(pa.table({"text": pa.array([], type=pa.string())}))
    assert empty.num_rows == 0 and columns.PII_COUNTS in empty.column_names
    twice = step(step(_batch()))
    assert twice.column_names.count(columns.PII_COUNTS) == 1


def test_counts_column_round_trips_through_parquet_and_json() -> None:
    out = PiiRedactor(PiiConfig())(_batch())
    buf = io.BytesIO()
    pq.write_table(out, buf)
    assert pq.read_table(io.BytesIO(buf.getvalue())).column(columns.PII_COUNTS).to_pylist() == \
        out.column(columns.PII_COUNTS).to_pylist()
    lines = "\n".join(json.dumps(row) for row in out.to_pylist()).encode()
    back = paj.read_json(io.BytesIO(lines))
    assert back.column(columns.PII_COUNTS).to_pylist() == out.column(columns.PII_COUNTS).to_pylist()


def test_random_noise_never_crashes_and_redaction_is_idempotent() -> None:
    # Digits, separators, titles, '@', ':' and Unicode in random order: the inputs that stress the candidate
    # patterns, the look-behinds and the phone windows. Fixed seed, so a failure reproduces.
    rng = random.Random(7)
    alphabet = [*"0123456789 -.:/()+#@$\nabcdefXYZ", "Dr. ", "Mr ", "+1 ", "::", "é", "日", "DE89 "]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        spans = find_pii(text)
        assert all(0 <= s < e <= len(text) for s, e, _ in spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        once, _ = redact(text)
        assert redact(once)[0] == once


def test_version_cue_does_not_cross_a_sentence_or_line_end():
    # found by benchmarks/curation.py: "...section.\nServer 10.1.2.3" leaked the address
    assert redact("See the next section.\nServer 10.1.2.3 is down")[0] == "See the next section.\nServer [IP] is down"
    assert redact("Read the release notes. 10.1.2.3 is the host")[0] == "Read the release notes. [IP] is the host"
    assert redact("Upgrade to 1.2.3.4 now")[0] == "Upgrade to 1.2.3.4 now"
