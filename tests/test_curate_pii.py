"""PII false positives: amounts written with digit groups, version numbers, dates and times are
not phone numbers or IP addresses; real phone numbers and e-mail addresses still are. Curate's
redactor and the gate's PII expectation judge by the same rules."""

import pytest

from lmchain.curate.pii import PiiRedactor, pii_kinds

NOT_PII = [
    "it made 10 000 000 dollars",
    "it made 10 000 000 dollars last year and 2 500 000 this year",
    "1 000 000 000 people live there",
    "the price is 10.000.000 EUR",
    "it cost 250 000 or 300 000",
    "upgrade to Python 3.11.2 first",
    "v1.2.3.4 fixed the crash",
    "version 1.2.3.4 fixed the crash",
    "release 10.0.0.1 is out",
    "the OID 1.2.3.4.5 names it",
    "on 2024-01-15 at 12:30:45",
    "on 15.01.2024 or 15/01/2024 or 2024.01.15",
    "the films of 1999 2000 2001 were better",
    "score 7 8 9 out of ten",
]

PII = [
    ("call +1 415 555 2671 now", "phone"),
    ("call (415) 555-2671 now", "phone"),
    ("call +44 20 7946 0958 now", "phone"),
    ("call 415-555-2671 now", "phone"),
    ("call 415 555 2671 2 times", "phone"),
    ("text +14155552671 please", "phone"),
    ("ring (030) 1234 5678", "phone"),
    ("write to victim@example.com today", "email"),
    ("from 192.168.1.20 today", "ipv4"),
    ("the host is 10.0.0.1.", "ipv4"),
]


@pytest.mark.parametrize("text", NOT_PII)
def test_numbers_versions_and_dates_are_not_pii(text):
    assert pii_kinds(text) == []
    assert PiiRedactor().redact(text) == (text, {})


@pytest.mark.parametrize("text, kind", PII)
def test_real_phone_numbers_addresses_and_emails_still_are(text, kind):
    assert pii_kinds(text) == [kind]
    redacted, found = PiiRedactor().redact(text)
    assert dict(found) == {kind: 1} and redacted != text


def test_the_gate_expectation_uses_curates_rules(tmp_path):
    """Through GX: the amount passes, the phone number and the IBAN (a kind the gate did not know
    before it used curate's rules) are named as failing rows."""
    import pandas as pd

    from lmchain.config import SuiteConfig
    from lmchain.quality import expectations
    from lmchain.quality.gate import validate

    assert expectations.pii_kinds is pii_kinds
    texts = ["it made 10 000 000 dollars", "please call me on +1 415 555 2671", "pay to DE89 3704 0044 0532 0130 00"]
    df = pd.DataFrame({"text": texts, "predicted_label": "positive", "correct_label": "positive"})
    batch = tmp_path / "batch.jsonl"
    batch.write_text("x\n")
    result = validate(tmp_path / "home", "pii-rules", "feedback", df, [batch], SuiteConfig(max_duplicate_rate=1.0),
                      ["positive"], hold="rows")
    pii = next(c for c in result.checks if c["expectation"] == "expect_column_values_to_not_contain_pii")
    assert pii["row_index_sample"] == [1, 2]
    assert result.row_failures == {1: ["expect_column_values_to_not_contain_pii"],
                                   2: ["expect_column_values_to_not_contain_pii"]}
