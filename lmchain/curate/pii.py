"""PII redaction: e-mail addresses, phone numbers, IP addresses, card numbers, IBANs, and
patterns a user adds. Each match is replaced by a token such as ``<EMAIL>``; counts per kind go
into the record (``pii``) and the manifest.

The gate's ``expect_column_values_to_not_contain_pii`` calls :func:`pii_kinds`, which runs these
very rules, so curate and the gate never disagree on what PII is, and a redacted corpus passes
that check (the replacement tokens contain nothing the rules match). Card numbers are redacted
only when the Luhn check passes and IBANs only when the ISO 13616 mod-97 check passes, so order
numbers and similar digit runs stay. Phone numbers and IPv4 addresses are checked against their
surroundings: a digit-grouped amount ("10 000 000 dollars"), a list of years or a version
number ("version 1.2.3.4") is not PII.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_H = r"[0-9A-Fa-f]{1,4}"
IPV6 = re.compile(
    r"(?<![\w:.])(?:"
    rf"(?:{_H}:){{7}}{_H}"  # full form
    rf"|(?:{_H}:){{1,7}}:(?:{_H}(?::{_H}){{0,6}})?"  # compressed: a::b, a::, a:b::c
    rf"|::(?:{_H}(?::{_H}){{0,6}})"  # ::1, ::ffff:...
    r")(?![\w:])"
)
# Not inside a longer dotted run: "1.2.3.4.5" is a version or an OID, not an address.
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w]|\.\d)")
PHONE = re.compile(
    r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)"
    r"|(?<!\w)\+\d{10,15}(?!\w)"
)  # E.164 without separators: +14155552671
# The whole run of digit groups a phone match sits in (its left and right neighbours included).
_NUMBER_RUN = re.compile(r"[+(]?\d[\d()]*(?:[ \u00a0\u202f.,-]\(?\d[\d()]*)*")
_VERSION_WORD = re.compile(
    r"(?:\bv|\b(?:version|ver|release|rel|build|rev|revision|update|patch|firmware|python))"
    r"\.?\s*$",
    re.IGNORECASE,
)

TOKENS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ipv6": "<IP_ADDRESS>",
    "ipv4": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _iban_ok(m: re.Match) -> bool:
    return iban_ok(m.group())


def _card_ok(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ipv6_ok(m: re.Match) -> bool:
    # "12:30" or "a:b" are clock times and labels, not addresses: want a "::" or 8 groups.
    match = m.group()
    return "::" in match and len(match) > 2 or match.count(":") == 7


def _ipv4_ok(m: re.Match) -> bool:
    return not _VERSION_WORD.search(m.string[max(0, m.start() - 12) : m.start()])


def _is_digit_grouping(groups: list[str]) -> bool:
    """1-3 digits, then groups of exactly three: a number written with thousands separators."""
    head, rest = groups[0], groups[1:]
    return (
        bool(rest)
        and 1 <= len(head) <= 3
        and (head == "0" or not head.startswith("0"))
        and all(len(g) == 3 for g in rest)
    )


def _is_year_list(groups: list[str]) -> bool:
    return len(groups) >= 2 and all(len(g) == 4 and g[:2] in ("19", "20") for g in groups)


def _phone_ok(m: re.Match) -> bool:
    """A phone number, unless the digit run around the match is an amount or a list of years.

    The run is judged whole: in "1 000 000 000" the pattern can only match "000 000 000", which
    on its own would look like a number with a leading zero.
    """
    text = m.group()
    if text.startswith(("+", "(")):
        return True  # a country code or an area code in brackets: amounts have neither
    run = m
    for candidate in _NUMBER_RUN.finditer(m.string, max(0, m.start() - 40), min(len(m.string), m.end() + 40)):
        if candidate.start() <= m.start() and candidate.end() >= m.end():
            run = candidate
            break
    groups = re.findall(r"\d+", run.group())
    return not (_is_digit_grouping(groups) or _is_year_list(groups))


# Order matters: an e-mail's digits are not a phone number, a card number is not a phone number.
_BUILTIN = [
    ("email", EMAIL, None),
    ("iban", IBAN, _iban_ok),
    ("credit_card", CARD, _card_ok),
    ("ipv6", IPV6, _ipv6_ok),
    ("ipv4", IPV4, _ipv4_ok),
    ("phone", PHONE, _phone_ok),
]


@dataclass
class PiiRedactor:
    """Replaces PII by tokens. ``kinds``: built-in kinds to redact; ``patterns``: extra
    ``{name: regex}``, replaced by ``<NAME>``."""

    kinds: list[str] = field(default_factory=lambda: [k for k, _, _ in _BUILTIN])
    patterns: dict[str, str] = field(default_factory=dict)
    name: str = "pii"

    def __post_init__(self) -> None:
        self._rules = [(k, rx, ok, TOKENS[k]) for k, rx, ok in _BUILTIN if k in self.kinds]
        self._rules += [(k, re.compile(rx), None, f"<{k.upper()}>") for k, rx in self.patterns.items()]

    def redact(self, text: str) -> tuple[str, Counter]:
        found: Counter[str] = Counter()
        for kind, rx, ok, token in self._rules:

            def replace(m: re.Match) -> str:
                if ok is not None and not ok(m):
                    return m.group()
                found[kind] += 1
                return token

            text = rx.sub(replace, text)
        return text, found

    def alignment(self, before: str, after: str):
        """Where ``before``'s offsets land in its redaction ``after``: the redactions replayed as
        exact replacements, rule by rule as :meth:`redact` applies them (for entity spans)."""
        from lmchain.text_spans import Alignment, chain, align

        passes = []
        text = before
        for _, rx, ok, token in self._rules:
            edits = [(m.start(), m.end(), token) for m in rx.finditer(text) if ok is None or ok(m)]
            if edits:
                passes.append(Alignment.from_edits(text, edits))
                text = "".join(_apply(text, edits))
        if text != after:  # not this redactor's output: fall back to aligning the two texts
            return align(before, after)
        return chain(passes, len(before))

    def __call__(self, rec: dict) -> str | None:
        text, found = self.redact(rec["text"])
        if found:
            rec["text"] = text
            rec["pii"] = dict(found)
        return None


def _apply(text: str, edits: list[tuple[int, int, str]]):
    pos = 0
    for start, end, new in edits:
        yield text[pos:start]
        yield new
        pos = end
    yield text[pos:]


_DETECTOR = PiiRedactor()


def pii_kinds(text: str) -> list[str]:
    """The built-in kinds of PII in ``text``, by the redactor's own rules (what the gate checks)."""
    return sorted(_DETECTOR.redact(text)[1])
