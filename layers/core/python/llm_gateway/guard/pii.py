"""PII detection with validation, and reversible masking within one request.

Structured identifiers are found by pattern and then *validated*, which is what keeps false
positives down: card numbers must pass the Luhn check, IBANs the ISO 7064 mod-97 check, US social
security numbers the SSA's area/group/serial rules, IP addresses `ipaddress` parsing, phone
numbers a plausible digit count. Emails follow a practical RFC 5322 subset.

Masking replaces each value with a typed placeholder (`[EMAIL_1]`, `[CREDIT_CARD_2]`...): the
same value gets the same placeholder throughout a request, so the model can still refer to it.
The `Vault` maps placeholders back to values; only the values of the entity types the tenant
allows to restore are kept, for as long as the request (in the state, never in logs, metrics or
the audit record), and `restore` puts them back into the answer.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

CREDIT_CARD = "CREDIT_CARD"
US_SSN = "US_SSN"
IBAN = "IBAN"
EMAIL = "EMAIL"
PHONE = "PHONE"
IP_ADDRESS = "IP_ADDRESS"
STRUCTURED_TYPES = (CREDIT_CARD, US_SSN, IBAN, EMAIL, PHONE, IP_ADDRESS)

_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w-])")  # 12-19 digits
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_IBAN = re.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Z0-9])", re.IGNORECASE)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# Three shapes: international (+CC or 00CC ...), North American ((415) 555-0132, 415.555.0132),
# national numbers with a trunk 0 (020 7946 0958); each may carry an extension (x123, ext. 123).
# A bare run of ten digits counts only after a phone word (see `_phones`).
_EXTENSION = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?"
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+|00)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|0\d{1,4}[ .-]\d{3,4}[ .-]?\d{3,4}"
    r")" + _EXTENSION + r"(?![\w])",
    re.IGNORECASE,
)
_BARE_PHONE = re.compile(r"(?<![\w+])[2-9]\d{9}(?![\w])")
# Ambiguous shapes (a bare ten-digit run, a card number with a leading 0) count only next to a
# word that names them, as presidio's context words do.
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|call|tel|telephone|mobile|cell|fax|number|contact|reach|text|sms|messages?|registered"
    r"|office|desk|home|work|whatsapp|answer(?:ing|ed)?|dial(?:l?ed|l?ing)?|ring)\b",
    re.IGNORECASE,
)
_CARD_CONTEXT = re.compile(r"\b(?:card|cc|credit|debit|visa|mastercard|maestro|amex)\b", re.IGNORECASE)
_CONTEXT_BEFORE, _CONTEXT_AFTER = 30, 12


def _in_context(context: re.Pattern[str], text: str, start: int, end: int) -> bool:
    before = text[max(0, start - _CONTEXT_BEFORE) : start]
    after = text[end : end + _CONTEXT_AFTER]
    return context.search(before) is not None or context.search(after) is not None


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# IBAN lengths by country (ISO 13616); a candidate of another length is not an IBAN.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999; no group 00; no serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ip_valid(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int
    text: str


def _cards(text: str) -> Iterable[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if not (12 <= len(digits) <= 19 and luhn_valid(digits)):
            continue
        # Issuer prefixes start with 1-6; a leading 0 (some Maestro ranges) needs a card word nearby.
        if digits[0] in "123456" or (digits[0] == "0" and _in_context(_CARD_CONTEXT, text, m.start(), m.end())):
            yield Span(CREDIT_CARD, m.start(), m.end(), m.group())


def _ssns(text: str) -> Iterable[Span]:
    for m in _SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield Span(US_SSN, m.start(), m.end(), m.group())


def _ibans(text: str) -> Iterable[Span]:
    for m in _IBAN.finditer(text):
        # A trailing space-separated group may belong to the sentence: try the longest valid prefix.
        candidate = m.group()
        while candidate:
            if iban_valid(candidate):
                yield Span(IBAN, m.start(), m.start() + len(candidate), candidate)
                break
            cut = candidate.rfind(" ")
            candidate = candidate[:cut] if cut > 0 else ""


def _emails(text: str) -> Iterable[Span]:
    for m in _EMAIL.finditer(text):
        yield Span(EMAIL, m.start(), m.end(), m.group())


def _ips(text: str) -> Iterable[Span]:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            if _ip_valid(m.group()):
                yield Span(IP_ADDRESS, m.start(), m.end(), m.group())


def _phones(text: str) -> Iterable[Span]:
    for m in _PHONE.finditer(text):
        digits = sum(ch.isdigit() for ch in m.group())
        if 10 <= digits <= 20:  # E.164 allows 15, plus an extension
            yield Span(PHONE, m.start(), m.end(), m.group())
    for m in _BARE_PHONE.finditer(text):
        if _in_context(_PHONE_CONTEXT, text, m.start(), m.end()):
            yield Span(PHONE, m.start(), m.end(), m.group())


# Earlier detectors win overlaps: a validated card or IBAN is not also a phone number.
_DETECTORS = (_emails, _ibans, _cards, _ssns, _ips, _phones)


def overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def find_pii(text: str, entities: Iterable[str] = STRUCTURED_TYPES) -> list[Span]:
    """Non-overlapping validated spans of the requested entity types, in text order."""
    wanted = set(entities)
    taken: list[Span] = []
    for detector in _DETECTORS:
        for span in detector(text):
            if span.entity in wanted and not any(overlaps(span, s) for s in taken):
                taken.append(span)
    return sorted(taken, key=lambda s: s.start)


@dataclass
class Vault:
    """Placeholder -> original value for one request; the same value reuses its placeholder."""

    values: dict[str, str] = field(default_factory=dict)
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def after(cls, texts: Iterable[str]) -> Vault:
        """A vault whose new placeholders number after those `texts` already hold: a conversation
        that carries earlier turns' placeholders (`[EMAIL_1]`) gives a new value `[EMAIL_2]`."""
        vault = cls()
        for text in texts:
            if "[" in text:
                for match in _PLACEHOLDER.finditer(text):
                    entity, number = match.group(1), int(match.group(2))
                    vault._counts[entity] = max(vault._counts.get(entity, 0), number)
        return vault

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        found = self._by_value.get(key)
        if found is None:
            self._counts[entity] = self._counts.get(entity, 0) + 1
            found = f"[{entity}_{self._counts[entity]}]"
            self._by_value[key] = found
            self.values[found] = value
        return found


def _replace(text: str, spans: list[Span], replacement: Callable[[Span], str]) -> str:
    out, last = [], 0
    for span in spans:
        out.append(text[last : span.start])
        out.append(replacement(span))
        last = span.end
    out.append(text[last:])
    return "".join(out)


def mask(text: str, spans: list[Span], vault: Vault) -> str:
    """`text` with each span replaced by its placeholder."""
    return _replace(text, spans, lambda span: vault.placeholder(span.entity, span.text))


_PLACEHOLDER = re.compile(r"\[([A-Z_]+)_(\d+)\]")
_LONGEST_PLACEHOLDER = 32


def restore(text: str, values: Mapping[str, str]) -> str:
    """Put back the original values of the placeholders in `values` (the ones the tenant allows to
    be restored); any other placeholder stays as it is."""
    if not values or "[" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)


def restore_in_json(text: str, values: Mapping[str, str]) -> str:
    """`restore` inside JSON text (a tool call's arguments): each value JSON-escaped, so the text
    stays the JSON it was."""
    if not values or "[" not in text:
        return text
    return restore(text, {placeholder: json.dumps(value)[1:-1] for placeholder, value in values.items()})


def placeholder_entity(placeholder: str) -> str | None:
    """`EMAIL` for `[EMAIL_1]`; None for anything else."""
    match = _PLACEHOLDER.fullmatch(placeholder)
    return None if match is None else match.group(1)


def safe_cut(text: str, start: int, cut: int) -> int:
    """Move a streaming cut back so it does not split a placeholder that may still be completing."""
    opening = text.rfind("[", start, cut)
    if opening != -1 and text.find("]", opening, cut) == -1 and cut - opening <= _LONGEST_PLACEHOLDER:
        return opening
    return cut


def redact(text: str, spans: list[Span]) -> str:
    """`text` with each span replaced by `[REDACTED_<TYPE>]` (not reversible: no vault)."""
    return _replace(text, spans, lambda span: f"[REDACTED_{span.entity}]")


def pii_safe_cut(text: str, start: int, cut: int, entities: Iterable[str]) -> int:
    """Move a streaming cut back before any PII value of `entities` that would straddle it."""
    for span in find_pii(text[start:], entities):
        if start + span.start < cut < start + span.end:
            return start + span.start
    return cut
