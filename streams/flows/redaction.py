"""Redacts card numbers, phone numbers and e-mail addresses from transcripts before they leave the audio flow.

Speech-to-text writes a spoken number as digits ("4111 1111"), as words ("four one one one") or as both
("4 1 1 1, double one"), so numbers are read from runs of digit groups, digit words (zero/oh to nineteen,
tens, "double"/"triple" before a digit, "hundred") and separators between them. A run of 13 to 19
digits that passes the Luhn check is a card number; any other run of 7 to 15 digits is a phone
number; a longer run that fails the check is no phone and most likely a misheard card, so it goes as
``[NUMBER]``. E-mail addresses are caught written (``a.b@c.com``) and spoken ("a dot b at c dot com",
also with "and" for "at", as speech-to-text often hears it, when a domain ending follows), spelled out and with
their punctuation said ("j o h n underscore doe at ..."), or half the address would be left in the text.
Only decimal digits count: ``"²"`` and ``"④"`` pass ``str.isdigit`` but are no digit of a number.
Redaction replaces the whole run, so no digit of it survives, with a marker that says what was there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

CARD, PHONE, NUMBER, EMAIL, REDACTED = "[CARD]", "[PHONE]", "[NUMBER]", "[EMAIL]", "[REDACTED]"
MARKERS = {"card": CARD, "phone": PHONE, "number": NUMBER}
UNITS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
UNITS |= {"oh": "0", "o": "0", "nought": "0"}
TENS = {w: str(i) for i, w in zip(range(2, 10), "twenty thirty forty fifty sixty seventy eighty ninety".split())}
REPEAT = {"double": 2, "triple": 3}
SEPARATORS = set("-.()+/,")
# Whisper writes a "two" said between digits as "to" ("0 to 5, 5, 5" on some CPUs)
HOMOPHONES = {"to": "2", "too": "2"}
TOKEN = re.compile(r"\d+|[A-Za-z]+|[^\sA-Za-z\d]")
WRITTEN_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# a caller spells the address out ("j o h n", "at a c m e dot com") and says its punctuation ("john underscore
# doe"); the bounded repeats and a spelled run taken from its first letter only keep the search linear in the text
_SPELLED = r"(?<!\S)(?<!(?<!\S)\w\s)(?>\w\b(?:\s+\w\b)+)"
_SAID = r"(?:\s+(?:dot|underscore|dash|hyphen)\s+|\.)"
SPOKEN_EMAIL = re.compile(
    rf"(?:{_SPELLED}|\b[\w+-]+)(?:{_SAID}(?:{_SPELLED}|[\w+-]+)){{0,8}}\s+(?:at|and)\s+"
    rf"(?:{_SPELLED}|[\w-]+)(?:{_SAID}(?:{_SPELLED}|[\w-]+)){{0,4}}"
    r"(?:\s+dot\s+|\.)(?:com|org|net|edu|gov|io|co|uk|de|fr|info|biz|[a-z]{2})\b",
    re.IGNORECASE,
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (one mistyped digit fails it).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass
class RedactionConfig:
    """What is redacted from transcripts; plain data, so it travels with the flow's configuration.

    Parameters
    ----------
    enabled
        Off only where transcripts never leave a trusted place.
    cards, phones, emails
        Which built-in kinds are redacted.
    patterns
        Extra regular expressions (Python syntax, case-insensitive); each match becomes ``[REDACTED]``.
    """

    enabled: bool = True
    cards: bool = True
    phones: bool = True
    emails: bool = True
    patterns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"the redaction pattern {p!r} is not a valid regular expression: {exc}; "
                                 "fix it in [audio] redact_patterns") from None


class Redactor:
    """``Redactor(config).redact(text)`` -> ``(text with markers, {kind: count})``.

    Parameters
    ----------
    config
        What to redact; the defaults redact cards, phones and e-mail addresses.

    Examples
    --------
    >>> Redactor().redact("card four one one one 1111 1111 1111, mail me at ann.lee@example.com")
    ('card [CARD], mail me at [EMAIL]', {'email': 1, 'card': 1})
    """

    def __init__(self, config: RedactionConfig | None = None) -> None:
        self.config = config or RedactionConfig()

    @cached_property
    def _extra(self) -> list[re.Pattern[str]]:
        return [re.compile(p, re.IGNORECASE) for p in self.config.patterns]

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        if not self.config.enabled:
            return text, counts
        for pattern in self._extra:
            text, n = pattern.subn(REDACTED, text)
            _count(counts, "pattern", n)
        if self.config.emails:
            for pattern in (WRITTEN_EMAIL, SPOKEN_EMAIL):
                text, n = pattern.subn(EMAIL, text)
                _count(counts, "email", n)
        if self.config.cards or self.config.phones:
            text = self._numbers(text, counts)
        return text, counts

    def _numbers(self, text: str, counts: dict[str, int]) -> str:
        out, last = [], 0
        for start, end, digits in number_runs(text):
            kind = None
            if self.config.cards and 13 <= len(digits) <= 19 and luhn_ok(digits):
                kind = "card"
            elif self.config.phones and 7 <= len(digits) <= 15:
                kind = "phone"
            elif self.config.cards and len(digits) > 15:
                kind = "number"
            if kind is None:
                continue
            out += [text[last:start], MARKERS[kind]]
            last = end
            _count(counts, kind, 1)
        return "".join(out) + text[last:]


def number_runs(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, digits)`` of every run of spoken or written digits in ``text``.

    >>> number_runs("call 555 twelve thirty-four, or double oh seven")
    [(5, 27, '5551234'), (32, 47, '007')]
    >>> number_runs("call me to 0 to 5, 5, 5, 0, 1, 9, from 9 to 5")
    [(11, 32, '02555019'), (39, 45, '925')]
    """
    runs: list[tuple[int, int, str]] = []
    tokens = [(m.start(), m.end(), m.group().lower()) for m in TOKEN.finditer(text)]
    i, n = 0, len(tokens)
    while i < n:
        start, digits, end, j, single = None, "", 0, i, False
        while j < n:
            s, e, tok = tokens[j]
            value, used = _digits_at(tokens, j, bool(digits))
            if value is not None:
                start = s if start is None else start
                digits += value
                end = tokens[j + used - 1][1]
                j += used
                single = used == 1 and len(value) == 1
            elif digits and tok in SEPARATORS:
                j += 1
            elif single and tok == "and" and j + 1 < n and _single_digit(tokens[j + 1][2]):
                j += 1  # "five, zero, and nine": said digit by digit, the last one joined with "and"
            else:
                break
        if digits:
            start = start or 0
            if start and text[start - 1] in "(+":  # "(415) 555…", "+44 20…": the prefix goes with it
                start -= 1
            runs.append((start, end, digits))
            i = max(j, i + 1)
        else:
            i += 1
    return runs


def _single_digit(tok: str) -> bool:
    return tok.isdecimal() and len(tok) == 1 or len(UNITS.get(tok, "")) == 1


def _digits_at(tokens: list[tuple[int, int, str]], j: int, in_run: bool) -> tuple[str | None, int]:
    """The digits the token(s) at ``j`` say and how many tokens they take; None when not a number."""
    tok = tokens[j][2]
    if tok.isdecimal():  # not isdigit: "²" and "④" are digits to it, and no number to int() and Luhn
        return tok, 1
    if tok in REPEAT and j + 1 < len(tokens):
        value, used = _digits_at(tokens, j + 1, True)
        if value is not None and len(value) == 1:
            return value * REPEAT[tok], 1 + used
        return None, 0
    if tok in ("oh", "o") and not in_run:
        return None, 0  # "oh" alone is an interjection; inside a number it is a zero
    if tok in HOMOPHONES:  # a digit only between two single digits: "0 to 5", never "9 to 5, to 4"
        between = in_run and _single_digit(tokens[j - 1][2]) and j + 1 < len(tokens) and _single_digit(tokens[j + 1][2])
        return (HOMOPHONES[tok], 1) if between else (None, 0)
    if tok in UNITS:
        if j + 1 < len(tokens) and tokens[j + 1][2] == "hundred":
            return UNITS[tok] + "00", 2
        return UNITS[tok], 1
    if tok in TENS:
        k = j + 1
        if k < len(tokens) and tokens[k][2] == "-":
            k += 1
        if k < len(tokens) and tokens[k][2] in UNITS and UNITS[tokens[k][2]] != "0" and len(UNITS[tokens[k][2]]) == 1:
            return TENS[tok] + UNITS[tokens[k][2]], k - j + 1
        return TENS[tok] + "0", 1
    return None, 0


def _count(counts: dict[str, int], kind: str, n: int) -> None:
    if n:
        counts[kind] = counts.get(kind, 0) + n
